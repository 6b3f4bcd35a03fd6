"""reward_optuna: every trial of an Optuna search in one table, failed trials included."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pushgen.reproduce.common import Run
from pushgen.utils.run import write_atomic


def _failure(run: Run) -> str:
    """The last error line of a failed job's log (Hydra writes <job>/train.log)."""
    for log in sorted(run.path.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        hits = [i for i, ln in enumerate(lines) if "ERROR" in ln or "Error" in ln]
        if hits:  # the last error and the lines after it (a traceback's message, a config problem list)
            return " ".join(ln.strip() for ln in lines[hits[-1]: hits[-1] + 4])[:300]
    return "no metrics.json (the job did not finish)"


def trial_table(runs: list[Run], out: Path) -> dict[str, Any]:
    rows = []
    for run in runs:
        params = dict(o.lstrip("+").split("=", 1) for o in run.overrides if "=" in o and "hydra." not in o)
        value = (run.metrics.get("val") or {}).get("pair_acc_sig")
        ok = value is not None and not (isinstance(value, float) and math.isnan(value))
        rows.append({"trial": run.path.name, "state": "complete" if ok else ("nan" if run.metrics else "failed"),
                     "objective_val_pair_acc_sig": value if ok else None,
                     "test_pair_acc_sig": (run.metrics.get("test") or {}).get("pair_acc_sig"),
                     **params, "config_hash": run.config_hash,
                     "error": "" if ok else (_failure(run) if not run.metrics else "objective is NaN")})
    table = pd.DataFrame(rows)
    write_atomic(out / "trials.csv", table.to_csv(index=False))
    best = table.dropna(subset=["objective_val_pair_acc_sig"]).sort_values("objective_val_pair_acc_sig", ascending=False)
    lines = [f"{len(table)} trials: {int((table['state'] == 'complete').sum())} complete, "
             f"{int((table['state'] != 'complete').sum())} failed or NaN.", ""]
    if len(best):
        lines.append(f"Best: trial {best.iloc[0]['trial']}, val pair_acc_sig {best.iloc[0]['objective_val_pair_acc_sig']:.4f}.")
    for sweep in sorted({r.path.parent for r in runs}):
        res = sweep / "optimization_results.yaml"
        if res.exists():
            lines += ["", f"Optuna's own record ({res}):", "", "```yaml", yaml.safe_dump(yaml.safe_load(res.read_text())).strip(), "```"]
    write_atomic(out / "trials.md", "\n".join(lines) + "\n\n" + table.to_csv(index=False))
    return {"runs": len(runs), "table": table}
