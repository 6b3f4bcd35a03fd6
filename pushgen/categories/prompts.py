"""Turn (evidence, style category[, target]) into token ids for the generator.

One builder serves training and inference, so the model is fed at inference exactly the prompt
it was trained on:

- ``prompt_ids(evidence, category)`` -> the ids the generator is fed; they end where the
  notification starts.
- ``example(evidence, category, target)`` -> ``{"input_ids", "labels"}`` for SFT: prompt positions
  are -100 (completion-only loss) and the target ends with the stop token, so generation stops.

Two template kinds (``prompt.template``): ``plain`` (a text template; the tokenizer adds its BOS
once) and ``chat`` (the tokenizer's chat template, e.g. ChatML for Qwen2.5 / SmolLM2; the template
text already holds every special token, so the tokenizer adds none). ``auto`` picks ``chat`` when
the tokenizer has a chat template. ``prompt.category=none`` leaves the category out (the ablation).

The evidence is cut to ``prompt.max_evidence_tokens`` tokens and the target to
``prompt.max_target_tokens``; both cuts are counted in ``stats``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
TEMPLATES = ("auto", "chat", "plain")
CATEGORY_MODES = ("label", "none")

DEFAULTS: dict[str, Any] = {
    "template": "auto",
    "category": "label",
    "max_evidence_tokens": 96,
    "max_target_tokens": 48,
    "system": "You write short, engaging push notifications for news stories.",
    "instruction": "Write a push notification headline for this story.",
    "style_line": "Style: {name} ({description})",
    "evidence_line": "Story: {evidence}",
    # Plain template: the lines above joined by newlines, then this cue; the target follows it.
    "plain_cue": "Headline:",
    # What goes before the target in the plain template (a space keeps "Headline: text" natural).
    "target_prefix": " ",
    # What to do with an example whose target has no token left: raise | skip (skipped ones are counted).
    "on_empty_target": "raise",
}


# The placeholders each template line may use, and the one it must use (else the prompt silently
# loses the category or the story).
PLACEHOLDERS = {"style_line": ({"name", "description"}, "name"), "evidence_line": ({"evidence"}, "evidence")}


def placeholder_problems(cfg: Mapping) -> list[str]:
    """What is wrong with the ``{...}`` fields of the prompt's template lines (empty if nothing)."""
    import string
    problems = []
    for key, (allowed, required) in PLACEHOLDERS.items():
        line = cfg.get(key)
        if not isinstance(line, str):
            continue
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(line) if f is not None}
        except ValueError as exc:  # e.g. a lone "{"
            problems.append(f"prompt.{key}: {line!r} is not a valid template ({exc}); write a literal brace as {{{{ or }}}}")
            continue
        unknown = sorted(fields - allowed)
        if unknown:
            problems.append(f"prompt.{key}: unknown placeholder(s) {', '.join('{' + f + '}' for f in unknown)} in "
                            f"{line!r}; allowed: {', '.join('{' + f + '}' for f in sorted(allowed))}")
        elif required not in fields:
            problems.append(f"prompt.{key}: {line!r} lacks {{{required}}}, so the prompt would leave it out")
    return problems


class EmptyTargetError(ValueError):
    """An SFT example with no target token: its loss would silently be zero."""


@dataclass
class PromptStats:
    prompts: int = 0
    evidence_truncated: int = 0
    examples: int = 0
    target_truncated: int = 0
    empty_target_skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _plain(cfg: Any) -> dict:
    if cfg is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf
        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)


def _category_parts(taxonomy: Any, name: str) -> tuple[str, str]:
    """(name, description) of a category; a name the taxonomy does not know is a clear error."""
    if taxonomy is None:
        return name, ""
    try:
        cat = taxonomy.get(name)
    except (KeyError, ValueError) as e:
        known = ", ".join(getattr(taxonomy, "names", []) or [])
        raise KeyError(f"category {name!r} is not in the taxonomy (known: {known})") from e
    return getattr(cat, "name", name), getattr(cat, "description", "") or ""


