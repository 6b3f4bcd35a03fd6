"""Reward-model training speed (pairs/s) with the default backbone on real pairs, and scoring speed.

Compares batches of random pairs (each pair encodes two texts) with test-grouped batches (texts
shared by a test's pairs are encoded once): same pairs, same batch size, same model, fp32.
Usage: python benchmarks/bench_reward_train.py [STEPS]
"""

from __future__ import annotations

import sys

import torch
from _common import Timer, default_cfg

from pushgen.data.pipeline import prepare
from pushgen.data.tokenize import tokenize_texts
from pushgen.losses import pairwise_loss
from pushgen.models.build import build_reward_model
from pushgen.modules.datamodule import PairDataModule
from pushgen.utils.config import to_plain


def run(model, loader, steps: int, train: bool) -> tuple[float, float, int]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    pairs = texts = 0
    it = iter(loader)
    batch = next(it)  # warm-up step, not timed
    model.train(train)
    with Timer() as t:
        for _ in range(steps):
            batch = next(it)
            with torch.set_grad_enabled(train):
                scores = model(batch["input_ids"], batch["attention_mask"])
                margin = scores[batch["chosen_idx"]] - scores[batch["rejected_idx"]]
                if train:
                    pairwise_loss("bradley_terry", margin, batch["soft_label"], None).backward()
                    opt.step()
                    opt.zero_grad()
            pairs += len(batch["chosen_idx"])
            texts += len(batch["input_ids"])
    return pairs / t.seconds, texts / max(pairs, 1), t.seconds


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    torch.manual_seed(0)
    cfg = default_cfg()
    prepared = prepare(cfg.data, seed=0)
    model = build_reward_model(to_plain(cfg.backbone), to_plain(cfg.reward))
    ids, _ = tokenize_texts(prepared.pooled, model.tokenizer, max_length=64, use_evidence=False, kind=model.kind)
    splits = {s: prepared.split(s) for s in ("train", "val", "test")}
    print(f"backbone {cfg.backbone.source}, batch {cfg.data.batch_size} pairs, {torch.get_num_threads()} threads")
    for grouped in (False, True):
        dm = PairDataModule(splits, ids, pad_id=model.tokenizer.pad_token_id, batch_size=int(cfg.data.batch_size),
                            group_by_test=grouped, seed=0)
        rate, per_pair, secs = run(model, dm.train_dataloader(), steps, train=True)
        name = "test-grouped" if grouped else "random pairs"
        print(f"train  {name:13s}: {rate:6.1f} pairs/s ({per_pair:.2f} texts encoded per pair, {steps} steps in {secs:.1f} s)")
    dm = PairDataModule(splits, ids, pad_id=model.tokenizer.pad_token_id, eval_batch_size=64, seed=0)
    rate, per_pair, secs = run(model, dm.test_dataloader(), min(steps, len(dm.test_dataloader()) - 1), train=False)
    print(f"score  test-grouped : {rate:6.1f} pairs/s ({per_pair:.2f} texts encoded per pair)")


if __name__ == "__main__":
    main()
