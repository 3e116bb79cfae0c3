# The persona-graph API image: the locked runtime dependencies in /app/.venv, run as a non-root
# user. `docker compose up` (compose.yaml) runs it beside the official Neo4j image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.8

WORKDIR /app

# Dependencies first, so that a source change does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project

COPY graph/ graph/
COPY api/ api/
COPY personas/ personas/
COPY migrations/ migrations/
RUN uv sync --locked --no-dev

RUN useradd --create-home --uid 10001 --user-group personas
USER personas

ENV PATH=/app/.venv/bin:$PATH \
    PERSONAS_API_HOST=0.0.0.0 \
    PERSONAS_MIGRATIONS_DIR=/app/migrations

EXPOSE 8000

# python:3.11-slim has no curl; the standard library's urllib raises (exit 1) on a non-2xx answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]

CMD ["/app/.venv/bin/personas", "serve", "--host", "0.0.0.0"]
