"""Pairwise reward losses on the margin m = r_chosen - r_rejected. Each returns a weighted mean, so
the value does not depend on batch size or on gradient accumulation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(torch.finfo(values.dtype).tiny)


def bradley_terry(margin: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """-log sigmoid(m): the chosen text's CTR was higher."""
    return weighted_mean(F.softplus(-margin), weight)


def bradley_terry_margin(margin: torch.Tensor, target_margin: torch.Tensor,
                         weight: torch.Tensor | None = None) -> torch.Tensor:
    """-log sigmoid(m - delta): a pair whose A/B gap is large must be won by at least delta, where
    delta grows with the gap (scale x z statistic or x CTR difference, see ``pair_target_margin``)."""
    return weighted_mean(F.softplus(target_margin.to(margin.dtype) - margin), weight)


def soft_bce(margin: torch.Tensor, soft_label: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy to P(chosen beats rejected) from the A/B counts: a near coin-flip pair pulls the
    margin toward 0 instead of pretending to know the winner."""
    target = soft_label.to(margin.dtype)
    return weighted_mean(F.binary_cross_entropy_with_logits(margin, target, reduction="none"), weight)


def hinge(margin: torch.Tensor, hinge_margin: float = 1.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """max(0, hinge_margin - m): no gradient once a pair is won by hinge_margin (margin ranking)."""
    return weighted_mean(F.relu(hinge_margin - margin), weight)


def pair_target_margin(stat: torch.Tensor, scale: float, cap: float | None = None) -> torch.Tensor:
    """delta = scale * |stat|, optionally capped: the required score gap for the margin loss."""
    delta = scale * stat.abs()
    return delta.clamp_max(cap) if cap is not None else delta
