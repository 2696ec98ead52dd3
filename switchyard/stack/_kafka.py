"""Apache Kafka from Maven Central: jar cache, KRaft node configuration, readiness.

The jars are fetched once with Maven into ``<home>/kafka/<version>/lib`` and shared
by every stack on the machine. Each node is one ``kafka.Kafka`` JVM in combined
broker + controller mode on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka.errors import KafkaError

from core.errors import KafkaUnavailable
from core.kafka import make_admin
from core.settings import load_settings

from ._errors import StackError

__all__ = [
    "KafkaNode",
    "check_java",
    "cluster_brokers",
    "find_maven",
    "find_pom",
    "format_storage",
    "install_jars",
    "jars_installed",
    "kafka_version",
    "new_cluster_id",
    "node_argv",
    "write_log4j",
    "write_server_properties",
]

_REPO_POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
# Shipped inside the package for installs without the repository; a test keeps both equal.
_PACKAGED_POM = Path(__file__).resolve().parent / "_kafka_pom.xml"
_JAVA_MIN = 17


@dataclass(frozen=True, slots=True)
class KafkaNode:
    """Ports and paths of one combined broker + controller node."""

    index: int
    port: int
    controller_port: int
    directory: Path

    @property
    def node_id(self) -> int:
        return self.index + 1

    @property
    def properties(self) -> Path:
        return self.directory / "server.properties"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "kafka.log"


def find_pom() -> Path:
    """The pom that lists the Kafka jars: the repository's, else the packaged copy."""
    return _REPO_POM if _REPO_POM.is_file() else _PACKAGED_POM


def kafka_version(pom: Path) -> str:
    """The ``kafka.version`` property of the pom.

    Raises:
        StackError: when the pom has none.
    """
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if match is None:
        raise StackError(f"{pom} does not set <kafka.version>")
    return match.group(1).strip()


def check_java() -> str:
    """Path of a Java 17+ ``java`` on PATH.

    Raises:
        StackError: no java, or one older than 17.
    """
    java = shutil.which("java")
    if java is None:
        raise StackError(
            f"Java {_JAVA_MIN}+ not found on PATH (Kafka needs it): install a JDK/JRE {_JAVA_MIN}"
        )
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"cannot run {java} -version: {exc}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise StackError(f"cannot tell the version of {java}; Kafka needs Java {_JAVA_MIN}+")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" style
        major = int(match.group(2))
    if major < _JAVA_MIN:
        raise StackError(f"{java} is Java {major}; Kafka needs Java {_JAVA_MIN}+")
    return java


def jars_installed(lib: Path, version: str) -> bool:
    return (lib / f"kafka_2.13-{version}.jar").is_file()


