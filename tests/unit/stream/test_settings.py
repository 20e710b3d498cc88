from __future__ import annotations

import pytest
from pydantic import ValidationError

from rationanomaly.stream.records import JudgeMode
from rationanomaly.stream.settings import DetectorSettings, KafkaSettings, librdkafka_config, load_settings


def test_file_then_environment_then_flags(tmp_path, monkeypatch):
    config = tmp_path / "detector.yaml"
    config.write_text(
        "kafka:\n  bootstrap_servers: file:9092\n  group_id: from-file\n"
        "input:\n  topic: file-topic\njudging:\n  mode: window\n"
    )
    monkeypatch.setenv("RATIONANOMALY_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("RATIONANOMALY_INPUT__TOPIC", "env-topic")
    settings = load_settings(config, input={"topic": "flag-topic"})
    assert settings.kafka.bootstrap_servers == "env:9092"  # environment beats the file
    assert settings.kafka.group_id == "from-file"  # the file fills what nothing else sets
    assert settings.input.topic == "flag-topic"  # flags beat everything
    assert settings.judging.mode is JudgeMode.WINDOW


def test_unknown_keys_are_rejected_not_ignored(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("kafka:\n  bootstrap_server: typo:9092\n")
    with pytest.raises(ValidationError, match="bootstrap_server"):
        load_settings(config)


def test_settings_are_frozen():
    settings = DetectorSettings()
    with pytest.raises(ValidationError):
        settings.input.topic = "other"  # type: ignore[misc]


def test_cross_field_rules_say_how_to_fix():
    with pytest.raises(ValidationError, match="queue_low"):
        load_settings(None, judging={"queue_max": 10, "queue_low": 10})
    with pytest.raises(ValidationError, match="SASL_USERNAME"):
        KafkaSettings(sasl_mechanism="PLAIN")


def test_librdkafka_keys_and_secrets_pass_through():
    kafka = KafkaSettings(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="s3cret",
        ssl_ca_location="/etc/ca.pem",
        extra={"ssl.endpoint.identification.algorithm": "https"},
    )
    conf = librdkafka_config(kafka)
    assert conf == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert "s3cret" not in repr(kafka)  # the password is a SecretStr


def test_a_top_level_that_is_not_a_mapping_is_a_clear_error(tmp_path):
    config = tmp_path / "list.yaml"
    config.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping of sections"):
        load_settings(config)


def test_the_decision_comes_from_environment_or_flags_and_is_checked(monkeypatch):
    monkeypatch.setenv("RATIONANOMALY_BACKEND__DECISION", "generate")
    assert load_settings(None).backend.decision == "generate"
    assert load_settings(None, backend={"decision": "rank"}).backend.decision == "rank"
    served = load_settings(None, backend={"decision": "rank", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"})
    assert (served.backend.kind, served.backend.decision) == ("openai", "rank")
    with pytest.raises(ValidationError, match="decision='rank'.*kind='vllm'"):
        load_settings(None, backend={"decision": "rank", "kind": "vllm", "device": "cuda"})


def test_drain3_is_capped_unless_told_otherwise(tmp_path, monkeypatch):
    from rationanomaly.stream.settings import DEFAULT_MAX_TEMPLATES

    assert DetectorSettings().parsing.max_clusters == DEFAULT_MAX_TEMPLATES
    monkeypatch.setenv("RATIONANOMALY_PARSING__SIM_TH", "0.5")
    settings = load_settings(None)
    assert (settings.parsing.sim_th, settings.parsing.max_clusters) == (0.5, DEFAULT_MAX_TEMPLATES)
    config = tmp_path / "unbounded.yaml"
    config.write_text("parsing:\n  max_clusters: null\n")
    assert load_settings(config).parsing.max_clusters is None  # the environment's sim_th does not undo it
    assert load_settings(config, parsing={"max_clusters": 64}).parsing.max_clusters == 64
