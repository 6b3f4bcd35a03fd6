"""Tokenise each pooled text once (pairs only point at texts), cached on disk through `datasets`.

Reward inputs are the candidate text alone, or the evidence (the item) plus the text. For an encoder
the two go in as a text pair; for a decoder the text comes last, because its score is read at the
last token. Only the evidence is ever shortened, and every shortening is counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import pandas as pd
from datasets.fingerprint import Hasher

log = logging.getLogger(__name__)

DECODER_TEMPLATE = "Item: {evidence}\nNotification: {text}"


def _encode_batch(batch, tokenizer, max_length: int, use_evidence: bool, kind: str):
    texts, evidence = batch["text"], batch["evidence"]
    if not use_evidence or kind == "encoder":
        enc = (tokenizer(texts, evidence, truncation="only_second", max_length=max_length) if use_evidence
               else tokenizer(texts, truncation=True, max_length=max_length))
        # A truncating tokenizer fills up to the limit exactly, so a full row is a cut row.
        return {"input_ids": enc["input_ids"], "truncated": [len(x) >= max_length for x in enc["input_ids"]]}
    # Decoder: fit the text whole, give the evidence what is left, cut the evidence at its end.
    out, cut = [], []
    for text, ev in zip(texts, evidence):
        full = tokenizer(DECODER_TEMPLATE.format(evidence=ev, text=text))["input_ids"]
        shortened = len(full) > max_length
        if shortened:
            ev_ids = tokenizer(ev, add_special_tokens=False)["input_ids"]
            keep = max(0, len(ev_ids) - (len(full) - max_length) - 2)
            full = tokenizer(DECODER_TEMPLATE.format(evidence=tokenizer.decode(ev_ids[:keep]), text=text))["input_ids"]
            # Re-tokenising a cut can merge differently; the text is at the end, so keep the tail.
            full = full[-max_length:]
        out.append(full)
        cut.append(shortened)
    return {"input_ids": out, "truncated": cut}


def tokenize_texts(pooled: pd.DataFrame, tokenizer, *, max_length: int, use_evidence: bool, kind: str,
                   cache_dir: str | Path | None = None, num_proc: int | None = None) -> tuple[list[list[int]], dict]:
    """Token ids for every row of ``pooled`` (same order) and truncation counts."""
    table = pd.DataFrame({"text": pooled["text"].astype(str), "evidence": pooled["evidence"].astype(str)})
    ds = datasets.Dataset.from_pandas(table, preserve_index=False)
    settings = (max_length, use_evidence, kind, tokenizer.name_or_path, len(tokenizer), DECODER_TEMPLATE)
    cache_file = None
    if cache_dir is not None:
        # The encoder function's own code is part of the key: changing it must never reuse old files.
        key = Hasher.hash((Hasher.hash(table.to_numpy().tolist()), Hasher.hash(tokenizer), settings,
                           Hasher.hash(_encode_batch)))
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(Path(cache_dir) / f"tokens-{key}.arrow")
    encoded = ds.map(_encode_batch, batched=True, batch_size=1000, remove_columns=["text", "evidence"],
                     fn_kwargs=dict(tokenizer=tokenizer, max_length=max_length, use_evidence=use_evidence, kind=kind),
                     cache_file_name=cache_file, load_from_cache_file=cache_file is not None,
                     num_proc=num_proc, desc="tokenising texts")
    ids = encoded["input_ids"]
    truncated = int(sum(encoded["truncated"]))
    stats = {"texts": len(ids), "truncated": truncated, "max_length": max_length,
             "mean_tokens": float(sum(map(len, ids)) / max(len(ids), 1))}
    if truncated:
        log.warning("%d of %d inputs were truncated to max_length=%d (%s); raise reward.max_length to keep more",
                    truncated, len(ids), max_length, "evidence shortened" if use_evidence else "text cut")
    return ids, stats
