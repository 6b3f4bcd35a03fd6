"""Generator SFT: targets and split, completion-only loss, packing, a real tiny run, LoRA export, caching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import COLUMNS, REPO, STORIES, ab_table, data_cfg
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from pushgen.categories.labelers import build_labeler
from pushgen.categories.prompts import IGNORE_INDEX
from pushgen.categories.taxonomy import load_taxonomy
from pushgen.data.pipeline import prepare
from pushgen.data.sft import SFTCollator, label_rows, pack_rows, sft_rows, tokenize_rows
from pushgen.models.factory import cached_conversion, load_causal_lm
from pushgen.models.sampling import generate_texts
from pushgen.modules.sft_module import SFTModule, completion_loss, load_generator
from pushgen.tasks.entry import run_task
from pushgen.utils.config import register_resolvers
from pushgen.utils.schema import validate_config

register_resolvers()
CONF = str(REPO / "conf")
TAXONOMY = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "taxonomy" / "default.yaml"))
TINY = {"source": "tiny", "kind": "decoder", "tiny": {"arch": "llama", "hidden_size": 32, "num_layers": 2,
                                                     "num_heads": 4, "vocab_size": 256, "seed": 0}}
SFT = {"lora": {"enabled": False}, "optim": {"lr": 3e-3, "warmup_ratio": 0.0}, "sampling": {"max_new_tokens": 8}}


def _module(backbone=TINY, lora=False, prompt=None):
    sft = {**SFT, "lora": {"enabled": lora, "r": 4, "alpha": 8}}
    return SFTModule(backbone=backbone, prompt=prompt or {"max_evidence_tokens": 16}, sft=sft, taxonomy=TAXONOMY)


def _pooled(n_tests=30):
    import tempfile
    path = Path(tempfile.mkdtemp()) / "ab.parquet"
    ab_table(n_tests=n_tests).to_parquet(path)
    return prepare(data_cfg(path), seed=0)


def test_best_arm_is_the_highest_ctr_and_all_arms_weights_average_one():
    pooled = pd.DataFrame({"test_id": ["a", "a", "a", "b", "b"], "split": "train", "evidence": "e",
                           "text": ["a1", "a2", "a3", "b1", "b2"], "ctr": [0.01, 0.03, 0.02, 0.05, 0.05],
                           "impressions": [100, 100, 100, 100, 300]})
    best = sft_rows(pooled, "best_arm")
    assert best["text"].tolist() == ["a2", "b2"]            # b: CTR tie, more impressions wins
    every = sft_rows(pooled, "all_arms")
    assert every.groupby("test_id")["weight"].mean().round(12).eq(1.0).all()
    assert every.set_index("text").loc["a2", "weight"] == pytest.approx(0.03 / 0.02)


def test_generator_split_is_the_reward_models_split():
    prepared = _pooled()
    rows = sft_rows(prepared.pooled, "best_arm")
    reward_test_items = set(prepared.pairs.loc[prepared.pairs["split"] == "test", "test_id"])
    sft_train_items = set(rows.loc[rows["split"] == "train", "test_id"])
    assert reward_test_items and sft_train_items and not reward_test_items & sft_train_items
    # Same data config and seed, prepared again (as sft.py does): the same side for every item.
    again = sft_rows(_pooled().pooled, "best_arm")
    assert rows.set_index("test_id")["split"].equals(again.set_index("test_id")["split"])


def test_completion_loss_counts_only_target_tokens_and_refuses_an_all_masked_batch():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 5, bias=False)
    hidden = torch.randn(1, 4, 4)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 1]])
    loss, wsum, correct, n = completion_loss(hidden, head, labels, (labels != IGNORE_INDEX).float())
    logp = torch.log_softmax(head(hidden[0]), -1)
    expected = -(logp[1, 3] + logp[2, 1]) / 2                # position t predicts label t+1
    assert n == 2 and wsum == 2 and loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="no target token"):
        masked = torch.full_like(labels, IGNORE_INDEX)
        completion_loss(hidden, head, masked, torch.zeros_like(hidden[..., 0]))


def test_packing_gives_the_same_loss_as_padding():
    module = _module(backbone={"source": "hf", "name_or_path": str(STORIES), "kind": "decoder"})
    module.eval()
    prompts = ["A dog rescued a cat.", "Stocks rally.", "A teacher bought lunch for every student in her class."]
    examples = [{**module.builder.example(e, "question", t), "weight": 1.0}
                for e, t in zip(prompts, ["Would you?", "Markets up again", "She did what?"])]
    padded = SFTCollator(0, pack=False)(examples)
    packed = SFTCollator(0, pack=True, pack_tokens=4096)(examples)
    assert packed["input_ids"].shape[0] == 1 and padded["input_ids"].shape[0] == 3
    with torch.no_grad():
        a, b = module(padded), module(packed)
    assert a[3] == b[3] and a[2] == b[2]
    assert a[0].item() == pytest.approx(b[0].item(), abs=1e-5)
    # Without the position reset the examples would attend to each other and the loss would change.
    leaky = {k: v for k, v in packed.items() if k != "position_ids"}
    with torch.no_grad():
        assert abs(module(leaky)[0].item() - a[0].item()) > 1e-3
    assert pack_rows([5, 3, 4, 2], 8) == [[0, 1], [2, 3]]


def test_lora_export_reload_gives_identical_generations(tmp_path):
    module = _module(lora=True)
    with torch.no_grad():  # a non-trivial adapter (lora_B starts at zero)
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    module.export(tmp_path / "gen")
    assert (tmp_path / "gen" / "adapter_model.safetensors").exists()
    ev, cats = ["Your package has shipped", "Flash sale ends tonight"], ["question", "plain_news"]
    before = generate_texts(module.model, module.builder, ev, cats, {"max_new_tokens": 8}, seed=3)
    model, builder = load_generator(tmp_path / "gen")
    after = generate_texts(model, builder, ev, cats, {"max_new_tokens": 8}, seed=3)
    assert before == after and any(before)
    base = load_causal_lm(TINY).model
    assert generate_texts(base, builder, ev, cats, {"max_new_tokens": 8}, seed=3) != before


def test_cached_conversion_converts_once(tmp_path):
    calls = []

    def convert():
        calls.append(1)
        bb = load_causal_lm(TINY)
        return bb.model, bb.tokenizer

    first = cached_conversion(tmp_path / "m", convert)
    second = cached_conversion(tmp_path / "m", convert)
    assert first == second and len(calls) == 1 and list(first.glob("*.safetensors"))
    reloaded = load_causal_lm({"source": "hf", "name_or_path": str(first), "kind": "decoder"}).model
    torch.testing.assert_close(reloaded.state_dict()["lm_head.weight"], load_causal_lm(TINY).model.state_dict()["lm_head.weight"])
    assert not list(tmp_path.glob(".m.tmp-*"))


@pytest.mark.parametrize("over", [["backbone=smollm2"], ["backbone=qwen2.5_0.5b"], ["backbone=qwen2.5_1.5b"],
                                  ["backbone=qwen2.5_7b"], ["backbone=llama3.2_1b"], ["experiment=fig3_backbones"],
                                  ["experiment=sft_smollm2_cpu"], ["experiment=sft_smollm2_controllable"], ["prompt=no_category"],
                                  ["debug=sft_fast"]])
def test_sft_configs_compose(over):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="sft", overrides=over)
    assert cfg.backbone.kind == "decoder" and cfg.sft.packing.max_tokens > 0 and cfg.taxonomy.categories
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/unused"
    validate_config(cfg, "sft")                              # every key and type the schema knows
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        reward = compose(config_name="train")
    assert cfg.data == reward.data and cfg.seed == reward.seed  # the same split as the reward model


def _tiny_sft_cfg(tmp_path, overrides):
    """sft.yaml on a tiny random Llama and a synthetic A/B table, writing into tmp_path/run."""
    data = tmp_path / "ab.parquet"
    ab_table(n_tests=30).to_parquet(data)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="sft", overrides=["backbone=tiny_llama", "logger=csv", "sft.lora.enabled=false",
                                                    "sft.batch_size=4", "trainer.log_every_n_steps=1",
                                                    "sft.min_impressions=0", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.data.path = str(data)
        cfg.data.columns = OmegaConf.create(COLUMNS)
        cfg.data.exclude_time = None
        cfg.data.split = {"val": 0.2, "test": 0.2}
    return cfg


def test_tiny_sft_run_loss_falls_and_writes_samples_and_generator(tmp_path):
    cfg = _tiny_sft_cfg(tmp_path, ["sft.optim.lr=5e-3", "sft.n_samples=3", "sft.sampling.max_new_tokens=6",
                                   "trainer.max_epochs=4", "trainer.val_check_interval=1.0", "seed=0",
                                   "sft.category_balance=1.0", "sft.category_dropout=0.2"])
    metrics = run_task(cfg, "sft")
    out = tmp_path / "run"
    csv = pd.read_csv(next((out / "csv").glob("version_*/metrics.csv")))
    val = csv["val/loss"].dropna().tolist()
    assert len(val) == 4 and val[-1] < val[0] - 0.5           # it learned the headlines' form
    assert metrics["best_val_loss"] == pytest.approx(min(val), rel=1e-5)
    assert json.loads((out / "metrics.json").read_text())["sft"]["examples"]["train"] > 0
    samples = sorted((out / "samples").glob("step*.csv"))
    assert len(samples) == 4 and len(pd.read_csv(samples[-1])) == 3
    assert (out / "samples" / samples[-1].with_suffix(".md").name).read_text().startswith("| step | evidence")
    assert (out / "generator" / "pushgen_generator.json").exists() and (out / "plots" / "loss_curves.png").exists()
    model, builder = load_generator(out / "generator")
    assert builder.use_category and builder.kind == "plain"

    # Controllability of the run's generator: every number follows from the generations it writes.
    from pushgen.evaluation.controllability import measure, relabel
    res = measure(out, n_items=3, split="test", none_samples=2)
    folder = Path(res["out_dir"])
    gen = pd.read_csv(folder / "generations.csv", keep_default_na=False)
    none = pd.read_csv(folder / "generations_no_category.csv", keep_default_na=False)
    table = pd.read_csv(folder / "adherence.csv").set_index("category")
    names = load_taxonomy(TAXONOMY).names
    assert len(gen) == 3 * len(names) and len(none) == 3 * 2
    for c in names:
        part = gen[gen["requested"] == c]
        assert table.loc[c, "adherence"] == pytest.approx((part["labeled"] == c).mean())
        assert table.loc[c, "no_category_share"] == pytest.approx((none["labeled"] == c).mean())
    assert res["overall_adherence"] == pytest.approx((gen["labeled"] == gen["requested"]).mean())
    assert table.loc["overall", "no_category_share"] == pytest.approx(1 / len(names))
    # Cue rates: the requested category's rules fired (the rule labeler's scores), whatever the label.
    labeler = build_labeler({"kind": "rules"}, load_taxonomy(TAXONOMY))
    cues = labeler.scores(gen["output"].astype(str).tolist()) > 0
    for k, c in enumerate(names):
        assert table.loc[c, "cue_rate"] == pytest.approx(cues[(gen["requested"] == c).to_numpy(), k].mean())
        assert table.loc[c, "cue_rate"] >= table.loc[c, "adherence"]     # a label needs its cue
    # Relabelling the saved outputs gives the same table.
    again = pd.DataFrame(relabel(folder)["table"]).set_index("category")
    assert np.allclose(again.to_numpy(float), table.to_numpy(float), equal_nan=True)
    with pytest.raises(FileNotFoundError, match="controllability/<timestamp>"):
        relabel(out)

    # Exporting a chosen checkpoint: the best one gives the run's generator; an altered one its own weights.
    from pushgen.tasks.export_generator import export_checkpoint
    from pushgen.utils.checkpoint import CheckpointMismatch
    best = Path(metrics["best_ckpt"])
    ev, cats = ["Your package has shipped"], ["question"]
    same = export_checkpoint(out, best.name)
    exported = json.loads((same / "metrics.json").read_text())
    assert same == out / "exports" / best.stem and exported["exported_from"] == str(best.resolve())
    assert "best_val_loss" not in exported and exported["sft"] == metrics["sft"]   # only what holds for any step
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    from pushgen.utils.checkpoint import NotACheckpoint
    with pytest.raises(NotACheckpoint, match="not a file torch.save wrote"):
        export_checkpoint(out, tmp_path / "notes.ckpt", tmp_path / "notes")
    m2, b2 = load_generator(same / "generator")
    assert generate_texts(m2, b2, ev, cats, {"max_new_tokens": 6}, seed=1) == \
        generate_texts(model, builder, ev, cats, {"max_new_tokens": 6}, seed=1)
    ckpt = torch.load(best, weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.endswith("o_proj.weight"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] * 3
    torch.save(ckpt, tmp_path / "altered.ckpt")
    altered = export_checkpoint(out, tmp_path / "altered.ckpt", tmp_path / "altered")
    m3, _ = load_generator(altered / "generator")
    assert torch.equal(m3.state_dict()[key[len("model."):]], ckpt["state_dict"][key])
    del ckpt["state_dict"][key]
    torch.save(ckpt, tmp_path / "partial.ckpt")
    with pytest.raises(CheckpointMismatch, match="1 tensor\\(s\\) missing") as err:
        export_checkpoint(out, tmp_path / "partial.ckpt", tmp_path / "partial")
    assert "unexpected" not in str(err.value)                # only what is wrong is named
    with pytest.raises(FileExistsError):
        export_checkpoint(out, best.name)


def test_labels_come_from_the_labeler():
    prepared = _pooled(6)
    rows = label_rows(sft_rows(prepared.pooled), build_labeler({"kind": "rules"}, load_taxonomy(TAXONOMY)))
    assert set(rows["category"]) <= set(load_taxonomy(TAXONOMY).names)
    module = _module()
    examples = tokenize_rows(rows, module.builder)
    assert len(examples) == len(rows)
    assert all(any(t != IGNORE_INDEX for t in e["labels"]) for e in examples)


def test_category_balance_weights_and_loader_draw_every_category_equally():
    from pushgen.data.sft import SFTDataModule, category_sampling_weights

    cats = ["a"] * 6 + ["b"] * 3 + ["c"]
    natural = category_sampling_weights(cats, 0.0)
    assert natural == pytest.approx([0.1] * 10)
    flat = category_sampling_weights(cats, 1.0)
    # Each category gets a third of the mass: a = 6 x 1/18, b = 3 x 1/9, c = 1/3.
    assert flat[:6] == pytest.approx([1 / 18] * 6) and flat[6:9] == pytest.approx([1 / 9] * 3)
    assert flat[9] == pytest.approx(1 / 3)
    half = category_sampling_weights(cats, 0.5)
    assert half[9] / half[0] == pytest.approx(6 ** 0.5)
    with pytest.raises(ValueError, match="category_balance"):
        category_sampling_weights(cats, 1.5)

    examples = [{"input_ids": [1, 2, i + 3], "labels": [IGNORE_INDEX, 2, i + 3], "weight": 1.0, "category": c}
                for i, c in enumerate(cats * 30)]
    dm = SFTDataModule({"train": examples, "val": examples[:2]}, pad_id=0, batch_size=50, eval_batch_size=2,
                       pack=False, pack_tokens=64, seed=0, category_balance=1.0)
    drawn = [examples[int(t) - 3]["category"] for b in dm.train_dataloader() for t in b["input_ids"][:, 2]]
    assert len(drawn) == len(examples)
    share = pd.Series(drawn).value_counts(normalize=True)
    assert share["c"] == pytest.approx(1 / 3, abs=0.06) and share["a"] == pytest.approx(1 / 3, abs=0.06)
    # The same seed draws the same order; the natural mix keeps c at a tenth.
    again = [examples[int(t) - 3]["category"] for b in dm.train_dataloader() for t in b["input_ids"][:, 2]]
    assert again == drawn
    plain = SFTDataModule({"train": examples, "val": examples[:2]}, pad_id=0, batch_size=50, eval_batch_size=2,
                          pack=False, pack_tokens=64, seed=0)
    seen = sorted(int(t) for b in plain.train_dataloader() for t in b["input_ids"][:, 2])
    assert seen == list(range(3, 3 + len(examples)))


def test_adherence_table_against_hand_counts():
    from pushgen.evaluation.controllability import adherence_table, wilson

    gen = pd.DataFrame({"requested": ["a"] * 4 + ["b"] * 2, "labeled": ["a", "a", "b", "a", "b", "a"]})
    t = adherence_table(gen, none_labels=["a", "a", "a", "b"], human_labels=["a", "b", "b", "b"], names=["a", "b"],
                        train_counts={"a": 10, "b": 2}).set_index("category")
    assert t.loc["a", "adherence"] == 0.75 and t.loc["b", "adherence"] == 0.5
    assert t.loc["a", "no_category_share"] == 0.75 and t.loc["b", "no_category_share"] == 0.25
    assert t.loc["a", "human_share"] == 0.25 and t.loc["b", "human_share"] == 0.75
    # Wilson 95% interval of 3/4 (published value: 0.3006 to 0.9544).
    assert (t.loc["a", "adherence_lo"], t.loc["a", "adherence_hi"]) == pytest.approx((0.30064, 0.95441), abs=1e-4)
    # 3/4 vs 3/4: z = 0; 1/2 vs 1/4: pooled 1/3, se 0.40825, z 0.61237 -> one-sided p 0.27014.
    assert t.loc["a", "p_above_no_category"] == pytest.approx(0.5)
    assert t.loc["b", "p_above_no_category"] == pytest.approx(0.27014, abs=1e-4)
    assert t.loc["overall", "adherence"] == pytest.approx(4 / 6) and t.loc["overall", "no_category_share"] == 0.5
    assert t.loc["overall", "train_examples"] == 12 and t.loc["overall", "n"] == 6
    assert all(np.isnan(wilson(0, 0)))

    # Cue rates by hand: rows of gen / none_labels x categories [a, b].
    gen_cues = np.array([[1, 1], [1, 0], [0, 1], [1, 1], [1, 1], [0, 0]], dtype=bool)
    none_cues = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], dtype=bool)
    t = adherence_table(gen, ["a", "a", "a", "b"], ["a"], ["a", "b"], {}, gen_cues, none_cues).set_index("category")
    assert t.loc["a", "cue_rate"] == 0.75 and t.loc["b", "cue_rate"] == 0.5      # rows 0-3 col a; rows 4-5 col b
    assert t.loc["a", "no_category_cue_rate"] == 0.5 and t.loc["b", "no_category_cue_rate"] == 0.5
    assert t.loc["overall", "cue_rate"] == 0.625


def test_guidance_amplifies_the_category_as_u_plus_g_times_c_minus_u():
    module = _module()
    model, builder = module.model.eval(), module.builder
    ev, cats = ["a dog saves a child", "the mayor speaks at last"], ["question", "emotional"]
    greedy = {"do_sample": False, "max_new_tokens": 1, "repetition_penalty": 1.0}
    # g = 1 is plain generation.
    assert generate_texts(model, builder, ev, cats, {**greedy, "guidance_scale": 1.0}) == \
        generate_texts(model, builder, ev, cats, greedy)
    g = 4.0
    changed = 0
    with torch.no_grad():
        for e, c in zip(ev, cats):
            cond = torch.log_softmax(model(torch.tensor([builder.prompt_ids(e, c)])).logits[0, -1], -1)
            unc_ids = builder.unconditional_ids(e)
            assert len(unc_ids) < len(builder.prompt_ids(e, c))          # the style line is gone
            unc = torch.log_softmax(model(torch.tensor([unc_ids])).logits[0, -1], -1)
            want = int(torch.argmax(unc + g * (cond - unc)))
            changed += want != int(torch.argmax(cond))
            got = generate_texts(model, builder, [e], [c], {**greedy, "guidance_scale": g})[0]
            assert got == builder.decode_completion([want])
    assert changed          # guidance picked another token than plain greedy decoding somewhere
    # Batched (left-padded, prompts of different lengths) gives the same first tokens as one at a time.
    batched = generate_texts(model, builder, ev, cats, {**greedy, "max_new_tokens": 4, "guidance_scale": g})
    single = [generate_texts(model, builder, [e], [c], {**greedy, "max_new_tokens": 4, "guidance_scale": g})[0]
              for e, c in zip(ev, cats)]
    assert batched == single


def test_controllability_cli_names_an_unknown_argument_even_without_run_dir(capsys):
    from pushgen.evaluation.controllability import main

    with pytest.raises(SystemExit, match=r"unknown argument\(s\) \['n_item'\]"):
        main(["n_item=4"])
    with pytest.raises(SystemExit, match="run_dir=<sft run folder> is required"):
        main(["n_items=4"])
    # Bad values are named before any data is prepared (the run folder need not even exist).
    for arg, msg in [("n_items=0", "n_items must be >= 1, got 0"), ("n_items=abc", "n_items must be an integer"),
                     ("none_samples=0", "none_samples must be >= 1"), ("guidance_scale=-1", "guidance_scale must be >= 0"),
                     ("split=nope", r"split must be one of \['train', 'val', 'test'\]")]:
        with pytest.raises(SystemExit, match=msg):
            main(["run_dir=/nonexistent", arg])


def test_category_dropout_swaps_in_the_unconditional_prompt_at_its_rate():
    from pushgen.data.sft import CategoryDropout, SFTDataModule

    module = _module()
    rows = label_rows(sft_rows(_pooled(12).pooled), build_labeler({"kind": "rules"}, load_taxonomy(TAXONOMY)))
    examples = tokenize_rows(rows, module.builder, unconditional=True)
    uncond = {tuple(e["unconditional"]["input_ids"]) for e in examples}
    cond = {tuple(e["input_ids"]) for e in examples}
    assert not uncond & cond                                   # every twin differs from its example

    def rows_of(batches):
        out = []
        for b in batches:
            for ids, m in zip(b["input_ids"], b["attention_mask"]):
                out.append(tuple(ids[m.bool()].tolist()))
        return out

    pad = module.tokenizer.pad_token_id
    many = examples * 40
    dm = SFTDataModule({"train": many, "val": examples}, pad_id=pad, batch_size=32, eval_batch_size=8,
                       pack=False, pack_tokens=64, seed=0, category_dropout=0.25)
    seen = rows_of(dm.train_dataloader())
    dropped = sum(r in uncond for r in seen)
    assert len(seen) == len(many) and sum(r in cond for r in seen) + dropped == len(seen)
    assert dropped / len(seen) == pytest.approx(0.25, abs=0.04)
    assert rows_of(SFTDataModule({"train": many, "val": examples}, pad_id=pad, batch_size=32, eval_batch_size=8,
                                 pack=False, pack_tokens=64, seed=0, category_dropout=0.25).train_dataloader()) == seen
    assert all(r in cond for r in rows_of(dm.val_dataloader()))  # validation keeps the conditional loss
    with pytest.raises(ValueError, match="category_dropout"):
        CategoryDropout(SFTCollator(pad), 1.0, seed=0)
    with pytest.raises(ValueError, match="unconditional=True"):
        CategoryDropout(SFTCollator(pad), 0.99, seed=0)(tokenize_rows(rows, module.builder))


def test_contrast_loss_and_target_logprobs_against_hand_values():
    from pushgen.modules.sft_module import contrast_loss, decoder_and_head, target_logprobs

    loss, acc = contrast_loss(torch.tensor([-1.0, -3.0, -2.0, -2.0]), torch.tensor([[0, 1], [2, 3]]), beta=1.0)
    assert float(loss) == pytest.approx((np.log1p(np.exp(-2.0)) + np.log(2.0)) / 2) and float(acc) == 0.5
    loss, _ = contrast_loss(torch.tensor([-1.0, -3.0]), torch.tensor([[0, 1]]), beta=0.5)
    assert float(loss) == pytest.approx(np.log1p(np.exp(-1.0)))

    module = _module()
    examples = [{"input_ids": [5, 6, 7, 8, 9], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9], "weight": 1.0},
                {"input_ids": [5, 6, 10], "labels": [IGNORE_INDEX, IGNORE_INDEX, 10], "weight": 1.0}]
    batch = SFTCollator(pad_id=0)(examples)
    with torch.no_grad():
        got = target_logprobs(module._hidden(batch), decoder_and_head(module.model)[1], batch["labels"])
        logp = torch.log_softmax(module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    want = [float(logp[0, 1, 7] + logp[0, 2, 8] + logp[0, 3, 9]), float(logp[1, 1, 10])]
    assert got.tolist() == pytest.approx(want, abs=1e-4)


def test_category_contrast_batches_twins_and_its_loss_falls():
    from pushgen.data.sft import CategoryContrast, CategoryDropout
    from pushgen.modules.sft_module import contrast_loss, decoder_and_head, target_logprobs

    module = _module()
    rows = label_rows(sft_rows(_pooled(12).pooled), build_labeler({"kind": "rules"}, load_taxonomy(TAXONOMY)))
    names = module.taxonomy.names
    examples = tokenize_rows(rows, module.builder, contrast=names)[:6]
    for e in examples:
        assert sorted(e["contrast"]) == sorted(set(names) - {e["category"]})
        target = [t for t in e["labels"] if t != IGNORE_INDEX]
        for twin in e["contrast"].values():        # same target, another prompt
            assert [t for t in twin["labels"] if t != IGNORE_INDEX] == target and twin["input_ids"] != e["input_ids"]
    collate = CategoryContrast(SFTCollator(module.tokenizer.pad_token_id), seed=0)
    batch = collate(examples)
    assert batch["input_ids"].shape[0] == 12 and batch["contrast_pairs"].tolist() == [[i, 6 + i] for i in range(6)]
    assert float(batch["token_weight"][6:].sum()) == 0.0     # twins never enter the likelihood loss
    assert torch.equal(CategoryContrast(SFTCollator(module.tokenizer.pad_token_id), seed=0)(examples)["input_ids"],
                       batch["input_ids"])                  # seeded
    # A swapped (unconditional) example has no category to contrast: it gets no twin.
    with_uncond = tokenize_rows(rows, module.builder, unconditional=True, contrast=names)[:6]
    all_dropped = CategoryDropout(CategoryContrast(SFTCollator(module.tokenizer.pad_token_id), seed=0), 0.99, seed=3)
    assert all_dropped(with_uncond)["contrast_pairs"].shape == (0, 2)
    with pytest.raises(ValueError, match="packing"):
        CategoryContrast(SFTCollator(0, pack=True), seed=0)

    torch.manual_seed(0)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        head = decoder_and_head(module.model)[1]
        loss, _ = contrast_loss(target_logprobs(module._hidden(batch), head, batch["labels"]), batch["contrast_pairs"], 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.3                      # the targets became likelier under their own style


def test_sft_run_with_category_contrast_logs_nll_and_objective(tmp_path):
    cfg = _tiny_sft_cfg(tmp_path, ["sft.n_samples=0", "trainer.max_epochs=1", "sft.category_contrast.weight=0.5",
                                   "sft.category_dropout=0.2"])
    run_task(cfg, "sft")
    csv = pd.read_csv(next((tmp_path / "run" / "csv").glob("version_*/metrics.csv")))
    steps = csv.dropna(subset=["train/objective"])
    assert len(steps) > 3
    # train/loss is the likelihood alone (comparable with val/loss); the objective adds 0.5 x the contrast.
    want = steps["train/loss"] + 0.5 * steps["train/contrast_loss"]
    assert np.allclose(steps["train/objective"], want, atol=1e-4)
    assert steps["train/contrast_acc"].between(0, 1).all()


@pytest.mark.parametrize("overrides, match", [
    (["sft.category_contrast.weight=1", "prompt=no_category"], "prompt.category=none"),
    (["sft.category_dropout=0.3", "prompt=no_category"], "drops the style line"),
    (["sft.category_contrast.weight=1", "sft.category_contrast.beta=0"], "beta must be > 0"),
    (["sft.category_contrast.weight=1", "sft.packing.enabled=true"], "packing.enabled=false"),
])
def test_category_options_that_cannot_work_fail_before_loading_anything(tmp_path, overrides, match):
    cfg = _tiny_sft_cfg(tmp_path, overrides)
    with open_dict(cfg):
        cfg.data.path = str(tmp_path / "no_such_file.parquet")  # reached only if the check came too late
    with pytest.raises(ValueError, match=match):
        run_task(cfg, "sft")
