"""The stance a rationale takes: which label it argues for, read from its own words.

Training's consistency reward and the evaluation's consistency rate read it; the teacher's
rationales are kept only when it agrees with their answer. The reader itself lives in
`model.stance`, because the rank decision's explanation is checked with it at serving time and
the model room imports nothing from training.

>>> stance("Key: 'error'. Conclusion: abnormal, a fault is indicated.")
'abnormal'
>>> stance("The line mentions a counter. There is no error here.")
'normal'
"""

from __future__ import annotations

from rationanomaly.model.stance import stance

__all__ = ["stance"]
