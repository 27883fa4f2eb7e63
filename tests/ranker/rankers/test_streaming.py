"""Streaming training from a memory-mapped store: the same ranker as in memory, in bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.streaming_train import synthetic_part, write_synthetic_store
from ranker.capture.feature_store import FeatureStore
from ranker.rankers.store_training import should_stream, train_on_store
from ranker.rankers.training_groups import FeaturePool, StorePool, collate, sample_groups, store_queries

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """A small saved store (so it loads memory-mapped), with vote keys and log-probs that fusion can use."""
    store = synthetic_part(0, 24, 6, 16, seed=3, signal=0.8)
    labels = store.labels()
    store.candidates["vote_key"] = ["right" if y else ("wrong" if k % 2 else None)
                                    for y, k in zip(labels.flatten().tolist(), store.candidates["candidate_index"])]
    store.candidates["mean_logprob"] = (-1.0 + 0.3 * labels.flatten() + 0.2 * torch.randn(labels.numel())).numpy()
    return FeatureStore.load(store.save(tmp_path_factory.mktemp("store") / "store"))


def test_store_pool_groups_and_batches_equal_the_in_memory_pools(mapped):
    memory, pool = FeaturePool.from_queries(store_queries(mapped, 1)), StorePool.from_store(mapped, 1)
    assert torch.equal(pool.labels, memory.labels) and torch.equal(pool.offsets, memory.offsets)
    assert pool.summary() == memory.summary() and pool.query_ids == memory.query_ids
    a = sample_groups(memory, 4, 3, torch.Generator().manual_seed(5))
    b = sample_groups(pool, 4, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a.rows, b.rows) and torch.equal(a.query, b.query)
    picked = a.select(torch.tensor([7, 0, 3, 3, 20]))
    for x, y in zip(vars(collate(memory, picked)).values(), vars(collate(pool, picked)).values()):
        assert torch.equal(x, y)
    sub = pool.subset([5, 2])
    assert torch.equal(sub.features([1])[1][0], memory.responses[12:18])  # query 1 of the subset is store problem 2


def test_norm_fit_reads_every_response_when_they_fit_else_evenly_spaced_prompts(mapped):
    pool = StorePool.from_store(mapped)
    _, every = pool.norm_fit_features()
    assert torch.equal(every, FeaturePool.from_queries(store_queries(mapped)).responses)
    _, sample = pool.norm_fit_features(max_bytes=4 * 6 * 16 * 4)  # room for 4 of the 24 prompts
    assert torch.equal(sample, torch.cat([pool.features([p])[1][0] for p in (0, 8, 15, 23)]))


@pytest.mark.parametrize("kind", ["list", "point"])
def test_streaming_gives_the_in_memory_ranker_with_fusion_and_calibration(mapped, kind, tmp_path):
    val = mapped.subset(list(range(8)))
    args = dict(kind=kind, epochs=2, fusion_folds=2, seed=1, val_store=val)
    memory = train_on_store(mapped, 1, streaming=False, **args)
    streamed = train_on_store(mapped, 1, streaming=True, **args)
    assert streamed.training_data_.pop("streamed") is True
    assert streamed.training_data_ == memory.training_data_
    for (name, a), b in zip(memory.model_.state_dict().items(), streamed.model_.state_dict().values()):
        assert torch.equal(a, b), name  # bit for bit: the same groups, batches and normalisation
    assert memory.fused and streamed.fusion.weights == memory.fusion.weights  # the fold rankers streamed alike
    assert streamed.fusion_report_ == memory.fusion_report_
    assert streamed.calibration_ == memory.calibration_
    assert streamed.train_result_.losses == memory.train_result_.losses
    assert streamed.train_result_.val_metrics == memory.train_result_.val_metrics
    assert torch.equal(torch.stack(streamed.score_queries(StorePool.from_store(mapped))), memory.score_store(mapped))


def test_only_large_memory_mapped_stores_stream_by_default(mapped, monkeypatch):
    import ranker.rankers.store_training as store_training

    assert not should_stream(mapped)
    monkeypatch.setattr(store_training, "STREAM_BYTES", 1000)
    assert should_stream(mapped) and not should_stream(synthetic_part(0, 24, 6, 16, seed=3))  # in memory: never


RSS_LIMIT_MB = 160  # peak RSS above the resident size before training, for a store of about 520 MB on disk


def test_a_million_candidate_rows_train_in_bounded_memory(tmp_path):
    # 15,625 prompts x 64 candidates = 1M rows at H = 256: 520 MB of float16 shards, 1 GB as float32.
    store = write_synthetic_store(tmp_path / "large", 15_625, 64, 256, seed=0)
    val = write_synthetic_store(tmp_path / "val", 256, 64, 256, seed=1)
    disk_mb = sum(f.stat().st_size for f in store.rglob("*.safetensors")) / 2**20
    assert disk_mb > 3 * RSS_LIMIT_MB
    code = ("import json, sys; from bench.streaming_train import measure_training; "
            "print(json.dumps(measure_training(sys.argv[1], True, 'list', 300, sys.argv[2])))")
    # glibc's default mmap threshold grows to the largest block freed, after which freed 8-16 MB
    # temporaries (a score chunk, Platt's float64 copies) stay on the heap: RSS then counts memory
    # that holds no data. A fixed threshold returns them, so RSS measures what training holds.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    done = subprocess.run([sys.executable, "-c", code, str(store), str(val)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])
    print(run)
    assert run["candidate_rows"] == 1_000_000 and run["steps"] == 300
    assert run["peak_increase_mb"] < RSS_LIMIT_MB, run
    assert run["loss_last"] < 0.8 * run["loss_first"], run  # it learnt (a KL over groups of 8 keeps a floor)
    assert run["val"]["best_of_n"] > run["val"]["random"] + 0.2, run
    assert np.isfinite(run["train_candidates_per_s"]) and run["train_candidates_per_s"] > 0
