"""The monitoring that ships in deploy/: the Grafana dashboard, the Prometheus alert rules, and
their wiring in docker-compose.yml, checked without Docker or Prometheus. Every metric a query
names is one the detector registers (tests/integration/test_soc_output.py checks the same
against a live detector's /metrics)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "rationanomaly.json"
RULES = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"

# Series Prometheus makes itself, and labels it adds to every scraped series.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"instance", "job"}

_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def dashboard_queries() -> Iterator[str]:
    doc = json.loads(DASHBOARD.read_text())
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]


def dashboard_variable_queries() -> Iterator[tuple[str, str]]:
    """(metric, label) of each `label_values(metric, label)` variable."""
    doc = json.loads(DASHBOARD.read_text())
    for variable in doc["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        found = re.fullmatch(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)", query)
        assert found, f"variable {variable['name']}: unexpected query {query!r}"
        yield found.group(1), found.group(2)


def rule_queries() -> Iterator[str]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def all_queries() -> list[str]:
    return [*dashboard_queries(), *rule_queries()]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (not functions, keywords or labels).

    >>> sorted(metric_names('sum by (verdict) (rate(x_total{verdict="unknown"}[5m])) / y > 0.05'))
    ['x_total', 'y']
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        if match.group(0) in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(match.group(0))
    return names


def label_names(expr: str) -> set[str]:
    """Label names an expression matches on or groups by.

    >>> sorted(label_names('sum by (le, instance) (rate(x_bucket{verdict="a",job=~"j"}[5m]))'))
    ['instance', 'job', 'le', 'verdict']
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = {m.group(1) for block in re.findall(r"\{([^}]*)\}", text) for m in re.finditer(r"(\w+)\s*(?:=~|!~|!=|=)", block)}
    for group in _GROUPING.findall(text):
        labels |= {part.strip() for part in group.split(",") if part.strip()}
    return labels


def exported_series(exposition: str) -> dict[str, set[str]]:
    """Series name -> label names, from Prometheus text exposition (the client library's parser).

    A labelled metric with no child yet has no sample, only its TYPE: its series names are
    derived from the type, with its labels unknown (an empty set).
    """
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "summary": ("_count", "_sum", "_created")}
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for suffix in suffixes.get(family.type, ("",)):
            series.setdefault(family.name + suffix, set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def registry_exposition() -> str:
    from prometheus_client import generate_latest

    from rationanomaly.stream.metrics import DetectorMetrics

    return generate_latest(DetectorMetrics().registry).decode()


def test_the_alert_rules_cover_what_an_operator_must_hear_about():
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    for needed in ("LagGrowing", "ModelDegraded", "DeadLetterRate", "UnknownShareHigh", "PausedTooLong"):
        assert any(name.endswith(needed) for name in rules), needed
    for name, rule in rules.items():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name  # a blip never pages
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert "0.05" in rules["RationanomalyUnknownShareHigh"]["expr"]
    assert "rationanomaly_model_degraded" in rules["RationanomalyModelDegraded"]["expr"]


def test_queries_name_only_metrics_the_detector_registers():
    series = exported_series(registry_exposition())
    named = set().union(*(metric_names(q) for q in all_queries()))
    assert named, "no metric found in the queries: the parser is broken"
    assert named - PROMETHEUS_SERIES <= set(series), sorted(named - PROMETHEUS_SERIES - set(series))
    for metric, label in dashboard_variable_queries():
        assert metric in series and label in TARGET_LABELS


def test_dashboard_is_a_provisionable_grafana_dashboard():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 36
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    for panel in doc["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _mounts(service: dict) -> dict[str, str]:
    """container path -> repository path, for bind mounts of repository files."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = source
    return out


def test_compose_prometheus_scrapes_the_detector_and_loads_the_rules(compose):
    prometheus = compose["services"]["prometheus"]
    mounts = _mounts(prometheus)
    for target, source in mounts.items():
        assert (REPO / source).exists(), source
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    assert (REPO / mounts[config_path]).resolve() == PROMETHEUS
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert [(REPO / mounts[f]).resolve() for f in config["rule_files"]] == [RULES]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "rationanomaly"  # the `job` RationanomalyDown selects
    assert 'job="rationanomaly"' in next(q for q in rule_queries() if "up{" in q)
    # every replica of `--scale detector=N`, found through Docker's DNS for the service name
    (sd,) = job["dns_sd_configs"]
    detector = compose["services"]["detector"]
    assert sd["names"] == ["detector"] and sd["type"] == "A"
    assert str(sd["port"]) == detector["environment"]["RATIONANOMALY_METRICS__PORT"]


def test_compose_grafana_provisions_the_datasource_and_the_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/rationanomaly.yml").read_text())["providers"][0]
    dashboards_dir = provider["options"]["path"]
    assert (REPO / mounts[dashboards_dir] / DASHBOARD.name).resolve() == DASHBOARD
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/{DASHBOARD.name}"
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    url = re.fullmatch(r"http://([\w-]+):(\d+)", datasource["url"])
    assert url and url.group(1) == "prometheus" and url.group(1) in compose["services"]
    assert f"{url.group(2)}:{url.group(2)}" in compose["services"]["prometheus"]["ports"]
