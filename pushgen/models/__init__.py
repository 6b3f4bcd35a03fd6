"""Backbones (Hugging Face, packaged MiniLM, tiny random) and the scalar reward model."""

from pushgen.models.factory import Backbone, load_backbone, resolve_model_path
from pushgen.models.reward import RewardModel, apply_lora
from pushgen.models.tiny import build_tiny_backbone

__all__ = [
    "Backbone",
    "RewardModel",
    "apply_lora",
    "build_tiny_backbone",
    "load_backbone",
    "resolve_model_path",
]
