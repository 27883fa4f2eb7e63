"""Building a feature store on the tiny model, and its save/load round trip."""

import re

import pytest
import torch

from ranker.capture.feature_store import FeatureStore
from ranker.capture.sampling import SamplingConfig
from ranker.capture.store_builder import build_store
from ranker.tasks import Problem, check, get_family


@pytest.fixture(scope="module")
def store(tiny_base):
    problems = get_family("arithmetic").generate(5, seed=0) + get_family("comparison").generate(2, seed=0)
    config = SamplingConfig(num_candidates=4, max_new_tokens=8, seed=0)
    return build_store(tiny_base, problems, config, layers=[1, 3], prompts_per_call=3)


def test_store_shapes_and_labels(tiny_base, store):
    assert store.instruction.shape == (7, 2, tiny_base.hidden_size)
    assert store.responses.shape == (7, 4, 2, tiny_base.hidden_size)
    assert store.layers == (1, 3)
    assert store.labels().shape == (7, 4)
    for row in store.candidates.itertuples():
        assert row.correct == check(store.problems[row.problem_index], row.text)
    assert store.families == ["arithmetic"] * 5 + ["comparison"] * 2


def test_store_features_match_a_direct_sample(tiny_base, store):
    """The store holds exactly what sampling returned for the same call and seed."""
    from ranker.capture.sampling import sample_candidates_batch

    results = sample_candidates_batch(tiny_base, [p.prompt for p in store.problems[:3]], SamplingConfig(num_candidates=4, max_new_tokens=8, seed=0), [1, 3])
    assert torch.equal(store.responses[:3], torch.stack([r.response_features for r in results]))
    instruction, responses = store.features(3)
    assert torch.equal(responses[:3], torch.stack([r.response_features[:, 1] for r in results]))


def test_round_trip(store, tmp_path):
    store.save(tmp_path / "store")
    loaded = FeatureStore.load(tmp_path / "store")
    assert loaded.problems == store.problems
    assert loaded.layers == store.layers and loaded.model == store.model and loaded.sampling == store.sampling
    assert loaded.candidates.equals(store.candidates)
    # float16 on disk: within float16 rounding of the captured float32 features
    torch.testing.assert_close(loaded.responses, store.responses, rtol=1e-3, atol=1e-3)
    sub = loaded.subset([6, 0])
    assert sub.problems == [store.problems[6], store.problems[0]]
    assert sub.candidates["problem_index"].tolist() == [0] * 4 + [1] * 4
    assert sub.candidates["text"].tolist() == store.candidates["text"].tolist()[24:28] + store.candidates["text"].tolist()[:4]


def test_bad_inputs_are_named(tiny_base, tmp_path):
    with pytest.raises(ValueError, match="checker 'none'"):
        build_store(tiny_base, [Problem("hi", "x", "none")], SamplingConfig(num_candidates=2, max_new_tokens=2))
    with pytest.raises(ValueError, match="not a feature store"):
        FeatureStore.load(tmp_path)


def test_first_candidates_keeps_the_first_k_of_every_problem(store):
    cut = store.first_candidates(2)
    assert cut.num_candidates == 2 and len(cut.problems) == len(store.problems)
    assert torch.equal(cut.responses, store.responses[:, :2])
    assert torch.equal(cut.labels(), store.labels()[:, :2])
    assert cut.column("text") == [texts[:2] for texts in store.column("text")]
    with pytest.raises(ValueError, match="k must be"):
        store.first_candidates(store.num_candidates + 1)


def test_first_per_family_keeps_the_first_k_prompts_of_every_family_in_order():
    from pathlib import Path

    store = FeatureStore.load(Path(__file__).resolve().parents[2] / "assets" / "frozen_suite" / "train")
    cut = store.first_per_family(3)
    families = sorted(set(store.families))
    assert len(cut.problems) == 3 * len(families)
    for family in families:
        first = [p.prompt for p in store.problems if p.family == family][:3]
        assert [p.prompt for p in cut.problems if p.family == family] == first
    order = [p.prompt for p in store.problems]
    assert [order.index(p.prompt) for p in cut.problems] == sorted(order.index(p.prompt) for p in cut.problems)
    assert len(store.first_per_family(1000).problems) == len(store.problems)
    assert store.first_per_family(None) is store
    with pytest.raises(ValueError, match="k must be"):
        store.first_per_family(0)


# --- merging the parts of a distributed build ---------------------------------------------------------


