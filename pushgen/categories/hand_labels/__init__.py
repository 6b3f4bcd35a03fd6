"""Hand labels of real headlines, stored as row keys + labels only (the text stays in the data).

A row key is ``(test_id, headline_key)``: the A/B test id and the first 16 hex digits of the
SHA-1 of the normalised headline (``pushgen.data.text.normalise_key(clean_text(headline))``), so
the key survives re-reading the file and image-only duplicates of a headline share it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from pushgen.data.errors import DataError
from pushgen.data.text import clean_text, normalise_key

HERE = Path(__file__).resolve().parent
UPWORTHY_V1 = HERE / "upworthy_v1.csv"


def headline_key(text: str) -> str:
    return hashlib.sha1(normalise_key(clean_text(text)).encode("utf-8")).hexdigest()[:16]


def distinct_headlines(path: str | Path, test_col: str = "clickability_test_id",
                       text_col: str = "headline") -> pd.DataFrame:
    """One row per (test, normalised headline) of an A/B log, with its first cleaned text."""
    from pushgen.data.loading import read_table
    raw = read_table(path)
    for col in (test_col, text_col):
        if col not in raw.columns:
            raise DataError(f"missing column '{col}'", path=str(path), column=col)
    table = pd.DataFrame({"test_id": raw[test_col].astype(str).str.strip(),
                          "text": [clean_text(t) for t in raw[text_col]]})
    table = table[table["text"] != ""]
    table["headline_key"] = [headline_key(t) for t in table["text"]]
    return table.drop_duplicates(["test_id", "headline_key"]).reset_index(drop=True)


def sample_for_labelling(table: pd.DataFrame, n: int, seed: int, exclude_texts: set[str] = frozenset()) -> pd.DataFrame:
    """A seeded uniform sample of distinct headlines (one per normalised text, so a headline
    re-tested in several tests is not labelled twice), skipping texts in ``exclude_texts``."""
    table = table.drop_duplicates("headline_key")
    table = table[~table["text"].isin(exclude_texts)]
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(table), size=n, replace=False))
    return table.iloc[idx].reset_index(drop=True)


def read_hand_labels(labels_path: str | Path, data_path: str | Path, taxonomy_names: list[str] | None = None,
                     test_col: str = "clickability_test_id", text_col: str = "headline") -> pd.DataFrame:
    """Hand labels joined to their texts from the data file. A key that no longer resolves, or a
    label that is not a category, is a DataError naming the row of the label file."""
    labels = pd.read_csv(labels_path, dtype=str, comment="#")
    for col in ("test_id", "headline_key", "label"):
        if col not in labels.columns:
            raise DataError(f"missing column '{col}'", path=str(labels_path), column=col,
                            hint="a hand-label file has the columns test_id, headline_key, label")
    table = distinct_headlines(data_path, test_col, text_col).set_index(["test_id", "headline_key"])
    texts = []
    for row, (tid, key, label) in enumerate(zip(labels["test_id"], labels["headline_key"], labels["label"])):
        if (tid, key) not in table.index:
            raise DataError(f"the key (test_id={tid}, headline_key={key}) is not in the data file {data_path}",
                            path=str(labels_path), row=row,
                            hint="the data changed since the labels were made: point the check at the file the "
                                 "labels were made from, or relabel")
        if taxonomy_names is not None and label not in taxonomy_names:
            raise DataError(f"label '{label}' is not a category of the taxonomy {taxonomy_names}",
                            path=str(labels_path), row=row, column="label")
        texts.append(table.loc[(tid, key), "text"])
    labels = labels.copy()
    labels["text"] = texts
    return labels


# How the stored samples were drawn, so anyone can redraw them from the data file.
DEV_SAMPLES = ((70, 101), (40, 202))       # (n, pandas random_state): looked at while writing the rules
UNIFORM = (200, 2026)                      # (n, numpy seed)
ENRICHED = (60, 2027)
HELDOUT = (100, 2028)                      # drawn and labelled after the rules were revised
_ENRICH = r"\d|(?:^|\s)['\"\u2018\u201c]"


def redraw_samples(data_path: str | Path) -> pd.DataFrame:
    """The keys of the uniform and enriched samples, drawn again exactly as they were for labelling."""
    table = distinct_headlines(data_path)
    raw = pd.read_parquet(data_path)
    texts = raw["headline"].map(clean_text).drop_duplicates()
    dev = set().union(*(set(texts.sample(n, random_state=seed)) for n, seed in DEV_SAMPLES))
    uniform = sample_for_labelling(table, UNIFORM[0], seed=UNIFORM[1], exclude_texts=dev)
    pool = table[table["text"].str.contains(_ENRICH, regex=True)]
    enriched = sample_for_labelling(pool, ENRICHED[0], seed=ENRICHED[1], exclude_texts=dev | set(uniform["text"]))
    seen = dev | set(uniform["text"]) | set(enriched["text"])
    heldout = sample_for_labelling(table, HELDOUT[0], seed=HELDOUT[1], exclude_texts=seen)
    return pd.concat([uniform.assign(sample="uniform"), enriched.assign(sample="enriched"),
                      heldout.assign(sample="heldout")], ignore_index=True)
