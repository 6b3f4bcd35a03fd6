"""RewardModule: a reward model trained on preference pairs with a pairwise loss.

The module builds its model from the backbone and reward configs it is given, so a checkpoint holds
everything needed to rebuild it (``RewardModule.load_from_checkpoint(path)``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from transformers import get_cosine_schedule_with_warmup

from pushgen.evaluation.metrics import PairwiseMetrics
from pushgen.losses import get_loss, reward_loss
from pushgen.models.build import build_reward_model


class RewardModule(L.LightningModule):
    def __init__(self, backbone: dict[str, Any], reward: dict[str, Any], loss: dict[str, Any], optim: dict[str, Any]):
        super().__init__()
        self.save_hyperparameters()
        self.model = build_reward_model(backbone, reward)
        # from_pretrained leaves modules in eval mode, and Lightning keeps the modes it finds:
        # without this, dropout would be silently off during training.
        self.model.train()
        # The loss declares what a batch must hold; metrics below are pairwise whatever the loss, so
        # every loss is compared on the same pairs.
        self.loss_cfg = dict(loss)
        self.loss_needs = get_loss(self.loss_cfg).needs
        # Keys carry a suffix: a ModuleDict key "train" would clash with nn.Module.train.
        self.metrics = torch.nn.ModuleDict({f"{s}_pairs": PairwiseMetrics() for s in ("train", "val", "test")})

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask)

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        # Chosen and rejected texts go through the backbone together, each distinct text once.
        scores = self(batch["input_ids"], batch["attention_mask"]).float()
        chosen, rejected = scores[batch["chosen_idx"]], scores[batch["rejected_idx"]]
        loss = reward_loss(self.loss_cfg, scores, batch)
        n = len(chosen)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=n,
                 sync_dist=stage != "train")
        if stage == "train" and self.trainer.world_size > 1:
            # Exact for the pair losses (weighted means over pairs); list losses are scaled by pair share.
            weighted = self.loss_needs == "pairs" and bool(self.loss_cfg.get("use_weights", False))
            loss = loss * self._global_share(batch["weight"] if weighted else torch.ones_like(chosen))
        if stage == "train":
            self.log("train/acc_step", ((chosen - rejected) > 0).float().mean(), on_step=True, on_epoch=False,
                     prog_bar=True, batch_size=n)
        self.metrics[f"{stage}_pairs"].update(chosen, rejected, batch["p_value"])
        if stage == "test":
            # Kept so the task can write per-pair scores without a second pass over the test set.
            self.test_scores.append((batch["index"], chosen.detach(), rejected.detach()))
        return loss

    def _global_share(self, weight: torch.Tensor) -> torch.Tensor:
        """world x (this rank's weight) / (all ranks' weight). DDP averages gradients over ranks, so
        scaling each rank's weighted mean by this makes the update the weighted mean over the global
        batch, the same as one process at that batch, even when ranks hold unequal weight."""
        local = weight.detach().sum().float()
        total = self.trainer.strategy.reduce(local.clone(), reduce_op="sum")
        return self.trainer.world_size * local / total.clamp_min(torch.finfo(local.dtype).tiny)

    def training_step(self, batch, _):
        return self._step(batch, "train")

    def validation_step(self, batch, _):
        self._step(batch, "val")

    def test_step(self, batch, _):
        self._step(batch, "test")

    def _log_metrics(self, stage: str) -> None:
        values = self.metrics[f"{stage}_pairs"].compute()
        self.metrics[f"{stage}_pairs"].reset()
        for k, v in values.items():
            self.log(f"{stage}/{k}", float(v), prog_bar=k in ("acc", "acc_sig"))

    def on_train_epoch_end(self):
        self._log_metrics("train")

    def on_validation_epoch_end(self):
        self._log_metrics("val")

    def on_test_epoch_start(self):
        self.test_scores: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_test_epoch_end(self):
        self._log_metrics("test")

    def predict_step(self, batch, _):
        scores = self(batch["input_ids"], batch["attention_mask"]).float()
        return {"index": batch["index"], "chosen": scores[batch["chosen_idx"]], "rejected": scores[batch["rejected_idx"]]}

    def configure_optimizers(self):
        cfg = self.hparams.optim
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.get("weight_decay", 0.01)},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))))
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(cfg.get("warmup_ratio", 0.1) * total)
        sched = get_cosine_schedule_with_warmup(opt, warmup, max(total, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
