"""Grouping accuracy of the detector's template mining on the 16 loghub 2k samples, beside Drain3
out of the box, in one run. Prints a table; asserts nothing.

    .venv/bin/python bench/parsing_accuracy.py [--data ../shared/data] [--markdown]

Grouping accuracy (GA, loghub's metric, Zhu et al. ICSE-SEIP 2019): a line counts as correct when
the set of lines in its predicted group equals the set of lines in its ground-truth group
(`EventId` in `<System>_2k.log_structured.csv`). Groups are Drain clusters after the whole sample,
as loghub scores them.

Both systems mine the same content: each line's header split off by the profile the detector
would run with (the built-in one named after the system, else the profile `profile infer`
proposes for the file, with the generic profile behind it), so the difference between the
columns is the masking and the Drain settings alone.

- detector: the `parsing` settings `DetectorSettings` builds for that profile, as a real run
  does: `ParsingSettings()` defaults and the packaged stream/drain3.ini masking, under the
  profile's own tuning (`FormatProfile.parsing`: masking rules run first, sim_th, depth);
- drain3 default: `TemplateMiner` with `TemplateMinerConfig()` untouched (no masking).

The last column runs the detector's parsing on loghub's own `Content` column, to tell a header
split that differs from loghub's from a masking problem.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drain3 import TemplateMiner  # noqa: E402
from drain3.template_miner_config import TemplateMinerConfig  # noqa: E402

from rationanomaly.stream.generic import GenericHeaderParser  # noqa: E402
from rationanomaly.stream.inference import infer_profile  # noqa: E402
from rationanomaly.stream.parsing import ParsingSettings, TemplateParser  # noqa: E402
from rationanomaly.stream.profiles import BUILTIN_PROFILES, FormatProfile, HeaderParser, ProfileSettings  # noqa: E402
from rationanomaly.stream.records import Header, LogRecord, SourceRef  # noqa: E402
from rationanomaly.stream.settings import DetectorSettings  # noqa: E402

SYSTEMS = (
    "Android", "Apache", "BGL", "HDFS", "HPC", "Hadoop", "HealthApp", "Linux",
    "Mac", "OpenSSH", "OpenStack", "Proxifier", "Spark", "Thunderbird", "Windows", "Zookeeper",
)
SHIPPED = {system: system.lower() for system in SYSTEMS}


def grouping_accuracy(truth: Sequence[str], predicted: Sequence[object]) -> float:
    """loghub's GA: the share of lines whose predicted group is exactly their true group.

    >>> grouping_accuracy(["a", "a", "b", "c"], [1, 1, 2, 2])
    0.5
    """
    groups: dict[object, list[int]] = defaultdict(list)
    for i, p in enumerate(predicted):
        groups[p].append(i)
    true_sizes: dict[str, int] = defaultdict(int)
    for t in truth:
        true_sizes[t] += 1
    correct = 0
    for members in groups.values():
        labels = {truth[i] for i in members}
        if len(labels) == 1 and true_sizes[next(iter(labels))] == len(members):
            correct += len(members)
    return correct / len(truth)


def load(data: Path, system: str) -> tuple[list[str], list[str], list[str]]:
    """Raw lines, loghub's content column and its EventIds, aligned by LineId."""
    base = data / "raw" / "loghub_2k"
    lines = (base / f"{system}_2k.log").read_text(encoding="utf-8", errors="replace").splitlines()
    with (base / f"{system}_2k.log_structured.csv").open(encoding="utf-8", errors="replace", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != len(lines):
        raise SystemExit(f"{system}: {len(lines)} lines but {len(rows)} structured rows")
    return lines, [r["Content"] for r in rows], [r["EventId"] for r in rows]


def profile_for(system: str, lines: list[str]) -> tuple[FormatProfile, str]:
    if SHIPPED.get(system) in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[SHIPPED[system]], SHIPPED[system]
    return infer_profile(lines).profile, "inferred"


def contents(profile: FormatProfile, lines: list[str]) -> list[str]:
    primary, generic = HeaderParser(profile), GenericHeaderParser()
    out = []
    for i, line in enumerate(lines):
        record = LogRecord(SourceRef("bench", 0, i), line, timestamp_ms=0)
        header = primary.split(record)
        if not isinstance(header, Header):
            header = generic.split(record)
        out.append(header.content if isinstance(header, Header) else line)
    return out


def detector_parsing(profile: FormatProfile) -> ParsingSettings:
    """The parsing settings the detector runs with under `profile`: DetectorSettings folds the
    profile's masking rules and Drain settings into `parsing`, as for a real run."""
    builtin = BUILTIN_PROFILES.get(profile.name) is profile
    chosen = ProfileSettings(name=profile.name, custom=None if builtin else profile)
    return DetectorSettings(profile=chosen).parsing


def detector_clusters(texts: list[str], settings: ParsingSettings) -> list[int]:
    parser = TemplateParser(settings)
    # The cluster, not the template text of the moment: loghub scores the final grouping.
    drain, mask = parser._drain, parser._mask  # noqa: SLF001 (the bench reads what parse() uses)
    return [drain.add_log_message(mask(t))[0].cluster_id for t in texts]


def drain3_default_clusters(texts: list[str]) -> list[int]:
    miner = TemplateMiner(persistence_handler=None, config=TemplateMinerConfig())
    return [miner.add_log_message(t)["cluster_id"] for t in texts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("RATIONANOMALY_DATA_DIR", REPO.parent / "shared" / "data")))
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()

    runs: list[tuple[str, Callable[[list[str], ParsingSettings], list[int]]]] = [
        ("detector", detector_clusters),
        ("drain3 default", lambda texts, _: drain3_default_clusters(texts)),
    ]
    header = ["system", "profile", *(name for name, _ in runs), "detector, loghub content"]
    rows: list[list[str]] = []
    scores: dict[str, list[float]] = defaultdict(list)
    for system in SYSTEMS:
        lines, loghub_content, truth = load(args.data, system)
        profile, profile_name = profile_for(system, lines)
        texts = contents(profile, lines)
        settings = detector_parsing(profile)
        row = [system, profile_name]
        for name, run in runs:
            ga = grouping_accuracy(truth, run(texts, settings))
            scores[name].append(ga)
            row.append(f"{ga:.3f}")
        ga = grouping_accuracy(truth, detector_clusters(loghub_content, settings))
        scores["loghub content"].append(ga)
        row.append(f"{ga:.3f}")
        rows.append(row)
    rows.append(
        ["mean", "", *(f"{statistics.fmean(scores[n]):.3f}" for n, _ in runs), f"{statistics.fmean(scores['loghub content']):.3f}"]
    )
    below = [s for s, a, b in zip(SYSTEMS, scores["detector"], scores["drain3 default"]) if a < b]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    print(f"\nsystems where the detector is below Drain3's default: {', '.join(below) or 'none'}")


if __name__ == "__main__":
    main()
