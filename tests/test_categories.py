"""Style categories: taxonomy validation and the rule labeler on fixed headlines."""

from __future__ import annotations

import pytest
from conftest import REPO
from omegaconf import OmegaConf

from pushgen.categories import RuleLabeler, Taxonomy, TaxonomyError, build_labeler, load_taxonomy

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
