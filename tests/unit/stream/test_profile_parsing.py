"""A profile's own masking rules and Drain settings reach the miner every partition runs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rationanomaly.stream.parsing import MaskRule, ParsingSettings, ProfileParsing, TemplateParser
from rationanomaly.stream.profiles import BUILTIN_PROFILES, FormatProfile, ProfileSettings
from rationanomaly.stream.settings import DetectorSettings, load_settings

TUNED = FormatProfile(
    name="myapp",
    log_format="<Level> <Content>",
    level_field="Level",
    parsing=ProfileParsing(
        masking=(MaskRule(regex_pattern=r"(?<![\w-])job-[a-z]+(?![\w-])", mask_with="JOB"),),
        sim_th=0.85,
        depth=6,
        extra_delimiters=("=",),
    ),
)


def _custom(profile: FormatProfile = TUNED) -> dict[str, object]:
    return {"name": profile.name, "custom": profile.model_dump()}


def _drain_config(parser: TemplateParser) -> tuple[float, int, list[str]]:
    drain = parser._drain  # noqa: SLF001 (the test reads what Drain itself was given)
    return drain.sim_th, drain.max_node_depth + 2, list(drain.extra_delimiters)


def test_each_profile_setting_reaches_the_template_parser() -> None:
    settings = load_settings(None, profile=_custom())
    assert (settings.parsing.sim_th, settings.parsing.depth, settings.parsing.extra_delimiters) == (0.85, 6, ("=",))
    parser = TemplateParser(settings.parsing)
    assert _drain_config(parser) == (0.85, 6, ["="])
    # the profile's rule runs before the masking file's; "=" splits tokens for Drain
    assert parser.parse("ran job-nightly in 12 s user=bob").text == "ran <JOB> in <NUM> s user bob"


def test_the_profile_rule_runs_before_the_shared_rules() -> None:
    digits = FormatProfile(
        name="digits",
        log_format="<Content>",
        parsing=ProfileParsing(masking=(MaskRule(regex_pattern=r"(?<![\w.])\d+ bytes", mask_with="SIZE"),)),
    )
    parser = TemplateParser(DetectorSettings(profile=ProfileSettings.model_validate(_custom(digits))).parsing)
    # Without the profile's rule first, the shared NUM rule would take the number.
    assert parser.parse("sent 512 bytes to 10.0.0.1").text == "sent <SIZE> to <IP>"
    assert TemplateParser(ParsingSettings()).parse("sent 512 bytes to 10.0.0.1").text == "sent <NUM> bytes to <IP>"


def test_what_the_user_sets_under_parsing_wins_over_the_profile(monkeypatch) -> None:
    settings = load_settings(None, profile=_custom(), parsing={"sim_th": 0.5})
    assert (settings.parsing.sim_th, settings.parsing.depth) == (0.5, 6)
    monkeypatch.setenv("RATIONANOMALY_PARSING__DEPTH", "4")
    settings = load_settings(None, profile=_custom())
    assert (settings.parsing.sim_th, settings.parsing.depth) == (0.85, 4)
    assert _drain_config(TemplateParser(settings.parsing))[:2] == (0.85, 4)


def test_a_profile_without_tuning_runs_the_shared_settings() -> None:
    assert BUILTIN_PROFILES["hdfs"].parsing is None
    assert DetectorSettings().parsing == ParsingSettings()


def test_tuning_is_replaced_not_stacked() -> None:
    once = ParsingSettings().tuned_by(TUNED.parsing)
    assert once.tuned_by(TUNED.parsing) == once
    # a later profile without tuning takes the earlier one's values away again
    assert once.tuned_by(None) == ParsingSettings()


def test_builtin_tuning_reaches_the_detector_settings() -> None:
    settings = DetectorSettings(profile=ProfileSettings(name="proxifier"))
    assert settings.parsing.sim_th == BUILTIN_PROFILES["proxifier"].parsing.sim_th
    parser = TemplateParser(settings.parsing)
    line = "www.example.com:443 close, 1024 bytes (1.00 KB) sent, 0 bytes received, lifetime <1 sec"
    assert parser.parse(line).text == "<HOST>:<NUM> close, <SIZE> sent, <SIZE> received, lifetime <DURATION>"


def test_a_profile_masking_rule_that_does_not_compile_is_refused() -> None:
    with pytest.raises(ValidationError, match="masking rule 'BAD' is not a valid regex"):
        ProfileParsing(masking=(MaskRule(regex_pattern="(unclosed", mask_with="BAD"),))
    with pytest.raises(ValidationError):
        ProfileParsing(sim_th=1.5)


def test_the_snapshot_fingerprint_holds_the_profile_rules() -> None:
    tuned = DetectorSettings(profile=ProfileSettings.model_validate(_custom())).parsing
    parser = TemplateParser(tuned)
    parser.parse("ran job-nightly in 12 s")
    restored = TemplateParser.restore(parser.snapshot(), tuned)
    assert [t.text for t in restored.templates()] == ["ran <JOB> in <NUM> s"]
    assert restored.parse("ran job-weekly in 3 s").text == "ran <JOB> in <NUM> s"