def synthetic_store(num_problems: int, n: int = 3, layers: tuple = (1, 2), hidden: int = 8, seed: int = 0,
                    first_problem: int = 0, sampling: SamplingConfig | None = None) -> FeatureStore:
    """A store of random features whose problems are numbered from `first_problem` (so parts differ)."""
    import pandas as pd

    from ranker.capture.fingerprint import ModelFingerprint

    gen = torch.Generator().manual_seed(seed)
    rows = [{"problem_index": p, "family": "synthetic", "candidate_index": k, "text": f"{first_problem + p}-{k}",
             "finish_reason": "eos", "num_tokens": 1 + k, "sum_logprob": -float(k), "mean_logprob": -float(k) / (1 + k),
             "correct": (p + k) % 2 == 0, "vote_key": str(k % 2) if k else None}
            for p in range(num_problems) for k in range(n)]
    return FeatureStore(
        problems=[Problem(f"question {first_problem + p}", "1", "numeric", family="synthetic") for p in range(num_problems)],
        candidates=pd.DataFrame(rows),
        instruction=torch.randn(num_problems, len(layers), hidden, generator=gen),
        responses=torch.randn(num_problems, n, len(layers), hidden, generator=gen),
        layers=layers,
        model=ModelFingerprint("synthetic", "v1", 4, hidden),
        sampling=sampling or SamplingConfig(num_candidates=n, seed=7),
        info={"build_seconds": 1.5, "generation_seconds": 1.0},
    )


def saved_parts(tmp_path, sizes=(3, 1, 4), **kwargs):
    parts, first = [], 0
    for index, size in enumerate(sizes):
        part = synthetic_store(size, seed=index, first_problem=first, **kwargs)
        parts.append(part.save(tmp_path / f"part-{index}"))
        first += size
    return parts


def test_merge_parts_reads_as_the_concatenation_of_the_parts(tmp_path):
    import os

    import pandas as pd

    paths = saved_parts(tmp_path)
    parts = [FeatureStore.load(path) for path in paths]
    merged_path = FeatureStore.merge_parts(paths, tmp_path / "merged")
    merged = FeatureStore.load(merged_path)
    assert merged.problems == [p for part in parts for p in part.problems]
    expected = pd.concat([part.candidates.assign(problem_index=part.candidates["problem_index"] + offset)
                          for part, offset in zip(parts, (0, 3, 4))], ignore_index=True)
    assert merged.candidates.equals(expected)
    assert merged.candidates["problem_index"].tolist() == [p for p in range(8) for _ in range(3)]
    assert torch.equal(merged.instruction, torch.cat([part.instruction for part in parts]))
    assert torch.equal(merged.responses, torch.cat([part.responses for part in parts]))
    assert merged.layers == parts[0].layers and merged.model == parts[0].model and merged.sampling == parts[0].sampling
    assert merged.info["build_seconds"] == 4.5 and merged.info["generation_seconds"] == 3.0
    # The parts' feature files are the merged store's shards, linked, not copied.
    card = __import__("json").loads((merged_path / "card.json").read_text())
    assert [(s["start"], s["stop"]) for s in card["shards"]] == [(0, 3), (3, 4), (4, 8)]
    for shard, part in zip(card["shards"], paths):
        assert os.path.samefile(merged_path / shard["file"], part / "features.safetensors")
    # A merged store merges again (its shards are linked on).
    again = FeatureStore.load(FeatureStore.merge_parts([merged_path, paths[0]], tmp_path / "again"))
    assert torch.equal(again.responses, torch.cat([merged.responses, parts[0].responses]))


@pytest.mark.parametrize("field, change, needle", [
    ("layers", {"layers": (1, 3)}, "has layers [1, 3]"),
    ("N", {"n": 4, "sampling": SamplingConfig(num_candidates=4, seed=7)}, "has num_candidates 4"),
    ("hidden size", {"hidden": 16}, "has model hidden_size 16"),
    ("sampling", {"sampling": SamplingConfig(num_candidates=3, seed=7, temperature=0.5)}, "has sampling temperature 0.5"),
])
def test_merge_parts_refuses_parts_of_another_build(tmp_path, field, change, needle):
    good = saved_parts(tmp_path, sizes=(2,))[0]
    other = synthetic_store(2, **change).save(tmp_path / "other")
    with pytest.raises(ValueError, match=re.escape(needle)) as error:
        FeatureStore.merge_parts([good, other], tmp_path / "merged")
    assert str(other) in str(error.value)
    assert not (tmp_path / "merged").exists()


def test_merge_parts_accepts_another_seed_and_keeps_the_first(tmp_path):
    first = synthetic_store(2, sampling=SamplingConfig(num_candidates=3, seed=7)).save(tmp_path / "a")
    second = synthetic_store(2, sampling=SamplingConfig(num_candidates=3, seed=8)).save(tmp_path / "b")
    assert FeatureStore.load(FeatureStore.merge_parts([first, second], tmp_path / "m")).sampling.seed == 7


# --- format version 2: shards, memory-mapped ----------------------------------------------------------


