"""A build split over processes, or resumed after a crash, writes the store of a one-process build.

Every build here runs with one CPU thread per process: floating-point sums depend on the thread
count, and the stores are compared bit for bit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ranker.capture import distributed_build
from ranker.capture.distributed_build import (
    build_store_sharded,
    chunk_folder,
    merge_when_complete,
    parts_folder,
    plan_parts,
    write_parts,
)
from ranker.capture.feature_store import FeatureStore
from ranker.capture.sampling import SamplingConfig
from ranker.capture.store_builder import build_store
from ranker.cli import main
from ranker.core.training_loop import num_threads
from ranker.tasks import get_family
from tests.ranker.test_cli import save_tiny_model, write_digit_tasks

ROOT = Path(__file__).resolve().parents[3]
N, TRAIN, TEST, PER_CHUNK = 3, 7, 2, 2  # train: 4 chunks, rank 0 gets 0 and 2, rank 1 gets 1 and 3
# Runs one rank of `torchrun ... this_script build ...`; rank 1 dies by SIGKILL once its first chunk is saved.
KILL_RANK_ONE = """
import os, signal, sys
from ranker.capture import distributed_build
from ranker.cli import main

write_chunk = distributed_build.write_chunk

def write_then_die(*args, **kwargs):
    path = write_chunk(*args, **kwargs)
    if os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return path

distributed_build.write_chunk = write_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    return save_tiny_model(root / "tiny-model"), write_digit_tasks(root / "digits.jsonl", TRAIN + TEST)


def build_args(inputs, out) -> list[str]:
    model, tasks = inputs
    return ["build", "--tasks-file", str(tasks), "--n-train", str(TRAIN), "--n-test", str(TEST), "--n", str(N),
            "--max-new-tokens", "6", "--prompts-per-call", str(PER_CHUNK), "--layers", "1,0.5", "--model", str(model),
            "--out", str(out)]


