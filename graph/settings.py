"""Settings for every persona-graph process, read from the environment (prefix ``PERSONAS_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from graph.errors import ConfigurationError, InvalidInput
from graph.features.registry import DEFAULT_SELECTION
from graph.privacy import DEFAULT_PHONE_REGION, Pseudonymizer, check_phone_region
from graph.segments.vocabularies import load_vocabulary

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "persona-graph"


DEMO_PSEUDONYM_KEY = "persona-graph-demo-key"
"""The public key of demo mode: pseudonyms made with it protect nothing."""

KEY_VARIABLES = "PERSONAS_PSEUDONYM_KEY or PERSONAS_PSEUDONYM_KEY_FILE"


class Settings(BaseSettings):
    """All configuration in one object, built at the edge (CLI, app factory) and passed down."""

    model_config = SettingsConfigDict(env_prefix="PERSONAS_", extra="ignore")

    neo4j_uri: str | None = Field(
        default=None,
        description="Bolt URI of an existing Neo4j. When set, nothing is provisioned locally.",
    )
    neo4j_user: str = Field(default="neo4j", description="Neo4j user name.")
    neo4j_password: SecretStr = Field(
        default=SecretStr("persona-graph-local"),
        description="Neo4j password (set as the initial password of the local server). Outside "
        "demo mode `personas serve` and the API refuse to start unless it is set.",
    )
    neo4j_database: str = Field(default="neo4j", description="Neo4j database name.")
    neo4j_version: str = Field(default="5.26.30", description="Neo4j LTS version provisioned.")
    neo4j_bolt_port: int = Field(default=7687, description="Bolt port of the local server.")
    neo4j_http_port: int = Field(default=7474, description="HTTP port (Neo4j Browser).")
    neo4j_heap: str = Field(default="2g", description="Heap size of the local server.")
    neo4j_pagecache: str = Field(default="1g", description="Page cache of the local server.")
    neo4j_instance: str = Field(
        default="default",
        description="Name of the local server instance (separate data folder per name).",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Where Neo4j jars and local server data live (outside the repo).",
    )
    migrations_dir: Path = Field(
        default=REPO_ROOT / "migrations", description="Folder of numbered Cypher migrations."
    )
    pseudonym_key: SecretStr = Field(
        default=SecretStr(DEMO_PSEUDONYM_KEY),
        description="Key of the HMAC that pseudonymizes identifiers and PII. The default is a "
        "public demo key, accepted only in demo mode (PERSONAS_DEMO): outside it `serve`, "
        "`ingest`, `consume`, `produce`, `crm import` and the API refuse to start without this "
        "key or PERSONAS_PSEUDONYM_KEY_FILE (docs/privacy.md).",
    )
    pseudonym_key_file: Path | None = Field(
        default=None,
        description="A file holding the pseudonymization key (a mounted secret); one trailing "
        "newline is stripped. Use it instead of PERSONAS_PSEUDONYM_KEY, not with it.",
    )
    demo: bool = Field(
        default=False,
        description="Demo mode: allows the built-in public pseudonymization key. `personas up` "
        "and `personas demo-data` turn it on for themselves when no key is configured.",
    )
    phone_region: str = Field(
        default=DEFAULT_PHONE_REGION,
        description="Region (ISO 3166 alpha-2) whose numbering plan reads phone numbers in free "
        "text written without a country code, e.g. (808) 782-1557 for US; numbers with + and a "
        "country code are found whatever it is.",
    )
    retention_days: int = Field(
        default=365, ge=0,
        description="Raw interactions (and emptied sessions, dead letters) older than this many "
        "days are pruned (`personas privacy prune`, and the scheduler); aggregates stay. 0 keeps "
        "them forever.",
    )
    batch_size: int = Field(
        default=2000, ge=1, le=50_000, description="Events per write transaction."
    )
    max_line_bytes: int = Field(
        default=1_000_000, ge=1024, description="Longest accepted input record, in bytes."
    )
    segment_features: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SELECTION),
        description="Features a segmentation uses: families (behaviour, preferences, device, "
        "demographics, context, structure, conversation, hours, topics), feature names, share:* or "
        "topic:* (JSON list).",
    )
    persona_vocabulary: str = Field(
        default="retail",
        description="The phrase book that names and describes personas: a shipped one (retail, "
        "media, travel, support) or the path of your own YAML file (docs/personas.md).",
    )
    text_features: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Topic and conversation features from chat messages and searches: `auto` "
        "when the population has enough text (at least half the users wrote 3 or more texts, "
        "200 in all; docs/personas.md), `on` whenever there is "
        "text, `off` never.",
    )
    text_topics: int = Field(
        default=0, ge=0, le=30,
        description="Number of topics learned from the text (0: chosen from the data, 3 to 10, "
        "the number whose topics agree best between resamples of the writers).",
    )
    topic_weight: Annotated[float, Field(gt=0.0, le=10.0)] | Literal["auto"] = Field(
        default="auto",
        description="When text features are used, how much the topic shares weigh in "
        "segmentation distances against all other features together (1: as much; 2: their "
        "spread is twice as large, 80% of the variance). `auto` takes the smallest of 1, 1.5 "
        "and 2 whose choice of personas is stable when the users are resampled; a number "
        "forces that weight. The run stores the weight used (docs/personas.md).",
    )
    segment_every_hours: float = Field(
        default=168.0, ge=0.0,
        description="Re-segment when the latest run is older than this (hours; 0 turns the "
        "schedule off). Checked by `personas scheduler` and by `personas up` while serving.",
    )
    runs_dir: Path | None = Field(
        default=None,
        description="Per-run segmentation artifacts and pictures (default: CACHE_DIR/runs).",
    )
    weather_valid_hours: float = Field(
        default=24.0, gt=0, description="How long a weather observation counts as the current "
        "weather at its location, when its provider gave no `valid_until`.")
    event_horizon_days: int = Field(
        default=14, ge=1, description="How far ahead local events count as upcoming.")
    context_provider: Literal["offline", "open-meteo"] = Field(
        default="offline", description="Where `personas context poll` gets weather and local "
        "events: `offline` (the JSON file CONTEXT_FILE) or `open-meteo` (weather only).")
    context_file: Path = Field(
        default=REPO_ROOT / "docs" / "context.example.json",
        description="The offline provider's JSON file (format in docs/ingestion.md, External "
        "context).")
    context_poll_minutes: float = Field(
        default=30.0, gt=0, description="How often `personas context poll` fetches each known "
        "location's weather and local events.")
    context_backoff_base_seconds: float = Field(
        default=60.0, gt=0, description="First retry delay after a location's fetch fails.")
    context_backoff_factor: float = Field(
        default=2.0, ge=1, description="Each further failure multiplies the retry delay by this.")
    context_backoff_max_seconds: float = Field(
        default=3600.0, gt=0, description="Longest retry delay after repeated failures.")
    context_backoff_jitter: float = Field(
        default=0.1, ge=0, lt=1, description="Retry delays vary randomly by up to this fraction, "
        "so that failed locations do not all retry at once.")
    open_meteo_url: str = Field(
        default="https://api.open-meteo.com/v1/forecast",
        description="Open-Meteo forecast endpoint (change it for a self-hosted instance).")
    context_http_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one request to a context provider.")
    api_max_page_size: int = Field(default=100, ge=1, description="Largest `first` a "
                                   "GraphQL list accepts (LIMIT_EXCEEDED above).")
    api_max_depth: int = Field(default=10, ge=2, description="Deepest GraphQL selection.")
    api_max_aliases: int = Field(default=20, ge=0, description="Most aliases in one request.")
    api_max_tokens: int = Field(default=2000, ge=100, description="Most tokens in one request.")
    api_max_cost: int = Field(
        default=5000, ge=10, description="Most fields a request may resolve: each field counts "
        "1, times the `first` of each list around it.")
    api_subscription_poll_seconds: float = Field(
        default=2.0, gt=0, description="How often subscriptions look for new runs and persona "
        "changes (runs and assignments may come from any process, so they poll the graph).")
    log_format: Literal["text", "json"] = Field(
        default="text", description="`json` writes one JSON object per log line (with fields "
        "such as route, status and latency) for log collectors, without stack traces; `text` is "
        "for people.")
    api_host: str = Field(default="127.0.0.1", description="Address the API binds to.")
    api_port: int = Field(default=8000, description="Port the API listens on.")
    api_key_cache_seconds: float = Field(
        default=30.0, ge=0.0,
        description="How long the API trusts a resolved API key before asking Neo4j again; a "
        "revoked key keeps working in a running API for at most this long (0: no cache).",
    )
    api_key_rate_per_second: float = Field(
        default=200.0, ge=0.0,
        description="Requests per second one API key may make to one API process, on average "
        "(429 RATE_LIMITED above; 0: no limit).")
    api_key_rate_burst: int = Field(
        default=400, ge=1, description="Requests one API key may make at once above its rate.")
    api_address_rate_per_second: float = Field(
        default=20.0, ge=0.0,
        description="Requests per second one client address may make to one API process "
        "without a live API key (none, a wrong one, or one not yet checked), on average (429 "
        "RATE_LIMITED above, before the key or body is looked at; 0: no limit).")
    api_address_rate_burst: int = Field(
        default=40, ge=1,
        description="Requests without a live API key one address may make at once above its "
        "rate.")
    api_max_streams_per_key: int = Field(
        default=20, ge=1, description="Subscriptions one API key may hold open at once, and "
        "WebSocket connections it may hold open to one API process.")
    api_read_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest a GraphQL read may run in Neo4j (the "
        "transaction timeout); a read cut off answers TIMEOUT.")
    consistency_wait_ms: int = Field(
        default=500, ge=0, le=10_000, description="Longest a read given `after` (a "
        "consistency token of a write) waits for that write to be visible before it answers "
        "with `pending: true`.")
    api_unavailable_wait_s: float = Field(
        default=5.0, gt=0, le=60, description="Longest the API retries one transaction while "
        "Neo4j is unreachable or restarting (the driver's default: 30 s) before it answers 503 "
        "UNAVAILABLE with Retry-After.")
    api_max_document_bytes: int = Field(
        default=20_000, ge=1024, description="Longest GraphQL document (query text) accepted, "
        "in bytes (LIMIT_EXCEEDED above, before parsing).")
    api_max_batch_events: int = Field(
        default=1000, ge=1, le=50_000,
        description="Most records one POST /v1/events or CRM webhook may carry (413 above).")
    api_max_body_bytes: int = Field(
        default=10_000_000, ge=1024,
        description="Largest request body of any route, GraphQL included, chunked or not (413 "
        "above, before parsing or authentication); also the largest WebSocket message.")
    api_body_timeout_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="How long a request body may take to arrive, whole, on any route (408 "
        "TIMEOUT after): a client sending a byte now and then cannot hold a connection open.")
    api_header_timeout_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="How long a request's headers may take to arrive, from the connection's "
        "opening (or a kept-alive request's first byte), in `personas serve` (408 TIMEOUT and "
        "the connection closed after): a client trickling headers cannot hold a connection.")
    api_max_header_bytes: int = Field(
        default=65_536, ge=1024, le=16_777_216,
        description="Longest request line and headers, together (431 LIMIT_EXCEEDED above): "
        "`personas serve` refuses them as they arrive and closes the connection; the app "
        "refuses them too under any other server, once that server has read them.")
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token `/metrics` asks for (Prometheus: `authorization.credentials` "
        "in its scrape config). Unset: `/metrics` answers only clients on this host "
        "(loopback), 403 otherwise.")
    crm_mapping_file: Path | None = Field(
        default=None,
        description="YAML field mapping the CRM webhook applies to its records (unset: 503).")
    crm_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret of the CRM webhook's HMAC-SHA256 signature (unset: 503).")
    crm_webhook_tolerance_seconds: int = Field(
        default=300, ge=1, le=86_400,
        description="How far a webhook's X-Personas-Timestamp may be from now, in seconds.")

    kafka_bootstrap: str | None = Field(
        default=None,
        description="Bootstrap servers of an existing Kafka (host:port,...). When set, nothing "
        "is provisioned locally.",
    )
    kafka_port: int = Field(default=9092, description="Broker port of the local Kafka.")
    kafka_controller_port: int = Field(
        default=9093, description="KRaft controller port of the local Kafka.")
    kafka_version: str = Field(
        default="4.1.1", description="Kafka version provisioned from Maven Central.")
    kafka_instance: str = Field(
        default="default",
        description="Name of the local Kafka instance (separate data folder per name).",
    )
    kafka_heap: str = Field(default="512m", description="Heap size of the local Kafka.")
    kafka_topic: str = Field(default="persona-events", description="Topic of incoming events: "
                             "`personas consume` reads it, `personas produce` writes it.")
    kafka_dead_letter_topic: str = Field(
        default="persona-events-dlq",
        description="Topic that malformed messages go to, PII-scrubbed, with their reason.",
    )
    kafka_group: str = Field(
        default="persona-graph", description="Consumer group of `personas consume`.")
    kafka_partitions: int = Field(
        default=3, ge=1, le=1000,
        description="Partitions of the topics persona-graph creates when they are missing.",
    )
    kafka_batch_max: int = Field(
        default=2000, ge=1, le=50_000,
        description="Most messages `personas consume` writes in one transaction.",
    )
    consumer_metrics_port: int = Field(
        default=9464, ge=0, le=65535,
        description="Port of the Prometheus metrics of `personas consume` (0: not served).",
    )
    consumer_metrics_host: str = Field(
        default="127.0.0.1", description="Address the consumer's metrics server binds to.")
    spark_master: str = Field(
        default="local[*]",
        description="Spark master of `personas segment --engine spark`: local[N] in this "
        "process, or a cluster's (spark://host:7077, yarn, k8s://...).",
    )
    spark_driver_memory: str = Field(
        default="1g", description="Memory of the Spark driver (`--engine spark`).")
    spark_micro_clusters: int = Field(
        default=1000, ge=2, le=20_000,
        description="Micro-clusters Spark's k-means summarizes the users into before Ward "
        "builds the segment tree on their centres (`--engine spark`).",
    )
    spark_read_partitions: int = Field(
        default=1, ge=1, le=10_000,
        description="Partitions the Neo4j Connector for Apache Spark reads the user rows in: "
        "each is a SKIP/LIMIT slice of one ordered query, and Neo4j computes the rows a slice "
        "skips too, so more than 1 pays only with idle cores on the Neo4j side "
        "(docs/segmentation.md).",
    )
    spark_connector_version: str = Field(
        default="5.0.3_for_spark_3",
        description="Version of org.neo4j:neo4j-connector-apache-spark_2.12 fetched from "
        "Maven Central into the cache (it must match the installed pyspark's Spark 3).",
    )
    otel_traces: Literal["off", "console", "otlp"] = Field(
        default="off",
        description="OpenTelemetry traces of API requests and their Neo4j queries: off, "
        "console (spans as JSON on standard output) or otlp (OTLP over HTTP to "
        "OTEL_EXPORTER_OTLP_ENDPOINT, by default http://localhost:4318).",
    )
    otel_service_name: str = Field(
        default="persona-graph", description="The service.name of the API's traces.")

    @property
    def kafka_instance_dir(self) -> Path:
        return self.cache_dir / "kafka-instances" / self.kafka_instance

    @property
    def kafka_bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def kafka_provisions_locally(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def local_instance_dir(self) -> Path:
        return self.cache_dir / "instances" / self.neo4j_instance

    @property
    def resolved_runs_dir(self) -> Path:
        return self.runs_dir or self.cache_dir / "runs"

    @property
    def bolt_uri(self) -> str:
        return self.neo4j_uri or f"bolt://127.0.0.1:{self.neo4j_bolt_port}"

    @property
    def provisions_locally(self) -> bool:
        return self.neo4j_uri is None

    @field_validator("phone_region")
    @classmethod
    def _phone_region(cls, value: str) -> str:
        return check_phone_region(value)

    @field_validator("persona_vocabulary")
    @classmethod
    def _vocabulary(cls, value: str) -> str:
        """A phrase book that cannot be used fails at start, not after a segmentation's
        clustering."""
        try:
            load_vocabulary(value)
        except InvalidInput as exc:
            raise ConfigurationError(f"PERSONAS_PERSONA_VOCABULARY: {exc}") from None
        return value

    @field_validator("text_topics")
    @classmethod
    def _topics(cls, value: int) -> int:
        if value == 1:
            raise ValueError("a topic model needs at least 2 topics (0 chooses the number)")
        return value

    @model_validator(mode="after")
    def _key_from_file(self) -> Settings:
        """Read the key from PERSONAS_PSEUDONYM_KEY_FILE, so every user of ``pseudonym_key``
        gets the configured key (like any settings source, this reads when settings are made)."""
        if self.pseudonym_key_file is None:
            return self
        if "pseudonym_key" in self.model_fields_set and not self.demo_mode:
            raise ConfigurationError(
                "both PERSONAS_PSEUDONYM_KEY and PERSONAS_PSEUDONYM_KEY_FILE are set; set one")
        path = self.pseudonym_key_file
        try:
            key = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"PERSONAS_PSEUDONYM_KEY_FILE {path} cannot be read: {exc}") from None
        key = key.removesuffix("\n").removesuffix("\r")
        if not key.strip():
            raise ConfigurationError(f"PERSONAS_PSEUDONYM_KEY_FILE {path} is empty")
        self.pseudonym_key = SecretStr(key)
        return self

    def require_pseudonym_key(self) -> None:
        """Refuse to run without a real pseudonymization key outside demo mode. Every entry
        point that hashes or serves identifiers (serve, ingest, consume, the API) calls this."""
        if not self.pseudonym_key.get_secret_value().strip():
            raise ConfigurationError(f"the pseudonymization key is empty; set {KEY_VARIABLES}")
        if self.demo_mode and not self.demo:
            raise ConfigurationError(
                f"no pseudonymization key: set {KEY_VARIABLES} (a file holding the key). The "
                "built-in public demo key is allowed only in demo mode (PERSONAS_DEMO=true), "
                "which `personas up` and `personas demo-data` turn on when no key is set.")

    def require_neo4j_password(self) -> None:
        """Outside demo mode, refuse to serve with the built-in Neo4j password: the server's
        password must be configured (PERSONAS_NEO4J_PASSWORD), never the value in this file."""
        if self.demo_mode and self.demo:
            return
        if "neo4j_password" not in self.model_fields_set \
                or not self.neo4j_password.get_secret_value().strip():
            raise ConfigurationError(
                "no Neo4j password: set PERSONAS_NEO4J_PASSWORD. The built-in local password "
                "is used only in demo mode (PERSONAS_DEMO=true with the demo pseudonymization "
                "key).")

    def pseudonymizer(self) -> Pseudonymizer:
        """The pseudonymizer of this key (build one per process: it caches digests)."""
        return Pseudonymizer(self.pseudonym_key.get_secret_value(), self.phone_region)

    @property
    def demo_mode(self) -> bool:
        """True while identifiers are pseudonymized with the built-in, public demo key: such a
        graph holds nothing worth protecting, so the documented demo API key may exist."""
        default = Settings.model_fields["pseudonym_key"].default
        return bool(self.pseudonym_key.get_secret_value() == default.get_secret_value())
