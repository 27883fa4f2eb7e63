"""Training on a feature store larger than memory: throughput and peak memory, streaming and in memory.

Writes a synthetic memory-mapped store (P prompts x N candidates at one layer of width H, float16
shards, written part by part with `FeatureStore.merge_parts` so it is never whole in memory),
then trains a ranker on it in a fresh child process per run and reports, per run: candidates per
second while training, candidates per second while scoring every candidate for the calibration,
and the peak RSS above the process's resident size before training, against the store's size.
The streaming run is on the large store; a smaller store is trained both streaming and in
memory, side by side. The synthetic signal: a correct response leans towards its instruction.

    python bench/streaming_train.py                          # 1M candidate rows, H = 576 (about 1.2 GB)
    python bench/streaming_train.py --problems 2000 --hidden-size 64 --steps 50     # a quick look

Prints one line per run, and writes every run's figures to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.capture.feature_store import FeatureStore  # noqa: E402
from ranker.capture.fingerprint import ModelFingerprint  # noqa: E402
from ranker.capture.sampling import SamplingConfig  # noqa: E402
from ranker.tasks import Problem  # noqa: E402

PART_BYTES = 64 << 20  # float32 features of one part held in memory while writing the store


def synthetic_part(first: int, num_problems: int, num_candidates: int, hidden_size: int, seed: int,
                   signal: float = 0.5) -> FeatureStore:
    """An in-memory store of problems first .. first + num_problems - 1 (seeded per part).

    instruction i ~ N(0, I); response r_k = noise + signal * y_k * i with y_k ~ Bernoulli(0.3),
    so correctness is readable only against the instruction.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + first)
    labels = torch.rand(num_problems, num_candidates, generator=gen) < 0.3
    instruction = torch.randn(num_problems, 1, hidden_size, generator=gen)
    responses = torch.randn(num_problems, num_candidates, 1, hidden_size, generator=gen)
    responses += signal * labels[:, :, None, None].float() * instruction[:, None]
    n = num_problems * num_candidates
    candidates = pd.DataFrame({
        "problem_index": torch.arange(num_problems).repeat_interleave(num_candidates).numpy(),
        "family": ["synthetic"] * n, "candidate_index": torch.arange(num_candidates).repeat(num_problems).numpy(),
        "text": [""] * n, "correct": labels.flatten().numpy(), "vote_key": [None] * n,
        "mean_logprob": (-1.0 + 0.1 * torch.randn(n, generator=gen)).numpy(),
    })
    problems = [Problem(f"synthetic {first + p}", "1", "numeric", (), "synthetic") for p in range(num_problems)]
    return FeatureStore(problems, candidates, instruction, responses, layers=(1,),
                        model=ModelFingerprint("synthetic", "none", 2, hidden_size),
                        sampling=SamplingConfig(num_candidates=num_candidates))


