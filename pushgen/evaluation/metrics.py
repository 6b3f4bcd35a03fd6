"""Pairwise metrics for a reward model, as a torchmetrics Metric so they sync across processes.

accuracy: share of pairs with r_chosen > r_rejected (a tie counts as wrong);
auc: ROC AUC of sigmoid(r_a - r_b) with every pair shown in both orders;
margin: mean r_chosen - r_rejected; reward_mean / reward_std: over all scored texts.
Each is reported for all pairs and, with the suffix ``_sig``, for pairs with p < 0.05.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

SIG_LEVEL = 0.05


def pairwise_summary(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    chosen, rejected = chosen.double(), rejected.double()
    n = chosen.numel()
    if n == 0:
        return {"acc": float("nan"), "auc": float("nan"), "margin": float("nan"),
                "reward_mean": float("nan"), "reward_std": float("nan"), "n": 0}
    margin = chosen - rejected
    both = torch.cat([margin, -margin])
    target = torch.cat([torch.ones(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)])
    rewards = torch.cat([chosen, rejected])
    return {
        "acc": float((margin > 0).double().mean()),
        "auc": float(binary_auroc(torch.sigmoid(both), target)),
        "margin": float(margin.mean()),
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "n": int(n),
    }


class PairwiseMetrics(Metric):
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("chosen", default=[], dist_reduce_fx="cat")
        self.add_state("rejected", default=[], dist_reduce_fx="cat")
        self.add_state("p_value", default=[], dist_reduce_fx="cat")

    def update(self, chosen: torch.Tensor, rejected: torch.Tensor, p_value: torch.Tensor) -> None:
        self.chosen.append(chosen.detach().float())
        self.rejected.append(rejected.detach().float())
        self.p_value.append(p_value.detach().float())

    def compute(self) -> dict[str, float]:
        if isinstance(self.chosen, list) and not self.chosen:
            c = r = p = torch.zeros(0)
        else:
            c, r, p = (dim_zero_cat(x) for x in (self.chosen, self.rejected, self.p_value))
        out = pairwise_summary(c, r)
        sig = p < SIG_LEVEL
        out.update({f"{k}_sig": v for k, v in pairwise_summary(c[sig], r[sig]).items()})
        return out


def accuracy_by_bucket(ctr_diff: np.ndarray, margin: np.ndarray, edges=(0, 0.0025, 0.005, 0.01, 0.02, np.inf)):
    """Pairwise accuracy per CTR-difference bucket: (label, n, accuracy) rows."""
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (ctr_diff >= lo) & (ctr_diff < hi)
        label = f"{lo:.4f}-{hi:.4f}" if np.isfinite(hi) else f">={lo:.4f}"
        rows.append((label, int(mask.sum()), float((margin[mask] > 0).mean()) if mask.any() else float("nan")))
    return rows
