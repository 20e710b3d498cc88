"""A secured cluster: SASL_SSL with SCRAM-SHA-512 and ACLs, on a broker of the tests' own
(`broker.py up --secure`: certificates made with openssl, SCRAM users added at format time).

The detector connects with the `kafka` settings block; a wrong password, an untrusted
certificate and a missing ACL on the output topic each end it with one clear error and a
non-zero exit, and no secret reaches its logs or its help."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
import structlog
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from rationanomaly.stream.app import Detector, RunLimits
from rationanomaly.stream.replay import replay_files
from rationanomaly.stream.sample import sample_lines
from tests.conftest import BROKER_SCRIPT
from tests.integration.detector_support import create_topics, file_values, produce_lines, read_topic, unique, verdicts_of
from tests.integration.test_detector_e2e import detector_settings
from tests.integration.test_template_routing import SharedModel

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER = "detector"


@pytest.fixture(scope="module")
def secure_broker():
    done = subprocess.run([sys.executable, str(BROKER_SCRIPT), "up", "--port", "0", "--secure", "--json"],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    try:
        yield info
    finally:
        subprocess.run([sys.executable, str(BROKER_SCRIPT), "down", "--port", str(info["port"])],
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


def _grant(info: dict, group: str, *, read: list[str], write: list[str], transactions: bool = False) -> None:
    """ACLs for the detector's user, set over the plain listener (its principal is a super user)."""
    principal = f"User:{USER}"

    def acl(kind: ResourceType, name: str, op: AclOperation) -> AclBinding:
        return AclBinding(kind, name, ResourcePatternType.LITERAL, principal, "*", op, AclPermissionType.ALLOW)

    bindings = [acl(ResourceType.GROUP, group, AclOperation.READ)]
    # The detector's own topics and groups (state, feedback, repartition) are all named after its
    # group: one prefixed grant covers them (stream/README.md, "State topics").
    for kind in (ResourceType.TOPIC, ResourceType.GROUP):
        bindings.append(AclBinding(kind, f"{group}-", ResourcePatternType.PREFIXED, principal, "*",
                                   AclOperation.ALL, AclPermissionType.ALLOW))  # fmt: skip
    if transactions:  # exactly-once: the default transactional ids are named after the group too
        bindings.append(AclBinding(ResourceType.TRANSACTIONAL_ID, f"{group}-", ResourcePatternType.PREFIXED, principal,
                                   "*", AclOperation.ALL, AclPermissionType.ALLOW))  # fmt: skip
    for topic in read:
        bindings += [acl(ResourceType.TOPIC, topic, AclOperation.READ), acl(ResourceType.TOPIC, topic, AclOperation.DESCRIBE)]
    for topic in write:
        bindings += [acl(ResourceType.TOPIC, topic, AclOperation.WRITE), acl(ResourceType.TOPIC, topic, AclOperation.DESCRIBE)]
    admin = AdminClient({"bootstrap.servers": info["bootstrap"]})
    for future in admin.create_acls(bindings).values():
        future.result(30)


