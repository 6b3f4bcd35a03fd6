"""SFTModule: fine-tune a decoder on (prompt, target) examples with a completion-only loss.

Metrics: loss (weighted mean over target tokens), perplexity (exp of the validation loss) and
token accuracy (argmax == target over target tokens). At each validation it generates a few
samples (evidence, requested category, output) for a table in W&B and a file in the run folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from transformers import get_cosine_schedule_with_warmup

from pushgen.categories.prompts import IGNORE_INDEX, PromptBuilder
from pushgen.categories.taxonomy import load_taxonomy
from pushgen.models.factory import load_causal_lm
from pushgen.models.reward import default_lora_targets
from pushgen.models.sampling import generate_texts

log = logging.getLogger(__name__)

EXPORT_META = "pushgen_generator.json"


def completion_loss(hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor, token_weight: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weighted mean loss, weight sum, correct-token count, target-token count) over target positions.

    Position t predicts token t+1; only positions whose next label is a target token count, and the
    LM head runs on those positions only (the vocabulary projection of every prompt token would
    cost more than the LoRA update). A batch with no target token is an error: its loss would be a
    silent 0.
    """
    labels, w = labels[:, 1:], token_weight[:, 1:]
    keep = labels != IGNORE_INDEX
    n = keep.sum()
    if int(n) == 0:
        raise ValueError("an SFT batch has no target token: every label is masked (check the prompt/target lengths)")
    logits = head(hidden[:, :-1][keep]).float()
    target, w = labels[keep], w[keep]
    nll = F.cross_entropy(logits, target, reduction="none")
    wsum = w.sum()
    loss = (nll * w).sum() / wsum.clamp_min(1e-12)
    correct = (logits.argmax(-1) == target).sum()
    return loss, wsum, correct, n


def target_logprobs(hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the summed log-probability of its target tokens: log p(target | that row's prompt)."""
    labels = labels[:, 1:]
    keep = labels != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep]).float()
    lp = -F.cross_entropy(logits, labels[keep], reduction="none")
    return torch.zeros(labels.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, keep.nonzero()[:, 0], lp)