def write_synthetic_store(path: str | Path, num_problems: int, num_candidates: int, hidden_size: int,
                          seed: int = 0) -> Path:
    """Write a synthetic memory-mappable store at `path`, part by part (PART_BYTES of features in memory at a time)."""
    path = Path(path)
    per_problem = (num_candidates + 1) * hidden_size * 4
    part_problems = max(1, PART_BYTES // per_problem)
    parts_dir = Path(tempfile.mkdtemp(prefix="parts-", dir=path.parent))
    try:
        parts = []
        for number, first in enumerate(range(0, num_problems, part_problems)):
            count = min(part_problems, num_problems - first)
            parts.append(synthetic_part(first, count, num_candidates, hidden_size, seed).save(parts_dir / f"{number:05d}"))
        FeatureStore.merge_parts(parts, path)
    finally:
        shutil.rmtree(parts_dir)  # the merged store hard-links the parts' shards: their bytes stay
    return path


def _status_kb(field: str) -> int:
    """A field of /proc/self/status (VmRSS, VmHWM) in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"/proc/self/status has no field {field!r}")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def measure_training(store_path: str | Path, streaming: bool, kind: str = "list", steps: int = 300,
                     val_path: str | Path | None = None, fusion: bool = False, seed: int = 0) -> dict:
    """Train on the store in this process and return the run's figures (call it in a fresh process).

    The peak is VmHWM above VmRSS once the store is open and a short warm-up run has loaded
    every code path (so imports and allocator pools are not counted as training memory).
    """
    torch.set_num_threads(1)
    from ranker.rankers.store_training import feature_bytes, train_on_store

    store = FeatureStore.load(store_path)
    val = FeatureStore.load(val_path) if val_path is not None else None
    train_on_store(store.subset(list(range(min(64, len(store.problems))))), kind=kind, steps=2, fusion=False,
                   streaming=streaming, seed=seed)  # warm-up
    _reset_peak()
    before_kb = _status_kb("VmRSS")
    started = time.perf_counter()
    ranker = train_on_store(store, kind=kind, steps=steps, fusion=fusion, streaming=streaming, val_store=val, seed=seed)
    seconds = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM")
    result = ranker.train_result_
    config = ranker.train_config_
    per_step = config.batch_size * (config.group_size if result.data_summary["listwise"] else 1)
    scored = len(store.problems) * store.num_candidates
    disk = sum(f.stat().st_size for f in Path(store_path).rglob("*.safetensors"))
    losses = result.losses
    window = max(1, min(20, len(losses) // 4))
    return {
        "streaming": streaming, "kind": kind, "steps": result.num_steps, "fusion": fusion,
        "problems": len(store.problems), "candidates_per_problem": store.num_candidates,
        "candidate_rows": scored, "hidden_size": store.model.hidden_size,
        "store_disk_mb": round(disk / 2**20, 1), "store_float32_mb": round(feature_bytes(store) / 2**20, 1),
        "rss_before_mb": round(before_kb / 1024, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
        "peak_increase_mb": round((peak_kb - before_kb) / 1024, 1),
        "train_seconds": round(result.wall_time_s, 2),
        "train_candidates_per_s": round(result.num_steps * per_step / result.wall_time_s),
        "score_candidates_per_s": round(scored / max(ranker.fit_seconds_ - result.wall_time_s, 1e-9)),
        "fit_seconds": round(seconds, 2),
        "loss_first": sum(losses[:window]) / window, "loss_last": sum(losses[-window:]) / window,
        "val": result.val_metrics,
    }


def run_child(store: Path, streaming: bool, args, val: Path | None = None) -> dict:
    """`measure_training` in a fresh interpreter (its own peak RSS); returns its figures."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(store), "--kind", args.kind,
               "--steps", str(args.steps)] + (["--stream"] if streaming else []) + (["--val", str(val)] if val else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.malloc_mmap_threshold:  # freed large temporaries go back to the OS, so RSS is what is held (see --help)
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def line(run: dict) -> str:
    mode = "streaming" if run["streaming"] else "in memory"
    return (f"{mode:>9}: {run['candidate_rows']:,} rows x H={run['hidden_size']} ({run['store_disk_mb']:.0f} MB on disk, "
            f"{run['store_float32_mb']:.0f} MB float32): train {run['train_candidates_per_s']:,} cand/s, "
            f"score {run['score_candidates_per_s']:,} cand/s, peak RSS +{run['peak_increase_mb']:.0f} MB "
            f"(= {run['peak_increase_mb'] / run['store_disk_mb']:.2f} x the store on disk), "
            f"loss {run['loss_first']:.3f} -> {run['loss_last']:.3f}"
            + (f", val best-of-N {run['val']['best_of_n']:.3f} (random {run['val']['random']:.3f})" if run["val"] else ""))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=15_625, help="prompts of the large store (default 15,625: 1M rows at N=64)")
    parser.add_argument("--candidates", type=int, default=64, help="candidates per prompt (default 64)")
    parser.add_argument("--hidden-size", type=int, default=576, help="feature width H (default 576, the embedded model's)")
    parser.add_argument("--small-fraction", type=float, default=0.125, help="the side-by-side store's share of the large one's prompts")
    parser.add_argument("--kind", default="list", choices=("list", "point"))
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    parser.add_argument("--malloc-mmap-threshold", type=int, default=0,
                        help="glibc MALLOC_MMAP_THRESHOLD_ for the runs, e.g. 1048576; 0 (default): glibc's dynamic "
                        "threshold, which keeps freed 8-16 MB temporaries on the heap and so counts them in RSS")
    parser.add_argument("--work-dir", help="where the stores are written (default: a temporary folder, removed after)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "assets" / "results" / "streaming_train.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--val", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure_training(args.child, args.stream, args.kind, args.steps, args.val)))
        return
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="streaming-train-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        large = write_synthetic_store(work / "large", args.problems, args.candidates, args.hidden_size, seed=0)
        small = write_synthetic_store(work / "small", max(1, round(args.problems * args.small_fraction)), args.candidates,
                                      args.hidden_size, seed=1)
        val = write_synthetic_store(work / "val", 256, args.candidates, args.hidden_size, seed=2)
        write_seconds = time.perf_counter() - started
        runs = [run_child(large, True, args, val), run_child(small, True, args, val), run_child(small, False, args, val)]
    finally:
        if not args.work_dir:
            shutil.rmtree(work)
    for run in runs:
        print(line(run))
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, 1 torch thread",
              "malloc_mmap_threshold": args.malloc_mmap_threshold or "glibc default (dynamic)",
              "write_seconds": round(write_seconds, 1), "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