class PromptBuilder:
    """Builds generator prompts and SFT examples from one tokenizer and a ``prompt`` config block."""

    def __init__(self, tokenizer, prompt_cfg: Mapping | None = None, taxonomy: Any = None):
        cfg = {**DEFAULTS, **_plain(prompt_cfg)}
        if cfg["template"] not in TEMPLATES:
            raise ValueError(f"prompt.template must be one of {TEMPLATES}, got {cfg['template']!r}")
        if str(cfg["category"]) not in CATEGORY_MODES:
            raise ValueError(f"prompt.category must be one of {CATEGORY_MODES}, got {cfg['category']!r}")
        if cfg["on_empty_target"] not in ("raise", "skip"):
            raise ValueError(f"prompt.on_empty_target must be 'raise' or 'skip', got {cfg['on_empty_target']!r}")
        for key in ("max_evidence_tokens", "max_target_tokens"):
            if int(cfg[key]) < 1:
                raise ValueError(f"prompt.{key} must be >= 1, got {cfg[key]}")
        problems = placeholder_problems(cfg)
        if problems:
            raise ValueError("; ".join(problems))
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.taxonomy = taxonomy
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if cfg["template"] == "chat" and not has_chat:
            raise ValueError("prompt.template=chat but the tokenizer has no chat template; use plain or auto")
        self.kind = "chat" if cfg["template"] == "chat" or (cfg["template"] == "auto" and has_chat) else "plain"
        self.use_category = str(cfg["category"]) == "label"
        self.stats = PromptStats()
        self.stop_token = self._stop_token()
        self.stop_id = tokenizer.convert_tokens_to_ids(self.stop_token)

    # ---- the public API -------------------------------------------------------------------

    @property
    def stop_ids(self) -> list[int]:
        """Token ids that end a generated notification (the stop token, and the tokenizer's EOS)."""
        ids = [self.stop_id]
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def prompt_text(self, evidence: str, category: str | None) -> str:
        """The prompt as text (for logs and sample tables); the model is fed ``prompt_ids``."""
        return self._render(self._cut_evidence(evidence, count=False), category)

    def prompt_ids(self, evidence: str, category: str | None) -> list[int]:
        """Ids the generator is fed; the completion starts right after the last one."""
        self.stats.prompts += 1
        text = self._render(self._cut_evidence(evidence, count=True), category)
        # Plain: the tokenizer adds its BOS (if it has one) exactly once. Chat: the template wrote
        # every special token itself, so adding more would double the BOS.
        return self.tokenizer(text, add_special_tokens=self.kind == "plain")["input_ids"]

    def unconditional_ids(self, evidence: str) -> list[int]:
        """The same prompt without its style line: the unconditional branch of classifier-free guidance."""
        text = self._render(self._cut_evidence(evidence, count=False), None, with_category=False)
        return self.tokenizer(text, add_special_tokens=self.kind == "plain")["input_ids"]

    def target_ids(self, target: str) -> list[int]:
        """The completion's ids: the target text (cut to max_target_tokens) then the stop token."""
        text = str(target or "").strip()
        if not text:  # a prefix space alone may still be a token; it is not a target
            return []
        prefix = self.cfg["target_prefix"] if self.kind == "plain" else ""
        ids = self.tokenizer(prefix + text, add_special_tokens=False)["input_ids"]
        limit = int(self.cfg["max_target_tokens"])
        if len(ids) > limit:
            self.stats.target_truncated += 1
            ids = ids[:limit]
        return ids

    def example(self, evidence: str, category: str | None, target: str) -> dict[str, list[int]] | None:
        """An SFT example; the loss covers only the target and its stop token.

        A target with no token (empty text) raises EmptyTargetError, or returns None and is counted
        with ``prompt.on_empty_target=skip``: it must never become a silent zero-loss example.
        """
        target_ids = self.target_ids(target)
        if not target_ids:
            if self.cfg["on_empty_target"] == "skip":
                self.stats.empty_target_skipped += 1
                return None
            raise EmptyTargetError(f"the target {target!r} has no token left (evidence starts {str(evidence)[:60]!r}); "
                                   "drop empty texts from the data or set prompt.on_empty_target=skip")
        prompt = self.prompt_ids(evidence, category)
        self.stats.examples += 1
        completion = target_ids + [self.stop_id]
        return {"input_ids": prompt + completion, "labels": [IGNORE_INDEX] * len(prompt) + completion}

    def unconditional_example(self, evidence: str, example: Mapping[str, list[int]]) -> dict[str, list[int]]:
        """``example`` with its prompt swapped for ``unconditional_ids``: same target, no style line.

        Training on a share of these (``sft.category_dropout``) teaches the generator the branch that
        classifier-free guidance subtracts, instead of leaving it to whatever the base model does
        with a prompt it never saw in training."""
        return self._with_prompt(self.unconditional_ids(evidence), example)

    def example_as(self, evidence: str, example: Mapping[str, list[int]], category: str) -> dict[str, list[int]]:
        """``example``'s target after the prompt that asks for ``category`` (for the category contrast)."""
        text = self._render(self._cut_evidence(evidence, count=False), category)
        return self._with_prompt(self.tokenizer(text, add_special_tokens=self.kind == "plain")["input_ids"], example)

    @staticmethod
    def _with_prompt(prompt: list[int], example: Mapping[str, list[int]]) -> dict[str, list[int]]:
        completion = [t for t in example["labels"] if t != IGNORE_INDEX]
        return {"input_ids": prompt + completion, "labels": [IGNORE_INDEX] * len(prompt) + completion}

    def decode_completion(self, ids) -> str:
        """Generated ids (after the prompt) -> text, cut at the first stop token."""
        out = []
        stops = set(self.stop_ids)
        for i in ids:
            i = int(i)
            if i in stops:
                break
            out.append(i)
        return self.tokenizer.decode(out, skip_special_tokens=True).strip()

    # ---- internals ------------------------------------------------------------------------

    def _cut_evidence(self, evidence: str, count: bool) -> str:
        text = " ".join(str(evidence or "").split())
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        limit = int(self.cfg["max_evidence_tokens"])
        if len(ids) <= limit:
            return text
        if count:
            self.stats.evidence_truncated += 1
        return self.tokenizer.decode(ids[:limit], skip_special_tokens=True).strip()

    def _user_text(self, evidence: str, category: str | None, with_category: bool = True) -> str:
        lines = [self.cfg["instruction"]]
        if self.use_category and with_category:
            if category is None:
                raise ValueError("prompt.category=label needs a category for every prompt (got None); "
                                 "use prompt.category=none for prompts without one")
            name, description = _category_parts(self.taxonomy, str(category))
            lines.append(self.cfg["style_line"].format(name=name, description=description))
        lines.append(self.cfg["evidence_line"].format(evidence=evidence))
        return "\n".join(line for line in lines if line)

    def _render(self, evidence: str, category: str | None, with_category: bool = True) -> str:
        user = self._user_text(evidence, category, with_category)
        if self.kind == "plain":
            return f"{user}\n{self.cfg['plain_cue']}"
        return self.tokenizer.apply_chat_template(self._messages(user), tokenize=False, add_generation_prompt=True)

    def _messages(self, user: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.cfg["system"]}] if self.cfg["system"] else []
        return msgs + [{"role": "user", "content": user}]

    def _stop_token(self) -> str:
        """The token that ends the target: the chat template's end-of-turn token, or EOS."""
        tok = self.tokenizer
        if self.kind == "chat":
            # Render one finished assistant turn and take the special token that closes it
            # (ChatML: <|im_end|>; Llama 3: <|eot_id|>), so the model learns the template's own stop.
            marker = "PUSHGEN_TARGET"
            msgs = self._messages("x") + [{"role": "assistant", "content": marker}]
            full = tok.apply_chat_template(msgs, tokenize=False)
            after = full[full.rindex(marker) + len(marker):]
            for special in sorted(tok.all_special_tokens + list(tok.get_added_vocab()), key=len, reverse=True):
                if special and after.startswith(special):
                    return special
            if tok.eos_token and tok.eos_token in after:
                return tok.eos_token
            raise ValueError(f"cannot find the end-of-turn token of the chat template (after the reply: {after[:40]!r})")
        if tok.eos_token is None:
            raise ValueError("the tokenizer has no EOS token to end targets with; set one or use a chat template")
        return tok.eos_token


def build_prompt_builder(tokenizer, prompt_cfg: Mapping | None, taxonomy: Any = None) -> PromptBuilder:
    builder = PromptBuilder(tokenizer, prompt_cfg, taxonomy)
    log.info("prompts: %s template, category %s, stop token %r", builder.kind,
             "in the prompt" if builder.use_category else "left out (ablation)", builder.stop_token)
    return builder
