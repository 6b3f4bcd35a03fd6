"""One call from configs to a ready reward model: backbone, scalar head, optional LoRA."""

from __future__ import annotations

from collections.abc import Mapping

from pushgen.models.factory import load_backbone
from pushgen.models.reward import RewardModel, apply_lora


def build_reward_model(backbone_cfg: Mapping, reward_cfg: Mapping) -> RewardModel:
    model = RewardModel(load_backbone(backbone_cfg), pooling=reward_cfg.get("pooling", "auto"),
                        dropout=float(reward_cfg.get("dropout", 0.0)))
    lora = reward_cfg.get("lora") or {}
    if lora.get("enabled", False):
        apply_lora(model, r=lora.get("r", 8), alpha=lora.get("alpha", 16), dropout=lora.get("dropout", 0.0),
                   target_modules=lora.get("target_modules"))
    if reward_cfg.get("compile", False):
        # In place (nn.Module.compile): parameter names, checkpoints and exports stay as they are.
        # dynamic=True: batches are padded to their own longest text, so shapes change every step.
        model.backbone_model.compile(dynamic=True)
    return model
