"""A real single-node Kafka broker (KRaft) run from Kafka's jars, for machines without Docker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from deploy._process import (
    LOCALHOST,
    InfraError,
    Started,
    log_tail,
    open_log,
    pick_port,
    pid_runs,
    port_accepts,
    read_state,
    state_int,
    stop_group,
    write_state,
)

__all__ = [
    "KAFKA_VERSION",
    "InfraError",
    "Listener",
    "LocalKafka",
    "create_topics",
    "default_cache_dir",
    "ensure_kafka_jars",
    "start_kafka",
]

logger = logging.getLogger(__name__)

KAFKA_VERSION = "3.9.1"
SLF4J_VERSION = "1.7.36"
MIN_JAVA = 17
JAVA_MISSING = (
    "Java 17+ is required to run the local Kafka broker: "
    "install it (Debian: apt-get install openjdk-17-jre-headless)"
)
MAVEN_MISSING = (
    "Maven is required to fetch the local Kafka broker's jars: "
    "install it (Debian: apt-get install maven)"
)
_MARKER = ".complete"
_TOPIC_WAIT_S = 30
_T = TypeVar("_T")

# slf4j-simple writes to stderr without a config file; the kafka_2.13 POM carries no binding,
# and without one the broker's errors would vanish.
_POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.packages</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>{SLF4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

_JVM_FLAGS = (
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-Djava.awt.headless=true",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS",
)


def default_cache_dir() -> Path:
    """Return where Kafka's jars are cached: $PACKAGES_CACHE_DIR/kafka or <repo>/.cache/kafka."""
    root = os.environ.get("PACKAGES_CACHE_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / ".cache"
    return base / "kafka"


def _java_executable() -> str | None:
    """Find java the way Kafka's scripts do: $JAVA_HOME/bin/java, else PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _java_major(java: str) -> int | None:
    """Return the major version `java -version` reports, or None if it cannot be read."""
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        return None
    major = int(found.group(1))
    # Java 8 and older call themselves 1.x.
    return int(found.group(2) or 0) if major == 1 else major


def require_java() -> str:
    """Return the java executable, or raise InfraError if Java 17+ is missing."""
    java = _java_executable()
    if java is None:
        raise InfraError(JAVA_MISSING)
    major = _java_major(java)
    if major is None or major < MIN_JAVA:
        raise InfraError(f"{JAVA_MISSING} (found {java}, version {major or 'unknown'})")
    return java


def require_maven() -> str:
    """Return the mvn executable, or raise InfraError if Maven is missing."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError(MAVEN_MISSING)
    return mvn


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive file lock, so parallel test workers fetch the jars once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_kafka_jars(cache_dir: Path) -> Path:
    """Fetch Kafka's broker jars with Maven into cache_dir/libs (once) and return that dir."""
    require_java()
    cache_dir.mkdir(parents=True, exist_ok=True)
    libs = cache_dir / "libs"
    digest = hashlib.sha256(_POM.encode()).hexdigest()
    with _locked(cache_dir / ".lock"):
        marker = libs / _MARKER
        if marker.is_file() and marker.read_text().strip() == digest:
            return libs
        _fetch_jars(require_maven(), cache_dir, libs)
        marker.write_text(digest + "\n")
    return libs


def _fetch_jars(mvn: str, cache_dir: Path, libs: Path) -> None:
    """Run Maven on a tiny POM to copy kafka_2.13 and its runtime dependencies into libs."""
    pom = cache_dir / "pom.xml"
    pom.write_text(_POM)
    partial = cache_dir / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
    ]  # fmt: skip
    logger.info("fetching Kafka %s jars with Maven into %s", KAFKA_VERSION, libs)
    started = time.monotonic()
    done = subprocess.run(command, cwd=cache_dir, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise InfraError(f"Maven could not fetch Kafka's jars ({' '.join(command)}):\n{tail}")
    # Swap in the complete set only, so a failed fetch never leaves half a classpath.
    shutil.rmtree(libs, ignore_errors=True)
    partial.replace(libs)
    logger.info("fetched Kafka jars in %.1f s", time.monotonic() - started)


def _new_cluster_id() -> str:
    """Return a KRaft cluster id: URL-safe base64 of 16 random bytes without padding."""
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


@dataclass(frozen=True)
class Listener:
    """A listener beside PLAINTEXT, such as TLS with client certificates; names are upper case."""

    name: str
    protocol: Literal["SSL", "SASL_SSL", "SASL_PLAINTEXT"]
    port: int
    properties: Mapping[str, str] = field(default_factory=dict)  # under listener.name.<name>.

    @property
    def address(self) -> str:
        """Return "127.0.0.1:PORT"."""
        return f"{LOCALHOST}:{self.port}"


def _server_properties(
    log_dirs: Path,
    port: int,
    controller_port: int,
    extra: Sequence[Listener] = (),
    *,
    node_id: int = 1,
    voters: str | None = None,
    replicas: int = 1,
) -> str:
    """Return server.properties for one combined broker+controller node on 127.0.0.1.

    Alone (the default) it is its own quorum with one replica of everything; in a cluster,
    `voters` names every node's controller and `replicas` how many copies internal topics keep.
    """
    in_sync = str(max(1, replicas - 1))
    listeners = [f"PLAINTEXT://{LOCALHOST}:{port}", *(f"{x.name}://{x.address}" for x in extra)]
    protocols = [
        "PLAINTEXT:PLAINTEXT",
        "CONTROLLER:PLAINTEXT",
        *(f"{x.name}:{x.protocol}" for x in extra),
    ]
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"{node_id}@{LOCALHOST}:{controller_port}",
        "listeners": ",".join([*listeners, f"CONTROLLER://{LOCALHOST}:{controller_port}"]),
        "advertised.listeners": ",".join(listeners),
        "listener.security.protocol.map": ",".join(protocols),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dirs),
        # As many replicas as brokers (one alone): else groups and transactions never start.
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": in_sync,
        "transaction.state.log.num.partitions": "3",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": in_sync,
        "group.initial.rebalance.delay.ms": "0",
        # The default 128 MiB dedupe buffer does not fit a 512 MiB heap.
        "log.cleaner.dedupe.buffer.size": "2097152",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        # Topics are created on purpose (create_topics), as in production.
        "auto.create.topics.enable": "false",
    }
    for x in extra:
        prefix = f"listener.name.{x.name.lower()}."
        settings.update({prefix + key: value for key, value in x.properties.items()})
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _run_async(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion on a private loop, callable even inside a running loop."""

    async def main() -> _T:
        return await make()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def _cluster_answers(bootstrap: str) -> bool:
    """Tell whether the broker answers a metadata request (what "ready" means for clients)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        cluster: dict[str, Any] = await asyncio.wait_for(admin.describe_cluster(), 10)
        return bool(cluster.get("brokers"))
    except Exception:  # noqa: BLE001 - any failure just means "not ready yet"
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


class LocalKafka(Started):
    """A single-node KRaft broker in its own process group, restartable on the same ports."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        cache_dir: Path | None = None,
        listeners: Sequence[Listener] = (),
        node_id: int = 1,
        voters: str | None = None,
        replicas: int = 1,
        cluster_id: str | None = None,
    ) -> None:
        """Describe a broker keeping its data in data_dir; nothing starts yet.

        Alone by default; a node of a cluster (deploy.kafka_cluster) is given its id, the
        quorum's voters, the replicas of internal topics and the cluster's id.
        """
        self.data_dir = data_dir.resolve()
        self.port = port
        self.listeners = tuple(listeners)
        self.controller_port = controller_port
        self.node_id = node_id
        self._voters = voters
        self._replicas = replicas
        self._cluster_id = cluster_id
        self._cache_dir = cache_dir or default_cache_dir()
        self._proc: subprocess.Popen[bytes] | None = None
        self._launched_at = 0.0

    @property
    def bootstrap_servers(self) -> str:
        """Return "127.0.0.1:PORT" of the PLAINTEXT listener."""
        if self.port is None:
            raise InfraError("the broker has not been started yet, so it has no port")
        return f"{LOCALHOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        """Return the broker's stdout/stderr log."""
        return self.data_dir / "kafka.log"

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def _properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "state.json"

    def start(self, timeout: float = 90.0, *, wait: bool = True) -> None:
        """Start the broker (formatting its storage the first time) and wait until it answers.

        `wait=False` only launches it: a cluster's first node cannot answer before a majority
        of its quorum runs, so the cluster launches every node, then waits (`wait_ready`).
        """
        if self._proc is not None and self._proc.poll() is None:
            return  # started by this handle and still up; a leftover is replaced below
        libs = ensure_kafka_jars(self._cache_dir)
        java = require_java()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self._prepare_config()
        self._format_storage(java, libs)
        self._launched_at = time.monotonic()
        self._launch(java, libs)
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until the launched broker answers a client's metadata request."""
        self._wait_ready(timeout)
        logger.info(
            "Kafka broker %d ready at %s in %.1f s",
            self.node_id,
            self.bootstrap_servers,
            time.monotonic() - self._launched_at,
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the broker: SIGTERM to its process group, then SIGKILL after timeout."""
        pid = self._pid()
        if pid is not None and (self._proc is not None or pid_runs(pid, str(self._properties))):
            stop_group(pid, signal.SIGTERM, timeout, self._proc)
            logger.info("Kafka broker %s stopped", self.data_dir)
        self._proc = None
        self._pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """Crash the broker (SIGKILL to its process group), as a fault test would."""
        pid = self._pid()
        if pid is not None and self.running:
            stop_group(pid, signal.SIGKILL, 10, self._proc)
        self._proc = None

    def restart(self, timeout: float = 90.0) -> None:
        """Stop the broker and start it again on the same ports and data."""
        self.stop()
        self.start(timeout)

    @property
    def running(self) -> bool:
        """Tell whether the broker process is alive."""
        if self._proc is not None:
            return self._proc.poll() is None
        pid = self._pid()
        return pid is not None and pid_runs(pid, str(self._properties))

    def _pid(self) -> int | None:
        """Return the broker's pid: our child's, else the one in the pid file."""
        if self._proc is not None:
            return self._proc.pid
        try:
            return int(self._pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _stop_leftover(self) -> None:
        """Stop a broker a crashed run left on this data dir; it would hold the log dir lock."""
        pid = self._pid()
        if pid is not None and pid_runs(pid, str(self._properties)):
            logger.warning("stopping a leftover Kafka broker (pid %d) on %s", pid, self.data_dir)
            stop_group(pid, signal.SIGTERM, 20)
        self._pid_file.unlink(missing_ok=True)

    def _prepare_config(self) -> None:
        """Choose ports and the cluster id (both kept in state.json) and write server.properties."""
        state = read_state(self._state_file)
        self.port = pick_port(self.port, state_int(state, "port"))
        self.controller_port = pick_port(self.controller_port, state_int(state, "controller_port"))
        if self.controller_port == self.port:
            raise InfraError(f"broker and controller ports must differ (both {self.port})")
        cluster_id = self._cluster_id or state.get("cluster_id")
        if not isinstance(cluster_id, str):
            cluster_id = _new_cluster_id()
        write_state(
            self._state_file,
            {"port": self.port, "controller_port": self.controller_port, "cluster_id": cluster_id},
        )
        self._properties.write_text(
            _server_properties(
                self.data_dir / "logs",
                self.port,
                self.controller_port,
                self.listeners,
                node_id=self.node_id,
                voters=self._voters,
                replicas=self._replicas,
            )
        )

    def _format_storage(self, java: str, libs: Path) -> None:
        """Format the KRaft log dir once; StorageTool exits its JVM, so it runs on its own."""
        if (self.data_dir / "logs" / "meta.properties").is_file():
            return
        cluster_id = str(read_state(self._state_file)["cluster_id"])
        command = [
            java, "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
            # `=`: an id may start with "-", which argparse would take for an option.
            f"--cluster-id={cluster_id}", "-c", str(self._properties), "--ignore-formatted",
        ]  # fmt: skip
        done = subprocess.run(
            command, cwd=self.data_dir, capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise InfraError(f"formatting Kafka storage in {self.data_dir} failed:\n{tail}")

    def _launch(self, java: str, libs: Path) -> None:
        """Start `kafka.Kafka server.properties` in a new session with output to kafka.log."""
        command = [java, *_JVM_FLAGS, "-cp", f"{libs}/*", "kafka.Kafka", str(self._properties)]
        log_fd = open_log(self.log_file, f"starting Kafka on port {self.port}")
        try:
            self._proc = subprocess.Popen(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the whole JVM tree
            )
        finally:
            os.close(log_fd)
        self._pid_file.write_text(f"{self._proc.pid}\n")

    def _wait_ready(self, timeout: float) -> None:
        """Wait until a client's metadata request is answered; fail fast if the JVM died."""
        deadline = time.monotonic() + timeout
        assert self._proc is not None
        assert self.port is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise InfraError(
                    f"the Kafka broker exited with code {code} while starting; "
                    f"log tail ({self.log_file}):\n{log_tail(self.log_file)}"
                )
            # Probe the port first: the admin client logs errors for every refused connection.
            if port_accepts(self.port) and _run_async(
                lambda: _cluster_answers(self.bootstrap_servers)
            ):
                return
            time.sleep(0.25)
        self.stop()
        raise InfraError(
            f"the Kafka broker did not answer within {timeout:.0f} s; "
            f"log tail ({self.log_file}):\n{log_tail(self.log_file)}"
        )


def start_kafka(
    data_dir: Path,
    port: int | None = None,
    controller_port: int | None = None,
    cache_dir: Path | None = None,
) -> LocalKafka:
    """Start a local broker keeping its data in data_dir and return its handle."""
    broker = LocalKafka(data_dir, port=port, controller_port=controller_port, cache_dir=cache_dir)
    broker.start()
    return broker


async def create_topics(bootstrap: str, topics: Mapping[str, int]) -> None:
    """Create topics with the given partition counts (one replica); existing ones are kept."""
    if not topics:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        new = [NewTopic(name, partitions, 1) for name, partitions in topics.items()]
        response = await admin.create_topics(new, timeout_ms=int(_TOPIC_WAIT_S * 1000))
        _raise_topic_errors(response.topic_errors)
        try:
            async with asyncio.timeout(_TOPIC_WAIT_S):
                await _wait_for_leaders(admin, list(topics))
        except TimeoutError as error:
            raise InfraError(
                f"topics {list(topics)} have no leaders after {_TOPIC_WAIT_S} s"
            ) from error
    finally:
        await admin.close()


def _raise_topic_errors(topic_errors: list[tuple[Any, ...]]) -> None:
    """Raise for any per-topic error of a CreateTopics response except "already exists"."""
    failures = []
    for entry in topic_errors:
        name, code = entry[0], entry[1]
        if code == 0:
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:
            continue
        message = entry[2] if len(entry) > 2 else ""
        failures.append(f"{name}: {error.__name__} {message or ''}".strip())
    if failures:
        raise InfraError("could not create topics: " + "; ".join(failures))


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Wait until every partition of the topics has a leader, so producers do not race them."""
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(names)
        if len(described) == len(names) and all(_topic_ready(topic) for topic in described):
            return
        await asyncio.sleep(0.1)


def _topic_ready(topic: dict[str, Any]) -> bool:
    """Tell whether a described topic exists and all its partitions have a leader."""
    partitions: list[dict[str, Any]] = topic.get("partitions", [])
    return (
        topic.get("error_code") == 0
        and bool(partitions)
        and all(p.get("error_code") == 0 and p.get("leader", -1) >= 0 for p in partitions)
    )
