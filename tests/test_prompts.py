"""Prompt builder: exact tokens for both template kinds, completion-only labels, truncation counts."""

from __future__ import annotations

import pytest
from conftest import MODELS_DIR, REPO, STORIES
from transformers import AutoTokenizer

from pushgen.categories.prompts import IGNORE_INDEX, EmptyTargetError, PromptBuilder
from pushgen.models.tiny import build_tiny_tokenizer

QWEN_TOK = MODELS_DIR / "qwen2.5-tokenizer"
IM_START, IM_END, NEWLINE, SYSTEM, ASSISTANT = 151644, 151645, 198, 8948, 77091


@pytest.fixture(scope="module")
def taxonomy():
    from pushgen.categories.taxonomy import load_taxonomy
    return load_taxonomy(REPO / "conf" / "taxonomy" / "default.yaml")


@pytest.fixture(scope="module")
def qwen():
    return AutoTokenizer.from_pretrained(QWEN_TOK)


@pytest.fixture(scope="module")
def stories():
    return AutoTokenizer.from_pretrained(STORIES)


def test_chatml_prompt_has_the_exact_special_tokens(qwen, taxonomy):
    b = PromptBuilder(qwen, {"template": "auto"}, taxonomy)
    assert b.kind == "chat" and b.stop_token == "<|im_end|>" and b.stop_id == IM_END
    ids = b.prompt_ids("A dog rescued a cat.", "question")
    # <|im_start|>system\n ... <|im_end|>\n<|im_start|>user\n ... <|im_end|>\n<|im_start|>assistant\n
    assert ids[:3] == [IM_START, SYSTEM, NEWLINE]
    assert ids[-3:] == [IM_START, ASSISTANT, NEWLINE]
    assert ids.count(IM_START) == 3 and ids.count(IM_END) == 2
    text = qwen.decode(ids)
    assert f"Style: question ({taxonomy.get('question').description})" in text and "Story: A dog rescued a cat." in text

    ex = b.example("A dog rescued a cat.", "question", "Would you save a cat?")
    target = qwen("Would you save a cat?", add_special_tokens=False)["input_ids"]
    assert ex["input_ids"] == ids + target + [IM_END]
    assert ex["labels"] == [IGNORE_INDEX] * len(ids) + target + [IM_END]


def test_plain_prompt_has_one_bos_and_target_ends_with_one_eos(stories, taxonomy):
    b = PromptBuilder(stories, {"template": "auto"}, taxonomy)
    assert b.kind == "plain" and b.stop_id == stories.eos_token_id == 2
    ids = b.prompt_ids("A dog rescued a cat.", "question")
    assert ids[0] == stories.bos_token_id == 1 and ids.count(1) == 1 and 2 not in ids
    assert stories.decode(ids[1:]).endswith("Headline:")
    ex = b.example("A dog rescued a cat.", "question", "Would you save a cat?")
    kept = [t for t in ex["labels"] if t != IGNORE_INDEX]
    assert ex["input_ids"][: len(ids)] == ids and ex["labels"][: len(ids)] == [IGNORE_INDEX] * len(ids)
    assert kept == ex["input_ids"][len(ids):] and kept[-1] == 2 and kept.count(2) == 1 and len(kept) >= 2
    assert stories.decode(kept, skip_special_tokens=True).strip() == "Would you save a cat?"


def test_chat_template_with_its_own_bos_is_not_doubled(stories, taxonomy):
    tok = AutoTokenizer.from_pretrained(STORIES)
    # A Llama-3-like template that writes the BOS itself: the tokenizer must not add a second one.
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}"
                         "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")
    b = PromptBuilder(tok, {"template": "chat"}, taxonomy)
    ids = b.prompt_ids("A dog.", "question")
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert b.stop_id == tok.eos_token_id


def test_category_none_leaves_the_style_out(qwen, taxonomy):
    b = PromptBuilder(qwen, {"category": "none"}, taxonomy)
    text = qwen.decode(b.prompt_ids("A dog.", None))
    assert "Style:" not in text and "Story: A dog." in text
    assert b.prompt_ids("A dog.", "question") == b.prompt_ids("A dog.", None)
    with pytest.raises(ValueError, match="needs a category"):
        PromptBuilder(qwen, {}, taxonomy).prompt_ids("A dog.", None)
    with pytest.raises(KeyError, match="not in the taxonomy"):
        PromptBuilder(qwen, {}, taxonomy).prompt_ids("A dog.", "no_such_style")


def test_truncation_is_by_tokens_and_counted(qwen, taxonomy):
    b = PromptBuilder(qwen, {"max_evidence_tokens": 5, "max_target_tokens": 3}, taxonomy)
    short = b.prompt_ids("one two", "question")
    long_ = b.prompt_ids("one two three four five six seven eight nine ten", "question")
    assert b.stats.evidence_truncated == 1 and b.stats.prompts == 2
    assert len(long_) - len(short) == 3  # 5 evidence tokens instead of 2
    ex = b.example("one two", "question", "alpha beta gamma delta epsilon zeta")
    assert len([t for t in ex["labels"] if t != IGNORE_INDEX]) == 3 + 1 and b.stats.target_truncated == 1


def test_empty_target_is_an_error_or_counted(stories, taxonomy):
    with pytest.raises(EmptyTargetError, match="no token left"):
        PromptBuilder(stories, {}, taxonomy).example("A dog.", "question", "   ")
    b = PromptBuilder(stories, {"on_empty_target": "skip"}, taxonomy)
    assert b.example("A dog.", "question", "") is None and b.stats.empty_target_skipped == 1


def test_tiny_tokenizer_plain_prompt_and_decode_completion(taxonomy):
    tok = build_tiny_tokenizer()
    b = PromptBuilder(tok, {}, taxonomy)
    ids = b.prompt_ids("Your package has shipped", "plain_news")
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    target = tok(" Flash sale ends tonight", add_special_tokens=False)["input_ids"]
    # Generated ids are cut at the first stop token; what follows it is ignored.
    assert b.decode_completion(target + [tok.eos_token_id] + target) == "Flash sale ends tonight"


def test_unconditional_example_keeps_the_target_and_drops_only_the_style_line(qwen, taxonomy):
    b = PromptBuilder(qwen, {}, taxonomy)
    ex = b.example("A dog.", "question", "Who is a good dog?")
    un = b.unconditional_example("A dog.", ex)
    n_prompt = sum(t == IGNORE_INDEX for t in un["labels"])
    # Its prompt is exactly what guidance feeds the unconditional branch, and that of category=none.
    assert un["input_ids"][:n_prompt] == b.unconditional_ids("A dog.")
    assert un["input_ids"][:n_prompt] == PromptBuilder(qwen, {"category": "none"}, taxonomy).prompt_ids("A dog.", None)
    assert "Style:" not in qwen.decode(un["input_ids"][:n_prompt]) and "Style:" in qwen.decode(ex["input_ids"])
    target = [t for t in ex["labels"] if t != IGNORE_INDEX]
    assert un["input_ids"][n_prompt:] == target and un["labels"][n_prompt:] == target
