"""Pairwise reward losses on the margin r_chosen - r_rejected. Each returns a weighted mean, so the
value does not depend on batch size or on gradient accumulation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _weighted_mean(per_pair: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return per_pair.mean()
    weight = weight.to(per_pair.dtype)
    return (per_pair * weight).sum() / weight.sum().clamp_min(torch.finfo(per_pair.dtype).tiny)


def bradley_terry(margin: torch.Tensor, weight: torch.Tensor | None = None, **_) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected): the chosen text's CTR was higher."""
    return _weighted_mean(F.softplus(-margin), weight)


def soft_bce(margin: torch.Tensor, soft_label: torch.Tensor, weight: torch.Tensor | None = None, **_) -> torch.Tensor:
    """Cross-entropy to P(chosen beats rejected) from the A/B counts: a near coin-flip pair pulls the
    margin toward 0 instead of pretending to know the winner."""
    target = soft_label.to(margin.dtype)
    return _weighted_mean(F.binary_cross_entropy_with_logits(margin, target, reduction="none"), weight)


LOSSES = {"bradley_terry": bradley_terry, "soft_bce": soft_bce}


def pairwise_loss(name: str, margin: torch.Tensor, soft_label: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    try:
        fn = LOSSES[name]
    except KeyError:
        raise ValueError(f"loss.name must be one of {sorted(LOSSES)}, got '{name}'") from None
    return fn(margin, soft_label=soft_label, weight=weight)
