"""What a SOC gets from a live detector on the real broker, with the real model: an alert-only
OCSF topic for the SIEM beside the full verdict stream for analysts, every offset committed
whatever was filtered, and a /metrics endpoint that exports every series the shipped Grafana
dashboard and Prometheus alert rules query."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

import orjson
import pytest

from rationanomaly.stream.app import Detector, RunLimits
from tests.integration.detector_support import (
    committed_offset,
    create_topics,
    file_values,
    produce_lines,
    read_topic,
    unique,
)
from tests.integration.test_detector_e2e import detector_settings
from tests.unit.test_deploy import (
    PROMETHEUS_SERIES,
    TARGET_LABELS,
    all_queries,
    dashboard_variable_queries,
    exported_series,
    label_names,
    metric_names,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAD_LINES = [b"", b"\xff\xfe not utf-8"]  # dead letters: empty, invalid UTF-8


@dataclass
class Run:
    lines: int
    alerts: list  # Kafka messages on the output topic
    full: list[dict]  # native verdicts on the full topic
    dead_letters: list
    committed: int
    scraped: str


def _sample(scraped: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in scraped.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def run(kafka_bootstrap, data_dir, real_backend, backend_settings, tmp_path_factory) -> Run:
    logs, alerts, full, dlq = unique("soc-logs"), unique("soc-alerts"), unique("soc-all"), unique("soc-dlq")
    create_topics(kafka_bootstrap, logs, alerts, full, dlq)
    values = file_values(data_dir / "raw" / "loghub_2k" / "HDFS_2k.log")[:1000] + BAD_LINES
    produce_lines(kafka_bootstrap, logs, values)
    settings = detector_settings(
        kafka_bootstrap, logs, alerts, dlq, tmp_path_factory.mktemp("soc"),
        output={"format": "ocsf", "publish": "abnormal", "publish_unknown": False, "full_topic": full},
        backend=backend_settings.model_dump(),
    )
    detector = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=600), backend=real_backend)
    port = detector.serve_metrics(0, addr="127.0.0.1")
    assert detector.run() == 0
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    judged = int(_sample(scraped, "rationanomaly_verdicts_total"))
    return Run(
        lines=len(values),
        alerts=read_topic(kafka_bootstrap, alerts),
        full=[orjson.loads(m.value()) for m in read_topic(kafka_bootstrap, full, expected=judged)],
        dead_letters=read_topic(kafka_bootstrap, dlq, expected=len(BAD_LINES)),
        committed=committed_offset(kafka_bootstrap, settings.kafka.group_id, logs),
        scraped=scraped,
    )


def test_the_alert_topic_carries_the_abnormal_verdicts_of_the_full_stream(run):
    assert len(run.full) == _sample(run.scraped, "rationanomaly_verdicts_total") > 0
    abnormal = {v["verdict_id"]: v for v in run.full if v["verdict"] == "abnormal"}
    alerts = [orjson.loads(m.value()) for m in run.alerts]
    assert sorted(a["finding_info"]["uid"] for a in alerts) == sorted(abnormal)
    for message, alert in zip(run.alerts, alerts, strict=True):
        assert alert["class_uid"] == 2004 and alert["is_alert"] is True
        verdict = abnormal[alert["finding_info"]["uid"]]
        headers = dict(message.headers())
        assert headers["rationanomaly.verdict"] == b"abnormal"
        assert headers["rationanomaly.severity"].decode() == verdict["severity"] == alert["severity"]
    # What the alert topic left out is counted, and was judged all the same.
    for label in ("normal", "unknown"):
        expected = sum(v["verdict"] == label for v in run.full)
        assert _sample(run.scraped, "rationanomaly_verdicts_withheld_total", verdict=label) == expected


def test_every_offset_is_committed_though_most_windows_were_filtered(run):
    """Filtered windows count as published: the group's offset reaches the end of the input."""
    assert run.committed == run.lines
    assert len(run.dead_letters) == len(BAD_LINES)


def test_ocsf_alerts_read_back_from_the_broker_validate_against_ocsf_1_5(run):
    jsonschema = pytest.importorskip("jsonschema")
    ocsf_json_schema = pytest.importorskip("ocsf_json_schema")
    schema = ocsf_json_schema.OcsfJsonSchemaEmbedded(ocsf_json_schema.get_ocsf_schema(version="1.5.0"))
    validator = jsonschema.Draft202012Validator(schema.get_class_schema(class_name="detection_finding"))
    for message in run.alerts:
        doc = orjson.loads(message.value())
        assert doc["metadata"]["version"] == "1.5.0"
        assert [e.message for e in validator.iter_errors(doc)] == []


def test_dashboard_and_alert_rules_query_series_the_live_detector_exports(run):
    series = exported_series(run.scraped)
    for query in all_queries():
        names = metric_names(query) - PROMETHEUS_SERIES
        missing = names - set(series)
        assert not missing, f"{query!r} names {sorted(missing)}, which the detector does not export"
        # Labels: those of the named series that have samples now, plus the scrape's own.
        seen = set().union(*(series[n] for n in names)) if names else set()
        if names and all(series[n] for n in names):
            assert label_names(query) <= seen | TARGET_LABELS | {"le"}, query
    for metric, _ in dashboard_variable_queries():
        assert metric in series
    # The run fed lines, dead letters and verdicts: those series carry samples, not just a TYPE.
    assert _sample(run.scraped, "rationanomaly_lines_total") == run.lines
    assert _sample(run.scraped, "rationanomaly_dead_letters_total") == len(BAD_LINES)
    assert "rationanomaly_model_degraded 0.0" in run.scraped
