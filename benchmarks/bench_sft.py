"""Generator SFT speed: target tokens/s and all tokens/s, packed vs padded batches, real Upworthy examples.

Same examples, same batch size, same model (fp32, full fine-tuning, AdamW): packing only removes pad
tokens, so the difference is the cost of padding. A third line times the padded batches with the
category contrast (`sft.category_contrast.weight=1`: each example's wrong-category twin in the same
forward, plus the pairwise loss), so its s/step against the padded line is the contrast's cost.
Default backbone: stories260K (fast); pass a backbone config name to time another, e.g.
`python benchmarks/bench_sft.py 10 smollm2`.
Usage: python benchmarks/bench_sft.py [STEPS] [BACKBONE]
"""

from __future__ import annotations

import sys
import warnings

import torch
from _common import REPO, Timer
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from pushgen.categories.labelers import build_labeler
from pushgen.data.pipeline import prepare
from pushgen.data.sft import CategoryContrast, SFTCollator, label_rows, sft_rows, tokenize_rows
from pushgen.modules.sft_module import SFTModule
from pushgen.utils.config import to_plain


def run(module: SFTModule, batches: list[dict]) -> tuple[float, int, int]:
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    module.train()
    module.training_step(batches[0], 0).backward()  # warm-up, not timed
    opt.zero_grad()
    # Counted before the clock starts; the contrast's twin rows (after the real ones) are not targets.
    targets = sum(int((b["labels"][:len(b["labels"]) - len(b.get("contrast_pairs", ())), 1:] != -100).sum())
                  for b in batches)
    tokens = sum(int(b["input_ids"].numel()) for b in batches)
    with Timer() as t:
        for i, b in enumerate(batches):
            # training_step, not forward: the category contrast lives there.
            module.training_step(b, i).backward()
            opt.step()
            opt.zero_grad()
    return t.seconds, targets, tokens


def main(steps: int, backbone: str) -> None:
    torch.set_num_threads(2)
    # training_step logs through self.log, which has no Trainer to log to here.
    warnings.filterwarnings("ignore", message=".*self.trainer. reference is not registered")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="sft", overrides=[f"backbone={backbone}", "sft.lora.enabled=false",
                                                    "sft.category_contrast.weight=1.0"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(REPO / "logs" / "bench")
    module = SFTModule(backbone=to_plain(cfg.backbone), prompt=to_plain(cfg.prompt), sft=to_plain(cfg.sft),
                       taxonomy=to_plain(cfg.taxonomy))
    prepared = prepare(cfg.data, seed=int(cfg.seed))
    rows = sft_rows(prepared.pooled, min_impressions=int(cfg.sft.min_impressions))
    rows = label_rows(rows[rows["split"] == "train"].head(16 * (steps + 1)), build_labeler(to_plain(cfg.labeler), module.taxonomy))
    examples = tokenize_rows(rows, module.builder, contrast=module.taxonomy.names)
    bs = int(cfg.sft.batch_size)
    chunks = [examples[i:i + bs] for i in range(0, bs * (steps + 1), bs)]
    pad = module.tokenizer.pad_token_id
    padded = SFTCollator(pad, pack=False)
    for name, collate in (("padded", padded), ("packed", SFTCollator(pad, pack=True, pack_tokens=int(cfg.sft.packing.max_tokens))),
                          ("padded + category contrast", CategoryContrast(padded, seed=int(cfg.seed)))):
        batches = [collate(c) for c in chunks]
        seconds, targets, tokens = run(module, batches)
        print(f"{backbone} {name}: {steps + 1} steps x {bs} examples, {targets / seconds:.0f} target tokens/s, "
              f"{tokens / seconds:.0f} batch tokens/s (incl. padding), {seconds / (steps + 1):.3f} s/step")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20, sys.argv[2] if len(sys.argv) > 2 else "stories260k")
