"""Figure 3: the SFT loss curves of every job of a backbone sweep in one figure.

    python -m pushgen.evaluation.fig3 sweep_dir=logs/sft/multiruns/<date>_fig3_backbones [wandb=false]

Writes ``fig3_loss_curves.png`` and ``fig3_summary.csv`` (per job: backbone, steps, last train loss,
best validation loss, trainable parameters) into the sweep folder and logs the figure to W&B.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from pushgen.evaluation.plots import read_metrics, sft_loss_curves
from pushgen.utils.run import write_atomic


def job_label(job: Path) -> str:
    """The job's backbone (from Hydra's saved choices), else its folder name."""
    hydra_file = job / ".hydra" / "hydra.yaml"
    if hydra_file.exists():
        choices = (yaml.safe_load(hydra_file.read_text()).get("hydra") or {}).get("runtime", {}).get("choices", {})
        if choices.get("backbone"):
            return str(choices["backbone"])
    return job.name


def collect(sweep_dir: str | Path) -> tuple[dict[str, Path], pd.DataFrame]:
    sweep_dir = Path(sweep_dir)
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / "csv").is_dir()), key=lambda p: p.name)
    if not jobs:
        raise FileNotFoundError(f"no job folders with a csv/ log under {sweep_dir}; give the multirun's sweep folder")
    runs, rows = {}, []
    for job in jobs:
        label = job_label(job)
        runs[label] = job / "csv"
        df = read_metrics(job / "csv")
        metrics = json.loads((job / "metrics.json").read_text()) if (job / "metrics.json").exists() else {}
        train = df["train/loss"].dropna() if "train/loss" in df else pd.Series(dtype=float)
        val = df["val/loss"].dropna() if "val/loss" in df else pd.Series(dtype=float)
        rows.append({"backbone": label, "job": job.name, "steps": int(df["step"].max()) + 1 if "step" in df and len(df) else 0,
                     "train_loss_last10": float(train.tail(10).mean()) if len(train) else None,
                     "val_loss_first": float(val.iloc[0]) if len(val) else None,
                     "val_loss_best": float(val.min()) if len(val) else None,
                     "trainable_params": (metrics.get("sft") or {}).get("trainable_params"),
                     "finished": bool(metrics)})
    return runs, pd.DataFrame(rows)


def draw(sweep_dir: str | Path, use_wandb: bool = True) -> dict[str, str]:
    sweep_dir = Path(sweep_dir)
    runs, summary = collect(sweep_dir)
    png = sft_loss_curves(runs, sweep_dir / "fig3_loss_curves.png", title="SFT loss by backbone (Fig. 3)")
    write_atomic(sweep_dir / "fig3_summary.csv", summary.to_csv(index=False))
    print(summary.to_string(index=False))
    if use_wandb and png is not None:
        import wandb
        run = wandb.init(project="pushgen", name=f"fig3[{sweep_dir.name}]", dir=str(sweep_dir), mode="offline",
                         group="sft", job_type="figure")
        try:
            run.log({"plots/fig3_loss_curves": wandb.Image(str(png)), "fig3_summary": wandb.Table(dataframe=summary)})
        finally:
            run.finish()
    return {"png": str(png), "summary": str(sweep_dir / "fig3_summary.csv")}


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    if "sweep_dir" not in args:
        raise SystemExit("usage: python -m pushgen.evaluation.fig3 sweep_dir=DIR [wandb=false]")
    print(draw(args["sweep_dir"], use_wandb=args.get("wandb", "true").lower() != "false"))


if __name__ == "__main__":
    main(sys.argv[1:])
