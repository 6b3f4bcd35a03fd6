"""Studies of the generator (fig3_backbones, category_ablation, best_of_n). Their runs come from the
generator's entry points (sft.py, generate.py); each study checks they exist before it starts.

fig3_backbones reads what any run folder logs (csv/version_N/metrics.csv): it draws the training
loss of each run against the step, one line per backbone, as the paper's Fig. 3 does. The other two
tabulate the metrics.json sections their entry points write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pushgen.evaluation.plots import read_metrics  # noqa: E402
from pushgen.reproduce.common import Run  # noqa: E402
from pushgen.utils.run import write_atomic  # noqa: E402


def _label(run: Run) -> str:
    return str(run.get("backbone.name") or run.get("backbone.name_or_path") or run.path.name)


def loss_curves(runs: list[Run], out: Path) -> dict[str, Any]:
    """One training-loss curve per run (running mean of 10 logged steps) and a table of the last values."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = []
    for run in runs:
        log = read_metrics(run.path / "csv")
        col = next((c for c in ("train/loss_step", "train/loss") if c in log), None)
        if col is None:
            raise ValueError(f"{run.path}: its csv log has no train/loss_step column")
        part = log[["step", col]].dropna()
        ax.plot(part["step"], part[col].rolling(10, min_periods=1).mean(), label=_label(run))
        val = log["val/loss"].dropna() if "val/loss" in log else pd.Series(dtype=float)
        rows.append({"run": run.path.name, "backbone": _label(run), "config_hash": run.config_hash,
                     "steps": int(part["step"].max()) if len(part) else 0,
                     "final_train_loss_mean10": float(part[col].tail(10).mean()) if len(part) else float("nan"),
                     "final_val_loss": float(val.iloc[-1]) if len(val) else float("nan")})
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (running mean of 10 logs)")
    ax.set_title("Training loss by backbone")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "loss_curves.png", dpi=120)
    plt.close(fig)
    table = pd.DataFrame(rows)
    write_atomic(out / "loss_curves.csv", table.to_csv(index=False))
    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |"
              for row in table.itertuples(index=False)]
    write_atomic(out / "loss_curves.md", "\n".join(lines) + "\n")
    return {"runs": len(runs), "table": table}


def metrics_table(section: str):
    """A summariser that tabulates one section of each run's metrics.json, with the run's overrides."""
    def summarise(runs: list[Run], out: Path) -> dict[str, Any]:
        rows = []
        for run in runs:
            values = run.metrics.get(section)
            if not isinstance(values, dict):
                raise ValueError(f"{run.path}/metrics.json has no '{section}' section; is it a run of this study?")
            rows.append({"run": run.path.name, "overrides": " ".join(run.overrides), "config_hash": run.config_hash,
                         **{k: v for k, v in values.items() if isinstance(v, (int, float, str))}})
        table = pd.DataFrame(rows)
        write_atomic(out / f"{section}.csv", table.to_csv(index=False))
        return {"runs": len(runs), "table": table}
    return summarise

