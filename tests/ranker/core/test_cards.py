"""The shared card format: round trips, the overwrite guard, format checks and clear read errors."""

import json
import math
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file

import ranker
from ranker.core.cards import (
    CARD_NAME,
    CardEntry,
    CardFormat,
    check_overwrite,
    json_safe,
    read_card_folder,
    read_json,
    read_tensors,
    write_card_folder,
)

FORMAT = CardFormat("test-card", 3, card="test card", folder="test folder")


@dataclass
class Settings(CardEntry):
    size: int = 1
    names: tuple[str, ...] = ("a",)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")


def write(path, card=None, files=lambda staging: (staging / "w.bin").write_bytes(b"weights")):
    return write_card_folder(path, FORMAT, card if card is not None else {"settings": Settings(4, ("x", "y")).to_dict()}, files)


def test_a_card_written_then_read_round_trips_every_field(tmp_path):
    card = {"settings": Settings(4, ("x", "y")).to_dict(), "training_data": {"prompts": 3, "families": ("a", "b")},
            "metrics": {"auroc": math.nan, "best": 0.5, "nested": {"inf": math.inf}}}
    write(tmp_path / "c", card)
    data = read_card_folder(tmp_path / "c", FORMAT, lambda d: d)
    assert list(data) == ["format", "format_version", "settings", "training_data", "metrics", "created", "library_version"]
    assert (data["format"], data["format_version"], data["library_version"]) == ("test-card", 3, ranker.__version__)
    assert data["created"].endswith("+00:00")
    assert Settings.from_dict(data["settings"]) == Settings(4, ["x", "y"])
    assert data["training_data"] == {"prompts": 3, "families": ["a", "b"]}
    assert data["metrics"] == {"auroc": None, "best": 0.5, "nested": {"inf": None}}  # JSON has no nan or inf
    assert (tmp_path / "c" / "w.bin").read_bytes() == b"weights"


def test_the_overwrite_guard_refuses_a_folder_that_is_not_a_card_folder(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match="notes exists and is not a test folder folder; refusing to overwrite it"):
        write(tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="refusing"):
        check_overwrite(tmp_path / "file", FORMAT)
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty")  # an empty folder, or one with a card, may be replaced
    write(tmp_path / "empty", {"settings": {"size": 9}})
    assert read_card_folder(tmp_path / "empty", FORMAT, lambda d: d["settings"]) == {"size": 9}


def test_a_failed_write_leaves_the_old_folder(tmp_path):
    write(tmp_path / "c")

    def broken(staging):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write(tmp_path / "c", {"settings": {"size": 2}}, broken)
    assert read_card_folder(tmp_path / "c", FORMAT, lambda d: d["settings"]["size"]) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no staging folder left


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.update(format="other"), "is not a test card: format is 'other', expected 'test-card'"),
    (lambda d: d.update(format_version=2), "test card format_version 2 is not supported (only 3)"),
    (lambda d: d.update(settings=[1]), "field 'settings' must be a JSON object"),
    (lambda d: d.pop("settings"), "is not a valid test card: missing field 'settings'"),
    (lambda d: d["settings"].update(size=0), "is not a valid test card: size must be >= 1, got 0"),
    (lambda d: d["settings"].update(colour="red"), "unknown Settings fields ['colour']"),
])
def test_bad_cards_give_a_value_error_naming_the_file(tmp_path, edit, needle):
    write(tmp_path / "c")
    path = tmp_path / "c" / CARD_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        read_card_folder(tmp_path / "c", FORMAT, lambda d: Settings.from_dict(d["settings"]), objects=("settings",))
    assert str(path) in str(info.value) and needle in str(info.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match="is not a test folder: card.json not found"):
        read_card_folder(tmp_path, FORMAT, lambda d: d)
    (tmp_path / "x.json").write_text("{trunc")
    with pytest.raises(ValueError, match="x.json is not a readable thing .corrupt or truncated JSON"):
        read_json(tmp_path / "x.json", "thing")
    (tmp_path / "x.json").write_text("[1]")
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        read_json(tmp_path / "x.json", "thing")
    save_file({"t": torch.arange(3.0)}, tmp_path / "t.safetensors")
    assert torch.equal(read_tensors(tmp_path / "t.safetensors", "tensors")["t"], torch.arange(3.0))
    (tmp_path / "t.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match="t.safetensors is not a readable safetensors file of tensors"):
        read_tensors(tmp_path / "t.safetensors", "tensors")
    with pytest.raises(ValueError, match="missing.safetensors not found: tensors is missing"):
        read_tensors(tmp_path / "missing.safetensors", "tensors")


def test_json_safe():
    assert json_safe({1: (1.0, math.nan), "b": [math.inf, {"c": -math.inf}]}) == {"1": [1.0, None], "b": [None, {"c": None}]}
