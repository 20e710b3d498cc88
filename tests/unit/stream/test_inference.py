"""`profile infer` on the 16 loghub samples and on a log no shipped profile fits."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rationanomaly.cli.main import app
from rationanomaly.stream import timestamps
from rationanomaly.stream.inference import infer_profile, measure, read_sample, render, session_key
from rationanomaly.stream.profiles import BUILTIN_PROFILES, HeaderParser
from rationanomaly.stream.records import Header, LogRecord, SourceRef
from rationanomaly.stream.settings import load_settings

SYSTEMS = (
    "Android", "Apache", "BGL", "HDFS", "HPC", "Hadoop", "HealthApp", "Linux",
    "Mac", "OpenSSH", "OpenStack", "Proxifier", "Spark", "Thunderbird", "Windows", "Zookeeper",
)
# systems with a shipped profile: the inferred one must read the same event times
BUILTIN = {"HDFS": "hdfs", "BGL": "bgl", "Thunderbird": "thunderbird", "OpenSSH": "openssh",
           "Zookeeper": "zookeeper", "Hadoop": "hadoop", "Spark": "spark", "OpenStack": "openstack"}

NOVA = """\
2017-05-16 00:00:04.500 25746 INFO nova.compute.claims [req-5c2a2c1e-7f4a-4c9c-9a55-0a1b2c3d4e5f 113d3a99c3da401fbd62cc2caa5b96d2 54fadb412c4e40cdbaed9335e4c35a9e - - -] [instance: 1176bc6e-3ef0-4b7a-a3b0-1d2e3f4a5b6c] Claim successful on node cp-1.slowvm1.tcloud-pg0.utah.cloudlab.us
2017-05-16 00:00:05.120 25746 INFO nova.compute.manager [req-5c2a2c1e-7f4a-4c9c-9a55-0a1b2c3d4e5f 113d3a99c3da401fbd62cc2caa5b96d2 54fadb412c4e40cdbaed9335e4c35a9e - - -] [instance: 1176bc6e-3ef0-4b7a-a3b0-1d2e3f4a5b6c] Took 0.62 seconds to spawn the instance on the hypervisor.
2017-05-16 00:00:06.002 25746 WARNING nova.virt.libvirt.driver [req-6d3b3d2f-8a5b-4dad-8b66-1b2c3d4e5f60 113d3a99c3da401fbd62cc2caa5b96d2 54fadb412c4e40cdbaed9335e4c35a9e - - -] [instance: 2287cd7f-4f01-4c8b-b4c1-2e3f4a5b6c7d] Timeout waiting for vif plugging callback
2017-05-16 00:00:07.314 25746 ERROR nova.compute.manager [req-6d3b3d2f-8a5b-4dad-8b66-1b2c3d4e5f60 113d3a99c3da401fbd62cc2caa5b96d2 54fadb412c4e40cdbaed9335e4c35a9e - - -] [instance: 2287cd7f-4f01-4c8b-b4c1-2e3f4a5b6c7d] Instance failed to spawn
"""


@pytest.fixture(scope="module")
def inferred(loghub_dir: Path) -> dict[str, object]:
    return {name: infer_profile(read_sample([loghub_dir / f"{name}_2k.log"])) for name in SYSTEMS}


def test_doctests() -> None:
    assert doctest.testmod(timestamps).failed == 0


def test_inferred_profiles_split_95_percent_of_at_least_14_samples(inferred) -> None:
    shares = {name: inf.coverage.share for name, inf in inferred.items()}
    good = sorted(name for name, share in shares.items() if share >= 0.95)
    assert len(good) >= 14, f"coverage per system: {shares}"


def test_inferred_profiles_read_the_header_fields(inferred) -> None:
    hdfs = inferred["HDFS"].profile
    assert (hdfs.level_field, hdfs.component_field, hdfs.timestamp_format) == ("Level", "Component", "%y%m%d %H%M%S")
    assert inferred["HDFS"].session_key.pattern == r"blk_-?\d+"
    assert inferred["Apache"].profile.level_field == "Level"
    assert inferred["Linux"].profile.host_field == "Host"
    assert inferred["Android"].profile.timestamp_format == "%m-%d %H:%M:%S.%f"
    assert inferred["HealthApp"].profile.log_format.startswith("<Timestamp>\\|")
    assert inferred["BGL"].profile.timestamp_format == "epoch_s"


@pytest.mark.parametrize("system", sorted(BUILTIN))
def test_inferred_profile_reads_the_times_and_levels_the_shipped_one_reads(system, inferred, loghub_dir) -> None:
    lines = read_sample([loghub_dir / f"{system}_2k.log"])
    shipped_profile = BUILTIN_PROFILES[BUILTIN[system]]
    profile = inferred[system].profile
    if shipped_profile.default_year is not None:  # a year-less format: assume the shipped year
        profile = profile.model_copy(update={"default_year": shipped_profile.default_year})
    ours, shipped = HeaderParser(profile), HeaderParser(shipped_profile)
    same_time = same_level = 0
    for i, line in enumerate(lines):
        rec = LogRecord(SourceRef("s", 0, i), line)
        a, b = ours.split(rec), shipped.split(rec)
        assert isinstance(b, Header)
        if isinstance(a, Header):
            same_time += a.event_time_ms == b.event_time_ms
            same_level += a.level == b.level or b.level is None
    assert same_time >= 0.95 * len(lines)
    assert same_level >= 0.95 * len(lines)


def test_session_keys_are_proposed_only_for_recurring_ids() -> None:
    recurring = [f"open session 3f2b{n % 7:04d}-0000-4000-8000-000000000000 step {n}" for n in range(40)]
    assert session_key(recurring).name == "UUID"
    once_each = [f"request {n:08x}-0000-4000-8000-000000000000 done" for n in range(40)] + ["idle"] * 60
    assert session_key(once_each) is None


def test_a_log_no_profile_fits_gets_one_that_splits_it(tmp_path: Path) -> None:
    log = tmp_path / "nova-compute.log"
    log.write_text(NOVA * 5)
    inference = infer_profile(read_sample([log]))
    assert inference.coverage.share == 1.0
    profile = inference.profile
    assert profile.level_field and profile.component_field and profile.timestamp_format == "iso8601"
    header = HeaderParser(profile).split(LogRecord(SourceRef("s", 0, 0), NOVA.splitlines()[3]))
    assert (header.level, header.component) == ("ERROR", "nova.compute.manager")
    assert header.content.startswith("[instance: 2287cd7f")
    assert inference.session_key is not None and inference.session_key.name == "UUID"


def test_cli_prints_yaml_the_detector_loads_and_states_coverage(tmp_path: Path, loghub_dir: Path) -> None:
    sample = loghub_dir / "Zookeeper_2k.log"
    messy = tmp_path / "messy.log"
    messy.write_text(sample.read_text().replace("\n", "\n  a continuation line\n", 5))
    result = CliRunner().invoke(app, ["profile", "infer", str(messy)])
    assert result.exit_code == 0, result.output
    assert "# coverage: 1995 of 2000 sample lines split (99.8%)" in result.output
    assert "#     a continuation line" in result.output  # an example of what does not split
    assert " - <Level>" in result.output  # the separator stays a literal despite the odd lines
    config = tmp_path / "detector.yaml"
    config.write_text(result.output)
    settings = load_settings(config)
    assert settings.profile.custom is not None
    assert measure(settings.profile.custom, read_sample([sample])).share == 1.0


def test_cli_refuses_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["profile", "infer", str(tmp_path / "absent.log")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_render_quotes_nothing_it_should_not(inferred) -> None:
    text = render(inferred["Proxifier"], ["Proxifier_2k.log"])
    loaded = yaml.safe_load(text)
    assert loaded["profile"]["custom"]["log_format"] == inferred["Proxifier"].profile.log_format
    assert "default_year" in loaded["profile"]["custom"]  # the sample's timestamps have no year
    assert "# note: timestamps carry no year" in text


def test_a_log_full_of_tracebacks_gets_a_header_and_multiline() -> None:
    from tests.unit.stream.traceback_sample import traceback_log

    lines, _, _ = traceback_log(instances=40)
    inference = infer_profile(lines)
    profile = inference.profile
    assert profile.timestamp_format == "iso8601" and profile.level_field == "Level"
    assert profile.multiline is not None and profile.multiline.preset == "stack_traces"
    assert any("stack-trace lines" in note for note in inference.notes)
