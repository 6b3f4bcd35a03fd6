"""pushgen vs TRL's RewardTrainer: the same reward model trained on the same real pairs.

Both sides get the same backbone weights, the same token ids (pushgen's cached tokenisation, cut
at reward.max_length; TRL receives them pre-tokenised, so it neither re-tokenises nor filters),
the same batch of 32 pairs, fp32, dynamic padding, AdamW with the same learning rate, warm-up +
cosine schedule, weight decay and gradient clipping, the same dropout (TRL's default
``disable_dropout`` is turned off to match), no gradient checkpointing (TRL's default is on; it
would only slow TRL down here), no evaluation, no checkpoints. Runs alternate A B, B A, A B ..., each a
fresh trainer; the first step of each run is a warm-up and is not timed.

pushgen runs its real training path (Lightning Trainer + RewardModule + PairDataModule with
test-grouped batches); TRL runs ``RewardTrainer.train()``. Prints pairs/s of each, the ratio, and
model FLOP utilisation: achieved FLOP/s = 6 x matmul params x tokens/s (forward 2, backward 4 FLOPs
per parameter per token; attention-score FLOPs left out, small at <= 64 tokens), over the peak
FLOP/s of a 1024^3 fp32 torch.matmul measured in the same run.

Usage: python benchmarks/bench_vs_trl.py [--backbones minilm stories260k] [--steps 30] [--rounds 3]
Needs the bench extra: pip install -e ".[bench]" (TRL is never imported by pushgen itself).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch
from _common import REPO, default_cfg, matmul_params, peak_matmul_flops

from pushgen.data.pipeline import prepare
from pushgen.data.tokenize import tokenize_texts
from pushgen.models.factory import resolve_model_path
from pushgen.modules.datamodule import PairDataModule
from pushgen.modules.reward_module import RewardModule
from pushgen.utils.config import to_plain

BATCH = 32
LR, WARMUP, WEIGHT_DECAY, CLIP = 1e-4, 0.1, 0.01, 1.0


class StepClock:
    """Wall time from the end of the first (warm-up) step to the end of the last; pairs and tokens
    counted over the same steps."""

    def __init__(self):
        self.start = self.end = None
        self.steps = self.pairs = self.tokens = self.padded = 0

    def batch_done(self, pairs: int, tokens: int, padded: int) -> None:
        now = time.perf_counter()
        if self.start is None:
            self.start = now
            return
        self.end, self.steps = now, self.steps + 1
        self.pairs, self.tokens, self.padded = self.pairs + pairs, self.tokens + tokens, self.padded + padded

    @property
    def seconds(self) -> float:
        return self.end - self.start


def run_pushgen(cfg, prepared, token_ids, steps: int) -> StepClock:
    import lightning as L

    clock = StepClock()

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            mask = batch["attention_mask"]
            clock.batch_done(len(batch["chosen_idx"]), int(mask.sum()), mask.numel())

    torch.manual_seed(0)
    module = RewardModule(backbone=to_plain(cfg.backbone), reward=to_plain(cfg.reward), loss=to_plain(cfg.loss),
                          optim={**to_plain(cfg.optim), "lr": LR, "warmup_ratio": WARMUP, "weight_decay": WEIGHT_DECAY})
    dm = PairDataModule({s: prepared.split(s) for s in ("train", "val")}, token_ids,
                        pad_id=module.tokenizer.pad_token_id, padding_side=module.tokenizer.padding_side,
                        batch_size=BATCH, group_by_test=True, seed=0)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=steps + 1, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=CLIP, callbacks=[Clock()])
    trainer.fit(module, datamodule=dm)
    return clock


def run_trl(model_path: str, tokenizer, train_pairs, token_ids, steps: int, out: str) -> StepClock:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    clock = StepClock()
    last = {}

    base = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)

    def collate(examples):
        batch = base(examples)
        last.update(pairs=len(examples), tokens=int(batch["attention_mask"].sum()),
                    padded=batch["attention_mask"].numel())
        return batch

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            clock.batch_done(last["pairs"], last["tokens"], last["padded"])

    ds = Dataset.from_dict({"chosen_ids": [token_ids[i] for i in train_pairs["chosen"]],
                            "rejected_ids": [token_ids[i] for i in train_pairs["rejected"]]})
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(output_dir=out, per_device_train_batch_size=BATCH, max_steps=steps + 1, learning_rate=LR,
                        lr_scheduler_type="cosine", warmup_steps=int(WARMUP * (steps + 1)), weight_decay=WEIGHT_DECAY,
                        max_grad_norm=CLIP, bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False,
                        disable_dropout=False, pad_to_multiple_of=None, max_length=None, logging_steps=10_000,
                        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                        dataloader_num_workers=0, seed=0, data_seed=0)
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                            data_collator=collate, callbacks=[Clock()])
    trainer.train()
    return clock


def compare(backbone: str, steps: int, rounds: int, peak: float, threads: int, cache_dir: str) -> dict:
    cfg = default_cfg([f"backbone={backbone}"])
    prepared = prepare(cfg.data, seed=0)
    probe = RewardModule(backbone=to_plain(cfg.backbone), reward=to_plain(cfg.reward), loss=to_plain(cfg.loss),
                         optim=to_plain(cfg.optim))
    tok, kind = probe.tokenizer, probe.model.kind
    params = matmul_params(probe.model)
    token_ids, _ = tokenize_texts(prepared.pooled, tok, max_length=int(cfg.reward.max_length), use_evidence=False,
                                  kind=kind, cache_dir=cache_dir)
    model_path = resolve_model_path(cfg.backbone.source, cfg.backbone.get("name_or_path"))
    train_pairs = prepared.split("train")
    print(f"\n== {backbone}: {params / 1e6:.2f}M matmul params, batch {BATCH} pairs, max_length "
          f"{cfg.reward.max_length}, fp32, {threads} threads, {steps} timed steps x {rounds} rounds per side")
    results: dict[str, list[StepClock]] = {"pushgen": [], "trl": []}
    with tempfile.TemporaryDirectory() as out:
        for r in range(rounds):
            for side in ("trl", "pushgen") if r % 2 else ("pushgen", "trl"):
                torch.set_num_threads(threads)
                clock = (run_pushgen(cfg, prepared, token_ids, steps) if side == "pushgen"
                         else run_trl(model_path, tok, train_pairs, token_ids, steps, out))
                results[side].append(clock)
                print(f"  round {r} {side:8s}: {clock.pairs / clock.seconds:7.1f} pairs/s  "
                      f"{clock.tokens / clock.seconds:8.0f} tokens/s  ({clock.steps} steps, {clock.seconds:.1f} s, "
                      f"{clock.tokens / clock.pairs:.1f} real tokens/pair, "
                      f"{clock.tokens / clock.padded:.0%} of the padded batch real)")
    summary = {}
    for side, clocks in results.items():
        rate = statistics.median(c.pairs / c.seconds for c in clocks)
        tok_s = statistics.median(c.tokens / c.seconds for c in clocks)
        pad_s = statistics.median(c.padded / c.seconds for c in clocks)
        summary[side] = rate
        print(f"  {side:8s} median {rate:7.1f} pairs/s; achieved 6*P*tokens/s = {6 * params * tok_s / 1e9:.2f} "
              f"GFLOP/s on real tokens ({6 * params * tok_s / peak:.1%} MFU), "
              f"{6 * params * pad_s / 1e9:.2f} GFLOP/s counting padding ({6 * params * pad_s / peak:.1%})")
    print(f"  ratio pushgen / TRL: {summary['pushgen'] / summary['trl']:.2f}x pairs/s (target >= 1.5x)")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="+", default=["minilm", "stories260k"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    cache_dir = str(REPO / "logs" / "bench" / "cache" / "tokenized")
    peak = peak_matmul_flops()
    print(f"peak fp32 matmul (1024^3, best of 20): {peak / 1e9:.1f} GFLOP/s on {args.threads} threads")
    for bb in args.backbones:
        compare(bb, args.steps, args.rounds, peak, args.threads, cache_dir)


if __name__ == "__main__":
    main()
