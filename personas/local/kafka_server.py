"""The local single-node Kafka (KRaft), from Maven Central jars (``jvm.JvmService`` runs its
life cycle).

Maven resolves the broker and its logging; the storage is formatted once per instance; the JVM
starts detached with our PID file, and stops on SIGTERM (SIGKILL if it does not in time). With
``PERSONAS_KAFKA_BOOTSTRAP`` set, the named broker is only checked, never provisioned.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from graph.errors import EnvironmentProblem
from graph.ingest.stream import broker_answers
from graph.settings import Settings
from personas.local.jvm import Echo, JvmService

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


def _cluster_id() -> str:
    """A random cluster id as Kafka writes them (URL-safe base64 of a UUID, no padding);
    the same as `kafka-storage random-uuid`, without starting a JVM for it."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class KafkaBroker(JvmService):
    name = "Kafka"
    cache_name = "kafka"
    main_class = BROKER_MAIN  # a PID file may name a reused, unrelated pid

    @property
    def version(self) -> str:
        return self.settings.kafka_version

    @property
    def provisions_locally(self) -> bool:
        return self.settings.kafka_provisions_locally

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap_servers

    @property
    def home(self) -> Path:
        return self.settings.kafka_instance_dir

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "kafka.log"

    def pom(self) -> str:
        return (POM_FILE.read_text().replace("@KAFKA_VERSION@", self.version)
                .replace("@LOG4J_VERSION@", LOG4J_VERSION)
                .replace("@SLF4J_VERSION@", SLF4J_VERSION))

    def _java_cmd(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        conf = self.home / "conf"
        return [self.java(), f"-Xms{heap}", f"-Xmx{heap}", *JVM_FLAGS,
                f"-Dlog4j2.configurationFile={conf / 'log4j2.properties'}",
                "-cp", f"{self.lib_dir}/*", main, *args]

    def configure(self) -> Path:
        """Write the instance's folders and configuration; format the storage on first use."""
        home = self.home
        for sub in ("conf", "data", "logs", "run"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        props = home / "conf" / "server.properties"
        props.write_text(server_properties(self.settings, home))
        (home / "conf" / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        if not (home / "data" / "meta.properties").exists():
            proc = subprocess.run(
                self._java_cmd(STORAGE_TOOL, "format", "-t", _cluster_id(), "-c", str(props),
                               "--ignore-formatted"),
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                raise EnvironmentProblem(
                    "Formatting the Kafka storage failed:\n" + (proc.stdout + proc.stderr)[-3000:])
        return home

    def answers(self) -> bool:
        return broker_answers(self.address, timeout_s=self.probe_timeout_s)

    def launch(self) -> None:
        self.pid_file.unlink(missing_ok=True)  # stale: it names no live broker
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_suffix(".log.1"))
        with self.log_file.open("wb") as out:
            proc = subprocess.Popen(
                self._java_cmd(BROKER_MAIN, str(self.home / "conf" / "server.properties"),
                               heap=self.settings.kafka_heap),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.home,
                start_new_session=True,  # detached: outlives the command that started it
            )
        self.pid_file.write_text(f"{proc.pid}\n")

    def shutdown(self) -> None:
        pid = self.pid()
        if pid is not None:
            self.terminate(pid, timeout_s=30.0)

    def status(self) -> KafkaStatus:
        pid = self.pid() if self.provisions_locally else None
        return KafkaStatus(
            running=pid is not None or not self.provisions_locally,
            pid=pid,
            answering=self.answers(),
            bootstrap=self.address,
            home=self.home,
        )


def install(settings: Settings, echo: Echo = log.info) -> Path:
    """Resolve the Kafka jars into the cache once; later calls return the cached folder."""
    return KafkaBroker(settings).install(echo)


def status(settings: Settings) -> KafkaStatus:
    return KafkaBroker(settings).status()


def wait_until_answering(settings: Settings, timeout_s: float = 120.0) -> None:
    KafkaBroker(settings).wait_until_answering(timeout_s)


def start(settings: Settings, echo: Echo = log.info) -> KafkaStatus:
    """Start the local broker (or reuse a running one) and wait until it answers.

    With ``PERSONAS_KAFKA_BOOTSTRAP`` set, the named broker is only checked, never provisioned.
    """
    broker = KafkaBroker(settings)
    broker.start(echo)
    return broker.status()


def stop(settings: Settings) -> bool:
    """Stop the local broker cleanly; returns whether one was running."""
    return KafkaBroker(settings).stop()
