"""Session fixtures every test may use: a real Kafka broker, fresh topics, the shared data.

- `kafka_bootstrap` (session): "127.0.0.1:PORT" of a broker that answers metadata. With
  RATIONANOMALY_KAFKA_BOOTSTRAP set (as `make test` does) that broker is checked and used;
  otherwise a private broker is started on free ports with kafka/broker.py and stopped when the
  session ends, so `pytest tests/integration/...` works on its own.
- `kafka_admin` (session): an AdminClient on that broker.
- `new_topic` (function): a factory `new_topic(admin=None, partitions=1, config=None) -> str`
  creating a topic with a uuid name; the topics it made are deleted after the test. Each test
  its own topics and its own group ids (`new_group()`), so tests never see each other's records.
- `data_dir` (session): RATIONANOMALY_DATA_DIR, default <repo>/../shared/data. It fails, never
  skips, when the folder is missing: a test run without the data is a broken run.

`create_topic(admin, partitions=1, config=None)` and `new_group()` are plain functions too
(`from tests.conftest import create_topic`) for code that is not a fixture.

`LLAMA_SERVER_MARKS` marks a module that needs llama.cpp's server: skipped where llama_cpp is not
installed, except under `make test` (RATIONANOMALY_REQUIRE_SERVER=1), where a missing server is
an install step that failed and must fail the run, not vanish from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BROKER_SCRIPT = REPO / "kafka" / "broker.py"
BOOTSTRAP_ENV = "RATIONANOMALY_KAFKA_BOOTSTRAP"
DATA_ENV = "RATIONANOMALY_DATA_DIR"
# First use on a machine fetches the jars with Maven (minutes); after that a start is ~10 s.
BROKER_START_TIMEOUT_S = 600


def _metadata_ok(bootstrap: str, timeout_s: float = 10.0) -> bool:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        return bool(admin.list_topics(timeout=timeout_s).brokers)
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get(BOOTSTRAP_ENV)
    if given:
        if not _metadata_ok(given):
            pytest.fail(f"{BOOTSTRAP_ENV}={given} does not answer a metadata request (is the broker up? make kafka-up)")
        yield given
        return

    # A private broker on a free port: never the default 9092, which a developer's own
    # `make kafka-up` (or another session) may hold.
    proc = subprocess.run(
        [sys.executable, str(BROKER_SCRIPT), "up", "--port", "0", "--json"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BROKER_START_TIMEOUT_S,
    )
    if proc.returncode != 0:
        pytest.fail(f"could not start a Kafka broker:\n{proc.stderr[-6000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    try:
        yield info["bootstrap"]
    finally:
        subprocess.run([sys.executable, str(BROKER_SCRIPT), "down", "--port", str(info["port"])],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


REQUIRE_SERVER_ENV = "RATIONANOMALY_REQUIRE_SERVER"


def _llama_server_marks() -> list[pytest.MarkDecorator]:
    from rationanomaly.model.llama_server import INSTALL_HINT, llama_server_available

    marks = [pytest.mark.server]
    if not llama_server_available() and os.environ.get(REQUIRE_SERVER_ENV) != "1":
        marks.append(pytest.mark.skip(reason=f"llama_cpp is not importable: {INSTALL_HINT}"))
    return marks


LLAMA_SERVER_MARKS = _llama_server_marks()


def new_group(prefix: str = "g") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def create_topic(admin, partitions: int = 1, config: dict[str, str] | None = None, prefix: str = "t") -> str:
    """Create a uuid-named topic and wait until it exists; returns its name."""
    from confluent_kafka.admin import NewTopic

    name = f"{prefix}-{uuid.uuid4().hex}"
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=30,
    )
    futures[name].result(30)
    return name


@pytest.fixture
def new_topic(kafka_admin) -> Iterator[Callable[..., str]]:
    made: list[tuple[object, str]] = []

    def make(admin=None, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        admin = admin or kafka_admin
        name = create_topic(admin, partitions=partitions, config=config)
        made.append((admin, name))
        return name

    yield make
    # Best effort: a leftover topic costs a few files in a throwaway broker, nothing more.
    for admin, name in made:
        try:
            admin.delete_topics([name], operation_timeout=10)[name].result(15)
        except Exception:
            pass


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get(DATA_ENV) or REPO.parent / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}: set {DATA_ENV} or put shared/ beside the repository", pytrace=False)
    return path