def find_maven() -> str:
    """Path of ``mvn`` on PATH.

    Raises:
        StackError: Maven is not installed.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven (mvn) not found on PATH: it downloads the Kafka jars once; install Maven 3"
        )
    return mvn


def install_jars(pom: Path, lib: Path, version: str) -> None:
    """Download the runtime jars into ``lib`` with Maven (atomically: all or nothing).

    Concurrent installs are safe: each fills its own folder and the first rename wins.

    Raises:
        StackError: Maven is missing or cannot download the jars.
    """
    mvn = find_maven()
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = lib.parent / f"lib.partial-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    argv = [
        mvn, "-q", "-B", "-f", str(pom),
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    try:
        # Its own process group: a Ctrl-C at the terminal reaches switchyard, which stops
        # once this step ends, instead of killing the download half-way.
        out = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False, process_group=0)
        if out.returncode != 0 or not jars_installed(staging, version):
            raise StackError(f"mvn could not download the Kafka {version} jars: {_mvn_reason(out)}")
        try:
            staging.rename(lib)
        except OSError:
            if not jars_installed(lib, version):
                raise StackError(f"cannot move the Kafka jars into {lib}") from None
    except subprocess.TimeoutExpired:
        raise StackError(
            "mvn did not finish downloading the Kafka jars within 15 minutes"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _mvn_reason(out: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("[ERROR]") and len(line) > 8]
    picked = errors[0] if errors else (lines[-1] if lines else f"exit status {out.returncode}")
    return picked.removeprefix("[ERROR]").strip()[:300]


def new_cluster_id() -> str:
    """A fresh cluster id in Kafka's format (what ``StorageTool random-uuid`` prints).

    Generated here rather than by a JVM, which saves a Java start per ``up``.
    """
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):  # Kafka rejects ids that look like an option
            return value


def write_log4j(path: Path) -> None:
    path.write_text(
        "status = warn\n"
        "appender.console.type = Console\n"
        "appender.console.name = STDOUT\n"
        "appender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = WARN\n"
        "rootLogger.appenderRef.stdout.ref = STDOUT\n"
    )


def write_server_properties(node: KafkaNode, nodes: list[KafkaNode]) -> None:
    """Write one node's ``server.properties`` (KRaft, combined roles, static quorum)."""
    replicas = min(3, len(nodes))
    min_isr = 2 if replicas >= 3 else 1
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    lines = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": node.data,
        "num.partitions": 3,
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        # 50 offsets partitions (the default) make the first group join slow on a laptop.
        "offsets.topic.num.partitions": 12,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 12,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "share.coordinator.state.topic.num.partitions": 12,
        # Tests start many short-lived groups; waiting 3 s for more members only slows them.
        "group.initial.rebalance.delay.ms": 0,
        # Every topic is created on purpose (core.kafka.ensure_topics) with its partition count.
        "auto.create.topics.enable": "false",
    }
    node.directory.mkdir(parents=True, exist_ok=True)
    node.properties.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))


def _java_base(java: str, lib: Path, log4j: Path, heap: str) -> list[str]:
    return [
        java,
        f"-Xmx{heap}",
        "-Xms64m",
        # Serial GC: fewest threads, which matters with several JVMs on two cores.
        "-XX:+UseSerialGC",
        # C1 only: a local broker lives for minutes, and on a small machine the C2
        # compiler's threads cost more CPU than its faster code saves (fresh broker, same
        # bench run: 0.6 vs 1.0 ms of broker CPU per command with C2).
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{lib}/*",
    ]


def format_storage(java: str, lib: Path, log4j: Path, node: KafkaNode, cluster_id: str) -> None:
    """Format a node's log directory for ``cluster_id``.

    Raises:
        StackError: the storage tool failed.
    """
    argv = [
        *_java_base(java, lib, log4j, "256m"),
        # The tool runs for a second; the JIT's second tier would only cost CPU.
        "-XX:TieredStopAtLevel=1",
        "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(node.properties),
    ]  # fmt: skip
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, process_group=0)
    except subprocess.TimeoutExpired:
        raise StackError(f"formatting Kafka node {node.node_id} took over 120 s") from None
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise StackError(f"formatting Kafka node {node.node_id} failed: {tail[0][:300]}")


def node_argv(java: str, lib: Path, log4j: Path, node: KafkaNode, heap: str) -> list[str]:
    return [*_java_base(java, lib, log4j, heap), "kafka.Kafka", str(node.properties)]


async def cluster_brokers(bootstrap: str, within: float = 5.0) -> set[int]:
    """Node ids of the brokers the cluster reports as registered.

    Raises:
        KafkaUnavailable: no broker answered.
    """
    admin = make_admin(load_settings({}, kafka_bootstrap=bootstrap), request_timeout_ms=5_000)
    try:
        async with asyncio.timeout(within):
            await admin.start()
            described = await admin.describe_cluster()
    except (KafkaError, TimeoutError, OSError) as exc:
        raise KafkaUnavailable(f"stack probe: {type(exc).__name__}") from exc
    finally:
        await admin.close()
    return {int(broker["node_id"]) for broker in described["brokers"]}