def _secured(info: dict, password: str | None = None, ca: str | None = None) -> dict:
    return {
        "bootstrap_servers": info["sasl_ssl_bootstrap"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": info["mechanism"],
        "sasl_username": USER,
        "sasl_password": password or info["users"][USER],
        "ssl_ca_location": ca or info["ca_location"],
        "startup_timeout_s": 30.0,
    }


def _stream(info: dict, blocks: int = 3) -> tuple[str, str, str, set[str]]:
    logs, out, dlq = unique("secure-logs"), unique("secure-verdicts"), unique("secure-dlq")
    create_topics(info["bootstrap"], logs, out, dlq)
    lines = sample_lines(blocks, seed=11)
    produce_lines(info["bootstrap"], logs, [line.encode() for line in lines])
    keys = {next(t for t in line.split() if t.startswith("blk_")) for line in lines}
    return logs, out, dlq, keys


def _run_cli(info: dict, env_extra: dict[str, str], tmp_path: Path, logs: str, out: str, dlq: str):
    env = {
        **os.environ,
        "RATIONANOMALY_KAFKA__BOOTSTRAP_SERVERS": info["sasl_ssl_bootstrap"],
        "RATIONANOMALY_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "RATIONANOMALY_KAFKA__SASL_MECHANISM": info["mechanism"],
        "RATIONANOMALY_KAFKA__SASL_USERNAME": USER,
        "RATIONANOMALY_KAFKA__SSL_CA_LOCATION": info["ca_location"],
        "RATIONANOMALY_KAFKA__STARTUP_TIMEOUT_S": "30",
        "RATIONANOMALY_KAFKA__GROUP_ID": unique("secure-group"),
        "RATIONANOMALY_INPUT__TOPIC": logs,
        "RATIONANOMALY_OUTPUT__TOPIC": out,
        "RATIONANOMALY_OUTPUT__DLQ_TOPIC": dlq,
        "RATIONANOMALY_CHECKPOINT__DIR": str(tmp_path / "checkpoints"),
        "RATIONANOMALY_METRICS__PORT": "0",
        "RATIONANOMALY_PROFILE__NAME": "hdfs",
        **env_extra,
    }
    return subprocess.run([sys.executable, "-m", "rationanomaly.cli.main", "run", "--log-level", "DEBUG", "--stop-at-eof"],
                          env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip


def test_the_detector_judges_a_stream_over_sasl_ssl_with_acls(secure_broker, real_backend, tmp_path):
    logs, out, dlq, keys = _stream(secure_broker)
    group = unique("secure-group")
    _grant(secure_broker, group, read=[logs], write=[out, dlq])
    settings = detector_settings(secure_broker["bootstrap"], logs, out, dlq, tmp_path,
                                 kafka={**_secured(secure_broker), "group_id": group})  # fmt: skip
    assert Detector(settings, limits=RunLimits(stop_at_eof=True, max_seconds=300), backend=real_backend).run() == 0
    verdicts = verdicts_of(read_topic(secure_broker["bootstrap"], out, expected=len(keys), timeout_s=60))
    assert {v["window"]["key"] for v in verdicts} == keys


def test_two_members_exactly_once_through_the_hop_with_acls_match_file_replay(secure_broker, data_dir, real_backend,
                                                                            tmp_path):  # fmt: skip
    """The production shape on a secured cluster: input keyed by component over 3 partitions, two
    members in one group in exactly-once mode, so the repartition topic, the state topics, the
    judge requests between members and the transactions all run under the documented grants."""
    path = data_dir / "raw" / "loghub_2k" / "HDFS_2k.log"
    values = file_values(path)[:1000]
    logs, out, dlq = unique("secure-logs"), unique("secure-verdicts"), unique("secure-dlq")
    create_topics(secure_broker["bootstrap"], logs, partitions=3)
    create_topics(secure_broker["bootstrap"], out, dlq)
    produce_lines(secure_broker["bootstrap"], logs, values, keys=[v.split(b" ", 5)[4] for v in values], partition=None)
    group = unique("secure-group")
    _grant(secure_broker, group, read=[logs], write=[out, dlq], transactions=True)

    def settings(name: str):
        return detector_settings(secure_broker["bootstrap"], logs, out, dlq, tmp_path / name,
                                 kafka={**_secured(secure_broker), "group_id": group}, output={"exactly_once": True})  # fmt: skip

    cut = tmp_path / "first-1000.log"
    cut.write_bytes(b"\n".join(values) + b"\n")
    reference_out = io.BytesIO()
    replay_files([cut], settings("replay"), reference_out, backend=real_backend, progress=False)
    reference = [orjson.loads(line) for line in reference_out.getvalue().splitlines()]

    members = [Detector(settings(n), RunLimits(stop_at_eof=True, max_seconds=240), backend=SharedModel(real_backend))
               for n in ("a", "b")]  # fmt: skip
    codes: list[int] = []
    threads = [threading.Thread(target=lambda d=d: codes.append(d.run()), daemon=True) for d in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert codes == [0, 0]
    verdicts = verdicts_of(read_topic(secure_broker["bootstrap"], out, expected=len(reference), timeout_s=60))

    def windows(vs):
        return sorted((v["window"]["key"], v["window"]["start_ms"], v["window"]["end_ms"], v["window"]["lines"]) for v in vs)

    assert windows(verdicts) == windows(reference)  # none split, none twice
    assert {v["verdict_id"] for v in verdicts} == {v["verdict_id"] for v in reference}


def test_a_wrong_password_is_one_clear_error_and_no_secret_is_logged(secure_broker, tmp_path):
    logs, out, dlq, _ = _stream(secure_broker, blocks=1)
    wrong = "not-the-password-" + secure_broker["users"][USER][:6]
    done = _run_cli(secure_broker, {"RATIONANOMALY_KAFKA__SASL_PASSWORD": wrong}, tmp_path, logs, out, dlq)
    assert done.returncode == 2, done.stderr[-3000:]
    refused = [json.loads(line) for line in done.stderr.splitlines() if '"kafka_refused"' in line]
    assert len(refused) == 1 and "AUTHENTICATION" in refused[0]["code"], done.stderr[-3000:]
    assert wrong not in done.stderr + done.stdout
    assert secure_broker["users"][USER] not in done.stderr + done.stdout


def test_an_untrusted_certificate_is_one_clear_error(secure_broker, tmp_path):
    logs, out, dlq, _ = _stream(secure_broker, blocks=1)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other CA",
                    "-keyout", "other.key", "-out", "other.pem"], cwd=tmp_path, check=True, capture_output=True)  # fmt: skip
    done = _run_cli(secure_broker, {"RATIONANOMALY_KAFKA__SASL_PASSWORD": secure_broker["users"][USER],
                                    "RATIONANOMALY_KAFKA__SSL_CA_LOCATION": str(tmp_path / "other.pem")},
                    tmp_path, logs, out, dlq)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    refused = [json.loads(line) for line in done.stderr.splitlines() if '"kafka_refused"' in line]
    assert len(refused) == 1 and refused[0]["code"] == "_SSL", done.stderr[-3000:]


def test_a_missing_acl_on_the_output_topic_ends_the_run(secure_broker, real_backend, tmp_path):
    logs, out, dlq, _ = _stream(secure_broker)
    group = unique("secure-group")
    _grant(secure_broker, group, read=[logs], write=[dlq])  # nothing on `out`
    settings = detector_settings(secure_broker["bootstrap"], logs, out, dlq, tmp_path,
                                 kafka={**_secured(secure_broker), "group_id": group})  # fmt: skip
    with structlog.testing.capture_logs() as events:
        code = Detector(settings, limits=RunLimits(stop_at_eof=True, max_seconds=300), backend=real_backend).run()
    assert code in (1, 2)
    ends = [e for e in events if e["event"] in ("detector_failed", "detector_stopped")]
    assert len(ends) == 1 and "AUTHORIZATION" in ends[0]["error"].upper(), ends


def test_help_never_shows_a_secret():
    secret = "s3cret-from-the-environment"
    rationanomaly = Path(sys.executable).with_name("rationanomaly")
    done = subprocess.run([str(rationanomaly), "run", "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RATIONANOMALY_KAFKA__SASL_PASSWORD": secret})  # fmt: skip
    assert done.returncode == 0
    assert secret not in done.stdout + done.stderr
