"""The draft writer never contradicts its input, on every train template."""

from __future__ import annotations

import re

import pytest

from rationanomaly.model.drafts import draft_template, draft_window
from rationanomaly.model.lexicon import fault_terms
from rationanomaly.training.stance import stance
from rationanomaly.model.parser import parse_verdict
from rationanomaly.model.prompt import completion_text
from rationanomaly.training.data import load_split
from rationanomaly.training.drafts import draft

# An independent, plain list of trouble words: a draft that says "no fault keywords" must not
# be looking at any of these.
TROUBLE = re.compile(
    r"error|fail|fatal|panic|exception|fault|denied|refused|timed out|timeout|lost|unable|cannot|"
    r"could not|invalid|illegal|corrupt|bad |warning|disconnect|critical|abort|not found|missing",
    re.IGNORECASE,
)
TRAIN = {split: load_split(split) for split in ("bgl_train", "spirit_train")}


def argument(rationale: str) -> str:
    """A draft's reasoning: before its "Conclusion:", without the quoted key words."""
    return re.sub(r"'[^']*'", "", rationale.split(" Conclusion:")[0])


@pytest.mark.parametrize("split", sorted(TRAIN))
def test_drafts_never_contradict_the_input(split: str) -> None:
    for example in TRAIN[split]:
        rationale = draft(example).rationale
        text = example.source
        if "no fault keywords" in rationale:
            assert not TROUBLE.search(text), (text, rationale)
        for quoted in re.findall(r"'(.+?)'(?=, '|\. | from )", rationale):
            assert quoted.lower() in text.lower().replace("<", ""), (quoted, text)
        # The argument, without its conclusion and its quoted evidence, never argues the other
        # label (the conclusion alone would agree by construction: the writer prints the label).
        assert stance(argument(rationale)) in (None, example.label), (text, rationale)


@pytest.mark.parametrize("split", sorted(TRAIN))
def test_drafts_are_short_valid_targets(split: str) -> None:
    for example in TRAIN[split]:
        rationale = draft(example).rationale
        assert len(rationale.split()) <= 40, rationale
        verdict = parse_verdict(completion_text(rationale, example.label))
        assert verdict.label == example.label


def test_draft_provenance() -> None:
    assert draft(TRAIN["bgl_train"][0]).rationale_source == "draft"


def test_error_words_are_named_not_denied() -> None:
    text = draft_template("NFS Mount failed on <*> slept <*> seconds, retrying <*>", "normal")
    assert "'failed'" in text and "no fault" not in text and "retried" in text


def test_window_drafts() -> None:
    for session in load_split("hdfs_train")[:200]:
        rationale = draft_window(session.templates, session.label)
        if fault_terms(" ".join(session.templates)):
            # With trouble words to cite, the argument itself takes the label's side. (A window
            # with none argues abnormal only in its conclusion: the stance reader hears "no fault
            # keywords" as normal, so such drafts are not checked here.)
            assert stance(argument(rationale)) in (None, session.label), rationale
        if "no fault keywords" in rationale:
            assert not any(TROUBLE.search(t) for t in session.templates)