FROZEN_TRAIN = __import__("pathlib").Path(__file__).resolve().parents[2] / "assets" / "frozen_suite" / "train"


def test_a_version_1_store_loads_memory_mapped_with_the_values_it_always_had(tmp_path):
    import json

    from safetensors.torch import load_file

    assert "format_version" not in json.loads((FROZEN_TRAIN / "card.json").read_text())  # a version-1 store
    on_disk = load_file(FROZEN_TRAIN / "features.safetensors")
    store = FeatureStore.load(FROZEN_TRAIN)
    assert store.is_memory_mapped
    # Exactly what the old reader gave: the float16 file upcast to float32.
    assert store.instruction.dtype == torch.float32
    assert torch.equal(store.instruction, on_disk["instruction"].float())
    assert torch.equal(store.responses, on_disk["responses"].float())
    # Saved whole, it keeps its one file (a hard link) under a version-2 card.
    saved = store.save(tmp_path / "again")
    card = json.loads((saved / "card.json").read_text())
    assert card["format_version"] == 2 and card["shards"] == [{"file": "features.safetensors", "start": 0, "stop": 150,
                                                              "dtype": "float16"}]
    assert (saved / "features.safetensors").read_bytes() == (FROZEN_TRAIN / "features.safetensors").read_bytes()
    assert torch.equal(FeatureStore.load(saved).responses, store.responses)


def test_feature_rows_and_batches_equal_the_rows_of_the_full_tensors(tmp_path):
    paths = saved_parts(tmp_path, sizes=(3, 2, 4))
    merged = FeatureStore.load(FeatureStore.merge_parts(paths, tmp_path / "merged"))
    full = FeatureStore.load(tmp_path / "merged")
    instruction, responses = full.features(2)  # materialised: the reference
    rows = [7, 0, 4, 4, 2]  # across shards, out of order, repeated
    got_instruction, got_responses = merged.feature_rows(2, rows)
    assert merged.is_memory_mapped and merged._instruction is None and merged._responses is None  # nothing materialised
    assert got_instruction.shape == (5, 8) and got_responses.shape == (5, 3, 8) and got_responses.dtype == torch.float32
    assert torch.equal(got_instruction, instruction[rows]) and torch.equal(got_responses, responses[rows])
    batches = list(merged.iter_problem_batches(2, 4, order=[8, 1, 3, 5, 0, 2, 4, 6, 7]))
    assert [b.problem_indices for b in batches] == [[8, 1, 3, 5], [0, 2, 4, 6], [7]]
    assert torch.equal(torch.cat([b.responses for b in batches]), responses[[8, 1, 3, 5, 0, 2, 4, 6, 7]])
    assert torch.equal(torch.cat([b.labels for b in batches]), full.labels()[[8, 1, 3, 5, 0, 2, 4, 6, 7]])
    # Views of a memory-mapped store stay memory-mapped and give the same values as views of the tensors.
    in_memory = FeatureStore(full.problems, full.candidates, full.instruction, full.responses, full.layers, full.model,
                             full.sampling)
    for view, reference in ((merged.subset([6, 1, 2]), in_memory.subset([6, 1, 2])),
                            (merged.first_candidates(2), in_memory.first_candidates(2)),
                            (merged.select_layers([2]), in_memory.select_layers([2])),
                            (merged.subset([5, 3]).first_candidates(1).select_layers([2, 1]),
                             in_memory.subset([5, 3]).first_candidates(1).select_layers([2, 1]))):
        assert view.is_memory_mapped and view.candidates.equals(reference.candidates)
        assert torch.equal(view.feature_rows(None, [1, 0])[1], reference.feature_rows(None, [1, 0])[1])
        assert torch.equal(view.responses, reference.responses) and torch.equal(view.instruction, reference.instruction)
    with pytest.raises(ValueError, match="problem index 9 is out of range"):
        merged.feature_rows(1, [0, 9])
    with pytest.raises(ValueError, match="layer 5 is not in this store"):
        merged.feature_rows(5, [0])


def test_a_large_view_is_saved_in_shards_without_changing_a_value(tmp_path, monkeypatch):
    import json

    from ranker.capture import feature_store

    merged = FeatureStore.load(FeatureStore.merge_parts(saved_parts(tmp_path), tmp_path / "merged"))
    view = merged.subset([7, 6, 5, 4, 3, 2, 1])
    monkeypatch.setattr(feature_store, "SHARD_BYTES", 3 * (1 + 3) * 2 * 8 * 2)  # 3 prompts of float16 a shard
    saved = view.save(tmp_path / "view")
    card = json.loads((saved / "card.json").read_text())
    assert [(s["file"], s["start"], s["stop"]) for s in card["shards"]] == [
        ("features/00000.safetensors", 0, 3), ("features/00001.safetensors", 3, 6), ("features/00002.safetensors", 6, 7)]
    again = FeatureStore.load(saved)
    assert again.problems == view.problems and again.candidates.equals(view.candidates)
    assert torch.equal(again.responses, view.responses) and torch.equal(again.instruction, view.instruction)


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep(len(data))])


