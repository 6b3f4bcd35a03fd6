"""Scalar reward model: transformer backbone + pooling + linear head, with optional LoRA."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pushgen.models.factory import (
    Backbone,
    _dtype,
    _to_dict,
    finalize_tokenizer,
    hidden_size_of,
    resolve_model_path,
)

POOLINGS = ("auto", "last", "mean", "cls")
META_FILE = "pushgen_reward.json"
HEAD_FILE = "reward_head.safetensors"
ADAPTER_DIR = "adapter"
BACKBONE_DIR = "backbone"
FORMAT_VERSION = 1


def _accepts(module: nn.Module, arg: str) -> bool:
    # A PeftModel forwards **kwargs; ask the wrapped transformer instead.
    if hasattr(module, "get_base_model"):
        module = module.get_base_model()
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return arg in params


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last 1 in each row: right for right, left and no padding alike."""
    length = attention_mask.shape[-1]
    positions = torch.arange(length, device=attention_mask.device).expand_as(attention_mask)
    # Masked-out slots get -1 so the max lands on the last real token; an all-zero row gives 0.
    return torch.where(attention_mask.bool(), positions, -1).amax(dim=-1).clamp(min=0)


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the first 1 in each row (0 with right padding)."""
    length = attention_mask.shape[-1]
    positions = torch.arange(length, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), positions, length).amin(dim=-1).clamp(max=length - 1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0,1,2,... counted over real tokens only, so left padding does not shift positions."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


class RewardModel(nn.Module):
    """Maps (input_ids, attention_mask) to one float32 score per row."""

    def __init__(self, backbone: Backbone, pooling: str = "auto", dropout: float = 0.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if backbone.kind not in ("encoder", "decoder"):
            raise ValueError(f"backbone.kind must be 'encoder' or 'decoder', got {backbone.kind!r}")
        if pooling == "auto":
            pooling = "last" if backbone.kind == "decoder" else "mean"
        self.backbone_model = backbone.model
        self.tokenizer = backbone.tokenizer
        self.kind = backbone.kind
        self.backbone_name = backbone.name
        self.backbone_cfg = dict(backbone.source_cfg)
        self.pooling = pooling
        self.dropout_p = float(dropout)
        self.hidden_size = hidden_size_of(backbone.model)
        self.dropout = nn.Dropout(self.dropout_p)
        # Kept in float32 whatever the backbone dtype, so scores and their grads stay precise.
        self.head = nn.Linear(self.hidden_size, 1, dtype=torch.float32)
        self.lora: dict | None = None
        # Only decoders need explicit positions (left padding would otherwise shift them).
        self._pass_positions = self.kind == "decoder" and _accepts(backbone.model, "position_ids")

    @property
    def backbone(self) -> Backbone:
        return Backbone(
            model=self.backbone_model,
            tokenizer=self.tokenizer,
            kind=self.kind,
            name=self.backbone_name,
            source_cfg=self.backbone_cfg,
        )

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        # Only left padding shifts positions; with none, the model's own 0..L-1 are already right for
        # every real token, and leaving them out skips work in the attention-mask set-up.
        if self._pass_positions and not bool(attention_mask[:, 0].all()):
            kwargs["position_ids"] = position_ids_from_mask(attention_mask)
        out = self.backbone_model(**kwargs)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled (B, hidden) float32 vectors, before dropout and head."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(input_ids.device).long()
        hidden = self.hidden_states(input_ids, attention_mask).float()
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if self.pooling == "last":
            return hidden[rows, last_token_index(attention_mask)]
        if self.pooling == "cls":
            return hidden[rows, first_token_index(attention_mask)]
        # where() rather than multiply: hidden states at padded slots can be NaN (fully masked
        # attention rows under left padding) and NaN * 0 is still NaN.
        keep = attention_mask.bool().unsqueeze(-1)
        summed = torch.where(keep, hidden, 0.0).sum(dim=1)
        count = keep.sum(dim=1).clamp(min=1).to(summed.dtype)
        return summed / count

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        pooled = self.embed(input_ids, attention_mask)
        return self.head(self.dropout(pooled)).squeeze(-1).float()

    # Convenience for scripts and evaluation; training code should batch through a DataLoader.
    def tokenize(self, texts: list[str], max_length: int | None = 128) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_tensors="pt",
        )
        device = self.head.weight.device
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    @torch.no_grad()
    def score_texts(
        self, texts: list[str], max_length: int | None = 128, batch_size: int = 64
    ) -> torch.Tensor:
        scores = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenize(texts[i : i + batch_size], max_length=max_length)
            scores.append(self(**batch).cpu())
        return torch.cat(scores) if scores else torch.empty(0)

    # ---------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        head = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(head, str(directory / HEAD_FILE))
        self.tokenizer.save_pretrained(str(directory))
        if self.lora is not None:
            # PeftModel.save_pretrained writes only the adapter (adapter_model.safetensors).
            self.backbone_model.save_pretrained(str(directory / ADAPTER_DIR))
        else:
            self.backbone_model.save_pretrained(str(directory / BACKBONE_DIR))
        meta = {
            "format_version": FORMAT_VERSION,
            "pooling": self.pooling,
            "kind": self.kind,
            "hidden_size": self.hidden_size,
            "dropout": self.dropout_p,
            "backbone_name": self.backbone_name,
            "backbone_cfg": self.backbone_cfg,
            "lora": self.lora is not None,
            "lora_config": self.lora,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, backbone_cfg=None) -> "RewardModel":
        """Rebuild a saved model; backbone_cfg overrides recorded keys (e.g. a moved base path)."""
        from transformers import AutoModel, AutoTokenizer

        directory = Path(directory)
        meta_path = directory / META_FILE
        if not directory.is_dir():
            raise FileNotFoundError(f"reward model folder {directory} does not exist; give a train.py run's "
                                    "reward_model/ folder (e.g. logs/reward/runs/<run>/reward_model)")
        if not meta_path.is_file():
            hint = (f"; did you mean {directory / 'reward_model'}?" if (directory / "reward_model" / META_FILE).is_file()
                    else "; give a train.py run's reward_model/ folder")
            raise FileNotFoundError(f"no {META_FILE} in {directory}: not a saved reward model{hint}")
        meta = json.loads(meta_path.read_text())
        cfg = dict(meta.get("backbone_cfg") or {})
        cfg.update(_to_dict(backbone_cfg))
        kind = meta["kind"]
        trust = bool(cfg.get("trust_remote_code", False))
        dtype = _dtype(cfg.get("dtype", "float32"))

        tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust)
        finalize_tokenizer(tokenizer, kind, cfg.get("padding_side", "right") or "right")

        if meta.get("lora"):
            from peft import PeftModel

            base = _rebuild_base(cfg, dtype, trust)
            model = PeftModel.from_pretrained(base, str(directory / ADAPTER_DIR))
        else:
            model = AutoModel.from_pretrained(
                str(directory / BACKBONE_DIR), dtype=dtype, trust_remote_code=trust
            )
        backbone = Backbone(
            model=model, tokenizer=tokenizer, kind=kind, name=meta.get("backbone_name", ""), source_cfg=cfg
        )
        rm = cls(backbone, pooling=meta["pooling"], dropout=meta.get("dropout", 0.0))
        rm.lora = meta.get("lora_config")
        # safetensors files hold plain tensors only; no pickle is involved.
        rm.head.load_state_dict(load_file(str(directory / HEAD_FILE)))
        return rm.eval()


def _rebuild_base(cfg: dict, dtype: torch.dtype, trust_remote_code: bool) -> nn.Module:
    """The frozen base a LoRA adapter was trained on, rebuilt from its recorded source."""
    source = cfg.get("source")
    if source == "tiny":
        from pushgen.models.tiny import build_tiny_model

        t = dict(cfg.get("tiny") or {})
        vocab = t.pop("model_vocab_size", t.get("vocab_size", 256))
        t["vocab_size"] = vocab
        model = build_tiny_model(**{k: v for k, v in t.items() if k in _TINY_MODEL_ARGS})
        return model.to(dtype)
    from transformers import AutoModel

    path = resolve_model_path(source, cfg.get("name_or_path"))
    model = AutoModel.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model.eval()


_TINY_MODEL_ARGS = frozenset(
    {
        "arch", "hidden_size", "num_layers", "num_heads", "vocab_size", "seed",
        "pad_token_id", "bos_token_id", "eos_token_id",
    }
)


def default_lora_targets(model: nn.Module) -> list[str]:
    """q/v attention projections, found by module name (Llama/Qwen2 style or BERT style)."""
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for pair in (("q_proj", "v_proj"), ("query", "value")):
        if set(pair) <= leaf_names:
            return list(pair)
    try:  # fall back to peft's own table for other architectures
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as table

        found = table.get(getattr(getattr(model, "config", None), "model_type", ""), None)
    except ImportError:  # pragma: no cover
        found = None
    if not found:
        raise ValueError(f"no default LoRA target_modules for {type(model).__name__}; pass target_modules")
    return list(found)


def apply_lora(
    model: RewardModel,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
) -> RewardModel:
    """Wrap the backbone with LoRA adapters in place: base frozen, adapters and head trainable."""
    from peft import LoraConfig, get_peft_model

    if model.lora is not None:
        raise ValueError("LoRA is already applied to this RewardModel")
    targets = list(target_modules) if target_modules else default_lora_targets(model.backbone_model)
    config = LoraConfig(
        r=int(r), lora_alpha=alpha, lora_dropout=float(dropout), target_modules=targets, bias="none"
    )
    model.backbone_model = get_peft_model(model.backbone_model, config)
    model.head.requires_grad_(True)
    model.lora = {"r": int(r), "alpha": alpha, "dropout": float(dropout), "target_modules": targets}
    return model
