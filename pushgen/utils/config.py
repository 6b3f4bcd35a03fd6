"""Config helpers: the `${pushgen.root:}` resolver, a printed config tree, and plain containers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def offline_defaults() -> None:
    """Entry points run offline unless the user says otherwise: no hub lookups (a missed one costs
    ~20 s, then fails) and no tokenizer thread pools fighting torch's. Call before transformers loads."""
    import os
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[2]


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("pushgen.root"):
        OmegaConf.register_new_resolver("pushgen.root", lambda: str(REPO_ROOT))


register_resolvers()


def to_plain(cfg: Any) -> Any:
    # throw_on_missing: a required value left as ??? fails here, naming its key, not deep in a library.
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) if isinstance(cfg, DictConfig) else cfg


def print_config_tree(cfg: DictConfig, save_to: Path | None = None) -> str:
    """Print the resolved config as a tree (rich) and save the same text in the run folder."""
    import rich.syntax
    import rich.tree
    from rich.console import Console

    tree = rich.tree.Tree("CONFIG")
    for key, value in cfg.items():
        branch = tree.add(str(key))
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    console = Console(record=True, width=200)
    console.print(tree)
    text = console.export_text()
    if save_to is not None:
        from pushgen.utils.run import write_atomic
        write_atomic(save_to, text)
        # The resolved config as YAML (Hydra's .hydra/config.yaml keeps the interpolations).
        write_atomic(Path(save_to).with_name("config_resolved.yaml"), OmegaConf.to_yaml(cfg, resolve=True))
    return text
