"""Extract the field table the ECS validation test needs from Elastic's generated ecs_flat.yml.

    python scripts/ecs_fields.py ecs_flat.yml 8.17.0 > tests/unit/stream/ecs_fields_8.17.0.json

ecs_flat.yml is `generated/ecs/ecs_flat.yml` at tag v8.17.0 of github.com/elastic/ecs (Apache
License 2.0). Only what a type check reads is kept: each field's type, whether ECS expects an
array (`normalize: [array]`), the allowed values of the categorization fields, and for each
`event.category` the `event.type` values ECS expects with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def extract(flat: dict) -> dict:
    fields = {}
    for name, spec in sorted(flat.items()):
        entry = {"type": spec["type"]}
        if "array" in (spec.get("normalize") or []):
            entry["array"] = True
        if spec.get("allowed_values"):
            entry["allowed"] = [v["name"] for v in spec["allowed_values"]]
            expected = {v["name"]: v["expected_event_types"] for v in spec["allowed_values"] if v.get("expected_event_types")}
            if expected:
                entry["expected_event_types"] = expected
        fields[name] = entry
    return fields


def main(path: str, version: str) -> None:
    flat = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    fields = extract(flat)
    # One field a line: a diff between ECS versions reads field by field.
    out = sys.stdout
    out.write("{\n")
    out.write(f'"ecs_version": {json.dumps(version)},\n')
    out.write(f'"source": "elastic/ecs v{version} generated/ecs/ecs_flat.yml (Apache-2.0)",\n')
    out.write('"fields": {\n')
    out.write(",\n".join(f"{json.dumps(name)}: {json.dumps(entry)}" for name, entry in fields.items()))
    out.write("\n}\n}\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
