"""The learned labeler: TF-IDF n-grams + multinomial logistic regression, trained on the rule
labels of many real headlines (``labeler=learned``).

Why learn from rule labels: the rules are precise but only fire on the words they list; a
classifier trained on tens of thousands of rule-labelled headlines spreads each category to the
words that co-occur with it, and gives a smooth score per category. Punctuation that carries style
("?", "!", quotation marks, "...") is kept as tokens, and digits become "#", so a model sees the
same evidence the rules do.

The fitted model is stored as ``model.json`` (vocabulary, settings, class names, training
summary) + ``weights.npz`` (idf, coefficients, intercepts), loaded with ``allow_pickle=False``;
nothing executable is ever unpickled. The cache folder is named by a fingerprint of the taxonomy,
the labeler config and the training files' contents, so a change to any of them retrains.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pushgen.categories.labelers import RuleLabeler, _as_texts, normalise_for_rules
from pushgen.categories.taxonomy import Taxonomy
from pushgen.data.errors import DataError
from pushgen.data.text import clean_text, normalise_key
from pushgen.utils.config import to_plain

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Words (with inner apostrophes), "#" for digit runs, and the punctuation that marks a style.
TOKEN_PATTERN = r"[a-z#][a-z#']*|\.\.\.|[?!\"']"
_DIGITS = re.compile(r"\d+")


def preprocess(text: str) -> str:
    return _DIGITS.sub("#", normalise_for_rules(text).lower())


def _vectorizer(features: Mapping[str, Any], vocabulary: Mapping[str, int] | None = None):
    from sklearn.feature_extraction.text import TfidfVectorizer
    ngram = tuple(features.get("ngram_range", (1, 2)))
    return TfidfVectorizer(preprocessor=preprocess, token_pattern=TOKEN_PATTERN, lowercase=False,
                           ngram_range=ngram, min_df=int(features.get("min_df", 2)) if vocabulary is None else 1,
                           max_features=features.get("max_features"), sublinear_tf=bool(features.get("sublinear_tf", True)),
                           vocabulary=vocabulary, dtype=np.float64)


class LearnedLabeler:
    """Scores are class probabilities in taxonomy order; a category absent from the training
    labels gets probability 0."""

    def __init__(self, taxonomy: Taxonomy, vocabulary: Mapping[str, int], idf: np.ndarray, coef: np.ndarray,
                 intercept: np.ndarray, classes: Sequence[str], features: Mapping[str, Any],
                 summary: Mapping[str, Any] | None = None):
        unknown = [c for c in classes if c not in taxonomy]
        if unknown:
            raise ValueError(f"the learned labeler knows categories {unknown} that the taxonomy {taxonomy.names} "
                             "does not have; retrain it for this taxonomy")
        self.taxonomy = taxonomy
        self.features = dict(features)
        self.classes = list(classes)
        self.summary = dict(summary or {})
        self._vec = _vectorizer(self.features, vocabulary=dict(vocabulary))
        self._vec.idf_ = np.asarray(idf, dtype=np.float64)
        self._coef = np.asarray(coef, dtype=np.float64)
        self._intercept = np.asarray(intercept, dtype=np.float64)
        self._cols = np.array([taxonomy.index(c) for c in self.classes])

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        texts = _as_texts(texts)
        out = np.zeros((len(texts), len(self.taxonomy)), dtype=np.float32)
        if not texts:
            return out
        logits = self._vec.transform(texts) @ self._coef.T + self._intercept
        if logits.shape[1] == 1:            # two classes: sklearn keeps one row of coefficients
            logits = np.hstack([-logits, logits]) / 2
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        out[:, self._cols] = prob
        return out

    def label(self, texts: Sequence[str]) -> list[str]:
        scores = self.scores(texts)
        return [self.taxonomy.categories[k].name for k in scores.argmax(axis=1)]

    # -- persistence: JSON + NPZ only ------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        from pushgen.utils.run import write_json
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".weights.tmp.npz"
        np.savez(tmp, idf=self._vec.idf_, coef=self._coef, intercept=self._intercept)
        tmp.replace(folder / "weights.npz")
        # model.json last: its presence marks a complete save.
        write_json(folder / "model.json", {"format_version": FORMAT_VERSION, "taxonomy": self.taxonomy.names,
                                           "classes": self.classes, "features": self.features,
                                           "vocabulary": {k: int(v) for k, v in self._vec.vocabulary.items()},
                                           "summary": self.summary})
        return folder

    @classmethod
    def load(cls, folder: str | Path, taxonomy: Taxonomy) -> LearnedLabeler:
        folder = Path(folder)
        meta_path, weights_path = folder / "model.json", folder / "weights.npz"
        if not meta_path.exists() or not weights_path.exists():
            raise FileNotFoundError(f"{folder} holds no saved learned labeler (model.json + weights.npz)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format_version {meta.get('format_version')} is not {FORMAT_VERSION}; "
                             "delete the folder to retrain")
        if meta["taxonomy"] != taxonomy.names:
            raise ValueError(f"{meta_path} was trained for categories {meta['taxonomy']}, not {taxonomy.names}")
        with np.load(weights_path, allow_pickle=False) as w:
            return cls(taxonomy, meta["vocabulary"], w["idf"], w["coef"], w["intercept"], meta["classes"],
                       meta["features"], meta.get("summary"))


def fit_learned(texts: Sequence[str], labels: Sequence[str], taxonomy: Taxonomy,
                cfg: Mapping[str, Any] | None = None) -> LearnedLabeler:
    """Fit the classifier on ``texts`` with ``labels`` (category names). Deterministic: lbfgs on a
    fixed, sorted input gives the same weights every time."""
    from sklearn.linear_model import LogisticRegression
    cfg = dict(cfg or {})
    features = dict(cfg.get("features") or {})
    if "ngram_range" in features:
        features["ngram_range"] = list(features["ngram_range"])
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"fit_learned needs as many labels as texts (and at least one); got {len(texts)} texts, "
                         f"{len(labels)} labels")
    bad = sorted({lab for lab in labels if lab not in taxonomy})
    if bad:
        raise ValueError(f"training labels {bad} are not categories of the taxonomy {taxonomy.names}")
    classes = [n for n in taxonomy.names if n in set(labels)]
    if len(classes) < 2:
        raise ValueError(f"the training labels hold only {classes}; a classifier needs at least two categories")
    vec = _vectorizer(features)
    x = vec.fit_transform(texts)
    clf = LogisticRegression(C=float(cfg.get("C", 4.0)), max_iter=int(cfg.get("max_iter", 2000)),
                             class_weight=cfg.get("class_weight"), solver="lbfgs")
    y = np.array([classes.index(lab) for lab in labels])
    clf.fit(x, y)
    fit_agreement = float((clf.predict(x) == y).mean())
    counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
    summary = {"n_texts": len(texts), "label_counts": counts, "fit_agreement": fit_agreement,
               "n_features": int(x.shape[1])}
    return LearnedLabeler(taxonomy, vec.vocabulary_, vec.idf_, clf.coef_, clf.intercept_, classes, features, summary)


# -- training data ---------------------------------------------------------------------------------
def _existing(source: Mapping[str, Any]) -> Path:
    if not source.get("path"):
        raise DataError(f"a labeler source needs a path: {dict(source)}")
    path = Path(source["path"])
    if not path.exists():
        raise DataError("training file of the learned labeler does not exist", path=str(path),
                        hint="set labeler.sources[i].path, or PUSHGEN_DATA_DIR to the folder holding the data")
    return path


def read_source(source: Mapping[str, Any]) -> list[str]:
    """Texts of one training source: ``{kind: table, path, column}`` (Parquet/CSV/JSONL) or
    ``{kind: lines, path}`` (one text per line, optionally .gz)."""
    kind, path = source.get("kind"), _existing(source)
    if kind == "table":
        from pushgen.data.loading import read_table
        table = read_table(path)
        column = source.get("column")
        if column not in table.columns:
            raise DataError(f"missing column '{column}'; the file has {list(map(str, table.columns))}", path=str(path),
                            column=column, hint="set labeler.sources[i].column")
        texts = table[column].tolist()
    elif kind == "lines":
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as fh:
                texts = fh.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"could not be read as UTF-8 text lines: {exc}", path=str(path)) from exc
    else:
        raise DataError(f"labeler source kind must be 'table' or 'lines', got {kind!r}", path=str(path))
    return [t for t in (clean_text(v) for v in texts) if t]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def training_texts(cfg: Mapping[str, Any]) -> list[str]:
    """All sources' texts, one per normalised text, sorted (so the order never depends on the
    files' order), minus held-out texts (e.g. the hand-labelled ones), optionally subsampled."""
    from pushgen.categories.hand_labels import headline_key
    by_key: dict[str, str] = {}
    for source in cfg.get("sources") or []:
        for text in read_source(source):
            by_key.setdefault(normalise_key(text), text)
    if not by_key:
        raise DataError("the learned labeler has no training texts; set labeler.sources")
    held_out = _held_out_keys(cfg.get("exclude_labels"))
    texts = sorted(t for k, t in by_key.items() if k and headline_key(t) not in held_out)
    limit = cfg.get("max_texts")
    if limit and len(texts) > int(limit):
        rng = np.random.default_rng(int(cfg.get("seed", 0)))
        texts = [texts[i] for i in np.sort(rng.choice(len(texts), size=int(limit), replace=False))]
    log.info("learned labeler: %d training texts (%d held out by key)", len(texts), len(held_out))
    return texts


