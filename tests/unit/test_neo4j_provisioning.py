from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from graph.errors import EnvironmentProblem
from graph.settings import Settings
from personas.local import neo4j_server


def test_missing_maven_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    fake_java = tmp_path / "java"
    fake_java.write_text('#!/bin/sh\necho \'openjdk version "17.0.15" 2025-04-15\' >&2\n')
    fake_java.chmod(fake_java.stat().st_mode | stat.S_IEXEC)
    settings = Settings(cache_dir=tmp_path / "cache")
    with pytest.raises(EnvironmentProblem, match=r"`mvn` was not found.*apt-get install maven"):
        neo4j_server.install(settings)


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    fake_java = tmp_path / "java"
    fake_java.write_text('#!/bin/sh\necho \'java version "1.8.0_381"\' >&2\n')
    fake_java.chmod(fake_java.stat().st_mode | stat.S_IEXEC)
    settings = Settings(cache_dir=tmp_path / "cache")
    with pytest.raises(EnvironmentProblem, match="needs Java 17 or newer; `java` here is Java 8"):
        neo4j_server.install(settings)


def test_missing_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentProblem, match="`java` was not found.*openjdk-17"):
        neo4j_server.install(Settings(cache_dir=tmp_path / "cache"))


def test_config_binds_loopback_only(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, neo4j_bolt_port=7999, neo4j_http_port=7998)
    text = neo4j_server._conf_text(settings, tmp_path)
    assert "server.default_listen_address=127.0.0.1" in text
    assert "server.bolt.listen_address=127.0.0.1:7999" in text
    assert "server.http.listen_address=127.0.0.1:7998" in text
    assert "server.https.enabled=false" in text


def test_cypher_settings_reach_both_servers(tmp_path: Path) -> None:
    """The local server's neo4j.conf and compose.yaml's Neo4j get the same planner settings (the
    Docker image maps NEO4J_a_b__c to a.b_c)."""
    text = neo4j_server._conf_text(Settings(cache_dir=tmp_path), tmp_path)
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "compose.yaml").read_text())
    environment = compose["services"]["neo4j"]["environment"]
    assert neo4j_server.CYPHER_SETTINGS
    for key, value in neo4j_server.CYPHER_SETTINGS.items():
        assert f"\n{key}={value}\n" in text
        docker_name = "NEO4J_" + key.replace("_", "__").replace(".", "_")
        assert environment[docker_name] == value


def test_cpu_seconds_are_the_running_instances_own(tmp_path: Path) -> None:
    """What the bulk import's restart phase adds to its CPU: the server's user and system
    seconds from /proc, 0 when no instance runs."""
    server = neo4j_server.Neo4jServer(Settings(cache_dir=tmp_path))
    assert server.cpu_seconds() == 0.0
    busy = subprocess.Popen(  # a process running as the server's main class says it is
        [sys.executable, "-c", "import sys, time\nt = time.process_time()\n"
         "while time.process_time() - t < 0.3: pass\nprint(flush=True)\ntime.sleep(30)",
         neo4j_server.Neo4jServer.main_class], stdout=subprocess.PIPE)
    try:
        assert busy.stdout is not None and busy.stdout.readline()  # its 0.3 CPU s spent
        server.pid_file.parent.mkdir(parents=True)
        server.pid_file.write_text(f"{busy.pid}\n")
        # /proc counts user and system time in whole clock ticks, each rounded down.
        tick = 1 / os.sysconf("SC_CLK_TCK")
        assert 0.3 - 2 * tick <= server.cpu_seconds() < 5.0
    finally:
        busy.kill()
        busy.wait()
    assert server.cpu_seconds() == 0.0
