"""A model that answers every template normal at once, for tests where the windows, ids and
bookkeeping are what is compared, not the judgement."""

from __future__ import annotations

from rationanomaly.model.backends import Generation


class AlwaysNormal:
    model_id = "fixed-normal"

    def generate(self, conversations):
        return [Generation(text="<think>routine.</think> <answer>normal</answer>", latency_s=0.0) for _ in conversations]

    def close(self) -> None:
        pass
