"""Best-of-N generation: backends, constraints, dedupe, scoring, selection, metrics, diagnostics."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pushgen.generation.backends import HFBackend, Sampling, left_pad, load_generator
from pushgen.generation.constraints import Constraints, assign_fates, clean_candidate
from pushgen.generation.diagnostics import best_of_n_curve, expected_best_of_n
from pushgen.generation.metrics import bleu, distinct_n, selection_metrics, self_bleu, words
from pushgen.generation.scoring import score_texts
from pushgen.generation.select import select_best, top_k_per_category
from tests.conftest import STORIES

needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason="../shared/models/stories260K is not there")


@pytest.fixture(scope="module")
def stories():
    return load_generator(STORIES)


@pytest.fixture(scope="module")
def tiny_reward():
    from pushgen.models.reward import RewardModel
    from pushgen.models.tiny import build_tiny_backbone
    torch.manual_seed(0)
    return RewardModel(build_tiny_backbone(seed=3)).eval()


# ------------------------------------------------------------------ backends
def test_left_pad_puts_every_prompt_at_the_end():
    ids, mask = left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="empty"):
        left_pad([[1], []], pad_id=0)


@needs_stories
def test_batched_greedy_equals_one_prompt_at_a_time(stories):
    model, tok = stories
    prompts = [tok(t)["input_ids"] for t in ("Once upon a time", "The dog", "Lily went to the park and saw a big")]
    greedy = Sampling(do_sample=False, max_new_tokens=10)
    batched = HFBackend(model, tok, greedy, batch_size=8).generate(prompts, n=1, seed=0)
    single = HFBackend(model, tok, greedy, batch_size=1).generate(prompts, n=1, seed=0)
    assert batched == single  # left padding and positions do not change the continuation
    assert all(len(out) == 1 and out[0] for out in batched)


@needs_stories
def test_sampling_gives_n_reproducible_candidates(stories):
    model, tok = stories
    prompts = [tok("The cat")["input_ids"], tok("One day, Tom")["input_ids"]]
    backend = HFBackend(model, tok, Sampling(max_new_tokens=8), batch_size=16)
    first = backend.generate(prompts, n=4, seed=7)
    assert [len(o) for o in first] == [4, 4]
    assert first == backend.generate(prompts, n=4, seed=7)
    assert len(set(first[0])) > 1  # sampling, not four copies of one text
    with pytest.raises(ValueError, match="greedy"):
        HFBackend(model, tok, Sampling(do_sample=False), batch_size=4).generate(prompts, n=2, seed=0)


@needs_stories
def test_guided_generation_follows_u_plus_g_times_c_minus_u(stories):
    model, tok = stories
    prompts = [tok("Lily was sad. The dog")["input_ids"], tok("Tom was happy and the sun")["input_ids"]]
    plain = [tok("The dog")["input_ids"], tok("the sun")["input_ids"]]
    g = 3.0
    guided = HFBackend(model, tok, Sampling(do_sample=False, max_new_tokens=1, guidance_scale=g), batch_size=8)
    got = guided.generate(prompts, n=1, seed=0, unconditional=plain)
    with torch.no_grad():
        for p, u, out in zip(prompts, plain, got):
            c = torch.log_softmax(model(torch.tensor([p])).logits[0, -1], -1)
            un = torch.log_softmax(model(torch.tensor([u])).logits[0, -1], -1)
            assert out[0] == tok.decode([int(torch.argmax(un + g * (c - un)))], skip_special_tokens=True)
    # Sampling n per prompt: the guidance rows follow generate's expansion to prompts x n.
    sampled = HFBackend(model, tok, Sampling(max_new_tokens=6, guidance_scale=g), batch_size=16)
    outs = sampled.generate(prompts, n=3, seed=1, unconditional=plain)
    assert [len(o) for o in outs] == [3, 3] and outs == sampled.generate(prompts, n=3, seed=1, unconditional=plain)
    with pytest.raises(ValueError, match="unconditional prompt per prompt"):
        sampled.generate(prompts, n=1, seed=0)


def test_sampling_config_errors_name_the_key():
    with pytest.raises(ValueError, match="unknown keys \\['temp'\\]"):
        Sampling.from_cfg({"temp": 0.5})
    with pytest.raises(ValueError, match="max_new_tokens"):
        Sampling.from_cfg({"max_new_tokens": 0})


# ------------------------------------------------------------------ constraints and dedupe
def test_clean_candidate_takes_first_line_without_quotes():
    assert clean_candidate('\n  "Dogs &amp; cats agree"  \nSecond paragraph') == "Dogs & cats agree"
    assert clean_candidate("   \n") == ""
    assert clean_candidate("Headline: 'Why cats purr'") == "Why cats purr"


def test_constraints_remove_what_they_should():
    c = Constraints(min_chars=5, max_chars=20, banned_words=("click here", "free"))
    assert c.rule_fate("") == "empty"
    assert c.rule_fate("Hey") == "too_short"
    assert c.rule_fate("x" * 21) == "too_long"
    assert c.rule_fate("x" * 20) == "kept"
    assert c.rule_fate("Click HERE now") == "banned_word"
    assert c.rule_fate("Get it FREE today") == "banned_word"
    assert c.rule_fate("Freedom for all") == "kept"  # whole words only
    with pytest.raises(ValueError, match="max_chars"):
        Constraints(min_chars=10, max_chars=5)
    with pytest.raises(ValueError, match="unknown keys"):
        Constraints.from_cfg({"max_len": 3})


def test_duplicates_and_human_copies_are_dropped():
    items = ["a", "a", "a", "b", "a", "a"]
    texts = ["Big news today", "big news, TODAY!", "Other story", "Big news today", "The human one", "x" * 50]
    fates, repeats = assign_fates(items, texts, Constraints(max_chars=40), human_keys={"a": {"the human one"}})
    # The repeat within item a is dropped; the same text in item b is not a repeat there.
    assert fates == ["kept", "duplicate", "kept", "kept", "human_copy", "too_long"]
    assert repeats == [False, True, False, False, False, False]


# ------------------------------------------------------------------ scoring and selection
def test_scoring_sorted_by_length_keeps_input_order(tiny_reward):
    texts = ["A much longer headline about the city council and its vote", "Short", "Medium size text here", "Short"]
    got = score_texts(tiny_reward, texts, batch_size=2)
    one_by_one = np.array([float(tiny_reward.score_texts([t])[0]) for t in texts])
    np.testing.assert_allclose(got, one_by_one, rtol=1e-5, atol=1e-5)
    assert got[1] == got[3]
    # With the item as context (decoder: "Item: ... Notification: ..."), as in reward training.
    from pushgen.data.tokenize import DECODER_TEMPLATE
    evidence = ["About the council", "About shoes", "About shoes", "About rain"]
    with_ev = score_texts(tiny_reward, texts, evidence, batch_size=3)
    expect = [float(tiny_reward.score_texts([DECODER_TEMPLATE.format(evidence=e, text=t)])[0]) for t, e in zip(texts, evidence)]
    np.testing.assert_allclose(with_ev, expect, rtol=1e-5, atol=1e-5)
    assert with_ev[1] != with_ev[3]  # same text, other item


def _cands(rows):
    return pd.DataFrame(rows, columns=["item_id", "category", "text", "fate", "score"])


def test_selection_picks_the_argmax_of_kept_candidates():
    cands = _cands([
        ("a", "q", "a0", "kept", 0.1), ("a", "q", "a1", "kept", 0.9), ("a", "n", "a2", "too_long", np.nan),
        ("a", "n", "a3", "kept", 0.5), ("b", "q", "b0", "kept", 2.0), ("b", "n", "b1", "kept", 2.0),
        ("c", "q", "c0", "duplicate", np.nan),
    ])
    best = select_best(cands)
    assert best["item_id"].tolist() == ["a", "b"]          # c has nothing kept
    assert best["text"].tolist() == ["a1", "b0"]           # argmax; the earlier one on a tie
    top = top_k_per_category(cands, k=1)
    assert top[["item_id", "category", "text"]].values.tolist() == [
        ["a", "n", "a3"], ["a", "q", "a1"], ["b", "n", "b1"], ["b", "q", "b0"]]
    top2 = top_k_per_category(cands, k=2)
    assert top2[top2["item_id"] == "a"]["text"].tolist() == ["a3", "a1", "a0"]
    assert top2["rank"].tolist()[:3] == [1, 1, 2]


def test_selection_refuses_unscored_kept_candidates():
    with pytest.raises(ValueError, match="score them"):
        select_best(_cands([("a", "q", "a0", "kept", np.nan)]))


# ------------------------------------------------------------------ metrics
def test_bleu_and_self_bleu_equal_hand_computed_values():
    texts = ["the cat sat", "the cat ran", "a dog ran"]
    # the cat sat | refs: p1 = 2/3, p2 = 1/2 -> sqrt(1/3); the cat ran: p1 = 1, p2 = 1/2 -> sqrt(1/2);
    # a dog ran: p1 = 1/3, p2 = 0 -> smoothed 0.1/2 -> sqrt(1/60). Same lengths: no brevity penalty.
    expected = (math.sqrt(1 / 3) + math.sqrt(1 / 2) + math.sqrt(1 / 60)) / 3
    assert self_bleu(texts, max_n=2) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.4711855, abs=1e-7)
    # Brevity penalty: a 2-word hypothesis against a 4-word reference, all bigrams matching.
    assert bleu(["a", "b"], [["a", "b", "c", "d"]], max_n=2) == pytest.approx(math.exp(1 - 4 / 2))
    assert distinct_n(texts, 1) == pytest.approx(6 / 9)
    assert distinct_n(texts, 2) == pytest.approx(5 / 6)
    assert words("Don't STOP, now!") == ["don't", "stop", "now"]
    assert math.isnan(self_bleu(["only one"]))


def _fixed_run():
    humans = pd.DataFrame({
        "item_id": ["a", "a", "b", "c"],
        "text": ["Human A one", "Human A two", "Human B", "Human C"],
        "ctr": [0.02, 0.03, 0.01, 0.05],
        "is_ctr_best": [False, True, True, True],
        "score": [1.0, 0.5, 2.0, 0.0],
    })
    cands = pd.DataFrame({
        "item_id": ["a", "a", "a", "b", "b", "c"],
        "category": ["question", "question", "question", "question", "question", "question"],
        "text": ["the cat sat", "the cat ran", "the cat sat", "a dog ran", "a dog sat", "x" * 99],
        "fate": ["kept", "kept", "duplicate", "kept", "kept", "too_long"],
        "repeat": [False, False, True, False, False, False],
        "score": [1.5, 0.0, np.nan, 1.0, 1.5, np.nan],
    })
    return cands, humans


def test_metrics_equal_hand_computed_values_on_a_fixed_table():
    cands, humans = _fixed_run()
    sel = select_best(cands)
    sel["label"] = ["question", "news"]
    m = selection_metrics(cands, humans, sel, max_n=2)
    assert sel["text"].tolist() == ["the cat sat", "a dog sat"]
    # a: 1.5 >= best human 1.0; b: 1.5 < 2.0; c: nothing kept, the human text stays.
    assert m["replacement_rate"] == pytest.approx(1 / 3)
    assert m["lift_over_human"] == pytest.approx(((1.5 - 0.5) + (1.5 - 2.0)) / 2)   # vs the CTR winner
    assert m["lift_over_best_human"] == pytest.approx(((1.5 - 1.0) + (1.5 - 2.0)) / 2)
    assert m["lift_over_random"] == pytest.approx(((1.5 - 0.75) + (1.5 - 1.25)) / 2)
    assert m["duplicate_rate"] == pytest.approx(1 / 6)
    assert m["kept_rate"] == pytest.approx(4 / 6)
    assert m["fates"]["too_long"] == 1 and m["fates"]["duplicate"] == 1
    assert m["adherence_selected"]["overall"] == pytest.approx(0.5)
    within, across = m["diversity_within_item"], m["diversity_across_items"]
    assert within["distinct_1"] == pytest.approx(4 / 6) and within["distinct_2"] == pytest.approx(3 / 4)
    assert within["self_bleu"] == pytest.approx(math.sqrt(1 / 3))
    assert across["distinct_1"] == pytest.approx(5 / 6) and across["distinct_2"] == pytest.approx(1.0)
    assert across["self_bleu"] == pytest.approx(math.sqrt(1 / 60))
    assert m["length"]["selected"]["chars_mean"] == pytest.approx(10.0)
    # chars (11, 11, 9, 9) vs scores (1.5, 0, 1, 1.5): r = -1 / (2 * sqrt(1.5))
    assert m["score_length_corr"]["pearson"] == pytest.approx(-1 / (2 * math.sqrt(1.5)))


# ------------------------------------------------------------------ reward-hacking diagnostics
def test_exact_best_of_n_equals_the_mean_over_all_subsets():
    rng = np.random.default_rng(0)
    proxy = np.round(rng.normal(size=6), 1)
    proxy[4] = proxy[1]  # a tie: the earlier candidate is the pick
    gold = rng.normal(size=6)
    for n in range(1, 7):
        picks = []
        for subset in itertools.combinations(range(6), n):
            best = max(subset, key=lambda i: (proxy[i], -i))
            picks.append((proxy[best], gold[best]))
        got = expected_best_of_n(proxy, {"gold": gold}, n)
        assert got["proxy"] == pytest.approx(np.mean([p for p, _ in picks]))
        assert got["gold"] == pytest.approx(np.mean([g for _, g in picks]))


def test_best_of_n_curve_rises_for_the_proxy_and_shows_the_gap():
    cands = pd.DataFrame({"item_id": ["a"] * 4, "category": ["q"] * 4, "text": list("wxyz"), "fate": ["kept"] * 4,
                          "score": [0.0, 1.0, 2.0, 3.0], "gold_score": [0.0, 1.0, 1.0, 0.0]})
    humans = pd.DataFrame({"item_id": ["a"], "text": ["h"], "score": [1.5], "gold_score": [0.5]})
    curve = best_of_n_curve(cands, humans, ns=[1, 2, 4])
    assert curve["proxy"].tolist() == pytest.approx([1.5, (1 + 2 * 2 + 3 * 3) / 6, 3.0])
    assert curve["gold"].tolist() == pytest.approx([0.5, (1 + 2 * 1 + 3 * 0) / 6, 0.0])
    assert curve["beats_human"].tolist() == pytest.approx([0.5, 5 / 6, 1.0])
    assert curve["gap_sd"].iloc[-1] > curve["gap_sd"].iloc[1] > 0


# ------------------------------------------------------------------ end to end
@needs_stories
def test_tiny_generate_and_select_run_end_to_end(tmp_path, tiny_reward):
    """generate.py's task on a small A/B file: stories260K generates, a tiny reward model selects,
    a second tiny model is the gold judge; every output file is written and consistent."""
    import json

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from pushgen.models.reward import RewardModel
    from pushgen.models.tiny import build_tiny_backbone
    from pushgen.tasks.entry import run_task
    from tests.conftest import COLUMNS, REPO, ab_table

    data = tmp_path / "ab.parquet"
    ab_table(n_tests=10).to_parquet(data)
    proxy_dir = tiny_reward.save_pretrained(tmp_path / "proxy")
    torch.manual_seed(1)
    gold_dir = RewardModel(build_tiny_backbone(seed=5)).save_pretrained(tmp_path / "gold")
    out = tmp_path / "run"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="generate", overrides=[
            f"generator.path={STORIES}", f"reward_model={proxy_dir}", f"gold_reward_model={gold_dir}",
            "generation.categories=[question,number_list,plain_news]", "generation.n_per_category=3",
            "generation.sampling.max_new_tokens=12", "generation.constraints.min_chars=3", "held_out.limit=3",
            "selection.top_k=2", "logger=csv", "threads=1", "data.split.val=0.2", "data.split.test=0.4"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.data.path = str(data)
        cfg.data.columns = OmegaConf.create(COLUMNS)
        cfg.data.exclude_time = None
        cfg.data.srm.enabled = False
    metrics = run_task(cfg, "generate")

    cands = pd.read_csv(out / "candidates.csv")
    sel = pd.read_csv(out / "selections.csv")
    assert len(cands) == 3 * 3 * 3 and set(cands["category"]) == {"question", "number_list", "plain_news"}
    assert set(cands["fate"]) <= {"kept", "duplicate", "too_short", "too_long", "banned_word", "empty", "human_copy"}
    kept = cands[cands["fate"] == "kept"]
    assert kept["score"].notna().all() and cands.loc[cands["fate"] != "kept", "score"].isna().all()
    # The selection is each item's best kept candidate, and replacement is judged against its humans.
    best = kept.loc[kept.groupby("item_id")["score"].idxmax()].sort_values("item_id")
    assert sel["text"].tolist() == best["text"].tolist()
    humans = pd.read_csv(out / "humans.csv")
    expect = np.mean([(sel.set_index("item_id")["score"].get(i, -np.inf) >= h["score"].max())
                      for i, h in humans.groupby("item_id")])
    assert metrics["selection"]["replacement_rate"] == pytest.approx(expect)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["selection"]["n_candidates"] == 27 and "selection_gold" in saved
    assert saved["best_of_n"]["n"][0] == 1 and "gap_sd" in saved["best_of_n"]
    for name in ("best_of_n", "scores", "score_vs_length", "adherence"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "replacement rate" in report and "Best-of-N" in report
    # A finished run folder is never written into again.
    with pytest.raises(FileExistsError):
        run_task(cfg, "generate")
    # The gold judge must not be the model that selected; a wrong reward folder is named, with a hint.
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run2")
        cfg.gold_reward_model = str(proxy_dir)
    with pytest.raises(ValueError, match="gold_reward_model is the same folder as reward_model"):
        run_task(cfg, "generate")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run3")
        cfg.gold_reward_model = None
        cfg.reward_model = str(tmp_path)          # the folder above proxy/: not a reward model
    (tmp_path / "reward_model").symlink_to(proxy_dir)
    with pytest.raises(FileNotFoundError, match=f"did you mean {tmp_path / 'reward_model'}"):
        run_task(cfg, "generate")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run4")
        cfg.reward_model = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="reward model folder .*nowhere does not exist"):
        run_task(cfg, "generate")


def test_an_sft_export_is_prompted_as_in_training_and_merged(tmp_path):
    """generator.path at an SFT export: its own prompt settings (only prompt.category from the
    config), the LoRA adapter merged, and the same greedy outputs as the unmerged adapter."""
    from omegaconf import OmegaConf

    from pushgen.categories.taxonomy import load_taxonomy
    from pushgen.modules.sft_module import SFTModule
    from pushgen.tasks.generate import _generator
    from tests.conftest import REPO

    taxonomy_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "taxonomy" / "default.yaml"))
    tiny = {"source": "tiny", "kind": "decoder", "tiny": {"arch": "llama", "hidden_size": 32, "num_layers": 2,
                                                         "num_heads": 4, "vocab_size": 256, "seed": 0}}
    module = SFTModule(backbone=tiny, prompt={"max_evidence_tokens": 16},
                       sft={"lora": {"enabled": True, "r": 4, "alpha": 8}, "optim": {"lr": 1e-3}}, taxonomy=taxonomy_cfg)
    with torch.no_grad():  # a non-trivial adapter (lora_B starts at zero)
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    module.export(tmp_path / "gen")
    cfg = OmegaConf.create({"generator": {"path": str(tmp_path / "gen")}, "prompt": {"category": "label"},
                            "generation": {"backend": {"name": "hf"}}})
    taxonomy = load_taxonomy(taxonomy_cfg)
    model, tok, builder, _ = _generator(cfg, taxonomy, tmp_path)
    assert not hasattr(model, "peft_config") and builder.cfg["max_evidence_tokens"] == 16
    prompts = [builder.prompt_ids("Your package has shipped and arrives soon", c) for c in ("question", "plain_news")]
    greedy = Sampling(do_sample=False, max_new_tokens=6)
    merged = HFBackend(model, tok, greedy, stop_ids=builder.stop_ids).generate(prompts, n=1, seed=0)
    adapter = HFBackend(module.model, tok, greedy, stop_ids=builder.stop_ids).generate(prompts, n=1, seed=0)
    assert merged == adapter
    cfg.prompt.category = "none"  # the ablation still works on an export
    assert _generator(cfg, taxonomy, tmp_path)[2].use_category is False


def test_a_generator_path_that_does_not_exist_is_named():
    from omegaconf import OmegaConf

    from pushgen.tasks.generate import _generator
    cfg = OmegaConf.create({"generator": {"path": "/nonexistent/gen", "dtype": "float32", "trust_remote_code": False},
                            "generation": {"backend": {"name": "hf"}}, "prompt": {"category": "label"}})
    with pytest.raises(FileNotFoundError, match="generator.path: /nonexistent/gen does not exist"):
        _generator(cfg, None, Path("/tmp"))


def test_an_sft_run_folder_as_generator_path_points_to_its_generator(tmp_path):
    from omegaconf import OmegaConf

    from pushgen.tasks.generate import _generator
    (tmp_path / "generator").mkdir()
    (tmp_path / "generator" / "pushgen_generator.json").write_text("{}")
    cfg = OmegaConf.create({"generator": {"path": str(tmp_path), "dtype": "float32", "trust_remote_code": False},
                            "generation": {"backend": {"name": "hf"}}, "prompt": {"category": "label"}})
    with pytest.raises(FileNotFoundError, match="is an SFT run folder; give its generator/ subfolder"):
        _generator(cfg, None, Path("/tmp"))


def test_an_unloadable_backbone_is_a_user_error(monkeypatch):
    from pushgen.models.factory import load_backbone
    from pushgen.tasks.entry import USER_ERRORS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(USER_ERRORS, match="could not load backbone.name_or_path='does-not/exist' .the hub is offline"):
        load_backbone({"source": "hf", "name_or_path": "does-not/exist", "kind": "auto"})


def test_guidance_is_refused_where_it_cannot_work():
    from pushgen.generation.backends import check_guidance

    check_guidance(Sampling(guidance_scale=1.0), "vllm", use_category=False)      # off: nothing to check
    check_guidance(Sampling(guidance_scale=2.0), "hf", use_category=True)
    with pytest.raises(ValueError, match="prompt=no_category has none"):
        check_guidance(Sampling(guidance_scale=2.0), "hf", use_category=False)
    with pytest.raises(ValueError, match="not supported by the vllm backend"):
        check_guidance(Sampling(guidance_scale=2.0), "vllm", use_category=True)