@pytest.mark.parametrize("damage, needle", [
    (lambda p: _truncate(p, lambda n: n - 10), "truncated or corrupt"),
    (lambda p: _truncate(p, lambda n: 4), "less than its 8-byte header length"),
    (lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"), "header is not JSON"),
    (lambda p: p.unlink(), "not found"),
])
def test_a_damaged_shard_is_a_value_error_naming_its_file(tmp_path, damage, needle):
    merged = FeatureStore.merge_parts(saved_parts(tmp_path), tmp_path / "merged")
    shard = merged / "features" / "00001.safetensors"
    shard.unlink()  # a link to the part's file: damage a copy of its own
    shard.write_bytes((tmp_path / "part-1" / "features.safetensors").read_bytes())
    damage(shard)
    with pytest.raises(ValueError, match=re.escape(needle)) as error:
        FeatureStore.load(merged)
    assert str(shard) in str(error.value)


def test_a_card_whose_shards_leave_a_gap_is_refused(tmp_path):
    import json

    merged = FeatureStore.merge_parts(saved_parts(tmp_path), tmp_path / "merged")
    card = json.loads((merged / "card.json").read_text())
    del card["shards"][1]
    (merged / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="shard 00002.safetensors starts at prompt 4, expected 3"):
        FeatureStore.load(merged)


RSS_PROBE = """
import json, sys
import pandas, torch
from ranker.capture.feature_store import FeatureStore

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

def store_pages(folder):
    # Resident bytes of the mappings of files under `folder` (the store's shards), from /proc/self/smaps.
    resident, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line: address range, perms, offset, dev, inode[, path]
            inside = len(fields) >= 6 and fields[5].startswith(folder)
        elif inside and fields[0] == "Rss:":
            resident += int(fields[1]) * 1024
    return resident

# One thread: the thread pool's malloc arenas make the anonymous memory vary from run to run.
torch.set_num_threads(1)
pandas.read_parquet(sys.argv[1] + "/candidates.parquet")  # pyarrow sets up its memory pool on its first read
open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) here
base = status("VmRSS")
store = FeatureStore.load(sys.argv[1])
loaded = status("VmHWM") - base
total, file_pages = 0.0, 0
for batch in store.iter_problem_batches(None, 16):
    total += float(batch.responses.sum(dtype=torch.float64))
    file_pages = max(file_pages, store_pages(sys.argv[1]))  # the store's pages still resident after a batch
print(json.dumps({"load": loaded, "iterate": status("VmHWM") - base, "file_pages": file_pages, "total": total}))
"""


def test_opening_a_store_reads_no_features_and_streaming_it_stays_bounded(tmp_path):
    """A store of about 200 MB: opening it adds almost nothing to RSS; reading one layer of it all, 16 prompts
    at a time, peaks far below its size (the pages read are dropped from the process after each batch)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    parts, expected = [], 0.0
    for index in range(8):  # 256 prompts x 64 candidates x 3 layers x 2048, float16
        part = synthetic_store(32, n=64, layers=(1, 2, 3), hidden=2048, seed=index, first_problem=32 * index)
        expected += float(part.responses[:, :, 0].half().double().sum())
        parts.append(part.save(tmp_path / f"part-{index}"))
        del part
    merged = FeatureStore.merge_parts(parts, tmp_path / "merged")
    size = sum(path.stat().st_size for path in (merged / "features").iterdir())
    assert 190e6 < size < 220e6
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", RSS_PROBE, str(merged)], capture_output=True, text=True, cwd=root,
                            env={**__import__("os").environ, "PYTHONPATH": str(root),
                                 # a fixed threshold: glibc's moving one keeps freed batch buffers on the heap at random
                                 "MALLOC_MMAP_THRESHOLD_": "1048576"}, timeout=120)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["total"] == pytest.approx(expected, rel=1e-9)  # it did read every feature of layer 1
    print(f"store {size / 1e6:.0f} MB: RSS +{measured['load'] / 1e6:.1f} MB to open it, peak "
          f"+{measured['iterate'] / 1e6:.1f} MB to read it all in batches, {measured['file_pages'] / 1e6:.1f} MB of its pages kept")
    assert measured["load"] < 0.05 * size, measured
    batch_bytes = 16 * 64 * 3 * 2048 * 2  # one batch of prompts, every layer (reading one layer touches its pages)
    assert measured["file_pages"] < 2 * batch_bytes, measured  # without dropping the pages read, this is the store's size
    assert measured["iterate"] < 0.35 * size, measured
