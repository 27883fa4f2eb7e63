"""RankerRegistry: atomic numbered versions, promotion, rollback, and refusing bad state."""

import json

import pytest
import torch

from labeling.registry import RankerRegistry
from ranker.capture.fingerprint import FeatureFingerprint
from ranker.rankers.estimator import LanguageRanker
from tests.labeling.synthetic import FAST, LAYER, MODEL, synthetic_queries


@pytest.fixture(scope="module")
def rankers():
    """Three quickly fitted rankers that score differently (different seeds), Platt-calibrated."""
    queries = synthetic_queries(12, seed=1)
    out = []
    for seed in range(3):
        out.append(LanguageRanker(kind="list", seed=seed, steps=3, **FAST).fit(
            queries, fingerprint=FeatureFingerprint(MODEL, LAYER), calibrate=True))
    return out, queries


def test_versions_are_numbered_saved_and_loaded(tmp_path, rankers):
    (r1, r2, r3), queries = rankers
    registry = RankerRegistry(tmp_path / "reg")
    assert registry.current() is None and registry.history() == [] and registry.profiles() == []
    assert registry.add(r1, {"store_accuracy": 0.5}, True, "first", label_count=10) == "v0001"
    assert registry.add(r2, {"store_accuracy": 0.4}, False, "refused: worse") == "v0002"
    assert registry.current() == "v0001"  # a refused version never becomes current
    assert registry.add(r3, {"store_accuracy": 0.6}, True, "better") == "v0003"
    assert registry.current() == "v0003"

    history = registry.history()
    assert [(e["version"], e["status"], e["parent"], e["current"]) for e in history] == [
        ("v0001", "promoted", None, False), ("v0002", "refused", "v0001", False), ("v0003", "promoted", "v0001", True)]
    assert history[0]["label_count"] == 10 and history[1]["reason"] == "refused: worse"

    # Every version folder is a complete checkpoint; no staging folders are left behind.
    folder = tmp_path / "reg" / "default"
    assert sorted(p.name for p in folder.iterdir()) == ["v0001", "v0002", "v0003"]
    assert {p.name for p in (folder / "v0002").iterdir()} == {"model.safetensors", "card.json", "entry.json"}
    assert json.loads((folder / "v0002" / "entry.json").read_text())["status"] == "refused"

    loaded = registry.load("v0002")
    q = queries[0]
    torch.testing.assert_close(loaded.score(q.instruction, q.responses), r2.score(q.instruction, q.responses))
    assert loaded.calibration_ == r2.calibration_  # the Platt (a, b) travel with the version
    a, b = r2.calibration_.a, r2.calibration_.b
    torch.testing.assert_close(loaded.probability_correct(torch.tensor([0.5])), torch.sigmoid(torch.tensor([a * 0.5 + b])))
    with pytest.raises(ValueError, match="unknown version 'v0009' for profile 'default'"):
        registry.load("v0009")

    reopened = RankerRegistry(tmp_path / "reg")
    assert reopened.history() == history and reopened.current() == "v0003"


def test_rollback(tmp_path, rankers):
    (r1, r2, r3), _ = rankers
    registry = RankerRegistry(tmp_path)
    with pytest.raises(ValueError, match="no current version to roll back from"):
        registry.rollback()
    for ranker, promoted in ((r1, True), (r2, False), (r3, True)):
        registry.add(ranker, {}, promoted, "")
    assert registry.rollback() == "v0001"  # skips the refused v0002
    assert registry.current() == "v0001"
    assert [e["status"] for e in registry.history()] == ["promoted", "refused", "rolled back"]
    with pytest.raises(ValueError, match="no promoted version before v0001"):
        registry.rollback()
    with pytest.raises(ValueError, match="v0002 of 'default' was refused"):
        registry.rollback(to="v0002")
    assert registry.rollback(to="v0003") == "v0003"  # an explicitly named, once-promoted version
    assert registry.current() == "v0003" and registry.history()[0]["status"] == "rolled back"


def test_profiles_are_separate_and_names_checked(tmp_path, rankers):
    (r1, r2, _), _ = rankers
    registry = RankerRegistry(tmp_path)
    registry.add(r1, {}, True, "", profile="math")
    registry.add(r2, {}, True, "", profile="alice")
    assert registry.profiles() == ["alice", "math"]
    assert registry.current("math") == "v0001" and registry.current("alice") == "v0001" and registry.current() is None
    assert [e["profile"] for e in registry.history()] == ["alice", "math"]
    with pytest.raises(ValueError, match="profile must be"):
        registry.add(r1, {}, True, "", profile="../escape")


def test_failed_save_leaves_no_version_and_numbers_are_never_reused(tmp_path, rankers):
    (r1, _, _), _ = rankers

    class BrokenRanker:
        def save(self, path):
            (path / "model.safetensors").write_text("half")
            raise OSError("disk full")

    registry = RankerRegistry(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        registry.add(BrokenRanker(), {}, True, "")
    assert registry.history() == [] and not (tmp_path / "default" / "v0001").exists()
    assert [p.name for p in (tmp_path / "default").iterdir()] == []  # staging folder removed
    (tmp_path / "default" / "v0007").mkdir()  # e.g. a folder written before a crash lost the index entry
    assert registry.add(r1, {}, True, "") == "v0008"


def test_corrupt_index_is_refused_untouched(tmp_path):
    (tmp_path / "registry.json").write_text("{not json")
    with pytest.raises(ValueError, match="registry.json is not a readable registry index"):
        RankerRegistry(tmp_path)
    assert (tmp_path / "registry.json").read_text() == "{not json"
