"""Candidate generation behind one small interface.

A backend takes prompts as token ids and returns, for each prompt, ``n`` sampled continuations as
text. Hugging Face transformers is the default (batched, left-padded, KV cache); vLLM is an option
for GPU users and is imported only when chosen. Both take the same inputs and give the same outputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import torch

from pushgen.models.sampling import left_pad

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm")


@dataclass(frozen=True)
class Sampling:
    """Sampling settings shared by every backend (`generation.sampling` in the config)."""

    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    max_new_tokens: int = 32
    repetition_penalty: float = 1.0
    # Classifier-free guidance on the prompt's category (1: off); see pushgen.models.sampling.generate_texts.
    guidance_scale: float = 1.0

    @classmethod
    def from_cfg(cls, cfg: Mapping | None) -> "Sampling":
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"generation.sampling has unknown keys {unknown}; known: {sorted(known)}")
        s = cls(**cfg)
        if s.max_new_tokens < 1:
            raise ValueError(f"generation.sampling.max_new_tokens must be >= 1, got {s.max_new_tokens}")
        if s.do_sample and s.temperature <= 0:
            raise ValueError("generation.sampling.temperature must be > 0 when sampling (or set do_sample=false)")
        return s


def check_guidance(sampling: Sampling, backend: str, use_category: bool) -> None:
    """Refuse classifier-free guidance where it cannot work, before any model is loaded."""
    if sampling.guidance_scale == 1.0:
        return
    if not use_category:
        raise ValueError("generation.sampling.guidance_scale guides towards the prompt's category, and "
                         "prompt=no_category has none: set guidance_scale=1 or drop prompt=no_category")
    if backend == "vllm":
        raise ValueError("generation.sampling.guidance_scale is not supported by the vllm backend; use "
                         "generation.backend.name=hf or guidance_scale=1")


class GenerationBackend(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], n: int, seed: int,
                 unconditional: Sequence[Sequence[int]] | None = None) -> list[list[str]]:
        """For each prompt (token ids), ``n`` continuations (prompt not included), decoded to text.
        ``unconditional``: per prompt, the ids of its guidance branch (used when guidance_scale != 1)."""
        ...


class HFBackend:
    """transformers `generate` on batches of prompts: left padding, KV cache, n samples per prompt.

    ``batch_size`` counts sequences (prompts x n) per call; prompts are sorted by length so a batch
    holds prompts of similar size and little padding. Sampling is seeded once per call, so results
    are reproducible for the same seed, prompts and batch size."""

    def __init__(self, model, tokenizer, sampling: Sampling, batch_size: int = 64,
                 stop_ids: Sequence[int] | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.batch_size = max(1, int(batch_size))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("the generator's tokenizer has no pad or eos token to pad prompts with")
        # A chat template ends a reply with its own token (e.g. <|im_end|>), not always with EOS.
        self.stop_ids = list(stop_ids) if stop_ids else [tokenizer.eos_token_id]
        self.device = next(model.parameters()).device

    def _generation_config(self, n: int):
        from transformers import GenerationConfig

        s = self.sampling
        kwargs: dict[str, Any] = dict(max_new_tokens=s.max_new_tokens, num_return_sequences=n, use_cache=True,
                                      pad_token_id=self.pad_id, eos_token_id=self.stop_ids, do_sample=s.do_sample,
                                      repetition_penalty=s.repetition_penalty)
        if s.do_sample:
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or None)
        if s.guidance_scale != 1.0:
            kwargs.update(guidance_scale=s.guidance_scale)
        # A fresh config, so a checkpoint's own generation_config.json cannot change the sampling silently.
        return GenerationConfig(**kwargs)

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], n: int, seed: int,
                 unconditional: Sequence[Sequence[int]] | None = None) -> list[list[str]]:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        guided = self.sampling.guidance_scale != 1.0
        if guided and (unconditional is None or len(unconditional) != len(prompts)):
            raise ValueError("generation.sampling.guidance_scale != 1 needs an unconditional prompt per prompt "
                             "(a generator prompted with a category; prompt=no_category has nothing to guide)")
        if not self.sampling.do_sample and n > 1:
            raise ValueError("greedy decoding (do_sample=false) gives the same text n times; use n=1 or sampling")
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        per_call = max(1, self.batch_size // n)
        gen_cfg = self._generation_config(n)
        results: list[list[str]] = [[] for _ in prompts]
        torch.manual_seed(int(seed))
        for start in range(0, len(order), per_call):
            chunk = order[start:start + per_call]
            ids, mask = left_pad([prompts[i] for i in chunk], self.pad_id)
            extra = {}
            if guided:
                # One guidance row per generated sequence (generate expands each prompt to its n samples).
                neg, neg_mask = left_pad([unconditional[i] for i in chunk], self.pad_id)
                extra = {"negative_prompt_ids": neg.repeat_interleave(n, 0).to(self.device),
                         "negative_prompt_attention_mask": neg_mask.repeat_interleave(n, 0).to(self.device)}
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      generation_config=gen_cfg, **extra)
            new = out[:, ids.shape[1]:].cpu()
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            for j, i in enumerate(chunk):
                results[i] = texts[j * n:(j + 1) * n]
        return results


class VLLMBackend:
    """vLLM for GPU users: the same prompts (token ids) in, the same n texts per prompt out."""

    def __init__(self, model_path: str, sampling: Sampling, stop_ids: Sequence[int] | None = None,
                 **engine_kwargs: Any):
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("generation.backend.name=vllm needs vLLM on a GPU machine: pip install vllm") from e
        self.sampling = sampling
        self.stop_ids = list(stop_ids or [])
        self.llm = LLM(model=str(model_path), **engine_kwargs)

    def generate(self, prompts: Sequence[Sequence[int]], n: int, seed: int,
                 unconditional: Sequence[Sequence[int]] | None = None) -> list[list[str]]:
        check_guidance(self.sampling, "vllm", use_category=True)
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        s = self.sampling
        params = SamplingParams(n=n, temperature=s.temperature if s.do_sample else 0.0, top_p=s.top_p,
                                top_k=s.top_k if s.top_k > 0 else -1, max_tokens=s.max_new_tokens,
                                repetition_penalty=s.repetition_penalty, seed=int(seed), skip_special_tokens=True,
                                stop_token_ids=self.stop_ids or None)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params)
        return [[c.text for c in o.outputs] for o in outs]


def load_generator(path: str | Path, dtype: str = "float32", trust_remote_code: bool = False):
    """A causal LM and its tokenizer from a folder or hub id; a LoRA adapter folder is merged into its base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pushgen.models.factory import _dtype

    path = str(path)
    torch_dtype = _dtype(dtype)
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.eval(), tokenizer


def build_backend(cfg: Mapping, sampling: Sampling, model=None, tokenizer=None, model_path: str | None = None,
                  stop_ids: Sequence[int] | None = None) -> GenerationBackend:
    """`generation.backend` config -> a backend. hf needs the loaded model; vllm loads model_path itself."""
    name = cfg.get("name", "hf")
    if name == "hf":
        if model is None or tokenizer is None:
            raise ValueError("the hf backend needs a loaded model and tokenizer")
        return HFBackend(model, tokenizer, sampling, batch_size=int(cfg.get("batch_size", 64)), stop_ids=stop_ids)
    if name == "vllm":
        if model_path is None:
            raise ValueError("the vllm backend needs the generator's folder (generator.path)")
        return VLLMBackend(model_path, sampling, stop_ids=stop_ids, **dict(cfg.get("engine") or {}))
    raise ValueError(f"generation.backend.name must be one of {BACKENDS}, got {name!r}")