def contrast_loss(logp: torch.Tensor, pairs: torch.Tensor, beta: float, weight: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, accuracy) of "the target is likelier under its own category than under the other".

    ``pairs`` (K, 2) holds (row with the true category, row with a wrong one) for the same target;
    the margin log p(y | c) - log p(y | c') (summed over the target: the sequence's log-odds, not a
    per-token mean) is the generator's own log-odds for c against c', so -log sigmoid(beta * margin)
    trains it as a style classifier of its targets. ``weight`` (per row): the examples' weights, so
    an all_arms target counts by its CTR here as in the likelihood."""
    margin = logp[pairs[:, 0]] - logp[pairs[:, 1]]
    per_pair = -F.logsigmoid(float(beta) * margin)
    if weight is None:
        return per_pair.mean(), (margin > 0).float().mean()
    w = weight[pairs[:, 0]].to(per_pair.dtype)
    return (per_pair * w).sum() / w.sum().clamp_min(1e-12), (margin > 0).float().mean()


def decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body and the LM head of a causal LM (through a peft wrapper if any)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(base, base.base_model_prefix, None) if getattr(base, "base_model_prefix", None) else None
    if body is None:
        raise ValueError(f"cannot find the transformer body of {type(base).__name__}")
    return body, base.get_output_embeddings()


def apply_generator_lora(model: torch.nn.Module, lora: dict) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = list(lora.get("target_modules") or []) or default_lora_targets(model)
    config = LoraConfig(r=int(lora.get("r", 8)), lora_alpha=lora.get("alpha", 16), lora_dropout=float(lora.get("dropout", 0.0)),
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


class SFTModule(L.LightningModule):
    def __init__(self, backbone: dict, prompt: dict, sft: dict, taxonomy: dict):
        super().__init__()
        self.save_hyperparameters()
        bb = load_causal_lm(backbone)
        self.tokenizer = bb.tokenizer
        self.source_cfg = bb.source_cfg
        self.lora = bool((sft.get("lora") or {}).get("enabled", False))
        self.model = apply_generator_lora(bb.model, sft["lora"]) if self.lora else bb.model
        self.model.train()
        self.taxonomy = load_taxonomy(taxonomy)
        self.builder = PromptBuilder(self.tokenizer, prompt, self.taxonomy)
        self.val_loss, self.val_acc = MeanMetric(), MeanMetric()
        # Set by the task: held-out (evidence, category) pairs to sample at each validation, and where to write them.
        self.sample_items: list[tuple[str, str | None]] = []
        self.samples_dir: Path | None = None
        # LoRA checkpoints hold only the trainable weights; the frozen base is rebuilt from its source.
        self.strict_loading = not self.lora
        self.val_losses: list[float] = []  # every validation's loss, for runs without checkpointing

    def _hidden(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        body, _ = decoder_and_head(self.model)
        # LoRA layers live inside the body, so calling it directly still trains the adapters.
        return body(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                    position_ids=batch.get("position_ids"), use_cache=False).last_hidden_state

    def forward(self, batch: dict[str, torch.Tensor]):
        return completion_loss(self._hidden(batch), decoder_and_head(self.model)[1], batch["labels"], batch["token_weight"])

    def training_step(self, batch, batch_idx):
        pairs = batch.get("contrast_pairs")
        if pairs is None:
            loss, _, correct, n = self(batch)
        else:
            # One forward for the real rows and their wrong-category twins (the rows after them).
            hidden, head = self._hidden(batch), decoder_and_head(self.model)[1]
            real = hidden.shape[0] - len(pairs)
            loss, _, correct, n = completion_loss(hidden[:real], head, batch["labels"][:real], batch["token_weight"][:real])
        # train/loss stays the completion NLL, comparable with val/loss; the optimised sum is train/objective.
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=int(n))
        self.log("train/token_acc", correct.float() / n, on_step=True, on_epoch=False, batch_size=int(n))
        if pairs is not None and len(pairs):
            cfg = self.hparams.sft.get("category_contrast") or {}
            # The real rows' target positions go through the LM head a second time here: about 2% of a
            # SmolLM2 step, simpler than threading per-row sums out of completion_loss.
            row_weight = batch["token_weight"].amax(dim=1)
            c_loss, c_acc = contrast_loss(target_logprobs(hidden, head, batch["labels"]), pairs,
                                          cfg.get("beta", 1.0), weight=row_weight)
            loss = loss + float(cfg.get("weight", 0.0)) * c_loss
            self.log("train/contrast_loss", c_loss, on_step=True, on_epoch=False, batch_size=len(pairs))
            self.log("train/contrast_acc", c_acc, on_step=True, on_epoch=False, batch_size=len(pairs))
            self.log("train/objective", loss, on_step=True, on_epoch=False, batch_size=int(n))
        return loss

    def validation_step(self, batch, batch_idx):
        loss, wsum, correct, n = self(batch)
        self.val_loss.update(loss.detach(), weight=wsum.detach())
        self.val_acc.update(correct.float() / n, weight=n.float())

    def on_validation_epoch_end(self):
        loss = self.val_loss.compute()
        self.log("val/loss", loss, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.val_losses.append(float(loss))
        self.log("val/ppl", torch.exp(loss.clamp(max=50.0)))
        self.log("val/token_acc", self.val_acc.compute())
        self.val_loss.reset()
        self.val_acc.reset()
        if self.sample_items and not self.trainer.sanity_checking:
            self._write_samples()

    def _write_samples(self) -> None:
        import pandas as pd

        cfg = self.hparams.sft
        evidence = [e for e, _ in self.sample_items]
        cats = [c for _, c in self.sample_items]
        outputs = generate_texts(self.model, self.builder, evidence, cats, cfg.get("sampling"), seed=int(cfg.get("seed", 0)))
        table = pd.DataFrame({"step": self.global_step, "evidence": [e[:200] for e in evidence],
                              "category": [c or "(none)" for c in cats], "output": outputs})
        if self.samples_dir is not None:
            from pushgen.utils.run import write_atomic
            stem = self.samples_dir / f"step{self.global_step:06d}"
            write_atomic(stem.with_suffix(".csv"), table.to_csv(index=False))
            write_atomic(stem.with_suffix(".md"), markdown_table(table))
        for lg in self.loggers:
            if type(lg).__name__ == "WandbLogger":
                import wandb
                lg.experiment.log({"val/samples": wandb.Table(dataframe=table)}, step=self.global_step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.lora:
            keep = {n for n, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def configure_optimizers(self):
        cfg = self.hparams.sft["optim"]
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.get("weight_decay", 0.0)},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=float(cfg["lr"]),
                                betas=tuple(cfg.get("betas", (0.9, 0.999))))
        total = int(self.trainer.estimated_stepping_batches)
        sched = get_cosine_schedule_with_warmup(opt, int(cfg.get("warmup_ratio", 0.05) * total), max(total, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- export / reload -------------------------------------------------------------------

    def export(self, out: str | Path) -> Path:
        """Save the generator: the LoRA adapter (the base is rebuilt from its source) or full weights,
        the tokenizer, and the prompt/taxonomy config in pushgen_generator.json."""
        out = Path(out)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        meta = {"lora": self.lora, "base": self.source_cfg if self.lora else None,
                "prompt": self.hparams.prompt, "taxonomy": self.hparams.taxonomy}
        from pushgen.utils.run import write_json
        write_json(out / EXPORT_META, meta)
        return out


def markdown_table(df) -> str:
    """A GitHub markdown table (pipes and newlines in cells escaped), without the tabulate package."""
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, df.columns)) + " |", "|" + " --- |" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def load_generator(path: str | Path, prompt_overrides: dict | None = None):
    """(model, builder) from an exported generator folder; ``prompt_overrides`` e.g. {"category": "none"}."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    meta_file = path / EXPORT_META
    if not meta_file.exists():
        raise FileNotFoundError(f"{path} is not an exported generator (no {EXPORT_META}); "
                                "use the generator/ folder of an sft.py run")
    meta = json.loads(meta_file.read_text())
    tokenizer = AutoTokenizer.from_pretrained(path)
    if meta["lora"]:
        from peft import PeftModel
        base = load_causal_lm(meta["base"]).model
        model = PeftModel.from_pretrained(base, path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    builder = PromptBuilder(tokenizer, {**meta["prompt"], **(prompt_overrides or {})}, load_taxonomy(meta["taxonomy"]))
    return model.eval(), builder
