"""The reward losses by name, each declaring what its batch must hold.

needs="pairs": the loss reads pair margins r_chosen - r_rejected (and pair fields: weight, z, ...).
needs="arms":  the loss reads every scored text of a batch with its test id, clicks and impressions;
               the datamodule then makes batches of whole tests (``whole_tests``), so each test's
               arms are seen together.
Every loss can add a reward-centering term, center_weight * mean(score^2) over the batch's texts,
which keeps scores near 0 without changing which text wins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import logging

import torch

from pushgen.losses.listwise import plackett_luce
from pushgen.losses.pairwise import bradley_terry, bradley_terry_margin, hinge, pair_target_margin, soft_bce
from pushgen.losses.pointwise import binomial

log = logging.getLogger(__name__)
MARGIN_SOURCES = ("z", "ctr_diff")


def _margin(scores: torch.Tensor, batch: Mapping) -> torch.Tensor:
    return scores[batch["chosen_idx"]] - scores[batch["rejected_idx"]]


def _weight(cfg: Mapping, batch: Mapping) -> torch.Tensor | None:
    return batch["weight"] if cfg.get("use_weights", False) else None


def _bt(cfg, scores, batch):
    return bradley_terry(_margin(scores, batch), _weight(cfg, batch))


def _bt_margin(cfg, scores, batch):
    delta = pair_target_margin(batch[cfg.get("margin_from", "z")], float(cfg.get("margin_scale", 0.25)),
                               cfg.get("margin_cap"))
    return bradley_terry_margin(_margin(scores, batch), delta, _weight(cfg, batch))


def _soft_bce(cfg, scores, batch):
    return soft_bce(_margin(scores, batch), batch["soft_label"], _weight(cfg, batch))


def _hinge(cfg, scores, batch):
    return hinge(_margin(scores, batch), float(cfg.get("hinge_margin", 1.0)), _weight(cfg, batch))


def _plackett_luce(cfg, scores, batch):
    ctr = batch["text_clicks"] / batch["text_impressions"]
    return plackett_luce(scores, batch["text_group"], ctr)


def _binomial(cfg, scores, batch):
    return binomial(scores, batch["text_group"], batch["text_clicks"], batch["text_impressions"])


@dataclass(frozen=True)
class LossSpec:
    compute: Callable[[Mapping, torch.Tensor, Mapping], torch.Tensor]
    needs: str  # "pairs" or "arms"
    doc: str


LOSSES: dict[str, LossSpec] = {
    "bradley_terry": LossSpec(_bt, "pairs", "-log sigmoid(m)"),
    "bt_margin": LossSpec(_bt_margin, "pairs", "-log sigmoid(m - scale*|z or ctr_diff|)"),
    "soft_bce": LossSpec(_soft_bce, "pairs", "cross-entropy of sigmoid(m) to P(chosen beats rejected)"),
    "hinge": LossSpec(_hinge, "pairs", "max(0, hinge_margin - m)"),
    "plackett_luce": LossSpec(_plackett_luce, "arms", "Plackett-Luce likelihood of each test's CTR order"),
    "binomial": LossSpec(_binomial, "arms", "clicks ~ Bin(impressions, sigmoid(test log-odds + centred score))"),
}


def get_loss(cfg: Mapping[str, Any]) -> LossSpec:
    """The loss a config names, after checking its keys make sense for it."""
    name = cfg.get("name", "bradley_terry")
    if name not in LOSSES:
        raise ValueError(f"loss.name must be one of {sorted(LOSSES)}, got '{name}'")
    spec = LOSSES[name]
    if spec.needs == "arms" and cfg.get("use_weights", False):
        raise ValueError(f"loss.use_weights=true has no meaning for loss={name} (pair weights; this loss "
                         "reads whole tests): set loss.use_weights=false")
    if name == "bt_margin" and cfg.get("margin_from", "z") not in MARGIN_SOURCES:
        raise ValueError(f"loss.margin_from must be one of {MARGIN_SOURCES}, got '{cfg.get('margin_from')}'")
    if cfg.get("margin_scale") is not None and name != "bt_margin":
        log.warning("loss.margin_scale is read by bt_margin only; loss=%s ignores it", name)
    if float(cfg.get("center_weight", 0.0) or 0.0) < 0:
        raise ValueError(f"loss.center_weight must be >= 0, got {cfg.get('center_weight')}")
    return spec


def reward_loss(cfg: Mapping[str, Any], scores: torch.Tensor, batch: Mapping) -> torch.Tensor:
    """The configured loss on one batch: ``scores`` holds one score per distinct text of the batch.
    (The config is checked once with ``get_loss`` when the module is built, not at every step.)"""
    spec = LOSSES.get(cfg.get("name", "bradley_terry")) or get_loss(cfg)
    loss = spec.compute(cfg, scores, batch)
    center = float(cfg.get("center_weight", 0.0) or 0.0)
    return loss + center * scores.pow(2).mean() if center > 0 else loss


def pairwise_loss(name: str, margin: torch.Tensor, soft_label: torch.Tensor | None,
                  weight: torch.Tensor | None, **cfg) -> torch.Tensor:
    """A pair loss straight from margins (chosen i vs rejected i), for tests and notebooks."""
    n = len(margin)
    scores = torch.cat([margin, torch.zeros_like(margin)])
    batch = {"chosen_idx": torch.arange(n), "rejected_idx": torch.arange(n, 2 * n), "soft_label": soft_label,
             "weight": weight, "z": cfg.pop("z", None), "ctr_diff": cfg.pop("ctr_diff", None)}
    full = {"name": name, "use_weights": weight is not None, **cfg}
    if get_loss(full).needs != "pairs":
        raise ValueError(f"loss '{name}' reads whole tests, not pair margins")
    return get_loss(full).compute(full, scores, batch)
