"""The generator's SFT stage as a function sft.py (and the tests) call.

data -> best arm per test (or all arms) -> style category from the labeler -> prompt/target tokens
-> fit (completion-only loss) -> best checkpoint -> exported generator, samples, loss curves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from pushgen.categories.labelers import build_labeler
from pushgen.data.pipeline import prepare
from pushgen.data.sft import SFTDataModule, label_rows, sft_rows, tokenize_rows
from pushgen.evaluation import plots
from pushgen.modules.sft_module import SFTModule
from pushgen.tasks.reward import _build_callbacks, _build_loggers, _resolve_ckpt
from pushgen.utils.checkpoint import load_checkpoint_file
from pushgen.utils.config import to_plain
from pushgen.utils.run import seed_everything, set_threads, write_json

log = logging.getLogger(__name__)


def build_sft_data(cfg: DictConfig, module: SFTModule):
    """(rows with split and category, token examples per split) for the configured data."""
    prepared = prepare(cfg.data, seed=int(cfg.seed))
    s = cfg.sft
    rows = sft_rows(prepared.pooled, mode=str(s.get("targets", "best_arm")), min_impressions=int(s.get("min_impressions", 0)))
    rows = label_rows(rows, build_labeler(to_plain(cfg.labeler), module.taxonomy))
    examples = {}
    for split in ("train", "val"):
        part = rows[rows["split"] == split]
        limit = s.get(f"max_{split}_examples")
        if limit:
            part = part.iloc[: int(limit)]
        # Training examples also carry their no-style-line twin when category dropout will swap it in.
        dropout = split == "train" and float(s.get("category_dropout", 0.0)) > 0
        contrast = module.taxonomy.names if split == "train" and _contrast_weight(cfg) > 0 else ()
        examples[split] = tokenize_rows(part, module.builder, unconditional=dropout, contrast=contrast)
        if not examples[split]:
            raise ValueError(f"no SFT examples in the {split} split; check data.split and sft.min_impressions")
    return prepared, rows, examples


def _contrast_weight(cfg: DictConfig) -> float:
    return float((cfg.sft.get("category_contrast") or {}).get("weight", 0.0))


def check_category_options(cfg: DictConfig, n_categories: int) -> None:
    """Settings of category dropout and contrast that would train something else than asked, named
    before any model or data is loaded."""
    s = cfg.sft
    no_category = str(cfg.prompt.get("category", "label")) == "none"
    if float(s.get("category_dropout", 0.0)) > 0 and no_category:
        raise ValueError("sft.category_dropout > 0 drops the style line, but prompt.category=none has none; "
                         "set sft.category_dropout=0 or use prompt.category=label")
    if _contrast_weight(cfg) > 0:
        if no_category:
            raise ValueError("sft.category_contrast.weight > 0 needs categories in the prompt; "
                             "it cannot be used with prompt.category=none (set the weight to 0)")
        if float(s.category_contrast.get("beta", 1.0)) <= 0:
            raise ValueError(f"sft.category_contrast.beta must be > 0 (got {s.category_contrast.beta}): at 0 the "
                             "contrast has no gradient and only adds log 2 to the loss")
        if bool(s.packing.enabled):
            raise ValueError("sft.category_contrast needs one example per row: set sft.packing.enabled=false")
        if n_categories < 2:
            raise ValueError(f"sft.category_contrast needs at least two categories in the taxonomy (it has {n_categories})")


def train(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.paths.output_dir)
    set_threads(cfg.get("threads"))
    seed_everything(cfg.seed)
    check_category_options(cfg, len(cfg.taxonomy.categories))
    module = SFTModule(backbone=to_plain(cfg.backbone), prompt=to_plain(cfg.prompt), sft=to_plain(cfg.sft),
                       taxonomy=to_plain(cfg.taxonomy))
    prepared, rows, examples = build_sft_data(cfg, module)
    rows.to_csv(out / "sft_rows.csv.gz", index=False)
    s = cfg.sft
    val_rows = rows[rows["split"] == "val"]
    n_samples = min(int(s.get("n_samples", 8)), len(val_rows))
    cats = module.taxonomy.names
    # Fixed held-out items, each asked for a category in turn, so tables are comparable across steps.
    module.sample_items = [(str(e), cats[i % len(cats)] if module.builder.use_category else None)
                           for i, e in enumerate(val_rows["evidence"].iloc[:n_samples])]
    module.samples_dir = out / "samples"
    dm = SFTDataModule(examples, pad_id=module.tokenizer.pad_token_id, batch_size=int(s.batch_size),
                       eval_batch_size=int(s.get("eval_batch_size", s.batch_size)), pack=bool(s.packing.enabled),
                       pack_tokens=int(s.packing.max_tokens), seed=int(cfg.seed),
                       category_balance=float(s.get("category_balance", 0.0)),
                       category_dropout=float(s.get("category_dropout", 0.0)),
                       category_contrast=_contrast_weight(cfg) > 0)
    loggers = _build_loggers(cfg, out)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers, callbacks=_build_callbacks(cfg),
                                                 default_root_dir=str(out))
    trainer.fit(module, train_dataloaders=dm.train_dataloader(), val_dataloaders=dm.val_dataloader(),
                ckpt_path=_resolve_ckpt(cfg.get("ckpt_path"), out))

    ckpt_cb = trainer.checkpoint_callback
    best = (ckpt_cb.best_model_path or ckpt_cb.last_model_path) if ckpt_cb is not None else ""
    if best:
        state = load_checkpoint_file(best)["state_dict"]
        module.load_state_dict(state, strict=not module.lora)
    metrics: dict[str, Any] = {
        "best_ckpt": best or None,
        "best_val_loss": _best_val_loss(trainer),
        "data": prepared.stats,
        "sft": {"examples": {k: len(v) for k, v in examples.items()}, "prompts": module.builder.stats.as_dict(),
                "categories_train": rows[rows["split"] == "train"]["category"].value_counts().to_dict(),
                "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
                "template": module.builder.kind},
    }
    if cfg.task.get("export_model", True):
        metrics["generator"] = str(module.export(out / "generator"))
    metrics["plots"] = _figures(out, loggers)
    write_json(out / "metrics.json", metrics)
    log.info("SFT done: best val loss %s, %s", metrics["best_val_loss"], metrics["sft"]["examples"])
    return metrics


def _best_val_loss(trainer: L.Trainer) -> float | None:
    """The kept checkpoint's validation loss; without checkpointing, the lowest one logged."""
    cb = trainer.checkpoint_callback
    if cb is not None and cb.best_model_score is not None:
        return float(cb.best_model_score)
    logged = [float(v) for v in getattr(trainer.lightning_module, "val_losses", [])]
    return min(logged) if logged else None


def _figures(out: Path, loggers: list) -> dict[str, str]:
    path = plots.sft_loss_curves({"run": out / "csv"}, out / "plots" / "loss_curves.png", title="SFT loss")
    if path is None:
        return {}
    plots.log_images(loggers, {"loss_curves": path})
    return {"loss_curves": str(path)}
