"""Human-readable forms of an evaluation report: a Markdown table and a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """One row per (file, level, system) with P/R/F1, confusion counts, format and consistency."""
    lines = [
        f"# Evaluation: {report.get('model')}",
        "",
        f"Pooled over the model's items: precision {_fmt(report['precision'])}, "
        f"recall {_fmt(report['recall'])}, F1 {_fmt(report['f1'])} "
        f"(prompt {report.get('prompt_version')}, max_new_tokens {report.get('max_new_tokens')}).",
        "",
        "| file | level | system | n | P | R | F1 | F1 lenient | AUC | TP | FP | FN | TN | format-valid | consistent | latency s/item |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["sections"]:
        lines.append(
            "| "
            + " | ".join(
                _fmt(v)
                for v in (
                    s["file"], s["level"], s["system"], s["n"], s["precision"], s["recall"], s["f1"],
                    s.get("f1_lenient"), s.get("auc"), s["tp"], s["fp"], s["fn"], s["tn"], s["format_valid_rate"],
                    s["consistency_rate"], s["mean_latency_s"],
                )
            )
            + " |"
        )
    lines += [
        "",
        "Positive class: abnormal. An unparseable answer counts as not flagged (strict); "
        "'F1 lenient' reads such answers from an `<answer>` tag or the text's stance instead. "
        "'consistent': share of valid answers whose rationale argues for the same label. "
        "'AUC': how well the system's abnormality score ranks anomalies above normal items, "
        "whatever the threshold (rank decision: its confidence; TF-IDF: its probability; "
        "session rule: the most abnormal template; – where a system gives no score).",
    ]
    return "\n".join(lines) + "\n"


def write_markdown(report: dict[str, Any], path: Path) -> Path:
    path.write_text(markdown(report), encoding="utf-8")
    return path


def write_plot(report: dict[str, Any], path: Path) -> Path:
    """Confusion matrix of the model (pooled) and F1 per (file, level) for every system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overall = report["overall"]
    groups = list(dict.fromkeys(f"{s['dataset']} {s['level']}" for s in report["sections"]))
    systems = list(dict.fromkeys(s["system"] for s in report["sections"]))
    # One row per system, one bar per dataset within it: stays readable with dozens of systems,
    # where side-by-side columns and a legend of systems did not.
    height = max(4.5, 0.22 * len(systems) * max(len(groups), 1) + 1.5)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, height), gridspec_kw={"width_ratios": [1, 2]})
    matrix = [[overall["tn"], overall["fp"]], [overall["fn"], overall["tp"]]]
    left.imshow(matrix, cmap="Blues")
    for r in range(2):
        for c in range(2):
            left.text(c, r, str(matrix[r][c]), ha="center", va="center", fontsize=14)
    left.set_xticks([0, 1], ["pred normal", "pred abnormal"])
    left.set_yticks([0, 1], ["gold normal", "gold abnormal"])
    left.set_title(f"model (pooled), F1 {overall['f1']:.3f}")

    width = 0.8 / max(len(groups), 1)
    for k, group in enumerate(groups):
        values = []
        for system in systems:
            match = [s for s in report["sections"] if s["system"] == system and f"{s['dataset']} {s['level']}" == group]
            values.append(match[0]["f1"] if match else 0.0)
        rows = [n + k * width for n in range(len(systems))]
        right.barh(rows, values, height=width, label=group)
        for row, value in zip(rows, values, strict=True):
            right.text(value + 0.01, row, f"{value:.2f}", va="center", fontsize=6)
    right.set_yticks([n + width * (len(groups) - 1) / 2 for n in range(len(systems))], systems, fontsize=7)
    right.invert_yaxis()  # the report's first system (the model) on top
    right.set_xlim(0, 1.08)
    right.set_xlabel("F1 (abnormal)")
    right.legend(loc="lower right", fontsize=8)
    right.set_title("F1 per dataset and level")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