def torchrun(script: list[str], args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    """Two CPU processes on a free port (--standalone), one thread each; killed if it hangs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *script, "--", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_same_store(store: FeatureStore, reference: FeatureStore) -> None:
    assert store.problems == reference.problems
    assert store.candidates.equals(reference.candidates)  # texts, log-probs, labels, problem_index
    assert torch.equal(store.instruction, reference.instruction) and torch.equal(store.responses, reference.responses)
    assert store.layers == reference.layers and store.sampling == reference.sampling and store.model == reference.model


def assert_no_gaps_or_duplicates(store: FeatureStore, num_problems: int, n: int = N) -> None:
    """problem_index is 0..P-1, each n times, in order, with candidates 0..n-1 each."""
    assert store.candidates["problem_index"].tolist() == [i for i in range(num_problems) for _ in range(n)]
    assert store.candidates["candidate_index"].tolist() == list(range(n)) * num_problems


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """OUT of a one-process `build` in this process: {"train": store, "test": store}."""
    out = tmp_path_factory.mktemp("one-process")
    with num_threads(1):
        assert main(build_args(inputs, out)) == 0
    assert not parts_folder(out / "train").exists() and not parts_folder(out / "test").exists()
    return {split: FeatureStore.load(out / split) for split in ("train", "test")}


def test_the_one_process_build_is_build_store_saved(inputs, reference):
    from ranker.capture.base_model import load_base_model

    train = reference["train"]
    with num_threads(1):
        memory = build_store(load_base_model(str(inputs[0])), train.problems, train.sampling, [1, 0.5],
                             prompts_per_call=PER_CHUNK)
    assert memory.candidates.equals(train.candidates)
    assert torch.equal(memory.responses.half().float(), train.responses)  # float16 on disk
    assert_no_gaps_or_duplicates(train, TRAIN)


def test_two_torchrun_processes_build_the_one_process_store(inputs, reference, tmp_path):
    result = torchrun(["-m", "ranker"], build_args(inputs, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    for split in ("train", "test"):
        assert_same_store(FeatureStore.load(tmp_path / split), reference[split])
        assert not parts_folder(tmp_path / split).exists()
    assert result.stdout.count(f"train: {TRAIN} prompts x N={N}") == 1  # only the main process reports
    assert "on 2 processes" in result.stdout


def test_a_killed_rank_resumes_with_no_gaps_no_duplicates_and_no_resampling(inputs, reference, tmp_path, monkeypatch):
    script = tmp_path / "kill_rank_one.py"
    script.write_text(KILL_RANK_ONE)
    out = tmp_path / "out"
    result = torchrun([str(script)], build_args(inputs, out))
    assert result.returncode != 0  # torchrun reports the killed rank and stops the other
    parts = parts_folder(out / "train")
    assert (chunk_folder(parts, 1) / "card.json").is_file() and not chunk_folder(parts, 3).exists()
    assert not (out / "train" / "card.json").exists()
    done = {chunk: (chunk_folder(parts, chunk) / "features.safetensors").stat().st_ino
            for chunk in range(4) if (chunk_folder(parts, chunk) / "card.json").is_file()}
    # What a write killed halfway leaves: a staging folder with a truncated file.
    (parts / ".chunk-000003.k1lled00.tmp").mkdir()
    (parts / ".chunk-000003.k1lled00.tmp" / "features.safetensors").write_bytes(b"\x00" * 10)

    written = []
    write_chunk = distributed_build.write_chunk

    def counting_write_chunk(base, job, chunk):
        written.append((job.out.name, chunk))
        return write_chunk(base, job, chunk)

    monkeypatch.setattr(distributed_build, "write_chunk", counting_write_chunk)
    with num_threads(1):  # resumed by one process: the world size may change between runs
        assert main(build_args(inputs, out)) == 0
    assert sorted(chunk for split, chunk in written if split == "train") == sorted(set(range(4)) - set(done))
    train = FeatureStore.load(out / "train")
    assert_same_store(train, reference["train"])
    assert_same_store(FeatureStore.load(out / "test"), reference["test"])
    assert_no_gaps_or_duplicates(train, TRAIN)
    # merge_parts hard-links each chunk's features: the chunks written before the crash are the same files.
    for chunk, inode in done.items():
        assert (out / "train" / "features" / f"{chunk:05d}.safetensors").stat().st_ino == inode
    assert not parts.exists()


class Interrupt(Exception):
    pass


def stop_after(problems: int):
    def progress(done: int, total: int) -> None:
        if done >= problems:
            raise Interrupt(f"stopped after {done} of {total} problems")

    return progress


@pytest.fixture(scope="module")
def problems():
    return get_family("arithmetic").generate(5, seed=0) + get_family("comparison").generate(2, seed=0)


def test_an_interrupted_library_build_resumes_its_missing_chunks_only(tiny_base, problems, tmp_path):
    config = SamplingConfig(num_candidates=2, max_new_tokens=5, seed=3)
    out = tmp_path / "store"
    with pytest.raises(Interrupt):
        build_store_sharded(tiny_base, problems, config, [1, 3], out, prompts_per_chunk=2, progress=stop_after(4))
    parts = parts_folder(out)
    assert sorted(p.name for p in parts.iterdir()) == ["chunk-000000", "chunk-000001", "plan.json"]
    before = {c: (chunk_folder(parts, c) / "card.json").stat().st_ino for c in (0, 1)}
    staging = parts / ".chunk-000002.abcd1234.tmp"
    staging.mkdir()
    (staging / "card.json").write_text("{")

    job = plan_parts(tiny_base, problems, config, [1, 3], out, prompts_per_chunk=2)
    assert job.todo == [2, 3]
    write_parts(tiny_base, job)
    assert not staging.exists()
    assert {c: (chunk_folder(parts, c) / "card.json").stat().st_ino for c in (0, 1)} == before  # not rewritten
    assert merge_when_complete(job) == out
    store = FeatureStore.load(out)
    expected = build_store(tiny_base, problems, config, [1, 3], prompts_per_call=2)
    assert store.candidates.equals(FeatureStore.load(expected.save(tmp_path / "expected")).candidates)
    assert torch.equal(store.responses, expected.responses.half().float())
    assert_no_gaps_or_duplicates(store, len(problems), n=2)


def test_a_resume_with_another_plan_is_refused_naming_the_field(tiny_base, problems, tmp_path, capsys, inputs):
    config = SamplingConfig(num_candidates=2, max_new_tokens=5, seed=3)
    out = tmp_path / "store"
    with pytest.raises(Interrupt):
        build_store_sharded(tiny_base, problems, config, [1, 3], out, prompts_per_chunk=2, progress=stop_after(2))
    other_seed = SamplingConfig(num_candidates=2, max_new_tokens=5, seed=4)
    with pytest.raises(ValueError, match=r"sampling\.seed \(plan 3, now 4\).*delete .*store\.parts"):
        build_store_sharded(tiny_base, problems, other_seed, [1, 3], out, prompts_per_chunk=2)
    with pytest.raises(ValueError, match=r"prompts_per_chunk \(plan 2, now 3\)"):
        build_store_sharded(tiny_base, problems, config, [1, 3], out, prompts_per_chunk=3)
    with pytest.raises(ValueError, match=r"problems \(a different list"):
        build_store_sharded(tiny_base, problems[::-1], config, [1, 3], out, prompts_per_chunk=2)
    with pytest.raises(ValueError, match=r"layers \(plan \[1, 3\], now \[2\]\)"):
        build_store_sharded(tiny_base, problems, config, [2], out, prompts_per_chunk=2)
    assert sorted(p.name for p in parts_folder(out).iterdir()) == ["chunk-000000", "plan.json"]  # untouched

    # The CLI reports it as an error, not a traceback.
    cli_out = tmp_path / "cli"
    with num_threads(1), pytest.MonkeyPatch.context() as patch:
        patch.setattr(distributed_build, "write_chunk", lambda *args: (_ for _ in ()).throw(Interrupt()))
        with pytest.raises(Interrupt):
            main(build_args(inputs, cli_out))
    assert main(build_args(inputs, cli_out) + ["--seed", "1"]) == 2
    assert "sampling.seed (plan 0, now 1)" in capsys.readouterr().err
