"""Provision, start and stop a local Neo4j Community server from Maven Central jars.

There is no Docker engine on our machines, so the project installs Neo4j itself: Maven resolves the
server, its Bolt and HTTP modules and Neo4j Browser into a cache folder outside the repo (once), and
the official launcher (``org.neo4j.server.startup.Neo4jCommand``, what ``bin/neo4j`` runs) starts it
as a daemon with its own PID file, which also copes with stale PID files.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neo4j import GraphDatabase
from neo4j.exceptions import AuthError, DriverError, Neo4jError, ServiceUnavailable

from graph.errors import EnvironmentProblem
from graph.settings import Settings

log = logging.getLogger(__name__)

# Neo4j Browser is released on its own cadence; 5.24.0 is the newest on Maven Central that the
# 5.26 LTS server serves at /browser/.
BROWSER_VERSION = "5.24.0"
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"
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
INSTALL_HELP = {
    "java": "Install a JDK 17 or newer, e.g. `apt-get install openjdk-17-jdk-headless`.",
    "mvn": "Install Apache Maven, e.g. `apt-get install maven`.",
}


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    answering: bool
    bolt_uri: str
    browser_url: str
    home: Path


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EnvironmentProblem(f"`{name}` was not found on PATH. {INSTALL_HELP[name]}")
    return path


def java_major_version(java: str) -> int:
    """The major version of the given `java` binary (e.g. 17)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise EnvironmentProblem(f"Could not read the Java version from `{java} -version`.")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _require_java(product: str = "Neo4j 5.26") -> str:
    java = _require_tool("java")
    major = java_major_version(java)
    if major < 17:
        raise EnvironmentProblem(
            f"{product} needs Java 17 or newer; `java` here is Java {major}. "
            + INSTALL_HELP["java"]
        )
    return java


def require_java(product: str) -> str:
    """The `java` binary, when it is Java 17 or newer; else a clear EnvironmentProblem."""
    return _require_java(product)


def lib_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"neo4j-{settings.neo4j_version}" / "lib"


def install(settings: Settings, echo: Callable[[str], None] = log.info) -> Path:
    """Resolve the Neo4j jars into the cache once; later calls return the cached folder."""
    target = lib_dir(settings)
    if (target / ".complete").exists():
        return target
    _require_java()
    pom = (POM_FILE.read_text().replace("@NEO4J_VERSION@", settings.neo4j_version)
           .replace("@BROWSER_VERSION@", BROWSER_VERSION))
    return fetch_with_maven(pom, target, f"Neo4j {settings.neo4j_version}", echo)


