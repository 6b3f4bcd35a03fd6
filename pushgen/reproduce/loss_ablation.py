"""loss_ablation: every reward loss x several seeds on one fixed test split. Per loss: the mean over
seeds of each held-out metric, its spread over seeds, a 95% bootstrap interval over tests (tests
resampled, the seed-mean recomputed), and the paired difference to Bradley-Terry on the same pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushgen.evaluation import plots
from pushgen.evaluation.classification import auc_both_orders, bootstrap_over_tests
from pushgen.losses import LOSSES
from pushgen.reproduce.common import Run
from pushgen.utils.run import write_atomic

REFERENCE = "bradley_terry"
PAIR_KEY = ["test_id", "chosen", "rejected"]


def scored_pairs(runs: list[Run]) -> pd.DataFrame:
    """One row per held-out pair, one margin column per run (``m<i>``); all runs must have scored the
    same pairs, or their numbers would not be comparable."""
    base = None
    for i, run in enumerate(runs):
        path = run.path / "test_pair_scores.csv"
        if not path.exists():
            raise FileNotFoundError(f"{run.path} has no test_pair_scores.csv (train.py with test=true writes it)")
        p = pd.read_csv(path)
        p[f"m{i}"] = p["score_chosen"] - p["score_rejected"]
        part = p[PAIR_KEY + ["p_value", f"m{i}"]] if base is None else p[PAIR_KEY + [f"m{i}"]]
        if base is not None and len(part) != len(base):
            raise ValueError(f"{run.path} scored {len(part)} pairs, {runs[0].path} scored {len(base)}: runs of one "
                             "ablation must share a test split (fix data.split.seed) and test every pair")
        base = part if base is None else base.merge(part, on=PAIR_KEY, how="inner", validate="1:1")
        if len(base) != len(part):
            raise ValueError(f"{run.path} scored other pairs than {runs[0].path}: fix data.split.seed for the ablation")
    return base


def _stats(cols: list[str], sig: bool) -> dict:
    """Statistics on the resampled arrays: the mean over the runs ``cols`` of accuracy and AUC, on all
    pairs or (``sig``) on pairs with p < 0.05."""
    def mean_over_seeds(fn):
        def stat(a):
            keep = a["p_value"] < 0.05 if sig else np.ones(len(a["p_value"]), bool)
            return float(np.mean([fn(a[c][keep]) for c in cols]))
        return stat
    return {"pair_acc": mean_over_seeds(lambda m: (m > 0).mean()), "auc": mean_over_seeds(lambda m: auc_both_orders({"margin": m}))}


def summarise(runs: list[Run], out: Path, n_boot: int = 1000) -> dict[str, Any]:
    pairs = scored_pairs(runs)
    by_loss: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        by_loss.setdefault(str(run.get("loss.name")), []).append(i)
    order = [n for n in LOSSES if n in by_loss] + sorted(set(by_loss) - set(LOSSES))
    tid = pairs["test_id"].to_numpy()
    arrays = {c: pairs[c].to_numpy(dtype=float) for c in pairs.columns if c.startswith("m") or c == "p_value"}
    rows = []
    for loss in order:
        cols = [f"m{i}" for i in by_loss[loss]]
        row: dict[str, Any] = {"loss": loss, "seeds": len(cols),
                               "val_pair_acc_sig": np.mean([runs[i].metrics["val"]["pair_acc_sig"] for i in by_loss[loss]])}
        for sig in (False, True):
            for name, stat in _stats(cols, sig).items():
                key = name + ("_sig" if sig else "")
                value, lo, hi = bootstrap_over_tests(tid, arrays, stat, n_boot, seed=0)
                seeds = [_stats([c], sig)[name](arrays) for c in cols]
                row.update({key: value, f"{key}_lo": lo, f"{key}_hi": hi,
                            f"{key}_seed_std": float(np.std(seeds, ddof=1)) if len(seeds) > 1 else np.nan,
                            f"{key}_seeds": ";".join(f"{s:.4f}" for s in seeds)})
        if loss != REFERENCE and REFERENCE in by_loss:
            ref = [f"m{i}" for i in by_loss[REFERENCE]]
            mine, theirs = _stats(cols, True)["pair_acc"], _stats(ref, True)["pair_acc"]
            d, lo, hi = bootstrap_over_tests(tid, arrays, lambda a: mine(a) - theirs(a), n_boot, seed=0)
            row.update({"diff_vs_bt_sig": d, "diff_vs_bt_sig_lo": lo, "diff_vs_bt_sig_hi": hi})
        rows.append(row)
    table = pd.DataFrame(rows)
    write_atomic(out / "loss_ablation.csv", table.to_csv(index=False))
    write_atomic(out / "loss_ablation.md", to_markdown(table, n_pairs=len(pairs), n_sig=int((pairs["p_value"] < 0.05).sum()),
                                                       n_tests=pairs["test_id"].nunique()))
    plots.seed_bars(table, "pair_acc_sig", "held-out accuracy, pairs with p < 0.05", out / "loss_ablation_acc_sig.png")
    plots.seed_bars(table, "auc", "held-out ROC AUC, all pairs", out / "loss_ablation_auc.png")
    return {"runs": len(runs), "table": table}


def to_markdown(table: pd.DataFrame, n_pairs: int, n_sig: int, n_tests: int) -> str:
    def cell(r, k):
        return f"{r[k]:.3f} [{r[k + '_lo']:.3f}, {r[k + '_hi']:.3f}]"
    lines = [f"Held-out split: {n_pairs} pairs from {n_tests} tests ({n_sig} pairs with p < 0.05). "
             "Mean over seeds [95% bootstrap interval over tests]; ± is the standard deviation over seeds.", "",
             "| loss | seeds | pair_acc | pair_acc_sig | auc | auc_sig | val pair_acc_sig | sig acc − BT |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in table.iterrows():
        diff = (f"{r['diff_vs_bt_sig']:+.3f} [{r['diff_vs_bt_sig_lo']:+.3f}, {r['diff_vs_bt_sig_hi']:+.3f}]"
                if "diff_vs_bt_sig" in r and pd.notna(r.get("diff_vs_bt_sig")) else "–")
        lines.append(f"| {r['loss']} | {r['seeds']} | {cell(r, 'pair_acc')} ± {r['pair_acc_seed_std']:.3f} | "
                     f"{cell(r, 'pair_acc_sig')} ± {r['pair_acc_sig_seed_std']:.3f} | {cell(r, 'auc')} | "
                     f"{cell(r, 'auc_sig')} | {r['val_pair_acc_sig']:.3f} | {diff} |")
    return "\n".join(lines) + "\n"
