"""What makes reward training fast, one lever at a time (MiniLM, real pairs, batch 32, fp32 unless said).

Each variant trains the same model from the same weights for the same number of steps over the
same training pairs and prints pairs/s:
  two forwards        chosen texts and rejected texts in two backbone calls (random pairs)
  one forward         both in one call, duplicates in a batch encoded once (random pairs)
  + test-grouped      batches of whole tests: a test's texts are shared by its pairs (the default)
  fixed padding       test-grouped, but every row padded to max_length instead of the batch's longest
  bf16 autocast       test-grouped under torch.autocast("cpu", bfloat16), plus a metric check: the
                      validation pair accuracy and AUC of one set of weights scored in fp32 and in bf16
  torch.compile       test-grouped with the backbone compiled (reward.compile=true); compile time apart
Usage: python benchmarks/bench_reward_levers.py [--steps 15] [--skip-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time

import numpy as np
import torch
from _common import Timer, default_cfg

from pushgen.data.collate import pad_sequences
from pushgen.data.pipeline import prepare
from pushgen.data.tokenize import tokenize_texts
from pushgen.evaluation.metrics import pairwise_summary
from pushgen.losses import pairwise_loss
from pushgen.models.build import build_reward_model
from pushgen.modules.datamodule import PairDataModule
from pushgen.utils.config import to_plain


def batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def fixed_width(batch, width, pad_id):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    out_ids = torch.full((len(ids), width), pad_id, dtype=ids.dtype)
    out_mask = torch.zeros((len(ids), width), dtype=mask.dtype)
    out_ids[:, : ids.shape[1]], out_mask[:, : ids.shape[1]] = ids, mask
    return {**batch, "input_ids": out_ids, "attention_mask": out_mask}


def train_rate(model, data, two_forwards=False, autocast=False, token_ids=None, pad_id=0,
               pairs_df=None) -> tuple[float, float]:
    """pairs/s over data[1:] (data[0] is a warm-up step) and the mean loss of the timed steps."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    model.train()
    losses, pairs, start = [], 0, None
    for i, batch in enumerate(data):
        if i == 1:
            start = time.perf_counter()
        with ctx():
            if two_forwards:
                rows = pairs_df.iloc[batch["index"].numpy()]
                ids_c, m_c = pad_sequences([token_ids[j] for j in rows["chosen"]], pad_id)
                ids_r, m_r = pad_sequences([token_ids[j] for j in rows["rejected"]], pad_id)
                margin = model(ids_c, m_c) - model(ids_r, m_r)
            else:
                scores = model(batch["input_ids"], batch["attention_mask"])
                margin = scores[batch["chosen_idx"]] - scores[batch["rejected_idx"]]
            loss = pairwise_loss("bradley_terry", margin.float(), batch["soft_label"], None)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= 1:
            losses.append(float(loss))
            pairs += len(batch["soft_label"])
    return pairs / (time.perf_counter() - start), float(np.mean(losses))


@torch.no_grad()
def score(model, loader, autocast=False):
    model.eval()
    chosen, rejected = [], []
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with ctx:
        for batch in loader:
            s = model(batch["input_ids"], batch["attention_mask"]).float()
            chosen.append(s[batch["chosen_idx"]])
            rejected.append(s[batch["rejected_idx"]])
    return torch.cat(chosen), torch.cat(rejected)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--bf16-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val-batches", type=int, default=8, help="validation batches (64 pairs) for the bf16 check")
    ap.add_argument("--skip-compile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = default_cfg()
    prepared = prepare(cfg.data, seed=0)
    torch.manual_seed(0)
    base = build_reward_model(to_plain(cfg.backbone), to_plain(cfg.reward))
    pad = base.tokenizer.pad_token_id
    ids, _ = tokenize_texts(prepared.pooled, base.tokenizer, max_length=64, use_evidence=False, kind=base.kind)
    splits = {s: prepared.split(s) for s in ("train", "val")}
    random_dm = PairDataModule(splits, ids, pad_id=pad, batch_size=32, group_by_test=False, seed=0)
    grouped_dm = PairDataModule(splits, ids, pad_id=pad, batch_size=32, group_by_test=True, seed=0)
    n = args.steps + 1
    rnd, grp = batches(random_dm.train_dataloader(), n), batches(grouped_dm.train_dataloader(), n)
    print(f"MiniLM reward model, batch 32 pairs, max_length 64, {args.threads} threads, {args.steps} timed steps each")

    def fresh():
        return copy.deepcopy(base)

    rows = []

    def report(name, rate, loss, note=""):
        rows.append((name, rate))
        print(f"  {name:22s} {rate:7.1f} pairs/s  (mean loss {loss:.4f}){note}")

    report("two forwards", *train_rate(fresh(), rnd, two_forwards=True, token_ids=ids, pad_id=pad,
                                         pairs_df=splits["train"]))
    report("one forward", *train_rate(fresh(), rnd))
    report("one forward, grouped", *train_rate(fresh(), grp))
    report("fixed padding to 64", *train_rate(fresh(), [fixed_width(b, 64, pad) for b in grp]))
    bf_rate, bf_loss = train_rate(fresh(), grp[: args.bf16_steps + 1], autocast=True)
    fp_rate, fp_loss = train_rate(fresh(), grp[: args.bf16_steps + 1])
    report("bf16 autocast, grouped", bf_rate, bf_loss,
           f"; fp32 on the same {args.bf16_steps} steps: {fp_rate:.1f} pairs/s, loss {fp_loss:.4f}")

    # Metric check: one set of weights (a few fp32 steps in), validation pairs scored both ways.
    model = fresh()
    train_rate(model, grp[:6])
    val = batches(grouped_dm.val_dataloader(), min(args.val_batches, len(grouped_dm.val_dataloader())))
    with Timer() as t32:
        c32, r32 = score(model, val)
    with Timer() as t16:
        c16, r16 = score(model, val, autocast=True)
    m32, m16 = pairwise_summary(c32, r32), pairwise_summary(c16, r16)
    agree = float(((c32 > r32) == (c16 > r16)).float().mean())
    print(f"  metric check on {len(c32)} validation pairs: fp32 acc {m32['acc']:.4f} auc {m32['auc']:.4f} "
          f"({len(c32) / t32.seconds:.0f} pairs/s) | bf16 acc {m16['acc']:.4f} auc {m16['auc']:.4f} "
          f"({len(c16) / t16.seconds:.0f} pairs/s) | same winner on {agree:.1%} of pairs, max |score diff| "
          f"{float(torch.cat([c32 - c16, r32 - r16]).abs().max()):.4f}")

    if not args.skip_compile:
        model = fresh()
        model.backbone_model.compile(dynamic=True)
        with Timer() as tc:
            train_rate(model, grp[:3])
        report("torch.compile, grouped", *train_rate(model, grp),
               f"; first 3 steps incl. compiling {tc.seconds:.0f} s")
    eager = dict(rows)["one forward, grouped"]
    print("  relative to 'one forward, grouped': " + ", ".join(f"{k} {v / eager:.2f}x" for k, v in rows))


if __name__ == "__main__":
    main()
