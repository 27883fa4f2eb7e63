"""The card file format shared by rankers and reward models: a folder holding `card.json` and tensors.

A card says what a saved model is (its configs, the base model it belongs to, its training data
and metrics) so that it can be rebuilt and judged without its training code. Every card.json has

    format, format_version, <the model's own fields>, training_data, metrics, created, library_version

`created` (UTC, ISO 8601) and `library_version` are stamped when the folder is written. This
module owns what is common to every kind of card:

- writing: the overwrite guard (a non-empty folder without a card is never replaced), the atomic
  folder write (`ranker.core.file_io.atomic_folder`: a reader sees the old folder or the new one),
  and JSON-safe values (nan/inf become null, tuples lists);
- reading: card.json and safetensors files, with every fault (missing, truncated, corrupt, not an
  object, another format or version, a field that does not parse) a ValueError naming the file;
- `CardEntry`: `to_dict` / `from_dict` for the config dataclasses a card holds, refusing unknown fields.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file

import ranker
from ranker.core.file_io import atomic_folder

CARD_NAME = "card.json"
T = TypeVar("T")


@dataclass(frozen=True)
class CardFormat:
    """One kind of card: its `format` name and version, and what to call it in messages."""

    name: str  # the card's "format" value, e.g. "language-ranker"
    version: int  # the only "format_version" this library reads and writes
    card: str  # what the card is called, e.g. "ranker card"
    folder: str  # what the folder is called, e.g. "ranker checkpoint"


def json_safe(value: Any) -> Any:
    """`value` with nan/inf as None (JSON has no such numbers) and tuples as lists; recursive, keys as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_bytes(value: Any) -> bytes:
    """`json_safe(value)` as indented UTF-8 JSON with a final newline (what card and index files hold)."""
    return (json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n").encode("utf-8")


def check_overwrite(path: str | os.PathLike, fmt: CardFormat) -> None:
    """Refuse (ValueError) to replace `path` unless it is absent, an empty folder, or a folder with a card."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / CARD_NAME).exists())):
        raise ValueError(f"{path} exists and is not a {fmt.folder} folder; refusing to overwrite it")


def write_card_folder(path: str | os.PathLike, fmt: CardFormat, card: dict,
                      write_files: Callable[[Path], None]) -> Path:
    """Write the folder `path` atomically: `write_files(staging folder)` (weights), then card.json.

    card: the card's own fields (JSON-able, in card order); the format header and `created` /
    `library_version` are added here. Refuses a folder that is not a card folder (`check_overwrite`).
    """
    check_overwrite(path, fmt)
    data = {"format": fmt.name, "format_version": fmt.version, **card,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "library_version": ranker.__version__}
    with atomic_folder(path) as staging:
        write_files(staging)
        (staging / CARD_NAME).write_bytes(json_bytes(data))
    return Path(path)


def read_json(path: str | os.PathLike, what: str) -> dict:
    """The JSON object in the file `path`; ValueError naming the file (and `what` it should be) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found: {what} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable {what} (corrupt or truncated JSON?): {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a valid {what}: expected a JSON object, got {type(data).__name__}")
    return data


def read_tensors(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """The tensors in the safetensors file `path`, on CPU; ValueError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found: {what} is missing")
    try:
        return load_file(path, device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError (no ValueError) on a bad file
        raise ValueError(f"{path} is not a readable safetensors file of {what} (truncated or corrupt?): {error}") from None


def read_card_folder(path: str | os.PathLike, fmt: CardFormat, parse: Callable[[dict], T],
                     objects: tuple[str, ...] = ()) -> T:
    """`parse(card.json's object)` for the card folder `path`; ValueError naming card.json and the fault otherwise.

    objects: fields that must be JSON objects (or null) when present. Errors of `parse` (a missing
    field, a config value out of range) are reported as an invalid card.
    """
    card_path = Path(path) / CARD_NAME
    if not card_path.is_file():
        raise ValueError(f"{path} is not a {fmt.folder}: {CARD_NAME} not found")
    data = read_json(card_path, fmt.card)
    if data.get("format") != fmt.name:
        raise ValueError(f"{card_path} is not a {fmt.card}: format is {data.get('format')!r}, expected {fmt.name!r}")
    if data.get("format_version") != fmt.version:
        raise ValueError(f"{card_path}: {fmt.card} format_version {data.get('format_version')!r} is not supported "
                         f"(only {fmt.version})")
    for name in objects:
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise ValueError(f"{card_path} is not a valid {fmt.card}: field {name!r} must be a JSON object, "
                             f"got {data[name]!r:.80}")
    try:
        return parse(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
        raise ValueError(f"{card_path} is not a valid {fmt.card}: {detail}") from None


def dataclass_from_dict(cls: type[T], data: dict) -> T:
    """`cls(**data)` for a config dataclass; ValueError naming the unknown fields instead of a TypeError."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a JSON object, got {data!r:.80}")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(known)}")
    return cls(**data)


class CardEntry:
    """Mixin for the dataclasses a card holds (configs, calibrations): `to_dict()` and `from_dict(data)`."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """The dataclass from its card entry; ValueError naming unknown fields (or a bad value, from the class)."""
        return dataclass_from_dict(cls, data)
