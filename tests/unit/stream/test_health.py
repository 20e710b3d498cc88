"""/metrics and /health on the detector's one HTTP port."""

from __future__ import annotations

import httpx

from rationanomaly.stream import health
from rationanomaly.stream.metrics import DetectorMetrics


def test_the_endpoint_serves_metrics_and_health() -> None:
    metrics = DetectorMetrics()
    metrics.model_degraded.set(1)
    state = {"status": "degraded", "model_away": True}
    port = health.serve(metrics.registry, lambda: state, 0, "127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/health").json() == state
    assert "rationanomaly_model_degraded 1.0" in httpx.get(f"{base}/metrics").text
    assert httpx.get(f"{base}/nothing").status_code == 404
