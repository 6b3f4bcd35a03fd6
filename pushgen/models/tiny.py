"""Randomly initialised tiny decoders with an in-process tokenizer, for tests and smoke runs.

Nothing here touches the disk or the network: the tokenizer is trained on a short built-in
corpus with the `tokenizers` library, and the model is built from a transformers config class.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from pushgen.models.factory import Backbone

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0..3, in this order

TINY_ARCHS = ("llama", "qwen2")

# Headline-like lines so the merges look vaguely like those of a real notification corpus.
DEFAULT_CORPUS = [
    "You won't believe what this dog did at the airport",
    "Your weekly summary is ready: 3 new matches near you",
    "Breaking: city council votes to expand bike lanes downtown",
    "Flash sale ends tonight, grab 40% off running shoes",
    "She quit her job to sail around the world. Here's what happened.",
    "Scientists found a new species of frog in the rainforest",
    "Don't miss out! Your cart is waiting for you",
    "10 simple habits that will change your mornings",
    "The surprising reason your houseplants keep dying",
    "Reminder: your appointment is tomorrow at 9:30 AM",
    "A teacher bought lunch for every student in her class",
    "Stocks rally as inflation cools for the third month",
    "New episode available: the mystery of the missing painting",
    "Your package has shipped and arrives Thursday",
    "Why doctors say you should drink more water in winter",
    "This grandmother just ran her first marathon at 81",
    "Weather alert: heavy rain expected in your area tonight",
    "Only 2 seats left on your flight to Lisbon",
    "How one small town cut its energy bill in half",
    "Watch: firefighters rescue a kitten from a storm drain",
    "Your friend Maria just posted a new photo",
    "We miss you! Come back for a free dessert",
    "The one kitchen trick every chef swears by",
    "Election night live: results are coming in",
    "Kids explain love, and it is adorable",
    "Price drop on an item in your wishlist",
    "What happened next left the whole stadium in tears",
    "Study finds walking 20 minutes a day lowers stress",
    "Your streak is about to end, practice for 5 minutes now",
    "Local bakery gives free bread to anyone in need",
    "Top 5 phones under $300 this year",
    "He was told he would never walk again. Look at him now.",
    "Security notice: a new device signed in to your account",
    "The museum reopens Saturday with a brand new exhibit",
    "Can you solve this puzzle? Most people can't.",
    "Goal! Late winner sends the team into the final",
    "A quick guide to saving money on groceries",
    "Your daily horoscope: big changes ahead",
    "This photo of a sunrise over the mountains went viral",
    "Emergency crews restore power to 20,000 homes",
    "Try our new recipe: spicy noodles in 15 minutes",
    "Dad builds a treehouse that looks like a castle",
]


@functools.lru_cache(maxsize=16)
def _trained_tokenizer_json(corpus: tuple[str, ...], vocab_size: int) -> str:
    # Training is deterministic but takes ~10 ms; cache the JSON and rebuild a fresh object
    # each call so callers can mutate their tokenizer (padding_side, ...) independently.
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # The full 256-byte alphabet only fits in larger vocabularies; below that, bytes never seen
    # in the corpus become <unk>, which is harmless for a random test model.
    alphabet = pre_tokenizers.ByteLevel.alphabet() if vocab_size >= 256 + len(SPECIAL_TOKENS) + 64 else []
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Prepend BOS like Llama tokenizers do, so every row has at least one real token.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tok.to_str()


def build_tiny_tokenizer(corpus=None, vocab_size: int = 256) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in-process; pad (<pad>) is distinct from eos (</s>)."""
    lines = tuple(DEFAULT_CORPUS if corpus is None else (str(x) for x in corpus))
    if not lines:
        raise ValueError("build_tiny_tokenizer: corpus is empty")
    tok = Tokenizer.from_str(_trained_tokenizer_json(lines, int(vocab_size)))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="right",
        model_max_length=512,
    )


def build_tiny_model(
    arch: str = "llama",
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 256,
    seed: int = 0,
    pad_token_id: int = 0,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
) -> torch.nn.Module:
    """A randomly initialised LlamaModel / Qwen2Model (no LM head); same arguments -> same weights."""
    if arch not in TINY_ARCHS:
        raise ValueError(f"backbone.tiny.arch must be one of {TINY_ARCHS}, got {arch!r}")
    if hidden_size % num_heads:
        raise ValueError(
            f"backbone.tiny.hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
        )
    common = dict(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        vocab_size=vocab_size,
        max_position_embeddings=512,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        use_cache=False,
        tie_word_embeddings=False,
    )
    if arch == "llama":
        from transformers import LlamaConfig, LlamaModel

        config, cls = LlamaConfig(**common), LlamaModel
    else:
        from transformers import Qwen2Config, Qwen2Model

        config, cls = Qwen2Config(use_sliding_window=False, **common), Qwen2Model
    config.architectures = [f"{cls.__name__[:-5]}ForCausalLM"]
    # Fork the RNG so building a tiny model does not shift the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    return model.eval()


def build_tiny_backbone(
    arch: str = "llama",
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 256,
    seed: int = 0,
    corpus=None,
) -> Backbone:
    """Tiny random decoder + in-process tokenizer, wrapped as a Backbone (kind='decoder')."""
    tokenizer = build_tiny_tokenizer(corpus, vocab_size)
    # A byte alphabet or many special tokens can push the tokenizer past the requested size;
    # the embedding table must cover every id it can emit.
    n_vocab = max(int(vocab_size), len(tokenizer))
    model = build_tiny_model(
        arch=arch,
        hidden_size=int(hidden_size),
        num_layers=int(num_layers),
        num_heads=int(num_heads),
        vocab_size=n_vocab,
        seed=int(seed),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    tiny = dict(
        arch=arch,
        hidden_size=int(hidden_size),
        num_layers=int(num_layers),
        num_heads=int(num_heads),
        vocab_size=int(vocab_size),
        seed=int(seed),
    )
    # The extra keys record the real table size and special ids, so a LoRA reload rebuilds
    # identical base weights without the corpus (the trained tokenizer is saved instead).
    rebuild = dict(
        model_vocab_size=n_vocab,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    source_cfg = {"source": "tiny", "kind": "decoder", "tiny": {**tiny, **rebuild}}
    name = f"tiny-{arch}-h{hidden_size}-l{num_layers}-s{seed}"
    return Backbone(model=model, tokenizer=tokenizer, kind="decoder", name=name, source_cfg=source_cfg)


def build_tiny_causal_lm(corpus=None, **kwargs) -> Backbone:
    """The tiny decoder of ``build_tiny_backbone`` with an LM head on top (for SFT and generation)."""
    from transformers import AutoModelForCausalLM

    bb = build_tiny_backbone(corpus=corpus, **kwargs)
    config = bb.model.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(kwargs.get("seed", 0)))
        model = AutoModelForCausalLM.from_config(config)
    # Same transformer weights as the base model of the same seed; the head is seeded too.
    model.model.load_state_dict(bb.model.state_dict())
    bb.model = model.eval()
    return bb
