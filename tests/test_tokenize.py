"""Tokenisation: the text is never cut when evidence is added; truncation is counted; cache reused."""

from __future__ import annotations

import pandas as pd

from pushgen.data.tokenize import tokenize_texts
from pushgen.models import build_tiny_backbone


def test_decoder_keeps_the_whole_text_last_and_shortens_only_the_evidence(tmp_path):
    tok = build_tiny_backbone(vocab_size=400).tokenizer
    pooled = pd.DataFrame({"text": ["Short headline wins", "Another one"],
                           "evidence": ["word " * 200, "tiny lede"]})
    ids, stats = tokenize_texts(pooled, tok, max_length=40, use_evidence=True, kind="decoder", cache_dir=tmp_path)
    assert len(ids[0]) <= 40 and stats["truncated"] == 1
    text_ids = tok("Notification: Short headline wins", add_special_tokens=False)["input_ids"]
    assert ids[0][-len(text_ids):] == text_ids                 # the headline survives whole, at the end
    assert tok.decode(ids[1]).endswith("Notification: Another one")
    again, _ = tokenize_texts(pooled, tok, max_length=40, use_evidence=True, kind="decoder", cache_dir=tmp_path)
    assert again == ids and len(list(tmp_path.glob("tokens-*.arrow"))) == 1     # second call read the cache


def test_headline_only_inputs_ignore_the_evidence():
    tok = build_tiny_backbone(vocab_size=400).tokenizer
    a, _ = tokenize_texts(pd.DataFrame({"text": ["Same text"], "evidence": ["one"]}), tok, max_length=32,
                          use_evidence=False, kind="decoder")
    b, _ = tokenize_texts(pd.DataFrame({"text": ["Same text"], "evidence": ["two"]}), tok, max_length=32,
                          use_evidence=False, kind="decoder")
    assert a == b
