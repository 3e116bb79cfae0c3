"""Settings for every persona-graph process, read from the environment (prefix ``PERSONAS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from graph.features.registry import DEFAULT_SELECTION

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "persona-graph"


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
        description="Neo4j password (set as the initial password of the local server).",
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
        default=SecretStr("persona-graph-demo-key"),
        description="Key of the HMAC that pseudonymizes identifiers and PII.",
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
        "demographics, context, structure), feature names, or share:* (JSON list).",
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
        "weather at its location.")
    event_horizon_days: int = Field(
        default=14, ge=1, description="How far ahead local events count as upcoming.")
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
    api_host: str = Field(default="127.0.0.1", description="Address the API binds to.")
    api_port: int = Field(default=8000, description="Port the API listens on.")
    api_key_cache_seconds: float = Field(
        default=30.0, ge=0.0,
        description="How long the API trusts a resolved API key before asking Neo4j again; a "
        "revoked key keeps working in a running API for at most this long (0: no cache).",
    )

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

    @property
    def demo_mode(self) -> bool:
        """True while identifiers are pseudonymized with the built-in, public demo key: such a
        graph holds nothing worth protecting, so the documented demo API key may exist."""
        default = Settings.model_fields["pseudonym_key"].default
        return bool(self.pseudonym_key.get_secret_value() == default.get_secret_value())
