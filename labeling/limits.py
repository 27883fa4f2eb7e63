"""Limits on what one request may ask of the service, checked before any model work.

Every limit has an environment variable (read by `ServiceLimits.from_env`), so a Space can
tighten or loosen it without a code change:

| limit | variable | default |
|---|---|---|
| prompt length in tokens, chat template included (also capped by the model's context) | LANGUAGE_RANKER_MAX_PROMPT_TOKENS | 1024 |
| prompt length in characters (checked before tokenizing) | LANGUAGE_RANKER_MAX_PROMPT_CHARS | 8000 |
| N, candidates per request | LANGUAGE_RANKER_MAX_CANDIDATES | 64 |
| max new tokens per candidate | LANGUAGE_RANKER_MAX_NEW_TOKENS | 512 |
| N x max new tokens, the decode work of one request | LANGUAGE_RANKER_MAX_TOTAL_TOKENS | 8192 |
| temperature | LANGUAGE_RANKER_MAX_TEMPERATURE | 2.0 (min 0) |
| top_p | (fixed) | (0, 1] |
| seed | (fixed) | -1 (random) or 0 .. 2**31 - 1 |

Text rule (`clean_text`): the text must be valid Unicode (a lone surrogate, which a browser or a
JSON client can send, is refused with its position); "\\r\\n" and "\\r" become "\\n"; any other
control character (C0, DEL, C1) except newline and tab is refused, naming the character and
its position. Nothing is silently dropped, so what is stored is what the person typed.

Every check raises `ValueError` with the bad value and the accepted range; the app turns it
into a `gr.Error`, the HTTP API into an error response.
"""

from __future__ import annotations

import math
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, fields

from ranker.capture.sampling import SamplingConfig

ENV_PREFIX = "LANGUAGE_RANKER_"
MAX_SEED = 2**31 - 1
ALLOWED_CONTROLS = frozenset("\n\t")


@dataclass(frozen=True)
class ServiceLimits:
    """Bounds on one generation request (see the module docstring for the variables)."""

    max_prompt_tokens: int = 1024  # chat-formatted prompt tokens; also <= context - max_new_tokens
    max_prompt_chars: int = 8000  # refused before tokenizing, so a 1 MB prompt costs nothing
    max_candidates: int = 64  # N
    max_new_tokens: int = 512  # per candidate
    max_total_tokens: int = 8192  # N * max_new_tokens
    max_temperature: float = 2.0
    max_name_chars: int = 128  # annotator ids, profile and ranker names, client keys

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{spec.name} must be a positive number, got {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ServiceLimits":
        """Defaults, overridden by LANGUAGE_RANKER_<FIELD> variables (e.g. LANGUAGE_RANKER_MAX_CANDIDATES=16)."""
        environ = os.environ if environ is None else environ
        values = {}
        for spec in fields(cls):
            name = ENV_PREFIX + spec.name.upper()
            if name in environ:
                kind = float if spec.type in ("float", float) else int
                try:
                    values[spec.name] = kind(environ[name])
                except ValueError:
                    raise ValueError(f"{name} must be a number, got {environ[name]!r}") from None
        return cls(**values)

    def prompt_token_limit(self, context_length: int | None, max_new_tokens: int) -> int:
        """Prompt tokens allowed: the configured limit, capped so prompt + answer fit the context."""
        if context_length is None:
            return self.max_prompt_tokens
        return max(0, min(self.max_prompt_tokens, context_length - max_new_tokens))


def clean_text(name: str, value, max_chars: int, allow_empty: bool = False) -> str:
    """`value` as a clean string (see the text rule in the module docstring); ValueError naming `name`."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise ValueError(f"{name} is {len(value):,} characters long; the limit is {max_chars:,}")
    for position, char in enumerate(value):
        if 0xD800 <= ord(char) <= 0xDFFF:
            raise ValueError(f"{name} is not valid Unicode: a lone surrogate U+{ord(char):04X} at character {position}")
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    for position, char in enumerate(value):
        if char not in ALLOWED_CONTROLS and unicodedata.category(char) == "Cc":
            raise ValueError(f"{name} contains the control character U+{ord(char):04X} at character {position}; "
                             "only newline and tab are allowed")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} is empty")
    return value


def _integer(name: str, value) -> int:
    """An int from an int or an integral float (UI number boxes send floats); refuses bools, text and NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_sampling(limits: ServiceLimits, n, temperature, top_p, max_new_tokens, seed) -> SamplingConfig:
    """A validated SamplingConfig from untrusted values; ValueError naming the first bad one and its range."""
    n = _integer("N", n)
    if not 1 <= n <= limits.max_candidates:
        raise ValueError(f"N must be between 1 and {limits.max_candidates}, got {n}")
    temperature = _number("temperature", temperature)
    if not 0.0 <= temperature <= limits.max_temperature:
        raise ValueError(f"temperature must be between 0 and {limits.max_temperature:g}, got {temperature:g}")
    top_p = _number("top_p", top_p)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p:g}")
    max_new_tokens = _integer("max new tokens", max_new_tokens)
    if not 1 <= max_new_tokens <= limits.max_new_tokens:
        raise ValueError(f"max new tokens must be between 1 and {limits.max_new_tokens}, got {max_new_tokens}")
    if n * max_new_tokens > limits.max_total_tokens:
        raise ValueError(f"N x max new tokens is {n} x {max_new_tokens} = {n * max_new_tokens}; "
                         f"the limit is {limits.max_total_tokens} per request")
    seed = _integer("seed", -1 if seed is None else seed)
    if not -1 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be -1 (random) or between 0 and {MAX_SEED}, got {seed}")
    return SamplingConfig(num_candidates=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                          seed=None if seed < 0 else seed).validate()


def prompt_tokens(tokenizer, prompt: str) -> int:
    """Tokens of `prompt` as the model sees it: inside the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return len(tokenizer(prompt)["input_ids"])


def context_length(model) -> int | None:
    """The model's context window in tokens (max_position_embeddings), None when it does not say."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def check_prompt(limits: ServiceLimits, base, prompt, max_new_tokens: int) -> tuple[str, int]:
    """(cleaned prompt, its token count); ValueError when it is not clean text or too long for `base`."""
    prompt = clean_text("the prompt", prompt, limits.max_prompt_chars)
    count = prompt_tokens(base.tokenizer, prompt)
    limit = limits.prompt_token_limit(context_length(base.model), max_new_tokens)
    if count > limit:
        raise ValueError(f"the prompt is {count} tokens with the chat template; the limit is {limit} "
                         f"(LANGUAGE_RANKER_MAX_PROMPT_TOKENS, and the model's context minus {max_new_tokens} new tokens)")
    return prompt, count
