"""docker-compose.yml and the Dockerfile, checked without Docker (its engine is not on the
machines that run these tests): the services are wired to each other, the detector gets the
environment its settings read, and the compose broker has the settings of kafka/broker.py's."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

DETECTOR_ENV = {
    "RATIONANOMALY_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092",
    "RATIONANOMALY_INPUT__TOPIC": "logs",
    "RATIONANOMALY_OUTPUT__TOPIC": "verdicts",
    "RATIONANOMALY_BACKEND__KIND": "openai",
    "RATIONANOMALY_BACKEND__BASE_URL": "http://vllm:8000/v1",
    "RATIONANOMALY_BACKEND__MODEL": "rationanomaly",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the "KEY=value" list form is valid compose too
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _published(service: dict) -> dict[int, int]:
    """container port -> host port, from "HOST:CONTAINER" strings."""
    out = {}
    for spec in service.get("ports", []):
        host, container = str(spec).rsplit(":", 2)[-2:]
        out[int(container)] = int(host)
    return out


def _template_settings() -> dict[str, str]:
    text = (REPO / "kafka" / "server.properties.template").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_the_services(compose):
    # Monitoring beside the detector: tests/unit/test_deploy.py checks how it is wired.
    assert set(compose["services"]) == {"kafka", "topics", "vllm", "detector", "prometheus", "grafana"}


def test_kafka_is_the_release_the_tests_run(compose):
    image = compose["services"]["kafka"]["image"]
    repo, tag = image.split(":")
    assert repo == "apache/kafka" and tag.startswith("4.")
    pom = (REPO / "kafka" / "pom.xml").read_text()
    assert f"<kafka.version>{tag}</kafka.version>" in pom


def test_kafka_single_node_kraft_settings_match_the_local_broker(compose):
    env = _env(compose["services"]["kafka"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    # Every listener named has a protocol, and the controller's is among them.
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")}
    assert listeners <= set(protocols) and env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    # A cluster id Kafka accepts: the text form of 16 bytes, which must round-trip.
    cluster_id = env["CLUSTER_ID"]
    raw = base64.urlsafe_b64decode(cluster_id + "==")
    assert len(raw) == 16 and base64.urlsafe_b64encode(raw).decode().rstrip("=") == cluster_id

    # The settings the detector relies on, the same as kafka/broker.py gives the test broker.
    local = _template_settings()
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
        "group.initial.rebalance.delay.ms",
        "auto.create.topics.enable",
        "message.max.bytes",
        "replica.fetch.max.bytes",
    ):
        env_name = "KAFKA_" + key.upper().replace(".", "_")
        assert env.get(env_name) == local[key], f"{env_name} should be {local[key]} as in server.properties.template"
    assert int(local["message.max.bytes"]) >= 2 * 1024 * 1024  # a 1 MiB+ dead letter fits


def test_kafka_reachable_from_the_host(compose):
    kafka = compose["services"]["kafka"]
    env = _env(kafka)
    host_listener = next(a for a in env["KAFKA_ADVERTISED_LISTENERS"].split(",") if a.startswith("HOST://"))
    port = int(host_listener.rsplit(":", 1)[1])
    assert _published(kafka)[port] == port
    assert "healthcheck" in kafka


def test_vllm_serves_the_adapter_under_the_name_the_detector_asks_for(compose):
    vllm = compose["services"]["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    cmd = [str(part) for part in vllm["command"]]
    assert cmd[cmd.index("--model") + 1] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "--enable-lora" in cmd
    modules = dict(part.split("=", 1) for part in cmd[cmd.index("--lora-modules") + 1 :] if "=" in part)
    path = modules[DETECTOR_ENV["RATIONANOMALY_BACKEND__MODEL"]]
    # The adapter path inside the container is a mounted volume of the repository's adapter for
    # generation (a server decodes; the default adapter is tuned for the rank decision).
    mounts = {v.split(":")[1]: v.split(":")[0] for v in vllm["volumes"]}
    assert mounts[path] == "./model/adapters/rationanomaly-smollm2-generate"
    assert (REPO / mounts[path] / "adapter_model.safetensors").is_file()
    port = int(cmd[cmd.index("--port") + 1])
    assert urlparse(DETECTOR_ENV["RATIONANOMALY_BACKEND__BASE_URL"]).port == port
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "healthcheck" in vllm


def test_detector_environment_is_the_contract(compose):
    detector = compose["services"]["detector"]
    env = _env(detector)
    for key, value in DETECTOR_ENV.items():
        assert env.get(key) == value, key
    # Every name has the settings' shape, prefix and one "__" level; that each is a real setting
    # is checked against the settings model below (its sections forbid unknown fields).
    assert all(re.fullmatch(r"RATIONANOMALY_[A-Z]+__[A-Z_]+", key) for key in env), env
    # Service names in URLs are the compose services.
    assert urlparse(env["RATIONANOMALY_BACKEND__BASE_URL"]).hostname in compose["services"]
    assert env["RATIONANOMALY_KAFKA__BOOTSTRAP_SERVERS"].split(":")[0] in compose["services"]


def test_detector_settings_accept_the_compose_environment(compose, monkeypatch):
    """The lead's settings model reads exactly these names (prefix RATIONANOMALY_, "__" nesting)."""
    settings_module = pytest.importorskip("rationanomaly.stream.settings")
    for key in list(os.environ):
        if key.startswith("RATIONANOMALY_"):
            monkeypatch.delenv(key)
    env = _env(compose["services"]["detector"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = settings_module.load_settings(None)
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.input.topic == "logs"
    assert settings.output.topic == "verdicts"
    assert settings.backend.kind == "openai"
    assert settings.backend.base_url == "http://vllm:8000/v1"
    assert settings.backend.model == "rationanomaly"
    assert settings.metrics.port == 9108
    # replicas keep their state in Kafka, where any of them can restore any partition
    assert settings.state.store == "kafka" and "RATIONANOMALY_CHECKPOINT__DIR" not in env


def test_the_commented_rank_variant_is_served_and_is_valid_settings(compose, monkeypatch):
    """The detector's commented lines switch it to the rank decision: the name they ask for is
    served from the rank-tuned default adapter, and the settings model accepts them."""
    settings_module = pytest.importorskip("rationanomaly.stream.settings")
    commented = dict(re.findall(r"^\s*#\s*(RATIONANOMALY_[A-Z]+__[A-Z_]+):\s*(\S+)\s*$",
                                (REPO / "docker-compose.yml").read_text(), flags=re.MULTILINE))
    assert commented["RATIONANOMALY_BACKEND__DECISION"] == "rank"
    vllm = compose["services"]["vllm"]
    cmd = [str(part) for part in vllm["command"]]
    modules = dict(part.split("=", 1) for part in cmd[cmd.index("--lora-modules") + 1 :] if "=" in part)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in vllm["volumes"]}
    assert mounts[modules[commented["RATIONANOMALY_BACKEND__MODEL"]]] == "./model/adapters/rationanomaly-smollm2"
    for key in list(os.environ):
        if key.startswith("RATIONANOMALY_"):
            monkeypatch.delenv(key)
    for key, value in {**_env(compose["services"]["detector"]), **commented}.items():
        monkeypatch.setenv(key, value)
    backend = settings_module.load_settings(None).backend
    assert (backend.kind, backend.decision, backend.model, backend.adapter) == ("openai", "rank", "rationanomaly-rank", "default")


def test_detector_depends_on_healthy_services_and_publishes_metrics(compose):
    detector = compose["services"]["detector"]
    assert detector["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "topics": {"condition": "service_completed_successfully"},
        "vllm": {"condition": "service_healthy"},
    }
    assert 9108 in _published_ranges(detector)[9108]
    assert detector["build"]["context"] == "."
    assert (REPO / detector["build"].get("dockerfile", "Dockerfile")).is_file()


def _published_ranges(service: dict) -> dict[int, range]:
    """container port -> the host ports it may take ("9108-9117:9108": one per replica)."""
    out = {}
    for spec in service.get("ports", []):
        host, container = str(spec).rsplit(":", 2)[-2:]
        first, _, last = host.partition("-")
        out[int(container)] = range(int(first), int(last or first) + 1)
    return out


def test_detector_scales_out_against_one_vllm(compose):
    """`docker compose up --scale detector=3`: three replicas in one consumer group, one vLLM."""
    services = compose["services"]
    detector, vllm = services["detector"], services["vllm"]
    # a fixed container name or a single host port would refuse a second replica
    assert "container_name" not in detector
    assert len(_published_ranges(detector)[9108]) >= 3
    # no volume shared between replicas: their state is in Kafka (stream/README.md, "Deployment")
    assert not detector.get("volumes")
    env = _env(detector)
    assert "RATIONANOMALY_OUTPUT__TRANSACTIONAL_ID" not in env  # per replica: its host name (stream/app.py)
    # the input topic exists with room for the replicas before any of them starts
    cmd = [str(part) for part in services["topics"]["command"]]
    assert cmd[cmd.index("--topic") + 1] == env["RATIONANOMALY_INPUT__TOPIC"]
    assert int(cmd[cmd.index("--partitions") + 1]) >= 3 and "--if-not-exists" in cmd
    # one model server for all of them
    assert vllm.get("deploy", {}).get("replicas", 1) == 1
    assert env["RATIONANOMALY_BACKEND__BASE_URL"] == "http://vllm:8000/v1"


def test_dockerfile_builds_the_package_and_runs_the_detector():
    text = (REPO / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert any(re.fullmatch(r"RUN pip install \.( .*)?", line) for line in instructions)
    assert 'ENTRYPOINT ["rationanomaly", "run"]' in instructions
    assert "EXPOSE 9108" in instructions
    # Everything the wheel is built from is copied in (pyproject.toml names README.md too).
    copied = " ".join(line for line in instructions if line.startswith("COPY"))
    for part in ("pyproject.toml", "README.md", "cli", "stream", "model", "training"):
        assert part in copied, part
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
