"""Pointwise binomial loss: each arm's clicks given its impressions, with the score as a logit."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_mean(values: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over each entry's group, broadcast back to the entries."""
    _, gid = torch.unique(group, return_inverse=True)
    n = int(gid.max()) + 1
    sums = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, gid, values)
    counts = torch.bincount(gid, minlength=n).to(values.dtype)
    return (sums / counts)[gid]


def test_log_odds(clicks: torch.Tensor, impressions: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Each arm's test-level offset: the log-odds of the test's pooled CTR (clicks + 0.5 smoothing)."""
    c = group_mean(clicks.to(torch.float64), group)
    n = group_mean(impressions.to(torch.float64), group)
    return torch.log((c + 0.5) / (n - c + 0.5))


def binomial(scores: torch.Tensor, group: torch.Tensor, clicks: torch.Tensor, impressions: torch.Tensor) -> torch.Tensor:
    """Binomial negative log-likelihood of clicks ~ Bin(impressions, sigmoid(offset_t + s - mean_t s)).

    The offset is the test's pooled log-odds and scores are centred within the test, so only score
    differences inside a test matter (as for the pairwise losses) and an item's base rate is not
    something the text model has to learn. Returned per impression, averaged over arms.
    """
    logit = test_log_odds(clicks, impressions, group).to(scores.dtype) + scores - group_mean(scores, group)
    ctr = clicks.to(scores.dtype) / impressions.to(scores.dtype)
    return F.binary_cross_entropy_with_logits(logit, ctr)
