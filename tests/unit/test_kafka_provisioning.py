"""The local Kafka's configuration and environment checks, and the consumer's message parsing
(no broker needed)."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from graph.errors import EnvironmentProblem, InvalidInput
from graph.events import Event
from graph.ingest import stream
from graph.ingest.replay import message_key
from graph.privacy import Pseudonymizer
from graph.settings import Settings
from personas.local import kafka_server

EVENT = {"event_id": "e-1", "type": "page_view", "occurred_at": "2026-11-01T10:00:00Z",
         "user": {"cookie": "ck-1", "email": "jane@example.com"}}


def fake_java(folder: Path, version_line: str) -> None:
    java = folder / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)


def test_properties_bind_loopback_only(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, kafka_port=9992, kafka_controller_port=9993,
                        kafka_partitions=4)
    text = kafka_server.server_properties(settings, tmp_path)
    lines = set(text.splitlines())
    assert "listeners=PLAINTEXT://127.0.0.1:9992,CONTROLLER://127.0.0.1:9993" in lines
    assert "advertised.listeners=PLAINTEXT://127.0.0.1:9992" in lines
    assert "controller.quorum.voters=1@127.0.0.1:9993" in lines
    assert "process.roles=broker,controller" in lines
    assert f"log.dirs={tmp_path / 'data'}" in lines
    assert "num.partitions=4" in lines
    assert "offsets.topic.replication.factor=1" in lines
    assert not any("0.0.0.0" in line for line in lines)


def test_missing_maven_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    fake_java(tmp_path, 'openjdk version "17.0.15" 2025-04-15')
    with pytest.raises(EnvironmentProblem, match=r"`mvn` was not found.*apt-get install maven"):
        kafka_server.install(Settings(cache_dir=tmp_path / "cache"))


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    fake_java(tmp_path, 'openjdk version "11.0.2" 2019-01-15')
    with pytest.raises(EnvironmentProblem,
                       match=r"Kafka 4\.1\.1 needs Java 17 or newer; `java` here is Java 11"):
        kafka_server.install(Settings(cache_dir=tmp_path / "cache"))


def test_missing_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentProblem, match="`java` was not found.*openjdk-17"):
        kafka_server.install(Settings(cache_dir=tmp_path / "cache"))


def test_stale_pid_file_names_no_broker(tmp_path: Path) -> None:
    """A PID file naming a dead process, or a live process that is not Kafka, is stale: status
    says not running, and stop never signals that process."""
    settings = Settings(cache_dir=tmp_path, kafka_port=9989)
    pid_file = settings.kafka_instance_dir / "run" / "kafka.pid"
    pid_file.parent.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file.write_text(f"{dead.pid}\n")
    assert kafka_server.status(settings).pid is None
    alive = subprocess.Popen(["sleep", "30"])
    try:
        pid_file.write_text(f"{alive.pid}\n")
        assert kafka_server.status(settings).running is False
        assert kafka_server.stop(settings) is False
        assert alive.poll() is None
    finally:
        alive.kill()
        alive.wait()


def test_external_bootstrap_provisions_nothing(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, kafka_bootstrap="127.0.0.1:1")
    assert not settings.kafka_provisions_locally
    assert kafka_server.stop(settings) is False
    with pytest.raises(EnvironmentProblem, match="did not answer at 127.0.0.1:1"):
        kafka_server.wait_until_answering(settings, timeout_s=1)
    assert not settings.kafka_instance_dir.exists()


def test_parse_message_codes() -> None:
    assert isinstance(stream.parse_message(json.dumps(EVENT).encode(), 0, 10_000), Event)
    cases = {
        b"{oops": ("malformed", "invalid JSON"),
        b"[1]": ("malformed", "not a JSON object"),
        b"\xff\xfe": ("malformed", "not UTF-8"),
        json.dumps({**EVENT, "occurred_at": "2026-11-01T10:00:00"}).encode():
            ("invalid", "occurred_at: time has no timezone offset"),
        json.dumps({k: v for k, v in EVENT.items() if k != "user"}).encode():
            ("invalid", "user: Field required"),
        b"x" * 2000: ("too_large", "over the limit of 1024"),
    }
    for value, (code, reason) in cases.items():
        result = stream.parse_message(value, 7, 1024)
        assert isinstance(result, stream.Rejected), value
        assert result.code == code and reason in result.reason, (value, result)
    empty = stream.parse_message(None, 0, 1024)
    assert isinstance(empty, stream.Rejected) and empty.code == "malformed"


@pytest.mark.parametrize("name", ["", "has space", "a/b", "..", "x" * 250, "naïve"])
def test_bad_topic_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="not a valid Kafka topic name"):
        stream.check_topic(name)


def test_message_key_is_pseudonymous() -> None:
    p = Pseudonymizer("k")
    key = message_key(json.dumps(EVENT).encode(), p, 10_000)
    assert key == p.user_id("email", "jane@example.com").encode()
    assert b"jane" not in (key or b"") and b"ck-1" not in (key or b"")
    assert message_key(b"{broken", p, 10_000) is None
    assert message_key(json.dumps({**EVENT, "type": "nope"}).encode(), p, 10_000) is None
