#!/usr/bin/env python3
"""A real single-node Apache Kafka 4.x broker (KRaft, combined roles) without Docker.

    python kafka/broker.py up     [--port 9092] [--controller-port N] [--timeout 120] [--json]
    python kafka/broker.py down   [--port 9092]
    python kafka/broker.py stop   [--port 9092]          # SIGTERM, data kept
    python kafka/broker.py start  [--port 9092]          # again on the kept data
    python kafka/broker.py restart [--port 9092] [--down-for S]
    python kafka/broker.py status [--port 9092] [--json]
    python kafka/broker.py libs   # only fetch the jars; prints their folder

Why a script and not a container: the machines this project is developed and tested on have no
Docker engine, but they reach Maven Central, which carries the broker's jars (kafka/pom.xml).

Where things live (none of it inside the repository):
- jars: $RATIONANOMALY_KAFKA_LIBS, default ${XDG_CACHE_HOME:-~/.cache}/rationanomaly/kafka-libs,
  fetched once with Maven and reused; refetched only when kafka/pom.xml changes.
- one broker's state: ${TMPDIR:-/tmp}/rationanomaly-kafka-<port>/ holding server.properties,
  broker.pid, broker.out (JVM stdout/stderr), logs/server.log and kraft/ (the log.dirs).
  `down` removes it, so every `up` starts from an empty cluster; `stop`, `start` and `restart`
  keep it (a broker outage and its recovery, for fault tests).

`up` returns only once the broker answers a metadata request from a real client
(confluent_kafka's AdminClient), not merely when its port accepts connections: the port opens
seconds before the broker is unfenced and able to create topics. Run it with the project's
virtual environment's python, which has confluent_kafka.

Exit codes: 0 ok; 1 failure (with the broker's log tail on stderr); 3 `status` says it is down.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from string import Template

KAFKA_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(KAFKA_DIR))  # run as a script or loaded by path: its sibling module either way
import secure_listener  # noqa: E402
POM = KAFKA_DIR / "pom.xml"
SERVER_TEMPLATE = KAFKA_DIR / "server.properties.template"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
HOST = "127.0.0.1"  # everywhere: "localhost" may resolve to ::1 first, where nothing listens
DEFAULT_PORT = 9092
STAMP = ".pom-sha256"


class BrokerError(RuntimeError):
    pass


# --------------------------------------------------------------------------- locations


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rationanomaly"


def libs_dir() -> Path:
    explicit = os.environ.get("RATIONANOMALY_KAFKA_LIBS")
    return Path(explicit) if explicit else cache_root() / "kafka-libs"


def data_dir(port: int) -> Path:
    return Path(os.environ.get("TMPDIR") or "/tmp") / f"rationanomaly-kafka-{port}"


# --------------------------------------------------------------------------- jars


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def _libs_ready(libs: Path) -> bool:
    stamp = libs / STAMP
    return stamp.is_file() and stamp.read_text().strip() == _pom_digest() and any(libs.glob("kafka_2.13-*.jar"))


def ensure_libs(verbose: bool = False) -> Path:
    """The broker's jars, fetched by Maven into the cache on first use (minutes), then reused."""
    libs = libs_dir()
    if _libs_ready(libs):
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    # A lock, because a `make kafka-up` and a test session may both find the cache empty; the
    # second waits and then finds the jars there.
    with open(libs.parent / f".{libs.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _libs_ready(libs):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is needed once to fetch the Kafka jars from Maven Central")
        staging = libs.parent / f"{libs.name}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        print(f"kafka: fetching broker jars into {libs} (first run only) ...", file=sys.stderr)
        started = time.monotonic()
        proc = subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
             f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise BrokerError(f"mvn dependency:copy-dependencies failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        (staging / STAMP).write_text(_pom_digest() + "\n")
        # Swap in whole, so no reader ever sees half a folder of jars.
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        if verbose:
            print(f"kafka: jars fetched in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return libs


# --------------------------------------------------------------------------- processes


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    java = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if java is None:
        raise BrokerError("java not found: Kafka 4.x needs Java 17 or newer")
    return java


def _jvm_args(state: Path, libs: Path) -> list[str]:
    return [
        _java(),
        "-Xmx512m",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Drationanomaly.kafka.logs={state / 'logs'}",
        "-cp",
        f"{libs}/*",  # the JVM expands this wildcard itself
    ]


def _alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _our_broker_pid(state: Path) -> int | None:
    """The pid in the state folder, if that process is still this folder's Kafka broker.

    The command line is checked so that a pid reused by an unrelated process after a crash is
    never signalled.
    """
    try:
        pid = int((state / "broker.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    props = str(state / "server.properties").encode()
    if b"kafka.Kafka" in cmdline and props in cmdline and _alive(pid):
        return pid
    return None


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def free_port(avoid: set[int] = frozenset()) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port


def metadata_ok(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """Whether a real client gets cluster metadata naming at least one broker."""
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError as exc:  # pragma: no cover - wrong interpreter
        raise BrokerError(f"confluent_kafka is not importable by {sys.executable}: run this with the venv's python") from exc
    quiet = logging.getLogger("rationanomaly.kafka.probe")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False  # refused connections while the broker starts are expected, not news
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": quiet, "socket.connection.setup.timeout.ms": 2000})
    try:
        md = admin.list_topics(timeout=timeout_s)
    except Exception:  # KafkaException while it is not ready
        return False
    return bool(md.brokers) and md.controller_id is not None and md.controller_id >= 0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(none)"


def _diagnostics(state: Path) -> str:
    return (f"--- {state / 'broker.out'} ---\n{_tail(state / 'broker.out')}\n"
            f"--- {state / 'logs' / 'server.log'} ---\n{_tail(state / 'logs' / 'server.log')}")


def _cluster_id() -> str:
    # Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding. Made here rather
    # than by `StorageTool random-uuid` to save a JVM start; Kafka itself avoids ids starting
    # with '-' because command lines mistake them for options.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _info(port: int, state: Path, pid: int | None, started: bool) -> dict:
    props = state / "server.properties"
    controller = None
    if props.exists():
        for line in props.read_text().splitlines():
            if line.startswith("controller.quorum.bootstrap.servers="):
                controller = int(line.rsplit(":", 1)[1])
    info = {"bootstrap": f"{HOST}:{port}", "port": port, "controller_port": controller,
            "data_dir": str(state), "pid": pid, "started": started}
    secure = secure_listener.read(state)
    if secure is not None:
        info.update({k: secure[k] for k in ("sasl_ssl_bootstrap", "mechanism", "ca_location", "users")})
    return info


def up(port: int, controller_port: int | None, timeout_s: float, secure: bool = False) -> dict:
    if port == 0:
        port = free_port()
    state = data_dir(port)
    bootstrap = f"{HOST}:{port}"

    running = _our_broker_pid(state)
    if running is not None:
        # Idempotent: a broker from an earlier `up` on this port is reused, once it answers.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if metadata_ok(bootstrap):
                return _info(port, state, running, started=False)
            time.sleep(0.5)
        raise BrokerError(f"a broker (pid {running}) runs on port {port} but does not answer metadata\n{_diagnostics(state)}")
    if _port_open(port):
        raise BrokerError(f"port {port} is taken by a process that is not a broker of this script; pick another (KAFKA_PORT=...)")

    libs = ensure_libs(verbose=True)
    if controller_port is None:
        controller_port = free_port(avoid={port})
    elif _port_open(controller_port):
        raise BrokerError(f"controller port {controller_port} is taken")

    # Whatever an earlier crashed run left is stale: a new cluster id needs empty log dirs.
    shutil.rmtree(state, ignore_errors=True)
    (state / "logs").mkdir(parents=True)
    props = state / "server.properties"
    text = Template(SERVER_TEMPLATE.read_text()).substitute(port=port, controller_port=controller_port,
                                                            log_dirs=state / "kraft")
    format_args: list[str] = []
    if secure:
        tls = secure_listener.prepare(state, HOST, free_port(avoid={port, controller_port}))
        text = secure_listener.properties(text, HOST, port, controller_port, tls)
        format_args = secure_listener.scram_format_args(tls)
    props.write_text(text)

    fmt = subprocess.run(
        [*_jvm_args(state, libs), "kafka.tools.StorageTool", "format", "--standalone", "-t", _cluster_id(), "-c", str(props), *format_args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if fmt.returncode != 0:
        shutil.rmtree(state, ignore_errors=True)
        raise BrokerError(f"StorageTool format failed (exit {fmt.returncode}):\n{fmt.stdout[-4000:]}")

    return _launch(port, state, libs, timeout_s, fresh=True)


def _launch(port: int, state: Path, libs: Path, timeout_s: float, *, fresh: bool) -> dict:
    """Start the JVM on a formatted state folder and wait until it answers metadata."""
    props = state / "server.properties"
    bootstrap = f"{HOST}:{port}"
    # Appended, so a restart keeps the log of the broker before it.
    with open(state / "broker.out", "ab") as out:
        # A session of its own, so a Ctrl-C aimed at make or pytest does not kill the broker
        # half-way; `down` stops it deliberately.
        proc = subprocess.Popen([*_jvm_args(state, libs), "kafka.Kafka", str(props)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=state)
    (state / "broker.pid").write_text(f"{proc.pid}\n")

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            diagnostics = _diagnostics(state)
            if fresh:
                shutil.rmtree(state, ignore_errors=True)
            raise BrokerError(f"the broker exited with {proc.returncode} while starting\n{diagnostics}")
        if _port_open(port) and metadata_ok(bootstrap, timeout_s=3.0):
            return _info(port, state, proc.pid, started=True)
        time.sleep(0.3)
    diagnostics = _diagnostics(state)
    if fresh:
        down(port)
    else:
        stop(port)
    raise BrokerError(f"the broker did not answer metadata within {timeout_s:.0f}s\n{diagnostics}")


def stop(port: int, grace_s: float = 30.0) -> bool:
    """Stop the broker on `port` (SIGTERM, then SIGKILL after `grace_s`) and keep its state, so
    `start` brings the same cluster back with its topics, offsets and records.

    Returns whether a running broker was found. Safe to call when nothing runs.
    """
    state = data_dir(port)
    pid = _our_broker_pid(state)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # a controlled shutdown: flushes and leaves the quorum
        deadline = time.monotonic() + grace_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
    return pid is not None


def start(port: int, timeout_s: float = 120.0) -> dict:
    """Start a stopped broker again on its kept state (same cluster id, topics and offsets)."""
    state = data_dir(port)
    if _our_broker_pid(state) is not None:
        raise BrokerError(f"the broker on port {port} is running; stop it first")
    if not (state / "server.properties").is_file() or not (state / "kraft" / "meta.properties").is_file():
        raise BrokerError(f"no kept broker state at {state}: start a new one with `up`")
    if _port_open(port):
        raise BrokerError(f"port {port} is taken by another process")
    return _launch(port, state, ensure_libs(), timeout_s, fresh=False)


def restart(port: int, down_s: float = 0.0, timeout_s: float = 120.0) -> dict:
    """`stop`, stay down for `down_s` seconds (an outage), then `start` on the same data."""
    if not stop(port):
        raise BrokerError(f"no broker of this script runs on port {port}")
    time.sleep(down_s)
    return start(port, timeout_s)


def down(port: int, grace_s: float = 30.0) -> bool:
    """Stop the broker on `port` and delete its state. Returns whether one was running."""
    stopped = stop(port, grace_s)
    shutil.rmtree(data_dir(port), ignore_errors=True)
    return stopped


def status(port: int) -> dict | None:
    state = data_dir(port)
    pid = _our_broker_pid(state)
    if pid is None or not metadata_ok(f"{HOST}:{port}", timeout_s=3.0):
        return None
    return _info(port, state, pid, started=False)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status", "stop", "start", "restart"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", DEFAULT_PORT)),
                         help="client port on 127.0.0.1 (default $KAFKA_PORT or 9092; 0 for a free one with `up`)")
        if name in ("up", "status"):
            cmd.add_argument("--json", action="store_true", help="print the broker's details as JSON")
        if name == "up":
            cmd.add_argument("--controller-port", type=int, default=None, help="default: a free port")
            cmd.add_argument("--secure", action="store_true",
                             help="add a SASL_SSL listener with SCRAM-SHA-512 users and ACLs (kafka/secure_listener.py)")
        if name in ("up", "start", "restart"):
            cmd.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for metadata")
        if name == "restart":
            cmd.add_argument("--down-for", type=float, default=0.0, help="seconds the broker stays down (an outage)")
    sub.add_parser("libs")
    args = parser.parse_args(argv)

    try:
        if args.command == "libs":
            print(ensure_libs(verbose=True))
            return 0
        if args.command == "up":
            started = time.monotonic()
            info = up(args.port, args.controller_port, args.timeout, secure=args.secure)
            if args.json:
                print(json.dumps(info))
            elif info["started"]:
                print(f"kafka: up at {info['bootstrap']} in {time.monotonic() - started:.1f}s (state {info['data_dir']})")
            else:
                print(f"kafka: already up at {info['bootstrap']}")
            return 0
        if args.command == "down":
            if down(args.port):
                print(f"kafka: stopped the broker on port {args.port}")
            return 0
        if args.command == "stop":
            if stop(args.port):
                print(f"kafka: stopped the broker on port {args.port}; its data is kept for `start`")
            return 0
        if args.command in ("start", "restart"):
            started = time.monotonic()
            info = start(args.port, args.timeout) if args.command == "start" else restart(args.port, args.down_for, args.timeout)
            print(f"kafka: up again at {info['bootstrap']} in {time.monotonic() - started:.1f}s on kept data")
            return 0
        info = status(args.port)
        if info is None:
            print(f"kafka: down on port {args.port}")
            return 3
        print(json.dumps(info) if args.json else f"kafka: up at {info['bootstrap']} (pid {info['pid']})")
        return 0
    except BrokerError as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
