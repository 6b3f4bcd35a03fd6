"""pushgen SFT vs TRL's SFTTrainer: the same generator fine-tuned on the same real examples.

Both sides get the same model object built the same way (pushgen's backbone factory; LoRA r=16 on
q/v for SmolLM2, full fine-tuning for stories260K), the same token ids (pushgen's prompt builder:
prompt masked with -100, target kept; TRL receives `input_ids` + `labels` pre-tokenised, so it uses
the labels as they are and neither re-tokenises nor truncates), batches of 8 in the same order of
examples, right padding to the longest example, fp32, AdamW with the same learning rate, warm-up +
cosine schedule and no weight decay, no gradient clipping on either side, no evaluation, no
checkpoints. TRL's defaults that would change the work are set to match: gradient checkpointing off
(its default is on; it would only slow TRL down), bf16 off (its default is on; ~9x slower on this
CPU), no packing, no padding-free batches. Runs alternate A B A B ..., each a fresh model and
trainer; the first step of each run is a warm-up and is not timed.

pushgen runs its real training path (Lightning Trainer + SFTModule + SFTDataModule); TRL runs
`SFTTrainer.train()`. Prints target tokens/s (tokens that carry loss) of each side and the ratio.

Usage: python benchmarks/bench_sft_vs_trl.py [--backbones smollm2 stories260k] [--steps 12] [--rounds 2]
Needs the bench extra: pip install -e ".[bench]" (TRL is never imported by pushgen itself).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch
from _common import REPO
from hydra import compose, initialize_config_dir

from pushgen.categories.labelers import build_labeler
from pushgen.data.pipeline import prepare
from pushgen.data.sft import SFTDataModule, label_rows, sft_rows, tokenize_rows
from pushgen.modules.sft_module import SFTModule
from pushgen.utils.config import to_plain

BATCH, LR, WARMUP = 8, 1e-3, 0.05
IGNORE = -100


class StepClock:
    """Wall time from the end of the first (warm-up) step to the end of the last, and the target
    tokens (labels that carry loss after the one-token shift) of the same steps."""

    def __init__(self):
        self.start = self.end = None
        self.steps = self.targets = 0

    def batch_done(self, labels: torch.Tensor) -> None:
        now = time.perf_counter()
        if self.start is None:
            self.start = now
            return
        self.end, self.steps = now, self.steps + 1
        self.targets += int((labels[:, 1:] != IGNORE).sum())

    @property
    def rate(self) -> float:
        return self.targets / (self.end - self.start)


def build(backbone: str, steps: int):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="sft", overrides=[f"backbone={backbone}", "prompt.max_evidence_tokens=48",
                                                    "prompt.max_target_tokens=40",
                                                    f"sft.lora.enabled={'true' if backbone == 'smollm2' else 'false'}"])
    return cfg


def new_module(cfg) -> SFTModule:
    torch.manual_seed(0)
    return SFTModule(backbone=to_plain(cfg.backbone), prompt=to_plain(cfg.prompt),
                     sft={**to_plain(cfg.sft), "optim": {"lr": LR, "weight_decay": 0.0, "warmup_ratio": WARMUP}},
                     taxonomy=to_plain(cfg.taxonomy))


def run_pushgen(cfg, examples: list[dict], steps: int) -> StepClock:
    import lightning as L

    clock = StepClock()

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            clock.batch_done(batch["labels"])

    module = new_module(cfg)
    dm = SFTDataModule({"train": examples, "val": examples[:BATCH]}, pad_id=module.tokenizer.pad_token_id,
                       batch_size=BATCH, eval_batch_size=BATCH, pack=False, pack_tokens=512, seed=0)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=steps + 1, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Clock()])
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    return clock


def run_trl(cfg, examples: list[dict], steps: int, out: str) -> StepClock:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    clock = StepClock()
    last = {}
    module = new_module(cfg)
    base = DataCollatorForLanguageModeling(pad_token_id=module.tokenizer.pad_token_id)

    def collate(batch_examples):
        batch = base(batch_examples)
        last["labels"] = batch["labels"]
        return batch

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            clock.batch_done(last["labels"])

    ds = Dataset.from_dict({"input_ids": [e["input_ids"] for e in examples], "labels": [e["labels"] for e in examples]})
    args = SFTConfig(output_dir=out, per_device_train_batch_size=BATCH, max_steps=steps + 1, learning_rate=LR,
                     lr_scheduler_type="cosine", warmup_steps=int(WARMUP * (steps + 1)), weight_decay=0.0,
                     max_grad_norm=0.0, bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False,
                     packing=False, padding_free=False, max_length=None, logging_steps=10_000, save_strategy="no",
                     eval_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0, seed=0,
                     data_seed=0)
    trainer = SFTTrainer(model=module.model, args=args, train_dataset=ds, processing_class=module.tokenizer,
                         data_collator=collate, callbacks=[Clock()])
    trainer.train()
    return clock


def compare(backbone: str, steps: int, rounds: int, threads: int) -> float:
    cfg = build(backbone, steps)
    probe = new_module(cfg)
    prepared = prepare(cfg.data, seed=int(cfg.seed))
    rows = sft_rows(prepared.pooled, min_impressions=int(cfg.sft.min_impressions))
    rows = label_rows(rows[rows["split"] == "train"].head(BATCH * (steps + 1)),
                      build_labeler(to_plain(cfg.labeler), probe.taxonomy))
    examples = tokenize_rows(rows, probe.builder)
    trainable = sum(p.numel() for p in probe.parameters() if p.requires_grad)
    del probe
    print(f"\n== {backbone}: {trainable / 1e6:.2f}M trainable params, {len(examples)} examples, batch {BATCH}, fp32, "
          f"{threads} threads, {steps} timed steps x {rounds} rounds per side")
    rates: dict[str, list[float]] = {"pushgen": [], "trl": []}
    with tempfile.TemporaryDirectory() as out:
        for r in range(rounds):
            for side in ("trl", "pushgen") if r % 2 else ("pushgen", "trl"):
                torch.set_num_threads(threads)
                clock = run_pushgen(cfg, examples, steps) if side == "pushgen" else run_trl(cfg, examples, steps, out)
                rates[side].append(clock.rate)
                print(f"  round {r} {side:8s}: {clock.rate:7.1f} target tokens/s  ({clock.steps} steps, "
                      f"{clock.end - clock.start:.1f} s)")
    med = {side: statistics.median(v) for side, v in rates.items()}
    ratio = med["pushgen"] / med["trl"]
    print(f"  median pushgen {med['pushgen']:.1f}, TRL {med['trl']:.1f} target tokens/s: "
          f"ratio {ratio:.2f}x (target >= 1.2x)")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="+", default=["smollm2", "stories260k"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    for bb in args.backbones:
        compare(bb, args.steps, args.rounds, args.threads)


if __name__ == "__main__":
    main()
