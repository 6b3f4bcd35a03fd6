"""Generate notifications from prompts: left-padded batches, stop at the template's stop token."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pushgen.categories.prompts import PromptBuilder

DEFAULT_SAMPLING = {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 32,
                    "repetition_penalty": 1.1, "batch_size": 16}


@torch.no_grad()
def generate_texts(model, builder: PromptBuilder, evidence: Sequence[str], categories: Sequence[str | None],
                   sampling: dict | None = None, seed: int | None = 0) -> list[str]:
    """One completion per (evidence, category), decoded and cut at the first stop token.

    Decoders must be left-padded for batched generation (right padding would put pad tokens between
    the prompt and the completion); the tokenizer's own padding side is left untouched.
    """
    cfg = {**DEFAULT_SAMPLING, **(sampling or {})}
    pad_id = builder.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = builder.stop_ids[0]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = {k: cfg[k] for k in ("do_sample", "max_new_tokens", "repetition_penalty")}
    if cfg["do_sample"]:
        gen.update(temperature=float(cfg["temperature"]), top_p=float(cfg["top_p"]))
    if seed is not None:
        torch.manual_seed(int(seed))  # same seed, same model -> same samples
    out: list[str] = []
    bs = int(cfg["batch_size"])
    for start in range(0, len(evidence), bs):
        prompts = [builder.prompt_ids(e, c) for e, c in zip(evidence[start:start + bs], categories[start:start + bs])]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), pad_token_id=pad_id,
                              eos_token_id=builder.stop_ids, use_cache=True, **gen)
        out.extend(builder.decode_completion(s[width:].tolist()) for s in seqs)
    if was_training:
        model.train()
    return out
