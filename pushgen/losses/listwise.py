"""Listwise loss over the arms of each A/B test: the Plackett-Luce likelihood of the CTR order."""

from __future__ import annotations

import torch

# Padding score: finite (an -inf would give NaN gradients through logcumsumexp), far below any score.
_PAD = -1e9


def pad_groups(values: torch.Tensor, group: torch.Tensor, order_key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay values out as [groups, max_size], each row sorted by ``order_key`` descending; pads at the
    end of a row hold ``_PAD``. Also returns the mask of real entries."""
    _, gid = torch.unique(group, return_inverse=True)
    n_groups = int(gid.max()) + 1 if gid.numel() else 0
    # Sort by group, then by key descending inside the group (two stable sorts).
    by_key = torch.argsort(order_key, descending=True, stable=True)
    order = by_key[torch.argsort(gid[by_key], stable=True)]
    sizes = torch.bincount(gid, minlength=n_groups)
    starts = torch.cumsum(sizes, 0) - sizes
    sorted_gid = gid[order]
    pos = torch.arange(len(order), device=values.device) - starts[sorted_gid]
    width = int(sizes.max()) if n_groups else 0
    out = torch.full((n_groups, width), _PAD, dtype=values.dtype, device=values.device)
    mask = torch.zeros((n_groups, width), dtype=torch.bool, device=values.device)
    out = out.index_put((sorted_gid, pos), values[order])
    mask[sorted_gid, pos] = True
    return out, mask


def plackett_luce(scores: torch.Tensor, group: torch.Tensor, ctr: torch.Tensor) -> torch.Tensor:
    """-log P(the test's CTR order) under Plackett-Luce with weights exp(score), per test divided by
    its number of choices (arms - 1), then averaged over tests. Tests with one arm carry no order
    and are skipped. Ties in CTR keep the input order."""
    table, mask = pad_groups(scores, group, ctr)
    # log sum_{j >= i} exp(s_j): the denominator of choosing position i's arm from what is left.
    rest = torch.logcumsumexp(table.flip(1), dim=1).flip(1)
    choices = mask.clone()
    choices[torch.arange(len(mask)), mask.sum(1) - 1] = False  # the last arm is not a choice
    nll = ((rest - table) * choices).sum(1)
    n_choices = choices.sum(1)
    keep = n_choices > 0
    if not keep.any():
        return scores.sum() * 0.0  # a batch without any test of two arms: zero, still in the graph
    return (nll[keep] / n_choices[keep]).mean()