def fetch_with_maven(pom: str, target: Path, what: str,
                     echo: Callable[[str], None] = log.info) -> Path:
    """Resolve the runtime dependencies of ``pom`` (a pom.xml text) into ``target`` once.

    The jars land in a staging folder that is renamed last, so an interrupted download never
    looks complete; a ``.complete`` marker makes later calls return at once.
    """
    if (target / ".complete").exists():
        return target
    mvn = _require_tool("mvn")
    target.parent.mkdir(parents=True, exist_ok=True)
    echo(f"Fetching {what} from Maven Central into {target} (once)...")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        pom_file = Path(tmp) / "pom.xml"
        pom_file.write_text(pom)
        staging = Path(tmp) / "lib"
        proc = subprocess.run(
            [mvn, "-B", "-q", "-f", str(pom_file), MAVEN_DEPENDENCY_PLUGIN,
             f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise EnvironmentProblem(
                f"Maven could not fetch {what}:\n" + (proc.stdout + proc.stderr)[-3000:]
            )
        (staging / ".complete").write_text(what)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


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


def _env(settings: Settings) -> dict[str, str]:
    home = settings.local_instance_dir
    return {**os.environ, "NEO4J_HOME": str(home), "NEO4J_CONF": str(home / "conf")}


def _java_cmd(settings: Settings, main: str, *args: str) -> list[str]:
    return [_require_java(), "-cp", f"{lib_dir(settings)}/*", main, *args]


def configure(settings: Settings) -> Path:
    """Write the instance's folders and neo4j.conf; set the initial password on first use."""
    home = settings.local_instance_dir
    for sub in ("conf", "data", "logs", "run", "plugins", "import"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "conf" / "neo4j.conf").write_text(_conf_text(settings, home))
    marker = home / "data" / ".password-set"
    if not marker.exists():
        proc = subprocess.run(
            _java_cmd(settings, ADMIN, "dbms", "set-initial-password",
                      settings.neo4j_password.get_secret_value()),
            env=_env(settings), capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise EnvironmentProblem("Setting the Neo4j password failed:\n" + proc.stderr[-2000:])
        marker.write_text("set\n")
    return home


def _pid(settings: Settings) -> int | None:
    pid_file = settings.local_instance_dir / "run" / "neo4j.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return None if _zombie(pid) else pid


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has died but not been reaped: still signalable, never answering. A
    server killed with SIGKILL stays so where PID 1 does not reap orphans (some containers),
    and was taken for a running one that a restart would wait for in vain."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (not Linux): trust the live pid
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _answers(settings: Settings) -> bool:
    auth = (settings.neo4j_user, settings.neo4j_password.get_secret_value())
    try:
        with GraphDatabase.driver(settings.bolt_uri, auth=auth,
                                  connection_timeout=5.0) as driver:
            # verify_connectivity fails at once on a closed port, where execute_query would
            # keep retrying for half a minute.
            driver.verify_connectivity()
            with driver.session(database=settings.neo4j_database) as session:
                session.run("RETURN 1").consume()
        return True
    except AuthError as exc:
        raise EnvironmentProblem(
            f"Neo4j at {settings.bolt_uri} refused the configured credentials ({exc.message}). "
            "Set PERSONAS_NEO4J_PASSWORD to the password this instance was created with, "
            f"or remove {settings.local_instance_dir} to start afresh."
        ) from exc
    except (ServiceUnavailable, Neo4jError, DriverError, OSError):
        # Not up yet, or its database still starting.
        return False


def status(settings: Settings) -> ServerStatus:
    pid = _pid(settings) if settings.provisions_locally else None
    return ServerStatus(
        running=pid is not None or not settings.provisions_locally,
        pid=pid,
        answering=_answers(settings),
        bolt_uri=settings.bolt_uri,
        browser_url=f"http://127.0.0.1:{settings.neo4j_http_port}/browser/",
        home=settings.local_instance_dir,
    )


def wait_until_answering(settings: Settings, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _answers(settings):
            return
        if settings.provisions_locally and _pid(settings) is None:
            break
        time.sleep(0.5)
    log_file = settings.local_instance_dir / "logs" / "neo4j.log"
    tail = log_file.read_text()[-3000:] if log_file.exists() else "(no log)"
    raise EnvironmentProblem(
        f"Neo4j did not answer at {settings.bolt_uri} within {timeout_s:.0f}s. Log tail:\n{tail}"
    )


def start(settings: Settings, echo: Callable[[str], None] = log.info) -> ServerStatus:
    """Start the local server (or reuse a running one) and wait until it answers Cypher.

    With ``PERSONAS_NEO4J_URI`` set, the named server is only checked, never provisioned.
    """
    if not settings.provisions_locally:
        wait_until_answering(settings, timeout_s=30)
        return status(settings)
    if _pid(settings) is not None:
        echo("Neo4j is already running; reusing it.")
        wait_until_answering(settings)
        return status(settings)
    install(settings, echo)
    configure(settings)
    echo(f"Starting Neo4j {settings.neo4j_version} on {settings.bolt_uri} ...")
    proc = subprocess.run(
        _java_cmd(settings, LAUNCHER, "start"),
        env=_env(settings), capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise EnvironmentProblem("Neo4j failed to start:\n" + (proc.stdout + proc.stderr)[-3000:])
    wait_until_answering(settings)
    return status(settings)


def stop(settings: Settings) -> bool:
    """Stop the local server cleanly; returns whether one was running."""
    if not settings.provisions_locally or _pid(settings) is None:
        return False
    proc = subprocess.run(
        _java_cmd(settings, LAUNCHER, "stop"),
        env=_env(settings), capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise EnvironmentProblem("Neo4j failed to stop:\n" + (proc.stdout + proc.stderr)[-3000:])
    return True
