"""Outside demo mode the Neo4j password must be configured: the built-in one is for demos."""

from __future__ import annotations

import os
import subprocess

import pytest

from graph.errors import ConfigurationError
from graph.settings import DEMO_PSEUDONYM_KEY, Settings
from tests.helpers import PERSONAS


def test_a_real_key_needs_a_configured_password() -> None:
    with pytest.raises(ConfigurationError, match="PERSONAS_NEO4J_PASSWORD"):
        Settings(pseudonym_key="real-key").require_neo4j_password()
    with pytest.raises(ConfigurationError):
        Settings(pseudonym_key="real-key", neo4j_password="  ").require_neo4j_password()
    Settings(pseudonym_key="real-key", neo4j_password="s3cret").require_neo4j_password()


def test_demo_mode_may_use_the_built_in_password() -> None:
    Settings(pseudonym_key=DEMO_PSEUDONYM_KEY, demo=True).require_neo4j_password()


def test_serve_refuses_to_start_without_a_password() -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PERSONAS_") or k.startswith("PERSONAS_TEST_")}
    env["PERSONAS_PSEUDONYM_KEY"] = "real-key"
    proc = subprocess.run([PERSONAS, "serve", "--port", "1"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "PERSONAS_NEO4J_PASSWORD" in proc.stderr
