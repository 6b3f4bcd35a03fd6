"""fig4_reward_analysis: the reward model's classification ability (the paper's Fig. 4) with
intervals over tests, from one or more finished reward runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushgen.evaluation.classification import write_study
from pushgen.reproduce.common import Run
from pushgen.utils.run import write_atomic

log = logging.getLogger(__name__)


def pooled_of(run: Run) -> pd.DataFrame | None:
    """The run's pooled texts, rebuilt from its own data config (same rules, same row order), for
    the ``first_place`` flag; None (with a warning) when the data file is not here."""
    from pushgen.data.pipeline import prepare
    try:
        return prepare(run.config["data"], seed=int(run.config.get("seed", 0))).pooled
    except (FileNotFoundError, OSError, KeyError) as exc:
        log.warning("%s: data not available (%s); the first_place comparison is left out", run.path, exc)
        return None


def _same_texts(pooled: pd.DataFrame, pairs: pd.DataFrame) -> bool:
    idx = pairs["chosen"].to_numpy()
    return bool(idx.max() < len(pooled) and np.allclose(pooled["ctr"].to_numpy()[idx], pairs["chosen_ctr"].to_numpy()))


def summarise(runs: list[Run], out: Path, n_boot: int = 1000) -> dict[str, Any]:
    tables = []
    for run in runs:
        scores = run.path / "test_pair_scores.csv"
        if not scores.exists():
            raise FileNotFoundError(f"{run.path} has no test_pair_scores.csv (a train.py run with test=true writes it)")
        pairs = pd.read_csv(scores)
        pooled = pooled_of(run)
        if pooled is not None and not _same_texts(pooled, pairs):
            raise ValueError(f"{run.path}: the data rebuilt from its config does not match its pairs (the data file "
                             "or the data code changed); the run's scores cannot be joined to first_place")
        where = out if len(runs) == 1 else out / run.path.name
        paths = write_study(pairs, where, pooled=pooled, n_boot=n_boot, seed=int(run.config.get("seed", 0)))
        tables.append(pd.read_csv(paths["table_csv"]).assign(run=run.path.name))
    table = pd.concat(tables, ignore_index=True)
    if len(runs) > 1:
        write_atomic(out / "classification_all_runs.csv", table.to_csv(index=False))
    return {"runs": len(runs), "table": table}
