"""Tokenise each pooled text once (pairs only point at texts), cached on disk through `datasets`.

Reward inputs are the candidate text alone, or the evidence (the item) plus the text. For an encoder
the two go in as a text pair; for a decoder the text comes last, because its score is read at the
last token. The evidence is shortened first; a text that is too long even alone follows
`reward.truncation` (cut its end or start, or stop with an error). Every cut is counted; no row is dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from datasets.fingerprint import Hasher

from pushgen.data.errors import DataError

log = logging.getLogger(__name__)

DECODER_TEMPLATE = "Item: {evidence}\nNotification: {text}"


TRUNCATIONS = ("right", "left", "error")


def _encode_texts(tokenizer, texts: list[str], max_length: int, side: str) -> tuple[list[list[int]], list[bool]]:
    """Each text alone; one longer than max_length is cut on ``side`` (special tokens kept)."""
    full = tokenizer(texts)["input_ids"]
    cut = [len(x) > max_length for x in full]
    if any(cut):
        before = tokenizer.truncation_side
        tokenizer.truncation_side = side
        try:
            long_ids = tokenizer([t for t, c in zip(texts, cut) if c], truncation=True, max_length=max_length)["input_ids"]
        finally:
            tokenizer.truncation_side = before
        it = iter(long_ids)
        full = [next(it) if c else x for x, c in zip(full, cut)]
    return full, cut


def _encode_batch(batch, tokenizer, max_length: int, use_evidence: bool, kind: str, truncation: str = "right"):
    texts, evidence = batch["text"], batch["evidence"]
    side = "left" if truncation == "left" else "right"
    if not use_evidence:
        ids, cut = _encode_texts(tokenizer, texts, max_length, side)
        return {"input_ids": ids, "truncated": cut, "text_truncated": cut}
    if kind == "encoder":
        # A text pair: the evidence is shortened first. A text that leaves no room for evidence
        # (the tokenizer refuses such a pair) goes in alone, cut by the policy if needed.
        alone, text_cut = _encode_texts(tokenizer, texts, max_length, side)
        ids, cut = list(alone), list(text_cut)
        fits = [i for i, a in enumerate(alone) if not text_cut[i] and len(a) + 1 < max_length]
        for i in set(range(len(texts))) - set(fits):
            cut[i] = cut[i] or bool(evidence[i])           # its evidence was left out
        if fits:
            paired = tokenizer([texts[i] for i in fits], [evidence[i] for i in fits],
                               truncation="only_second", max_length=max_length)["input_ids"]
            for i, p in zip(fits, paired):
                ids[i] = p
            # A shortened pair fills max_length exactly: only full rows need the exact check.
            full = [i for i, p in zip(fits, paired) if len(p) >= max_length]
            if full:
                whole = tokenizer([texts[i] for i in full], [evidence[i] for i in full])["input_ids"]
                for i, w in zip(full, whole):
                    cut[i] = len(w) > max_length
        return {"input_ids": ids, "truncated": cut, "text_truncated": text_cut}
    # Decoder: fit the text whole, give the evidence what is left, cut the evidence at its end.
    out, cut, text_cut = [], [], []
    for text, ev in zip(texts, evidence):
        full = tokenizer(DECODER_TEMPLATE.format(evidence=ev, text=text))["input_ids"]
        shortened = len(full) > max_length
        text_too_long = False
        if shortened:
            ev_ids = tokenizer(ev, add_special_tokens=False)["input_ids"]
            keep = max(0, len(ev_ids) - (len(full) - max_length) - 2)
            full = tokenizer(DECODER_TEMPLATE.format(evidence=tokenizer.decode(ev_ids[:keep]), text=text))["input_ids"]
            text_too_long = keep == 0 and len(full) > max_length
            # Re-tokenising a cut can merge differently; the text is at the end, so keep the tail
            # (or, for a text too long even alone, the side the policy keeps).
            full = full[:max_length] if text_too_long and side == "right" else full[-max_length:]
        out.append(full)
        cut.append(shortened)
        text_cut.append(text_too_long)
    return {"input_ids": out, "truncated": cut, "text_truncated": text_cut}


def tokenize_texts(pooled: pd.DataFrame, tokenizer, *, max_length: int, use_evidence: bool, kind: str,
                   cache_dir: str | Path | None = None, num_proc: int | None = None,
                   truncation: str = "right") -> tuple[list[list[int]], dict]:
    """Token ids for every row of ``pooled`` (same order) and truncation counts.

    ``truncation`` says what happens to a candidate text longer than ``max_length`` tokens: ``right``
    cuts its end, ``left`` its start, ``error`` raises a DataError. Nothing is ever dropped: every
    row keeps its (possibly shortened) input, and ``stats`` counts the cut ones;
    ``stats['truncated_rows']`` lists their row positions."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"reward.truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    table = pd.DataFrame({"text": pooled["text"].astype(str), "evidence": pooled["evidence"].astype(str)})
    ds = datasets.Dataset.from_pandas(table, preserve_index=False)
    settings = (max_length, use_evidence, kind, tokenizer.name_or_path, len(tokenizer), DECODER_TEMPLATE, truncation)
    cache_file = None
    if cache_dir is not None:
        # The encoder function's own code is part of the key: changing it must never reuse old files.
        key = Hasher.hash((Hasher.hash(table.to_numpy().tolist()), Hasher.hash(tokenizer), settings,
                           Hasher.hash(_encode_batch), Hasher.hash(_encode_texts)))
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(Path(cache_dir) / f"tokens-{key}.arrow")
    encoded = ds.map(_encode_batch, batched=True, batch_size=1000, remove_columns=["text", "evidence"],
                     fn_kwargs=dict(tokenizer=tokenizer, max_length=max_length, use_evidence=use_evidence, kind=kind,
                                    truncation=truncation),
                     cache_file_name=cache_file, load_from_cache_file=cache_file is not None,
                     num_proc=num_proc, desc="tokenising texts")
    ids = encoded["input_ids"]
    cut = np.asarray(encoded["truncated"], dtype=bool)
    text_cut = np.asarray(encoded["text_truncated"], dtype=bool)
    if truncation == "error" and text_cut.any():
        row = int(np.flatnonzero(text_cut)[0])
        raise DataError(f"{int(text_cut.sum())} of {len(ids)} texts are longer than reward.max_length={max_length} "
                        f"tokens (reward.truncation=error); the first: {table['text'].iloc[row][:80]!r}",
                        row=row, column="text",
                        hint="raise reward.max_length, or set reward.truncation=right (cut the end) or left (cut the start)")
    stats = {"texts": len(ids), "truncated": int(cut.sum()), "text_truncated": int(text_cut.sum()),
             "truncation": truncation, "max_length": max_length,
             "mean_tokens": float(sum(map(len, ids)) / max(len(ids), 1)),
             "truncated_rows": np.flatnonzero(cut).tolist()}
    if cut.any():
        log.warning("%d of %d inputs were truncated to max_length=%d (%d texts cut on the %s by reward.truncation, "
                    "%d only lost evidence); raise reward.max_length to keep more", int(cut.sum()), len(ids),
                    max_length, int(text_cut.sum()), truncation, int(cut.sum() - text_cut.sum()))
    return ids, stats


def count_truncated_pairs(pairs: pd.DataFrame, truncated_rows: list[int]) -> dict[str, int]:
    """How many preference pairs (per split) have a shortened input on either side. They are kept,
    not dropped; this says how many the cut touches."""
    rows = np.asarray(truncated_rows, dtype=np.int64)
    hit = np.isin(pairs["chosen"].to_numpy(), rows) | np.isin(pairs["rejected"].to_numpy(), rows)
    out = {"pairs_truncated": int(hit.sum())}
    if "split" in pairs:
        for name in pd.unique(pairs["split"]):
            out[f"pairs_truncated_{name}"] = int(hit[(pairs["split"] == name).to_numpy()].sum())
    if hit.any():
        log.warning("%d of %d preference pairs have a truncated input (kept, not dropped)", int(hit.sum()), len(pairs))
    return out
