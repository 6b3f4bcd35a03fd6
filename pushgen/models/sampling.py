"""Generate notifications from prompts: left-padded batches, stop at the template's stop token."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pushgen.categories.prompts import PromptBuilder

DEFAULT_SAMPLING = {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 32,
                    "repetition_penalty": 1.1, "batch_size": 16, "guidance_scale": 1.0}


@torch.no_grad()
def generate_texts(model, builder: PromptBuilder, evidence: Sequence[str], categories: Sequence[str | None],
                   sampling: dict | None = None, seed: int | None = 0) -> list[str]:
    """One completion per (evidence, category), decoded and cut at the first stop token.

    Decoders must be left-padded for batched generation (right padding would put pad tokens between
    the prompt and the completion); the tokenizer's own padding side is left untouched.

    ``guidance_scale`` g != 1 turns on classifier-free guidance for prompts with a category: each
    step's log-probabilities become u + g * (c - u), c from the prompt with its style line and u from
    the same prompt without it (transformers runs the second branch with its own KV cache), so the
    category's effect on the next token is amplified g times. It costs a second forward per step.
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
    guidance = float(cfg.get("guidance_scale", 1.0))
    guided = guidance != 1.0 and builder.use_category
    out: list[str] = []
    bs = int(cfg["batch_size"])
    for start in range(0, len(evidence), bs):
        chunk = evidence[start:start + bs]
        ids, mask = left_pad([builder.prompt_ids(e, c) for e, c in zip(chunk, categories[start:start + bs])], pad_id)
        extra = {}
        if guided:
            # Left padding shifts positions by a constant per row, which rotary embeddings ignore.
            neg, neg_mask = left_pad([builder.unconditional_ids(e) for e in chunk], pad_id)
            extra = {"guidance_scale": guidance, "negative_prompt_ids": neg.to(device),
                     "negative_prompt_attention_mask": neg_mask.to(device)}
        width = ids.shape[1]
        seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), pad_token_id=pad_id,
                              eos_token_id=builder.stop_ids, use_cache=True, **gen, **extra)
        out.extend(builder.decode_completion(s[width:].tolist()) for s in seqs)
    if was_training:
        model.train()
    return out


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask: every prompt ends at the last column, where generation continues.

    Right padding would put pad tokens between a short prompt and its continuation."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {row} is empty: a decoder needs at least one token to continue")
        ids[row, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[row, width - len(p):] = 1
    return ids, mask
