from __future__ import annotations

import doctest
from pathlib import Path

import orjson
import pytest
import structlog

from rationanomaly.stream import parsing
from rationanomaly.stream.parsing import (
    MaskingConfigError,
    ParsingSettings,
    SnapshotError,
    TemplateParser,
    load_masking,
    template_id,
)
from rationanomaly.stream.profiles import BUILTIN_PROFILES, HeaderParser
from rationanomaly.stream.records import Header, LogRecord, SourceRef

STEMS = {"hdfs": "HDFS", "bgl": "BGL", "thunderbird": "Thunderbird", "openstack": "OpenStack", "linux": "Linux"}


def contents(loghub_dir: Path, name: str) -> list[str]:
    parser = HeaderParser(BUILTIN_PROFILES[name])
    out = []
    for i, line in enumerate((loghub_dir / f"{STEMS[name]}_2k.log").read_text(encoding="utf-8").splitlines()):
        header = parser.split(LogRecord(SourceRef("t", 0, i), line))
        assert isinstance(header, Header)
        out.append(header.content)
    return out


def test_doctests() -> None:
    assert doctest.testmod(parsing).failed == 0


@pytest.mark.parametrize(
    ("content", "template"),
    [
        (
            "Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010",
            "Receiving block blk_<NUM> src: /<IP>:<NUM> dest: /<IP>:<NUM>",
        ),
        ("PacketResponder 1 for block blk_38865049064139660 terminating", "PacketResponder <NUM> for block blk_<NUM> terminating"),
        ("instruction address: 0x00004ed8", "instruction address: <HEX>"),
        (
            "[instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] VM Started (Lifecycle Event)",
            "[instance: <UUID>] VM Started (Lifecycle Event)",
        ),
        ('"GET /v2/54fadb412c4e40cdbaed9335e4c35a9e/servers/detail HTTP/1.1" time: 0.2477829', '"GET /v2/<ID>/servers/detail HTTP/<NUM>" time: <NUM>'),
        ("node R02-M1-N0-C:J12-U11 ok", "node R02-M1-N0-C:J12-U11 ok"),  # names with digits stay whole
        ("offset -12 and +3.5, not x-1 or 1.2.3.4.5", "offset <NUM> and <NUM>, not x-<NUM> or <NUM>.<NUM>.<NUM>"),
    ],
)
def test_masking_of_the_packaged_rules(content: str, template: str) -> None:
    parser = TemplateParser(ParsingSettings())
    assert parser.parse(content).text == template


def test_template_id_is_the_hash_of_the_text() -> None:
    a, b = TemplateParser(ParsingSettings()), TemplateParser(ParsingSettings())
    line = "Verification succeeded for blk_-4980916519894289629"
    ta, tb = a.parse(line), b.parse(line)
    assert ta == tb and ta.id == template_id(ta.text) and ta.id.startswith("t") and len(ta.id) == 17


def test_generalised_template_gets_a_new_id_and_the_cache_follows() -> None:
    parser = TemplateParser(ParsingSettings())
    first = parser.parse("user alice logged in")
    again = parser.parse("user alice logged in")
    assert again is first  # cached per cluster while the template is unchanged
    widened = parser.parse("user bob logged in")
    assert widened.text == "user <*> logged in" and widened.id != first.id
    assert parser.parse("user carol logged in") is widened
    assert parser.size == 1 and parser.templates() == [widened]


def test_match_does_not_learn() -> None:
    parser = TemplateParser(ParsingSettings())
    parser.parse("disk sda1 is full")
    parser.parse("disk sdb2 is full")
    assert parser.match("disk sdc3 is full").text == "disk <*> is full"
    assert parser.match("never seen before") is None
    assert parser.size == 1


def test_masking_file_errors(tmp_path: Path) -> None:
    with pytest.raises(MaskingConfigError, match="No such file"):
        load_masking(tmp_path / "absent.ini")
    drain = tmp_path / "drain.ini"
    drain.write_text("[DRAIN]\nsim_th = 0.5\n[MASKING]\nmasking = []\n")
    with pytest.raises(MaskingConfigError, match=r"move \['DRAIN'\] to ParsingSettings"):
        load_masking(drain)
    empty = tmp_path / "empty.ini"
    empty.write_text("[MASKING]\n")
    with pytest.raises(MaskingConfigError, match="needs a \\[MASKING\\] section"):
        load_masking(empty)
    bad_json = tmp_path / "bad.ini"
    bad_json.write_text('[MASKING]\nmasking = [{"regex_pattern": "x"}]\n')
    with pytest.raises(MaskingConfigError, match="must be a JSON list"):
        load_masking(bad_json)
    bad_regex = tmp_path / "regex.ini"
    bad_regex.write_text('[MASKING]\nmasking = [{"regex_pattern": "(", "mask_with": "X"}]\n')
    with pytest.raises(MaskingConfigError, match="rule 'X' is not a valid regex"):
        load_masking(bad_regex)


