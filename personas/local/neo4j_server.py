"""The local Neo4j Community server, from Maven Central jars (``jvm.JvmService`` runs its life
cycle).

Maven resolves the server, its Bolt and HTTP modules and Neo4j Browser; the official launcher
(``org.neo4j.server.startup.Neo4jCommand``, what ``bin/neo4j`` runs) starts it as a daemon with
its own PID file and stops it.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from neo4j import GraphDatabase
from neo4j.exceptions import AuthError, DriverError, Neo4jError, ServiceUnavailable

from graph.errors import EnvironmentProblem
from graph.settings import Settings
from personas.local.jvm import Echo, JvmService

log = logging.getLogger(__name__)

# Neo4j Browser is released on its own cadence; 5.24.0 is the newest on Maven Central that the
# 5.26 LTS server serves at /browser/.
BROWSER_VERSION = "5.24.0"
LAUNCHER = "org.neo4j.server.startup.Neo4jCommand"
ADMIN = "org.neo4j.server.startup.Neo4jAdminCommand"
POM_FILE = Path(__file__).with_name("neo4j-pom.xml")
JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
    "-Dlog4j2.disable.jmx=true",
)
CYPHER_SETTINGS = {
    # Neo4j keys its plan cache on the size of list parameters rounded up to a power of ten, so
    # every `UNWIND $rows` statement is compiled again (0.2-2 s) for each new order of magnitude
    # of batch size. A stream's batches range from 1 to thousands of events; this keeps one plan
    # per statement (docs/performance.md). compose.yaml sets the same for the Docker image.
    "internal.cypher.use_parameter_size": "false",
}


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    answering: bool
    bolt_uri: str
    browser_url: str
    home: Path


def _conf_text(settings: Settings, home: Path) -> str:
    lines = [
        f"server.directories.data={home / 'data'}",
        f"server.directories.logs={home / 'logs'}",
        f"server.directories.run={home / 'run'}",
        f"server.directories.plugins={home / 'plugins'}",
        f"server.directories.import={home / 'import'}",
        "server.default_listen_address=127.0.0.1",
        f"server.bolt.listen_address=127.0.0.1:{settings.neo4j_bolt_port}",
        f"server.http.listen_address=127.0.0.1:{settings.neo4j_http_port}",
        "server.https.enabled=false",
        "dbms.security.auth_enabled=true",
        f"server.memory.heap.initial_size={settings.neo4j_heap}",
        f"server.memory.heap.max_size={settings.neo4j_heap}",
        f"server.memory.pagecache.size={settings.neo4j_pagecache}",
        "dbms.usage_report.enabled=false",
        # Transaction logs would otherwise keep growing through demo reloads and test wipes.
        "db.tx_log.rotation.retention_policy=2 files",
        *(f"{key}={value}" for key, value in CYPHER_SETTINGS.items()),
        *(f"server.jvm.additional={flag}" for flag in JVM_FLAGS),
    ]
    return "\n".join(lines) + "\n"


class Neo4jServer(JvmService):
    name = "Neo4j"
    cache_name = "neo4j"
    main_class = "org.neo4j.server.CommunityEntryPoint"  # a PID file may name a reused pid
    start_timeout_s = 180.0
    probe_timeout_s = 5.0

    @property
    def version(self) -> str:
        return self.settings.neo4j_version

    @property
    def provisions_locally(self) -> bool:
        return self.settings.provisions_locally

    @property
    def address(self) -> str:
        return self.settings.bolt_uri

    @property
    def home(self) -> Path:
        return self.settings.local_instance_dir

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / "neo4j.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "neo4j.log"

    def pom(self) -> str:
        return (POM_FILE.read_text().replace("@NEO4J_VERSION@", self.version)
                .replace("@BROWSER_VERSION@", BROWSER_VERSION))

    def _env(self) -> dict[str, str]:
        return {**os.environ, "NEO4J_HOME": str(self.home), "NEO4J_CONF": str(self.home / "conf")}

    def _run(self, main: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.java(), "-cp", f"{self.lib_dir}/*", main, *args],
                              env=self._env(), capture_output=True, text=True, check=False)

    def configure(self) -> Path:
        """Write the instance's folders and neo4j.conf; set the initial password on first use."""
        home = self.home
        for sub in ("conf", "data", "logs", "run", "plugins", "import"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "conf" / "neo4j.conf").write_text(_conf_text(self.settings, home))
        marker = home / "data" / ".password-set"
        if not marker.exists():
            proc = self._run(ADMIN, "dbms", "set-initial-password",
                             self.settings.neo4j_password.get_secret_value())
            if proc.returncode != 0:
                raise EnvironmentProblem(
                    "Setting the Neo4j password failed:\n" + proc.stderr[-2000:])
            marker.write_text("set\n")
        return home

    def answers(self) -> bool:
        settings = self.settings
        auth = (settings.neo4j_user, settings.neo4j_password.get_secret_value())
        try:
            with GraphDatabase.driver(settings.bolt_uri, auth=auth,
                                      connection_timeout=self.probe_timeout_s) as driver:
                # verify_connectivity fails at once on a closed port, where execute_query would
                # keep retrying for half a minute.
                driver.verify_connectivity()
                with driver.session(database=settings.neo4j_database) as session:
                    session.run("RETURN 1").consume()
            return True
        except AuthError as exc:
            raise EnvironmentProblem(
                f"Neo4j at {settings.bolt_uri} refused the configured credentials "
                f"({exc.message}). Set PERSONAS_NEO4J_PASSWORD to the password this instance "
                f"was created with, or remove {self.home} to start afresh."
            ) from exc
        except (ServiceUnavailable, Neo4jError, DriverError, OSError):
            # Not up yet, or its database still starting.
            return False

    def launch(self) -> None:
        proc = self._run(LAUNCHER, "start")  # daemonizes and writes the PID file itself
        if proc.returncode != 0:
            raise EnvironmentProblem(
                "Neo4j failed to start:\n" + (proc.stdout + proc.stderr)[-3000:])

    def shutdown(self) -> None:
        proc = self._run(LAUNCHER, "stop")
        if proc.returncode != 0:
            raise EnvironmentProblem(
                "Neo4j failed to stop:\n" + (proc.stdout + proc.stderr)[-3000:])

    def import_full(self, *args: str) -> str:
        """``neo4j-admin database import full ARGS`` on this instance (stopped), from the
        same jars; returns its report. The admin tool is in the community jars
        (``neo4j-import-tool``), so no distribution archive is needed."""
        proc = self._run(ADMIN, "database", "import", "full", *args)
        if proc.returncode != 0:
            raise EnvironmentProblem(
                "neo4j-admin database import failed:\n" + (proc.stdout + proc.stderr)[-4000:])
        return proc.stdout

    def status(self) -> ServerStatus:
        pid = self.pid() if self.provisions_locally else None
        return ServerStatus(
            running=pid is not None or not self.provisions_locally,
            pid=pid,
            answering=self.answers(),
            bolt_uri=self.settings.bolt_uri,
            browser_url=f"http://127.0.0.1:{self.settings.neo4j_http_port}/browser/",
            home=self.home,
        )


def install(settings: Settings, echo: Echo = log.info) -> Path:
    """Resolve the Neo4j jars into the cache once; later calls return the cached folder."""
    return Neo4jServer(settings).install(echo)


def status(settings: Settings) -> ServerStatus:
    return Neo4jServer(settings).status()


def start(settings: Settings, echo: Echo = log.info) -> ServerStatus:
    """Start the local server (or reuse a running one) and wait until it answers Cypher.

    With ``PERSONAS_NEO4J_URI`` set, the named server is only checked, never provisioned.
    """
    server = Neo4jServer(settings)
    server.start(echo)
    return server.status()


def stop(settings: Settings) -> bool:
    """Stop the local server cleanly; returns whether one was running."""
    return Neo4jServer(settings).stop()
