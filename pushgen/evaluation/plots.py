"""Figures of a reward run, written as PNG (the caller also logs them to W&B)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
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


def sft_loss_curves(runs: dict[str, str | Path], path: Path, title: str = "SFT loss curves") -> Path | None:
    """Train (running mean) and validation completion loss of one or more runs in one figure."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for i, (label, csv_dir) in enumerate(runs.items()):
        df = read_metrics(csv_dir)
        if df.empty or "step" not in df:
            continue
        color = f"C{i % 10}"
        if "train/loss" in df:
            part = df[["step", "train/loss"]].dropna()
            ax.plot(part["step"], part["train/loss"].rolling(5, min_periods=1).mean(), color=color, alpha=0.6,
                    label=f"{label} train")
            drawn = True
        if "val/loss" in df:
            part = df[["step", "val/loss"]].dropna()
            ax.plot(part["step"], part["val/loss"], color=color, ls="--", marker="o", ms=3, label=f"{label} val")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("completion loss (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def log_images(loggers: list, images: dict[str, str | Path]) -> None:
    """Send PNGs to every W&B logger among ``loggers`` as wandb.Image under plots/NAME."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            import wandb
            lg.experiment.log({f"plots/{k}": wandb.Image(str(v)) for k, v in images.items()})
