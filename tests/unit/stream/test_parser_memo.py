"""The miner's memo of contents it has seen (TemplateParser.parse) changes nothing Drain3 would do.

Each shared raw log's contents go through two parsers built alike: one as the stream runs it,
one that hands every masked content to Drain3's own `add_log_message`. Line by line they must
name the same template, and at the end hold the same clusters: ids, sizes (a memo hit still
counts its line) and least-recently-used order (a hit still touches its cluster), which decides
what a capped miner evicts. The capped run makes eviction happen for real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rationanomaly.stream.generic import ProfileSplitter
from rationanomaly.stream.parsing import TemplateParser
from rationanomaly.stream.settings import load_settings
from tests.unit.stream.raw_logs import profile_of, raw_logs


def _contents(path: Path, profile: str) -> list[str]:
    settings = load_settings(None, profile={"name": profile}, metrics={"port": None})
    splitter = ProfileSplitter(settings.profile)
    contents = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = splitter.fields(line, None, None, None, 0)
        contents.append(line if fields.__class__ is str else fields[1])
    return contents


@pytest.mark.parametrize("max_clusters", [None, 12])
def test_the_memo_gives_drain3s_templates_and_leaves_drain3s_state(data_dir: Path, max_clusters: int | None) -> None:
    served = lines = 0
    for path in raw_logs(data_dir):
        profile = profile_of(path)
        settings = load_settings(None, profile={"name": profile}, metrics={"port": None})
        parsing = settings.parsing.model_copy(update={"max_clusters": max_clusters})
        memoised, plain = TemplateParser(parsing), TemplateParser(parsing)
        drain = memoised._drain  # noqa: SLF001
        searches = 0
        add_log_message = drain.add_log_message

        def counted(content: str, add=add_log_message):
            nonlocal searches
            searches += 1
            return add(content)

        drain.add_log_message = counted
        contents = _contents(path, profile)
        for content in contents:
            template = memoised.parse(content)
            cluster, _ = plain._drain.add_log_message(plain._mask(content))  # noqa: SLF001 - Drain3 alone
            assert template.text == " ".join(cluster.log_template_tokens), (path.name, content)
        lines += len(contents)
        served += len(contents) - searches
        assert memoised.snapshot() == plain.snapshot(), path.name
    assert lines > 50_000
    # the memo is used, not bypassed: most lines of these logs repeat a content already seen
    assert served > lines // 2