def _held_out_keys(path: str | None) -> set[str]:
    if not path:
        return set()
    import pandas as pd
    path = Path(path)
    if not path.exists():
        raise DataError("labeler.exclude_labels points at a missing file", path=str(path),
                        hint="set labeler.exclude_labels=null to hold nothing out")
    return set(pd.read_csv(path, dtype=str, comment="#")["headline_key"])


def fingerprint(cfg: Mapping[str, Any], taxonomy: Taxonomy) -> str:
    settings = {k: v for k, v in cfg.items() if k not in ("cache_dir", "sources", "exclude_labels")}
    files = [{"kind": s.get("kind"), "column": s.get("column"), "sha256": _file_digest(_existing(s))}
             for s in cfg.get("sources") or []]
    held = cfg.get("exclude_labels")
    blob = json.dumps({"v": FORMAT_VERSION, "taxonomy": taxonomy.as_dict(), "settings": settings, "files": files,
                       "held_out": _file_digest(Path(held)) if held and Path(held).exists() else None},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_from_config(cfg: Mapping[str, Any], taxonomy: Taxonomy) -> LearnedLabeler:
    texts = training_texts(cfg)
    labels = RuleLabeler(taxonomy).label(texts)
    return fit_learned(texts, labels, taxonomy, cfg)


def load_or_train(cfg: Mapping[str, Any], taxonomy: Taxonomy) -> LearnedLabeler:
    """The cached model for this taxonomy, config and data; trained and saved on first use."""
    cfg = to_plain(cfg)
    if cfg.get("path"):                          # an explicitly saved model
        return LearnedLabeler.load(cfg["path"], taxonomy)
    folder = Path(cfg.get("cache_dir") or ".cache/labelers") / f"learned-{taxonomy.name}-{fingerprint(cfg, taxonomy)}"
    if (folder / "model.json").exists():
        return LearnedLabeler.load(folder, taxonomy)
    model = train_from_config(cfg, taxonomy)
    model.save(folder)
    log.info("learned labeler trained (fit agreement with the rules %.3f) and saved to %s",
             model.summary["fit_agreement"], folder)
    return model
