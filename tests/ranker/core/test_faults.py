"""Crash and disk faults for the ranker's files: corrupt checkpoints and feature stores fail clearly,
and the atomic writers survive SIGKILL, a read-only folder and a full disk without losing the old files.

How each fault is made (real SIGKILL, dropped capabilities, RLIMIT_FSIZE) is in `tests/ranker/faults.py`.
"""

import errno
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

import ranker.core.file_io as atomic
from labeling.registry import RankerRegistry
from ranker.capture.feature_store import FeatureStore
from ranker.capture.fingerprint import FeatureFingerprint, ModelFingerprint
from ranker.core.cards import CARD_NAME
from ranker.core.file_io import atomic_folder, stale_staging
from ranker.rankers.checkpoint import EXTRA_NAME, WEIGHTS_NAME
from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.training_groups import RankingQuery
from tests.labeling.synthetic import FAST, LAYER, MODEL, store_from_queries, synthetic_queries
from tests.ranker.core.faults import assert_killed, child, run_child, set_mode, tree_state

FINGERPRINT = FeatureFingerprint(MODEL, LAYER)


def fitted(seed: int) -> LanguageRanker:
    return LanguageRanker(kind="list", seed=seed, steps=3, **FAST).fit(synthetic_queries(12, seed=1), fingerprint=FINGERPRINT)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two checkpoints of different rankers ("a", "b") and a feature store, written once; tests copy them."""
    root = tmp_path_factory.mktemp("saved")
    fitted(0).save(root / "a")
    fitted(1).save(root / "b")
    store_from_queries(synthetic_queries(4, seed=2)).save(root / "store")
    assert (root / "a" / WEIGHTS_NAME).read_bytes() != (root / "b" / WEIGHTS_NAME).read_bytes()
    return root


def copy(saved, name, tmp_path):
    return shutil.copytree(saved / name, tmp_path / name)


def assert_clear_value_error(call, path, needle):
    """`call()` raises a plain ValueError (no JSONDecodeError, SafetensorError, ...) naming `path` and saying `needle`."""
    with pytest.raises(Exception) as info:
        call()
    assert type(info.value) is ValueError, f"{type(info.value).__module__}.{type(info.value).__name__}: {info.value}"
    assert str(path) in str(info.value) and needle in str(info.value), str(info.value)


# --- corrupt, truncated or wrong-model checkpoints ---------------------------------------------------


def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: keep(len(data))])


def _other_model_weights(folder):
    """model.safetensors of a ranker for hidden size 16, under a card that says 32."""
    queries = [RankingQuery(q.instruction[:16], q.responses[:, :16], q.labels, q.query_id) for q in synthetic_queries(6)]
    other = LanguageRanker(kind="list", seed=0, steps=1, **FAST).fit(queries)
    other.save(folder.parent / "other")
    shutil.copy(folder.parent / "other" / WEIGHTS_NAME, folder / WEIGHTS_NAME)


def _card_edit(edit):
    def apply(folder):
        card = json.loads((folder / CARD_NAME).read_text())
        edit(card)
        (folder / CARD_NAME).write_text(json.dumps(card))
    return apply


CHECKPOINT_FAULTS = {
    # case: (how to break the folder, the file the error must name, what it must say)
    "card missing": (lambda f: (f / CARD_NAME).unlink(), "", "card.json not found"),
    "card garbage": (lambda f: (f / CARD_NAME).write_bytes(b"\x00\xff{garbage"), CARD_NAME, "not a readable ranker card"),
    "card truncated": (lambda f: _cut(f / CARD_NAME, lambda n: n // 2), CARD_NAME, "corrupt or truncated JSON"),
    "card not an object": (lambda f: (f / CARD_NAME).write_text("[1, 2]"), CARD_NAME, "expected a JSON object, got list"),
    "card without config": (_card_edit(lambda c: c.pop("ranker_config")), CARD_NAME, "missing field 'ranker_config'"),
    "card bad config": (_card_edit(lambda c: c["ranker_config"].update(kind="tree")), CARD_NAME, "kind must be one of"),
    "card metrics not an object": (_card_edit(lambda c: c.update(metrics=[1])), CARD_NAME, "'metrics' must be a JSON object"),
    "weights missing": (lambda f: (f / WEIGHTS_NAME).unlink(), "", "model.safetensors not found"),
    "weights empty": (lambda f: (f / WEIGHTS_NAME).write_bytes(b""), WEIGHTS_NAME, "truncated or corrupt"),
    "weights cut in the header": (lambda f: _cut(f / WEIGHTS_NAME, lambda n: 12), WEIGHTS_NAME, "truncated or corrupt"),
    "weights cut in half": (lambda f: _cut(f / WEIGHTS_NAME, lambda n: n // 2), WEIGHTS_NAME, "truncated or corrupt"),
    "weights one byte short": (lambda f: _cut(f / WEIGHTS_NAME, lambda n: n - 1), WEIGHTS_NAME, "truncated or corrupt"),
    "weights garbage": (lambda f: (f / WEIGHTS_NAME).write_bytes(bytes(range(256)) * 8), WEIGHTS_NAME, "truncated or corrupt"),
    "weights of another model": (_other_model_weights, WEIGHTS_NAME, "does not fit the ranker its card describes (list, hidden size 32)"),
    "extra tensors garbage": (lambda f: (f / EXTRA_NAME).write_bytes(b"\x08" + b"\x00" * 7 + b"{"), EXTRA_NAME, "truncated or corrupt"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_FAULTS))
def test_a_broken_checkpoint_gives_a_clear_value_error(saved, tmp_path, case):
    folder = copy(saved, "a", tmp_path)
    LanguageRanker.load(folder)  # loads before the damage
    damage, file_name, needle = CHECKPOINT_FAULTS[case]
    damage(folder)
    assert_clear_value_error(lambda: LanguageRanker.load(folder), folder / file_name, needle)


def test_a_broken_registry_version_gives_a_clear_value_error(saved, tmp_path):
    registry = RankerRegistry(tmp_path / "reg")
    version = registry.add(LanguageRanker.load(saved / "a"), {}, True, "first")
    weights = registry.path(version) / WEIGHTS_NAME
    _cut(weights, lambda n: n - 100)
    assert_clear_value_error(lambda: registry.load(version), weights, "truncated or corrupt")


def test_a_checkpoint_of_another_base_model_is_refused_naming_both(saved, tmp_path):
    other = FeatureFingerprint(ModelFingerprint("other-model", "rev9", num_layers=4, hidden_size=32), LAYER)
    needle = "trained on synthetic-model (revision rev0), but the loaded model is other-model (revision rev9)"
    assert_clear_value_error(lambda: LanguageRanker.load(saved / "a", expected_fingerprint=other), saved / "a", needle)
    registry = RankerRegistry(tmp_path / "reg")
    registry.add(LanguageRanker.load(saved / "a"), {}, True, "first")
    assert_clear_value_error(lambda: registry.load("v0001", expected_fingerprint=other), registry.path("v0001"), needle)
    assert_clear_value_error(lambda: registry.load("v0001", expected_fingerprint=FeatureFingerprint(MODEL, LAYER + 1)),
                             registry.path("v0001"), "it reads layer 2, but features were captured at layer 3")


def test_the_registry_refuses_an_index_of_the_wrong_shape(tmp_path):
    root = tmp_path / "reg"
    root.mkdir()
    base = {"format": "language-ranker-registry", "format_version": 1}
    cases = [
        ("'profiles' must be an object", []),
        ("'versions' list", {"default": {"current": None}}),
        ("bad or repeated version entries", {"default": {"current": None, "versions": [{"version": "v0001"}, {"version": "v0001"}]}}),
        ("which is not one of its versions", {"default": {"current": "v0002", "versions": [{"version": "v0001"}]}}),
    ]
    for needle, profiles in cases:
        (root / "registry.json").write_text(json.dumps({**base, "profiles": profiles}))
        assert_clear_value_error(lambda: RankerRegistry(root), root / "registry.json", needle)
    (root / "registry.json").write_bytes(b"\xff\xfe garbage")
    assert_clear_value_error(lambda: RankerRegistry(root), root / "registry.json", "is not a readable registry index")


# --- corrupt feature stores -------------------------------------------------------------------------


def _store_card_edit(edit):
    def apply(folder):
        card = json.loads((folder / "card.json").read_text())
        edit(card)
        (folder / "card.json").write_text(json.dumps(card))
    return apply


def _only_instruction(folder):
    tensors = {"instruction": torch.zeros(4, 1, 32)}
    save_file(tensors, folder / "features.safetensors")


def _drop_candidate_rows(folder):
    import pandas as pd

    frame = pd.read_parquet(folder / "candidates.parquet")
    frame.iloc[:-1].to_parquet(folder / "candidates.parquet", index=False)


def _bad_problem_line(folder):
    lines = (folder / "problems.jsonl").read_text().splitlines()
    lines[1] = lines[1][:-5]
    (folder / "problems.jsonl").write_text("\n".join(lines) + "\n")


STORE_FAULTS = {
    "card garbage": (lambda f: (f / "card.json").write_text("{not json"), "card.json", "not a readable feature store card"),
    "card without layers": (_store_card_edit(lambda c: c.pop("layers")), "card.json", "missing field 'layers'"),
    "card of another model": (_store_card_edit(lambda c: c["model"].update(hidden_size=64)), "features.safetensors",
                              "'instruction' has 1 layers of width 32, but"),
    "card with more layers": (_store_card_edit(lambda c: c.update(layers=[1, 2])), "features.safetensors",
                              "says layers [1, 2] of synthetic-model (hidden size 32)"),
    "card bad sampling": (_store_card_edit(lambda c: c["sampling"].update(colour="red")), "card.json", "colour"),
    "features missing": (lambda f: (f / "features.safetensors").unlink(), "features.safetensors", "not found"),
    "features truncated": (lambda f: _cut(f / "features.safetensors", lambda n: n - 10), "features.safetensors", "truncated or corrupt"),
    "features without responses": (_only_instruction, "features.safetensors", "must hold 'responses' with 4 dimensions, got shape None"),
    "problems missing": (lambda f: (f / "problems.jsonl").unlink(), "problems.jsonl", "not found"),
    "problem line cut": (_bad_problem_line, "problems.jsonl", "line 2 is not a valid problem record"),
    "candidates truncated": (lambda f: _cut(f / "candidates.parquet", lambda n: n // 2), "candidates.parquet",
                             "not a readable parquet file"),
    "candidates missing a row": (_drop_candidate_rows, "", "is inconsistent: store has 23 candidate rows, expected 4 x 6"),
}


@pytest.mark.parametrize("case", list(STORE_FAULTS))
def test_a_broken_feature_store_gives_a_clear_value_error(saved, tmp_path, case):
    folder = copy(saved, "store", tmp_path)
    assert FeatureStore.load(folder).responses.shape == (4, 6, 1, 32)
    damage, file_name, needle = STORE_FAULTS[case]
    damage(folder)
    assert_clear_value_error(lambda: FeatureStore.load(folder), folder / file_name, needle)


# --- SIGKILL while a checkpoint is replaced ---------------------------------------------------------


@pytest.mark.parametrize("point, survivor", [("weights", "a"), ("swap", "a"), ("swapped", "b")])
def test_sigkill_while_overwriting_a_checkpoint_leaves_the_old_or_the_new_one(saved, tmp_path, point, survivor):
    target = copy(saved, "a", tmp_path)
    with child("overwrite_checkpoint", saved / "b", target, point) as process:
        assert_killed(process)
    # The path holds one whole checkpoint: the old one until the swap, the new one after it.
    assert (target / WEIGHTS_NAME).read_bytes() == (saved / survivor / WEIGHTS_NAME).read_bytes()
    LanguageRanker.load(target, expected_fingerprint=FINGERPRINT)
    # What the dead writer left is one hidden staging folder (the new files, or the old after the swap).
    leftovers = stale_staging(tmp_path)
    assert [p.name.startswith(".a.") for p in leftovers] == [True]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a", leftovers[0].name])


def test_without_an_atomic_exchange_a_failed_swap_puts_the_old_checkpoint_back(saved, tmp_path, monkeypatch):
    target = copy(saved, "a", tmp_path)
    monkeypatch.setattr(atomic, "_exchange", lambda first, second: False)  # as on a kernel or file system without it
    LanguageRanker.load(saved / "b").save(target)  # the move-aside path works ...
    assert (target / WEIGHTS_NAME).read_bytes() == (saved / "b" / WEIGHTS_NAME).read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["a"]

    real_replace, calls = atomic.os.replace, []

    def failing_second_replace(source, destination):
        calls.append(destination)
        if len(calls) == 2:  # the old folder is aside; putting the new one in place fails
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", failing_second_replace)
    with pytest.raises(OSError, match="Input/output error"):
        LanguageRanker.load(saved / "a").save(target)
    # ... and when it fails half-way, the old checkpoint is back at its path and nothing else is left.
    assert (target / WEIGHTS_NAME).read_bytes() == (saved / "b" / WEIGHTS_NAME).read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


# --- a read-only folder ---------------------------------------------------------------------------


@pytest.fixture
def read_only(saved, tmp_path):
    """A folder holding a checkpoint "a", a store "store" and a plain folder "plain", made read-only (0555)."""
    folder = tmp_path / "data"
    folder.mkdir()
    copy(saved, "a", folder)
    copy(saved, "store", folder)
    with atomic_folder(folder / "plain") as staging:
        (staging / "data.bin").write_bytes(b"old")
    set_mode(folder, 0o555)
    try:
        assert run_child("probe_write", folder, read_only=True) == {"result": {"errno": errno.EACCES}}
        yield folder
    finally:
        set_mode(folder, 0o755)


WRITERS = {  # writer: (target, scenario, its arguments), given the source folder `saved` and the data folder
    "checkpoint over the old one": lambda saved, folder: (folder / "a", "save_ranker", saved / "b", folder / "a"),
    "new checkpoint": lambda saved, folder: (folder / "new", "save_ranker", saved / "b", folder / "new"),
    "feature store over the old one": lambda saved, folder: (folder / "store", "save_store", saved / "store", folder / "store"),
    "atomic folder over the old one": lambda saved, folder: (folder / "plain", "write_folder", folder / "plain", 100),
    "atomic folder in a missing subfolder": lambda saved, folder: (folder / "sub" / "x", "write_folder", folder / "sub" / "x", 100),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_read_only_folder_fails_loudly_and_changes_nothing(saved, read_only, writer):
    before = tree_state(read_only)
    target, scenario, *args = WRITERS[writer](saved, read_only)
    error = run_child(scenario, *args, read_only=True)["error"]
    assert (error["type"], error["errno"]) == ("PermissionError", errno.EACCES)
    assert error["message"] == (f"[Errno 13] cannot write {target}: {read_only} is read-only (this process may not write "
                                "there) (Permission denied); the previous version, if any, is unchanged")
    assert tree_state(read_only) == before


# --- a full disk (RLIMIT_FSIZE) ---------------------------------------------------------------------


FULL_WRITERS = {  # writer: (target, scenario, its arguments, the file size limit last)
    "checkpoint": lambda saved, folder: (folder / "a", "save_ranker", saved / "b", folder / "a", 1024),
    "feature store": lambda saved, folder: (folder / "store", "save_store", saved / "store", folder / "store", 1024),
    "atomic folder": lambda saved, folder: (folder / "plain", "write_folder", folder / "plain", 100_000, 4096),
}


@pytest.mark.parametrize("writer", list(FULL_WRITERS))
def test_a_full_disk_fails_loudly_and_keeps_the_previous_files(saved, tmp_path, writer):
    folder = tmp_path / "data"
    folder.mkdir()
    copy(saved, "a", folder)
    copy(saved, "store", folder)
    with atomic_folder(folder / "plain") as staging:
        (staging / "data.bin").write_bytes(b"old")
    before = tree_state(folder)
    target, scenario, *args = FULL_WRITERS[writer](saved, folder)
    error = run_child(scenario, *args)["error"]
    assert (error["type"], error["errno"]) == ("OSError", errno.EFBIG)
    assert error["message"] == (f"[Errno 27] cannot write {target}: the disk is full or the file size limit was reached "
                                "(File too large); the previous version, if any, is unchanged")
    assert tree_state(folder) == before  # the old files, byte for byte, and no staging left behind
