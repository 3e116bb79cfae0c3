"""The life cycle every local JVM service shares (Neo4j, Kafka), written once.

There is no Docker engine on our machines, so the project installs these servers itself: Maven
resolves a service's jars into a cache folder outside the repo (once); each named instance has
its own folders, configuration, PID file and log file; ``start`` reuses a running instance or
launches one and waits until it answers; ``stop`` ends it. A PID file may outlive its process,
or name a process that died unreaped (a zombie, where PID 1 does not reap orphans) or a reused,
unrelated pid: none of those counts as running. With a remote address configured, the service
is only checked, never provisioned.

A service subclasses :class:`JvmService` and fills in only what differs: its jars (a pom), its
configuration, how it is launched and stopped, and how to ask it whether it answers.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from graph.errors import EnvironmentProblem
from graph.settings import Settings

log = logging.getLogger(__name__)

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"
INSTALL_HELP = {
    "java": "Install a JDK 17 or newer, e.g. `apt-get install openjdk-17-jdk-headless`.",
    "mvn": "Install Apache Maven, e.g. `apt-get install maven`.",
}
Echo = Callable[[str], None]


def require_tool(name: str) -> str:
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


def require_java(product: str) -> str:
    """The `java` binary, when it is Java 17 or newer; else a clear EnvironmentProblem."""
    java = require_tool("java")
    major = java_major_version(java)
    if major < 17:
        raise EnvironmentProblem(
            f"{product} needs Java 17 or newer; `java` here is Java {major}. "
            + INSTALL_HELP["java"]
        )
    return java


def fetch_with_maven(pom: str, target: Path, what: str, echo: Echo = log.info) -> Path:
    """Resolve the runtime dependencies of ``pom`` (a pom.xml text) into ``target`` once.

    The jars land in a staging folder that is renamed last, so an interrupted download never
    looks complete; a ``.complete`` marker makes later calls return at once.
    """
    if (target / ".complete").exists():
        return target
    mvn = require_tool("mvn")
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


def is_zombie(pid: int) -> bool:
    """Whether ``pid`` has died but not been reaped: still signalable, never answering."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (not Linux): trust the live pid
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def process_cpu_seconds(pid: int | None) -> float:
    """User and system CPU seconds process ``pid`` has used so far, from /proc (0 for no
    process, one that is gone, or without /proc). Per request or per phase it says what a
    process spends whatever else shares the cores, where wall time does not."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _signalable(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, if someone else's
    return True


class JvmService(ABC):
    """One local JVM service of one instance, as ``settings`` name it."""

    name: str
    """As messages say it: "Neo4j", "Kafka"."""
    cache_name: str
    """The cache folder of the jars is ``<cache_name>-<version>``."""
    main_class: str | None = None
    """When set, a process counts as the service only if its command line runs this class."""
    start_timeout_s = 120.0
    probe_timeout_s = 3.0
    """How long one ``answers`` probe may take."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- what each service says for itself ----------------------------------------------------

    @property
    @abstractmethod
    def version(self) -> str: ...

    @property
    @abstractmethod
    def provisions_locally(self) -> bool:
        """False when a remote address is configured: then nothing is installed or started."""

    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients reach it (for messages)."""

    @property
    @abstractmethod
    def home(self) -> Path:
        """The instance's folder."""

    @property
    @abstractmethod
    def pid_file(self) -> Path: ...

    @property
    @abstractmethod
    def log_file(self) -> Path: ...

    @abstractmethod
    def pom(self) -> str:
        """The pom.xml text whose runtime dependencies are the service's jars."""

    @abstractmethod
    def configure(self) -> Path:
        """Write the instance's folders and configuration (and any first-use set-up)."""

    @abstractmethod
    def answers(self) -> bool:
        """Whether the service answers a client now (within ``probe_timeout_s``)."""

    @abstractmethod
    def launch(self) -> None:
        """Start the configured instance in the background; it must outlive this process."""

    @abstractmethod
    def shutdown(self) -> None:
        """End the running instance, cleanly if it can."""

    # -- the shared life cycle ----------------------------------------------------------------

    @property
    def product(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def lib_dir(self) -> Path:
        return self.settings.cache_dir / f"{self.cache_name}-{self.version}" / "lib"

    def java(self) -> str:
        return require_java(self.product)

    def install(self, echo: Echo = log.info) -> Path:
        """Resolve the jars into the cache once; later calls return the cached folder."""
        if (self.lib_dir / ".complete").exists():
            return self.lib_dir
        self.java()  # before a download that could not run anyway
        return fetch_with_maven(self.pom(), self.lib_dir, self.product, echo)

    def pid(self) -> int | None:
        """The pid of the running instance, from its PID file; None when that names no live
        process of this service."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self.is_running(pid) else None

    def cpu_seconds(self) -> float:
        """User and system CPU seconds of the running instance so far, from /proc (0 when
        none runs, or without /proc)."""
        return process_cpu_seconds(self.pid())

    def is_running(self, pid: int) -> bool:
        if not _signalable(pid) or is_zombie(pid):
            return False
        if self.main_class is None:
            return True
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return True  # no /proc (not Linux): trust the live pid
        return self.main_class.encode() in cmdline.split(b"\0")

    def wait_until_answering(self, timeout_s: float | None = None) -> None:
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.answers():
                return
            if self.provisions_locally and self.pid() is None:
                break  # it died: no point waiting for it
            time.sleep(0.5)
        log_file = self.log_file
        tail = (log_file.read_text(errors="replace")[-3000:] if log_file.exists()
                else "(no log)")
        raise EnvironmentProblem(
            f"{self.name} did not answer at {self.address} within {timeout_s:.0f}s. "
            f"Log tail ({log_file}):\n{tail}"
        )

    def start(self, echo: Echo = log.info) -> None:
        """Start the instance (or reuse a running one) and wait until it answers."""
        if not self.provisions_locally:
            self.wait_until_answering(timeout_s=30)
            return
        if self.pid() is not None:
            echo(f"{self.name} is already running; reusing it.")
            self.wait_until_answering()
            return
        # A PID file left by a crash can name a zombie or a pid reused by another process:
        # the launcher would take either for a running instance and refuse to start.
        self.pid_file.unlink(missing_ok=True)
        self.install(echo)
        self.configure()
        echo(f"Starting {self.product} on {self.address} ...")
        self.launch()
        try:
            self.wait_until_answering()
        except EnvironmentProblem:
            if self.pid() is not None:  # started but never answered: do not leave it behind
                self.shutdown()
            self.pid_file.unlink(missing_ok=True)
            raise

    def stop(self) -> bool:
        """Stop the instance cleanly; returns whether one was running."""
        if not self.provisions_locally:
            return False
        if self.pid() is None:
            self.pid_file.unlink(missing_ok=True)  # stale: it names no live instance
            return False
        self.shutdown()
        self.pid_file.unlink(missing_ok=True)
        return True

    def terminate(self, pid: int, timeout_s: float) -> None:
        """SIGTERM, wait up to ``timeout_s`` for a clean shutdown, then SIGKILL."""
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._alive(pid):
                return
            time.sleep(0.2)
        log.warning("%s (pid %d) did not stop within %.0fs; killing it", self.name, pid,
                    timeout_s)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        while self._alive(pid):
            time.sleep(0.1)

    def _alive(self, pid: int) -> bool:
        try:
            # Reap it if it is our child (started by this process), so it does not linger a
            # zombie.
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return False
        except ChildProcessError:
            pass
        return self.is_running(pid)
