"""A short markdown report of a best-of-N run: headline metrics, fates, adherence, the best-of-N
curve and a few examples side by side with the human text."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from pushgen.generation.loop import BestOfN
from pushgen.utils.run import write_atomic


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(_f(c) if not isinstance(c, str) else c.replace("|", "/") for c in r) + " |"
                    for r in rows]


def render(metrics: dict, curve: pd.DataFrame, result: BestOfN, n_examples: int = 5) -> str:
    s = metrics["selection"]
    run = metrics["run"]
    lines = [f"# Best-of-N run: {run['name']}", "",
             f"Generator `{run['generator']}`, reward model `{run['reward_model']}`"
             + (f", gold reward model `{run['gold_reward_model']}`" if run.get("gold_reward_model") else "") + ".",
             f"{s['n_items']} held-out items (split `{run['split']}`), categories {', '.join(run['categories'])}, "
             f"{run['n_per_category']} samples each: {s['n_candidates']} candidates, generated in "
             f"{_f(run['generation_seconds'], 1)} s ({_f(run['candidates_per_second'], 1)} candidates/s)"
             + (f", classifier-free guidance on the category at scale {run['guidance_scale']}"
                if run.get("guidance_scale", 1.0) != 1.0 else "") + ".", "",
             "## Selection", ""]
    rows = [["replacement rate (selected >= best human text, proxy)", s["replacement_rate"]],
            ["mean lift over the human text that won its A/B test", s["lift_over_human"]],
            ["mean lift over the best human text", s["lift_over_best_human"]],
            ["mean lift over a random kept candidate", s["lift_over_random"]],
            ["items with a selection", f"{s['n_items_with_selection']} / {s['n_items']}"],
            ["kept rate", s["kept_rate"]], ["duplicate rate", s["duplicate_rate"]]]
    if "adherence_selected" in s and s["adherence_selected"]:
        rows.append(["category adherence of the selections", s["adherence_selected"]["overall"]])
    if "adherence_candidates" in s and s["adherence_candidates"]:
        rows.append(["category adherence of all kept candidates", s["adherence_candidates"]["overall"]])
    corr = s["score_length_corr"]
    rows.append(["score-length correlation (Pearson / Spearman)", f"{_f(corr['pearson'])} / {_f(corr['spearman'])}"])
    lines += _table(["metric", "value"], rows) + [""]
    lines += ["Fates: " + ", ".join(f"{k} {v}" for k, v in s["fates"].items() if v), ""]
    lines += ["## Diversity and length", ""]
    div = [["candidates within an item"] + [s["diversity_within_item"][k] for k in ("distinct_1", "distinct_2", "self_bleu")],
           ["selections across items"] + [s["diversity_across_items"][k] for k in ("distinct_1", "distinct_2", "self_bleu")],
           ["human A/B winners across items"] + [s["diversity_human_across_items"][k] for k in ("distinct_1", "distinct_2", "self_bleu")]]
    lines += _table(["texts", "distinct-1", "distinct-2", "self-BLEU"], div) + [""]
    length = s["length"]
    lines += _table(["texts", "n", "mean chars", "median chars", "mean words"],
                    [[k, v.get("n", 0), v.get("chars_mean"), v.get("chars_median"), v.get("words_mean")]
                     for k, v in length.items()]) + [""]
    if not curve.empty:
        lines += ["## Best-of-N (reward-hacking check)", "",
                  "Expected score of the proxy's pick among N random kept candidates (exact expectation over "
                  "draws), as a gain over N=1 in standard deviations of each model's candidate scores.", ""]
        cols = [c for c in ("n", "proxy", "gold", "proxy_gain_sd", "gold_gain_sd", "gap_sd", "beats_human",
                            "beats_human_gold") if c in curve]
        rows = [[int(r[0])] + r[1:] for r in curve[cols].astype(float).round(4).values.tolist()]
        lines += _table(cols, rows) + [""]
    lines += ["## Examples", ""]
    humans = result.humans[result.humans["is_ctr_best"]].set_index("item_id")
    for _, row in result.selections.head(n_examples).iterrows():
        h = humans.loc[row["item_id"]] if row["item_id"] in humans.index else None
        lines += [f"- item `{row['item_id']}` ({row['category']}): **{row['text']}** (score {_f(row['score'])})"]
        if h is not None:
            lines += [f"  - human A/B winner: {h['text']} (score {_f(h['score'])})"]
    lines += ["", "Figures: " + ", ".join(f"`{Path(p).name}`" for p in metrics.get("plots", {}).values()), ""]
    return "\n".join(lines)


def write_report(path: Path, metrics: dict, curve: pd.DataFrame, result: BestOfN) -> Path:
    return write_atomic(path, render(metrics, curve, result))
