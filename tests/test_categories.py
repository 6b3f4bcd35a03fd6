"""Style categories: taxonomy validation and the rule labeler on fixed headlines."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, UPWORTHY
from omegaconf import OmegaConf

from pushgen.categories import (
    Labeler,
    RuleLabeler,
    Taxonomy,
    TaxonomyError,
    build_labeler,
    load_taxonomy,
)

DEFAULT = REPO / "conf" / "taxonomy" / "default.yaml"


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy(OmegaConf.load(DEFAULT))


@pytest.fixture(scope="module")
def rules(taxonomy) -> RuleLabeler:
    return build_labeler(OmegaConf.create({"kind": "rules"}), taxonomy)


def test_default_taxonomy_has_eight_described_styles(taxonomy):
    assert len(taxonomy) == 8 and len(list(taxonomy)) == 8
    assert set(taxonomy.names) == {"question", "number_list", "curiosity_gap", "emotional", "plain_news",
                                   "second_person", "quote", "call_to_action"}
    assert taxonomy.fallback == "plain_news"
    assert all(c.description.strip() for c in taxonomy)
    assert taxonomy.get("quote").name == "quote"
    with pytest.raises(KeyError, match="allowed"):
        taxonomy.get("clickbait")


# One headline per category, written here; each fires exactly one category's rules or wins by priority.
FIXED = {
    "question": "Is the city ready for the next flood?",
    "number_list": "9 charts that explain the housing market",
    "curiosity_gap": "She opened the letter. Then everything changed",
    "emotional": "A heartbreaking goodbye at the airport",
    "plain_news": "City council approves the new budget",
    "second_person": "Your phone knows where you slept last night",
    "quote": 'Mayor: "We will rebuild every single bridge"',
    "call_to_action": "Meet the nurse who runs the night shift alone",
}


@pytest.mark.parametrize("expected,text", sorted(FIXED.items()))
def test_rule_labeler_gives_each_fixed_headline_its_category(rules, expected, text):
    assert rules.label([text]) == [expected]


@pytest.mark.parametrize("text,expected", [
    ("Meet the residents of the so-called 'Tallest Slum In Town'", "call_to_action"),   # a name in quotes
    ('His friend said, "let us do it."', "quote"),                                      # speech after a verb
    ("'We will not move' and other lessons from an old sailor", "quote"),               # opens the text
    ("Her tears? Probably unexpected", "emotional"),                                     # a fragment, not a question
    ("Why?", "question"),
    ("WHAT?!? The council voted again", "emotional"),                                  # surprise, not a question
    ("What if cities had no cars", "question"),
    ("Here are 16 of them", "number_list"),
])
def test_rule_labeler_reads_quotes_and_questions_by_their_use(rules, text, expected):
    assert rules.label([text]) == [expected], rules.explain(text)


def test_rule_labeler_breaks_ties_by_the_priority_order(rules, taxonomy):
    text = "Why do 7 reasons you love your job make you cry?"      # question, number_list, second_person, emotional
    fired = set(rules.explain(text))
    assert {"question", "number_list", "second_person", "emotional"} <= fired
    assert taxonomy.priority.index("number_list") < taxonomy.priority.index("question")
    assert rules.label([text]) == ["number_list"]
    scores = rules.scores([text, FIXED["plain_news"]])
    assert scores.shape == (2, 8)
    assert scores[0, taxonomy.index("second_person")] == 3            # "you", "your", "you"
    assert scores[1].tolist() == [1.0 if n == "plain_news" else 0.0 for n in taxonomy.names]


def test_rule_labeler_reads_curly_quotes_html_and_falls_back(rules):
    assert rules.label(["<b>\u201cWe will not move,\u201d they told the court</b>"]) == ["quote"]
    assert rules.label(["Local library extends weekend opening hours", ""]) == ["plain_news", "plain_news"]
    with pytest.raises(TypeError, match="sequence of texts"):
        rules.label("one string")


def _tax(**over):
    cfg = {"fallback": "plain", "categories": [{"name": "plain", "description": "no hook"},
                                               {"name": "ask", "description": "a question", "patterns": [r"\?"]}]}
    cfg.update(over)
    return cfg


@pytest.mark.parametrize("cfg,message", [
    (_tax(fallback="other"), "taxonomy.fallback: unknown category 'other'"),
    (_tax(categories=[{"name": "plain", "description": "a"}, {"name": "plain", "description": "b"}]),
     "duplicate category name 'plain'"),
    (_tax(categories=[{"name": "plain", "description": " "}]), r"categories\[0\] \('plain'\): description is empty"),
    (_tax(categories=[{"name": "plain", "description": "a", "pattern": ["x"]}]), r"unknown key\(s\) \['pattern'\]"),
    (_tax(categories=[{"name": "plain", "description": "a", "patterns": ["(unclosed"]}]),
     r"patterns\[0\] \('plain'\): invalid regular expression"),
    (_tax(priority=["ask"]), r"priority must list every category; missing \['plain'\]"),
    (_tax(priority=["ask", "plain", "nope"]), r"taxonomy.priority: unknown category \['nope'\]"),
    (_tax(categories=[]), "non-empty list"),
    ({"categories": [{"name": "plain", "description": "a"}]}, "taxonomy.fallback is missing"),
])
def test_taxonomy_validation_names_the_bad_key(cfg, message):
    with pytest.raises(TaxonomyError, match=message):
        load_taxonomy(cfg)


def test_a_user_taxonomy_file_works_without_code(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("fallback: plain\npriority: [ask, plain]\ncategories:\n"
                    "  - {name: plain, description: no hook}\n"
                    "  - {name: ask, description: a question, patterns: ['\\?'], words: [how come]}\n")
    labeler = build_labeler({"kind": "rules"}, load_taxonomy(path))
    assert labeler.label(["How come the sky is blue", "Rain today", "Why?"]) == ["ask", "plain", "ask"]


def test_unknown_labeler_kind_is_a_clear_error(taxonomy):
    with pytest.raises(ValueError, match="labeler.kind must be one of"):
        build_labeler({"kind": "oracle"}, taxonomy)


def test_every_taxonomy_and_labeler_option_composes():
    """Each conf/taxonomy and conf/labeler file composes into a config and builds (files added later too)."""
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for tax_file in sorted((REPO / "conf" / "taxonomy").glob("*.yaml")):
            cfg = compose(config_name="categories", overrides=[f"taxonomy={tax_file.stem}"])
            assert len(load_taxonomy(cfg.taxonomy)) >= 2
        for lab_file in sorted((REPO / "conf" / "labeler").glob("*.yaml")):
            cfg = compose(config_name="categories", overrides=[f"labeler={lab_file.stem}"])
            assert cfg.labeler.kind == lab_file.stem


# -- learned labeler ------------------------------------------------------------------------------
SUBJECTS = ["the mayor", "a nurse", "this teacher", "the senator", "a tiny startup", "the city council",
            "a retired farmer", "the school board", "a young chef", "the local team", "an old sailor", "the governor"]
FRAMES = {
    "question": "Why did {s} change the plan?",
    "number_list": "7 things {s} learned about money",
    "curiosity_gap": "{s} opened the letter. Then everything changed",
    "emotional": "A heartbreaking goodbye from {s}",
    "plain_news": "{s} approves a new budget for roads",
    "second_person": "What {s} did will change your week",
    "quote": '{s}: "we will rebuild every bridge"',
    "call_to_action": "Meet {s} who runs the night shift",
}


def _frame_texts(subjects):
    return [frame.format(s=s) for frame in FRAMES.values() for s in subjects]


def test_learned_labeler_is_deterministic_and_agrees_with_the_rules(taxonomy, rules, tmp_path):
    from pushgen.categories.learned import LearnedLabeler, fit_learned
    train, held_out = _frame_texts(SUBJECTS[:8]), _frame_texts(SUBJECTS[8:])
    cfg = {"features": {"ngram_range": [1, 2], "min_df": 1}, "C": 10.0}
    a = fit_learned(train, rules.label(train), taxonomy, cfg)
    b = fit_learned(train, rules.label(train), taxonomy, cfg)
    assert np.array_equal(a.scores(held_out), b.scores(held_out))
    # unseen subjects, the same styles: the classifier must have learned the style, not the names
    agree = np.mean(np.array(a.label(held_out)) == np.array(rules.label(held_out)))
    assert agree >= 0.9, agree
    probs = a.scores(held_out)
    assert probs.shape == (len(held_out), 8) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    # saved as JSON + NPZ and reloaded with the same scores
    a.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "weights.npz"]
    again = LearnedLabeler.load(tmp_path / "m", taxonomy)
    assert np.array_equal(again.scores(held_out), probs)


def test_learned_labeler_trains_once_from_config_then_loads_from_the_cache(taxonomy, rules, tmp_path, monkeypatch):
    from pushgen.categories import learned
    lines = tmp_path / "headlines.txt"
    lines.write_text("\n".join(_frame_texts(SUBJECTS)) + "\n\n")
    cfg = {"kind": "learned", "sources": [{"kind": "lines", "path": str(lines)}], "features": {"min_df": 1},
           "cache_dir": str(tmp_path / "cache"), "exclude_labels": None}
    first = build_labeler(cfg, taxonomy)
    assert first.summary["n_texts"] == len(SUBJECTS) * 8
    calls = []
    monkeypatch.setattr(learned, "train_from_config", lambda *a: calls.append(a))
    second = build_labeler(cfg, taxonomy)
    assert calls == [] and second.label(["Why is the sky blue?"]) == first.label(["Why is the sky blue?"])
    assert isinstance(second, Labeler) and isinstance(build_labeler({"kind": "rules"}, taxonomy), Labeler)
    # a different setting is a different fingerprint: it would train again
    assert learned.fingerprint({**cfg, "C": 1.0}, taxonomy) != learned.fingerprint(cfg, taxonomy)
    with pytest.raises(Exception, match="does not exist"):
        build_labeler({**cfg, "sources": [{"kind": "lines", "path": str(tmp_path / "absent.txt")}]}, taxonomy)


# -- agreement with hand labels -------------------------------------------------------------------
def test_agreement_equals_the_hand_computed_values():
    from pushgen.categories.agreement import agreement
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    out = agreement(gold, pred, ["a", "b", "c", "d"])
    # p_o = 4/6; p_e = (3*2 + 2*2 + 1*2) / 36 = 1/3; kappa = (2/3 - 1/3) / (1 - 1/3) = 0.5
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["kappa"] == pytest.approx(0.5)
    assert out["per_category"]["a"] == {"support": 3, "predicted": 2, "correct": 2, "precision": 1.0,
                                        "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8)}
    assert out["per_category"]["c"]["precision"] == 0.5 and out["per_category"]["c"]["recall"] == 1.0
    assert out["per_category"]["d"]["precision"] is None and out["per_category"]["d"]["recall"] is None
    assert out["confusion"][0] == [2, 1, 0, 0]
    with pytest.raises(ValueError, match=r"labels \['z'\] are not among"):
        agreement(["z"], ["a"], ["a", "b"])


def test_a_hand_label_key_that_no_longer_resolves_is_a_clear_error(tmp_path):
    from pushgen.categories.hand_labels import headline_key, read_hand_labels
    from pushgen.data.errors import DataError
    data = tmp_path / "ab.csv"
    data.write_text("clickability_test_id,headline\nt1,<b>Why now?</b>\nt2,A plain headline\n")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"# a comment\ntest_id,headline_key,label,sample\nt1,{headline_key('Why now?')},question,uniform\n"
                      f"t2,{headline_key('A changed headline')},plain_news,uniform\n")
    with pytest.raises(DataError, match=r"labels.csv, row 1: the key \(test_id=t2"):
        read_hand_labels(labels, data)
    labels.write_text(f"test_id,headline_key,label,sample\nt1,{headline_key('why now')},questions,uniform\n")
    with pytest.raises(DataError, match="label 'questions' is not a category"):
        read_hand_labels(labels, data, ["question", "plain_news"])




@pytest.mark.skipif(not UPWORTHY.exists(), reason=f"the Upworthy data is not at {UPWORTHY}")
def test_agreement_check_runs_on_the_real_hand_labels(tmp_path):
    """The stored keys are exactly the seeded samples drawn again, all resolve, and the check runs."""
    import pandas as pd
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from pushgen.categories.agreement import run_agreement
    from pushgen.categories.hand_labels import UPWORTHY_V1, redraw_samples
    stored = pd.read_csv(UPWORTHY_V1, dtype=str, comment="#")
    drawn = redraw_samples(UPWORTHY)
    assert stored[["test_id", "headline_key", "sample"]].values.tolist() == \
        drawn[["test_id", "headline_key", "sample"]].values.tolist()
    assert (stored["sample"] == "uniform").sum() >= 150
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="categories", overrides=["compare=[rules]", f"data_path={UPWORTHY}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    res = run_agreement(cfg)["rules"]
    assert res["all"]["n"] == len(stored) and res["uniform"]["n"] == (stored["sample"] == "uniform").sum()
    assert 0.0 < res["uniform"]["kappa"] < 1.0
    written = pd.read_csv(tmp_path / "predictions.csv", dtype=str)
    assert "text" not in written.columns and len(written) == len(stored)


def test_config_checks_name_the_bad_key_of_taxonomy_and_labeler():
    from pushgen.categories.labelers import check_labeler_config
    from pushgen.categories.taxonomy import check_taxonomy_config
    errors: list[str] = []
    check_taxonomy_config(OmegaConf.load(DEFAULT), "taxonomy", errors)
    check_labeler_config(OmegaConf.load(REPO / "conf" / "labeler" / "learned.yaml"), "labeler", errors)
    check_labeler_config({"kind": "rules"}, "labeler", errors)
    assert errors == []
    check_taxonomy_config(_tax(fallback="other"), "taxonomy", errors)
    check_labeler_config({"kind": "learned", "Cee": 1.0}, "labeler", errors)
    check_labeler_config({"kind": "magic"}, "labeler", errors)
    assert len(errors) == 3
    assert errors[0].startswith("taxonomy: taxonomy.fallback: unknown category 'other'")
    assert errors[1].startswith("labeler.Cee: not a key of the learned labeler")
    assert errors[2].startswith("labeler.kind: 'magic' is not allowed")
