"""Figures of a best-of-N run, written as PNG (the generate task also logs them to W&B)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pushgen.evaluation.plots import _save, plt


def best_of_n(curve: pd.DataFrame, path: Path) -> Path | None:
    """Gains of the proxy and gold scores as N grows, their gap, and the replacement rate under each."""
    if curve.empty:
        return None
    has_gold = "gold_gain_sd" in curve
    fig, axes = plt.subplots(1, 3 if has_gold else 2, figsize=(13 if has_gold else 9, 3.8))
    ax = axes[0]
    ax.plot(curve["n"], curve["proxy_gain_sd"], marker="o", label="proxy (selects)")
    if has_gold:
        ax.plot(curve["n"], curve["gold_gain_sd"], marker="s", label="gold (held out)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (candidates per item)")
    ax.set_ylabel("expected score of the pick - at N=1 (SD)")
    ax.set_title("Best-of-N gain")
    ax.legend()
    if has_gold:
        ax = axes[1]
        ax.plot(curve["n"], curve["gap_sd"], marker="o", color="C3")
        ax.axhline(0, color="grey", lw=1, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N")
        ax.set_ylabel("proxy gain - gold gain (SD)")
        ax.set_title("Proxy-gold gap")
    ax = axes[-1]
    ax.plot(curve["n"], curve["beats_human"], marker="o", label="proxy")
    if "beats_human_gold" in curve:
        ax.plot(curve["n"], curve["beats_human_gold"], marker="s", label="gold")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1)
    ax.set_xlabel("N")
    ax.set_ylabel("P(pick >= best human text)")
    ax.set_title("Replacement rate")
    ax.legend()
    return _save(fig, path)


def score_distributions(kept: np.ndarray, selected: np.ndarray, human: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(np.r_[kept, selected, human], bins=30)
    ax.hist(kept, bins=bins, alpha=0.4, density=True, label=f"all kept candidates (n={len(kept)})")
    ax.hist(human, bins=bins, alpha=0.5, density=True, label=f"human texts (n={len(human)})")
    ax.hist(selected, bins=bins, alpha=0.5, density=True, label=f"selected (n={len(selected)})")
    ax.set_xlabel("reward score")
    ax.set_ylabel("density")
    ax.set_title("Reward scores")
    ax.legend(fontsize=8)
    return _save(fig, path)


def score_vs_length(chars: np.ndarray, scores: np.ndarray, human_chars: np.ndarray, human_scores: np.ndarray,
                    path: Path, corr: float | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(chars, scores, s=6, alpha=0.4, label="kept candidates")
    ax.scatter(human_chars, human_scores, s=8, alpha=0.6, marker="x", label="human texts")
    ax.set_xlabel("length (characters)")
    ax.set_ylabel("reward score")
    title = "Score vs length"
    if corr is not None and np.isfinite(corr):
        title += f" (candidates: Pearson r = {corr:.2f})"
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def adherence_bars(per_category: dict[str, dict[str, float]], path: Path) -> Path | None:
    """per_category: {series name: {category: share}}, e.g. candidates and selections."""
    series = {k: v for k, v in per_category.items() if v}
    if not series:
        return None
    cats = sorted({c for v in series.values() for c in v})
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(cats) + 2), 4))
    for j, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(cats)) + j * width, [values.get(c, np.nan) for c in cats], width, label=name)
    ax.set_xticks(np.arange(len(cats)) + 0.4 - width / 2, cats, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("labeler category = requested")
    ax.set_title("Category adherence")
    ax.legend(fontsize=8)
    return _save(fig, path)
