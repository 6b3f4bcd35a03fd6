"""Figures of a reward run, written as PNG (the caller also logs them to W&B)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pushgen.utils.run import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a crash never leaves a half-written PNG under the real name
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def read_metrics(csv_dir: str | Path) -> pd.DataFrame:
    """All metrics a run logged, across its csv/version_N folders (one per start or resume)."""
    files = sorted(Path(csv_dir).glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
    frames = [pd.read_csv(f) for f in files if f.stat().st_size > 0]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def loss_curves(csv_dir: str | Path, path: Path) -> Path | None:
    """Train loss per logged step and validation loss at each validation, against the global step."""
    df = read_metrics(csv_dir)
    if df.empty or "step" not in df:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    if "train/loss_step" in df:
        part = df[["step", "train/loss_step"]].dropna()
        # Each logged train loss is one small batch: show it faintly, with a running mean on top.
        ax.plot(part["step"], part["train/loss_step"], alpha=0.3, color="C0")
        ax.plot(part["step"], part["train/loss_step"].rolling(10, min_periods=1).mean(), color="C0",
                label="train (running mean of 10 logs)")
    if "val/loss" in df:
        part = df[["step", "val/loss"]].dropna()
        ax.plot(part["step"], part["val/loss"], marker="o", ms=3, color="C1", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("pairwise loss")
    ax.set_title("Reward model loss")
    ax.legend()
    return _save(fig, path)


def score_histogram(chosen: np.ndarray, rejected: np.ndarray, path: Path, title: str = "held-out pairs") -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(np.r_[chosen, rejected], bins=40)
    ax.hist(chosen, bins=bins, alpha=0.6, label="chosen (higher CTR)")
    ax.hist(rejected, bins=bins, alpha=0.6, label="rejected")
    ax.set_xlabel("reward score")
    ax.set_ylabel("texts")
    ax.set_title(f"Reward scores, {title}")
    ax.legend()
    return _save(fig, path)


def bucket_accuracy(rows: list[tuple[str, int, float]], path: Path) -> Path:
    labels = [f"{r[0]}\n(n={r[1]})" for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(range(len(rows)), [r[2] for r in rows])
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_xlabel("CTR difference (chosen - rejected)")
    ax.set_ylabel("pairwise accuracy")
    ax.set_title("Accuracy by CTR-difference bucket")
    return _save(fig, path)


def metric_bars(rows: pd.DataFrame, xlabel: str, ylabel: str, path: Path, chance: float | None = None,
                title: str | None = None) -> Path:
    """Bars of ``value`` per ``subset`` with their 95% intervals (``ci_low``, ``ci_high``) as error bars;
    ``n`` under each label when present."""
    rows = rows.reset_index(drop=True)
    value = rows["value"].to_numpy(dtype=float)
    err = np.vstack([value - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - value])
    err = np.where(np.isfinite(err), err, 0.0)
    labels = [f"{s}\n(n={n})" if "n" in rows else str(s) for s, n in zip(rows["subset"], rows.get("n", rows["subset"]))]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(rows)), 4))
    ax.bar(range(len(rows)), value, yerr=err, capsize=4, color="C0")
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or "95% bootstrap intervals over tests", fontsize=9)
    return _save(fig, path)


def roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, ci: tuple[float, float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, color="C0", label=f"AUC {auc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC of P(A beats B) = sigmoid(r_A - r_B)", fontsize=9)
    ax.legend(loc="lower right")
    return _save(fig, path)


def reliability(bins: pd.DataFrame, ece: float, ci: tuple[float, float], path: Path) -> Path:
    """Reliability diagram: observed win rate against mean predicted probability per bin."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    b = bins[bins["n"] > 0]
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    ax.plot(b["confidence"], b["observed"], marker="o", color="C0", label=f"model (ECE {ece:.3f} [{ci[0]:.3f}, {ci[1]:.3f}])")
    for row in b.itertuples():
        ax.annotate(str(row.n), (row.confidence, row.observed), fontsize=6, xytext=(3, -8), textcoords="offset points")
    ax.set_xlabel("predicted P(A beats B)")
    ax.set_ylabel("observed share where A won")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Calibration (labels: texts per bin)", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    return _save(fig, path)


def seed_bars(table: pd.DataFrame, key: str, ylabel: str, path: Path) -> Path:
    """Per row (a loss): the seed mean as a bar, the 95% interval over tests as an error bar, and each
    seed's value as a dot (``<key>_seeds``, ';'-separated)."""
    value = table[key].to_numpy(dtype=float)
    err = np.vstack([value - table[f"{key}_lo"].to_numpy(dtype=float), table[f"{key}_hi"].to_numpy(dtype=float) - value])
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(table)), 4))
    x = np.arange(len(table))
    ax.bar(x, value, yerr=np.where(np.isfinite(err), err, 0), capsize=4, color="C0", alpha=0.8)
    for i, seeds in enumerate(table[f"{key}_seeds"]):
        vals = [float(s) for s in str(seeds).split(";") if s]
        ax.scatter(np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)), vals, color="k", s=10, zorder=3)
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    low = np.nanmin(np.r_[table[f"{key}_lo"].to_numpy(dtype=float), 0.5]) - 0.05
    ax.set_ylim(max(0.0, low), min(1.0, np.nanmax(table[f"{key}_hi"].to_numpy(dtype=float)) + 0.05))
    ax.set_xticks(x, table["loss"], rotation=20, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title("Loss ablation: seed mean, 95% CI over tests, dots = seeds", fontsize=9)
    return _save(fig, path)