def test_user_masking_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.ini"
    # % is literal (no interpolation), prefix/suffix are honoured
    path.write_text('[MASKING]\nmask_prefix = {\nmask_suffix = }\nmasking = [{"regex_pattern": "[0-9]+%", "mask_with": "PCT"}]\n')
    parser = TemplateParser(ParsingSettings(masking_file=path))
    assert parser.parse("disk at 91% now").text == "disk at {PCT} now"


def _replay_equal(original: TemplateParser, settings: ParsingSettings, rest: list[str]) -> None:
    restored = TemplateParser.restore(original.snapshot(), settings)
    assert restored.size == original.size
    assert sorted(t.id for t in restored.templates()) == sorted(t.id for t in original.templates())
    for content in rest:
        assert restored.parse(content) == original.parse(content)
    assert restored.snapshot() == original.snapshot()


@pytest.mark.parametrize("name", sorted(STEMS))
def test_restored_parser_continues_like_the_original(name: str, loghub_dir: Path) -> None:
    lines = contents(loghub_dir, name)
    settings = ParsingSettings()
    original = TemplateParser(settings)
    for content in lines[:1000]:
        original.parse(content)
    _replay_equal(original, settings, lines[1000:])


def test_restore_with_a_deep_tree_on_mixed_formats(loghub_dir: Path) -> None:
    mixed = [c for name in sorted(STEMS) for c in contents(loghub_dir, name)]
    settings = ParsingSettings(depth=6, max_children=8, sim_th=0.5)
    original = TemplateParser(settings)
    for content in mixed[::2]:
        original.parse(content)
    _replay_equal(original, settings, mixed[1::2])


def test_restore_keeps_lru_order_under_max_clusters() -> None:
    settings = ParsingSettings(max_clusters=3)
    original = TemplateParser(settings)
    for content in ["alpha one", "beta two three", "gamma four five six", "alpha one"]:
        original.parse(content)  # "alpha" was used last, so "beta" is the least recently used
    restored = TemplateParser.restore(original.snapshot(), settings)
    for parser in (original, restored):
        parser.parse("delta seven eight nine ten")
        assert sorted(t.text for t in parser.templates()) == [
            "alpha one",
            "delta seven eight nine ten",
            "gamma four five six",
        ]
    assert restored.snapshot() == original.snapshot()


def test_snapshot_is_plain_json() -> None:
    parser = TemplateParser(ParsingSettings())
    parser.parse("PacketResponder 1 for block blk_1 terminating")
    parser.parse("PacketResponder 2 for block blk_2 terminating")
    data = orjson.loads(parser.snapshot())
    assert data["format"] == "rationanomaly.drain3/1"
    assert data["clusters_counter"] == 1
    assert data["clusters"] == [[1, 2, ["PacketResponder", "<NUM>", "for", "block", "blk_<NUM>", "terminating"]]]
    assert b"py/" not in parser.snapshot()


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"{}",
        # Drain3's own jsonpickle state must never be revived
        b'{"py/object": "drain3.drain.Drain", "clusters_counter": 1}',
        orjson.dumps({"format": "rationanomaly.drain3/2", "settings": {}, "clusters_counter": 0, "clusters": []}),
    ],
)
def test_restore_rejects_what_is_not_a_snapshot(data: bytes) -> None:
    with pytest.raises(SnapshotError):
        TemplateParser.restore(data, ParsingSettings())


def test_restore_rejects_inconsistent_ids() -> None:
    parser = TemplateParser(ParsingSettings())
    parser.parse("a b")
    snap = orjson.loads(parser.snapshot())
    snap["clusters"].append([1, 1, ["c", "d"]])
    with pytest.raises(SnapshotError, match="unique"):
        TemplateParser.restore(orjson.dumps(snap), ParsingSettings())


def test_restore_under_changed_settings_warns_and_works() -> None:
    parser = TemplateParser(ParsingSettings())
    parser.parse("session opened for user root")
    with structlog.testing.capture_logs() as logs:
        restored = TemplateParser.restore(parser.snapshot(), ParsingSettings(sim_th=0.45))
    assert logs == [{"event": "snapshot_settings_differ", "changed": ["sim_th"], "log_level": "warning"}]
    assert restored.parse("session opened for user root").text == "session opened for user root"


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        ParsingSettings(depth=2)
    with pytest.raises(ValueError):
        ParsingSettings(sim_th=0)
    with pytest.raises(ValueError):
        ParsingSettings(persistence="file")
