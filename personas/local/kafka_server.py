"""Provision, start and stop a local single-node Kafka (KRaft) from Maven Central jars.

Like the local Neo4j (``neo4j_server``): Maven resolves the broker and its logging into a cache
folder outside the repo (once); each named instance has its own ``server.properties``, data,
PID file and log file; the storage is formatted once; the JVM starts detached and we wait until
the broker answers a metadata request. With ``PERSONAS_KAFKA_BOOTSTRAP`` set, the named broker is
only checked, never provisioned.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from graph.errors import EnvironmentProblem
from graph.ingest.stream import broker_answers
from graph.settings import Settings
from personas.local.neo4j_server import fetch_with_maven, require_java

log = logging.getLogger(__name__)

POM_FILE = Path(__file__).with_name("kafka-pom.xml")
# Kafka 4.x brings slf4j-api 1.7 and no logging implementation: log4j2 behind the SLF4J 2
# binding, whose API callers written for 1.7 use unchanged.
LOG4J_VERSION = "2.25.3"
SLF4J_VERSION = "2.0.17"
BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
JVM_FLAGS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = warn
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
"""

@dataclass(frozen=True)
class KafkaStatus:
    running: bool
    pid: int | None
    answering: bool
    bootstrap: str
    home: Path


def lib_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"kafka-{settings.kafka_version}" / "lib"


def install(settings: Settings, echo: Callable[[str], None] = log.info) -> Path:
    """Resolve the Kafka jars into the cache once; later calls return the cached folder."""
    target = lib_dir(settings)
    if (target / ".complete").exists():
        return target
    require_java(f"Kafka {settings.kafka_version}")
    pom = (POM_FILE.read_text().replace("@KAFKA_VERSION@", settings.kafka_version)
           .replace("@LOG4J_VERSION@", LOG4J_VERSION).replace("@SLF4J_VERSION@", SLF4J_VERSION))
    return fetch_with_maven(pom, target, f"Kafka {settings.kafka_version}", echo)


def server_properties(settings: Settings, home: Path) -> str:
    """A single node that is broker and KRaft controller at once, bound to 127.0.0.1 only."""
    broker, controller = settings.kafka_port, settings.kafka_controller_port
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller}",
        f"listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={home / 'data'}",
        f"num.partitions={settings.kafka_partitions}",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # A week of events at most, so that a long-lived local broker does not fill the disk.
        "log.retention.hours=168",
    ]
    return "\n".join(lines) + "\n"


def _pid_file(settings: Settings) -> Path:
    return settings.kafka_instance_dir / "run" / "kafka.pid"


def _log_file(settings: Settings) -> Path:
    return settings.kafka_instance_dir / "logs" / "kafka.log"


def _java_cmd(settings: Settings, main: str, *args: str, heap: str = "256m") -> list[str]:
    conf = settings.kafka_instance_dir / "conf"
    return [require_java(f"Kafka {settings.kafka_version}"), f"-Xms{heap}", f"-Xmx{heap}",
            *JVM_FLAGS, f"-Dlog4j2.configurationFile={conf / 'log4j2.properties'}",
            "-cp", f"{lib_dir(settings)}/*", main, *args]


def configure(settings: Settings) -> Path:
    """Write the instance's folders and configuration; format the storage on first use."""
    home = settings.kafka_instance_dir
    for sub in ("conf", "data", "logs", "run"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    props = home / "conf" / "server.properties"
    props.write_text(server_properties(settings, home))
    (home / "conf" / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
    if not (home / "data" / "meta.properties").exists():
        cluster_id = _cluster_id()
        proc = subprocess.run(
            _java_cmd(settings, STORAGE_TOOL, "format", "-t", cluster_id, "-c", str(props),
                      "--ignore-formatted"),
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise EnvironmentProblem(
                "Formatting the Kafka storage failed:\n" + (proc.stdout + proc.stderr)[-3000:])
    return home


def _cluster_id() -> str:
    """A random cluster id as Kafka writes them (URL-safe base64 of a UUID, no padding);
    the same as `kafka-storage random-uuid`, without starting a JVM for it."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _is_broker(pid: int) -> bool:
    """Whether ``pid`` is a live Kafka JVM (a PID file may name a reused, unrelated pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True  # no /proc (not Linux): trust the live pid
    return BROKER_MAIN.encode() in cmdline.split(b"\0")


def _pid(settings: Settings) -> int | None:
    try:
        pid = int(_pid_file(settings).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _is_broker(pid) else None


def status(settings: Settings) -> KafkaStatus:
    pid = _pid(settings) if settings.kafka_provisions_locally else None
    return KafkaStatus(
        running=pid is not None or not settings.kafka_provisions_locally,
        pid=pid,
        answering=broker_answers(settings.kafka_bootstrap_servers),
        bootstrap=settings.kafka_bootstrap_servers,
        home=settings.kafka_instance_dir,
    )


def wait_until_answering(settings: Settings, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker_answers(settings.kafka_bootstrap_servers, timeout_s=2.0):
            return
        if settings.kafka_provisions_locally and _pid(settings) is None:
            break
        time.sleep(0.5)
    log_file = _log_file(settings)
    tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else "(no log)"
    raise EnvironmentProblem(
        f"Kafka did not answer at {settings.kafka_bootstrap_servers} within {timeout_s:.0f}s. "
        f"Log tail ({log_file}):\n{tail}"
    )


def start(settings: Settings, echo: Callable[[str], None] = log.info) -> KafkaStatus:
    """Start the local broker (or reuse a running one) and wait until it answers.

    With ``PERSONAS_KAFKA_BOOTSTRAP`` set, the named broker is only checked, never provisioned.
    """
    if not settings.kafka_provisions_locally:
        wait_until_answering(settings, timeout_s=30)
        return status(settings)
    if _pid(settings) is not None:
        echo("Kafka is already running; reusing it.")
        wait_until_answering(settings)
        return status(settings)
    install(settings, echo)
    home = configure(settings)
    _pid_file(settings).unlink(missing_ok=True)  # stale: it names no live broker
    log_file = _log_file(settings)
    if log_file.exists():
        log_file.replace(log_file.with_suffix(".log.1"))
    echo(f"Starting Kafka {settings.kafka_version} on {settings.kafka_bootstrap_servers} ...")
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            _java_cmd(settings, BROKER_MAIN, str(home / "conf" / "server.properties"),
                      heap=settings.kafka_heap),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=home,
            start_new_session=True,  # detached: outlives the command that started it
        )
    _pid_file(settings).write_text(f"{proc.pid}\n")
    try:
        wait_until_answering(settings)
    except EnvironmentProblem:
        if proc.poll() is None:
            _terminate(proc.pid, timeout_s=10)
        _pid_file(settings).unlink(missing_ok=True)
        raise
    return status(settings)


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM, wait up to ``timeout_s`` for a clean shutdown, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    log.warning("Kafka (pid %d) did not stop within %.0fs; killing it", pid, timeout_s)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _alive(pid):
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child (started by this process), so it does not linger a zombie.
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return _is_broker(pid)


def stop(settings: Settings, timeout_s: float = 30.0) -> bool:
    """Stop the local broker cleanly; returns whether one was running."""
    if not settings.kafka_provisions_locally:
        return False
    pid = _pid(settings)
    if pid is None:
        _pid_file(settings).unlink(missing_ok=True)
        return False
    _terminate(pid, timeout_s)
    _pid_file(settings).unlink(missing_ok=True)
    return True
