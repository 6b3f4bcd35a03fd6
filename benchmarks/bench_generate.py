"""Best-of-N hot paths: candidate generation (batched vs one at a time) and reward scoring.

Generation: real prompts (Upworthy ledes, one per style category, through the prompt builder) on
the stories260K decoder (or `--generator PATH`): candidates per second when every sequence is its
own generate call, when one prompt's n samples share a call, and when the backend batches 64
sequences per call (left padding, KV cache). Scoring: texts per second through the MiniLM reward
model, batches sorted by token length vs in arrival order.
Usage: python benchmarks/bench_generate.py [--prompts 16] [--n 4] [--generator PATH] [--texts 2000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import MODELS_DIR, REPO, Timer, default_cfg

from pushgen.categories.prompts import PromptBuilder
from pushgen.categories.taxonomy import load_taxonomy
from pushgen.data.pipeline import prepare
from pushgen.generation.backends import HFBackend, Sampling, load_generator
from pushgen.generation.scoring import score_texts


def candidates_per_second(backend: HFBackend, prompts, n: int, per_call: str) -> float:
    with Timer() as t:
        if per_call == "sequence":
            total = sum(len(backend.generate([p], n=1, seed=s)[0]) for p in prompts for s in range(n))
        elif per_call == "prompt":
            total = sum(len(backend.generate([p], n=n, seed=0)[0]) for p in prompts)
        else:
            total = sum(len(o) for o in backend.generate(prompts, n=n, seed=0))
    return total / t.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--generator", default=str(MODELS_DIR / "stories260K"))
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = default_cfg()
    prepared = prepare(cfg.data, seed=0)
    test = prepared.pooled[prepared.pooled["split"] == "test"]
    ledes = test.groupby("test_id")["evidence"].first().loc[lambda s: s.str.len() > 0].tolist()
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        gcfg = compose(config_name="generate", overrides=["generator.path=x", "reward_model=x"])
    taxonomy = load_taxonomy(gcfg.taxonomy)
    model, tok = load_generator(args.generator)
    builder = PromptBuilder(tok, gcfg.prompt, taxonomy)
    cats = taxonomy.names
    prompts = [builder.prompt_ids(ledes[i], cats[i % len(cats)]) for i in range(args.prompts)]
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=0.8, top_p=0.95)
    rates = {}
    for name, per_call, bs in (("one sequence per call", "sequence", 1), ("one prompt (n samples) per call", "prompt", args.n),
                               ("batched, 64 sequences per call", "batch", 64)):
        backend = HFBackend(model, tok, sampling, batch_size=bs, stop_ids=builder.stop_ids)
        backend.generate(prompts[:1], n=1, seed=0)  # warm-up
        rates[name] = candidates_per_second(backend, prompts, args.n, per_call)
    base = rates["one sequence per call"]
    print(f"generation ({args.generator.rsplit('/', 1)[-1]}, {args.prompts} prompts x n={args.n}, "
          f"{args.max_new_tokens} new tokens, mean prompt {np.mean([len(p) for p in prompts]):.0f} tokens):")
    for name, r in rates.items():
        print(f"  {name:34s} {r:8.1f} candidates/s  ({r / base:.1f}x)")

    from pushgen.models.build import build_reward_model
    from pushgen.utils.config import to_plain
    reward = build_reward_model(to_plain(cfg.backbone), to_plain(cfg.reward)).eval()
    texts = prepared.pooled["text"].sample(n=min(args.texts, len(prepared.pooled)), random_state=0).tolist()
    score_texts(reward, texts[:64])  # warm-up
    with Timer() as sorted_t:
        score_texts(reward, texts, batch_size=64)
    with Timer() as arrival_t, torch.no_grad():
        for i in range(0, len(texts), 64):
            reward.score_texts(texts[i:i + 64], max_length=64, batch_size=64)
    print(f"scoring (MiniLM reward model, {len(texts)} headlines, batches of 64):")
    print(f"  sorted by length {len(texts) / sorted_t.seconds:8.1f} texts/s")
    print(f"  arrival order    {len(texts) / arrival_t.seconds:8.1f} texts/s")


if __name__ == "__main__":
    main()
