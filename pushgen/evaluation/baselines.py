"""Two reference points for a text reward model on the same pairs: 'the longer text wins', and a
TF-IDF logistic regression on the difference of the two texts (a linear Bradley-Terry model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from pushgen.evaluation.metrics import SIG_LEVEL


def _acc(margin: np.ndarray, p_value: np.ndarray) -> dict[str, float]:
    sig = p_value < SIG_LEVEL
    return {"pair_acc": float((margin > 0).mean()) if len(margin) else float("nan"),
            "pair_acc_sig": float((margin[sig] > 0).mean()) if sig.any() else float("nan"),
            "n_pairs": int(len(margin)), "n_pairs_sig": int(sig.sum())}


def longer_wins(pairs: pd.DataFrame) -> dict[str, float]:
    """Score = length in characters; equal lengths count as wrong, like any tie."""
    margin = pairs["chosen_text"].str.len().to_numpy() - pairs["rejected_text"].str.len().to_numpy()
    return _acc(margin.astype(float), pairs["p_value"].to_numpy())


def tfidf_logreg(train: pd.DataFrame, test: pd.DataFrame, C: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Fit w on tfidf(chosen) - tfidf(rejected) (both orders, so no intercept is needed) and score
    the test pairs by w . (tfidf(chosen) - tfidf(rejected))."""
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True)
    vec.fit(pd.concat([train["chosen_text"], train["rejected_text"]]))
    diff = vec.transform(train["chosen_text"]) - vec.transform(train["rejected_text"])
    X = sparse.vstack([diff, -diff])
    y = np.r_[np.ones(diff.shape[0]), np.zeros(diff.shape[0])]
    clf = LogisticRegression(C=C, fit_intercept=False, max_iter=2000, random_state=seed).fit(X, y)
    test_diff = vec.transform(test["chosen_text"]) - vec.transform(test["rejected_text"])
    return _acc(test_diff @ clf.coef_.ravel(), test["p_value"].to_numpy())
