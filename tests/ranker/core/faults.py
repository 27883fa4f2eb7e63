"""Fault injection for the crash and disk tests: child processes that are SIGKILLed, denied writes, or size-limited.

A child runs `python -m tests.ranker.core.faults <scenario> <json list of args>` from the repository root;
it prints progress lines, and last a JSON line: {"result": ...} or {"error": {type, errno, message}}.
Imports are lazy, so a child loads only what its scenario needs (start-up is most of a test's time).

How the faults are made, honestly and without privileges the CI machine (root, this image) lacks:
- SIGKILL: real, sent by the parent at a random moment, or by the child to itself at a chosen point
  (`kill_at`: the named function runs, or is about to run, and the process dies with no cleanup).
- Read-only folder: mode 0555, and a child the mode bits bind. Root ignores them (CAP_DAC_OVERRIDE),
  so a root parent drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from the child's
  capability bounding set before exec (prctl PR_CAPBSET_DROP): the child is still uid 0, so it can
  read the interpreter under /root (mode 0700, which rules out uid 65534), but it cannot write where
  the owner may not. A non-root parent needs nothing. Each test first proves the folder is read-only
  to the child (`probe_write`).
- Full disk: RLIMIT_FSIZE in the child with SIGXFSZ ignored, so a write past the limit fails with
  EFBIG ("File too large") where a full disk fails with ENOSPC: the same failed-write path.
  (A small tmpfs would give ENOSPC, but mounting needs CAP_SYS_ADMIN.)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3  # linux/capability.h


# --- the parent's side --------------------------------------------------------------------------


def _drop_write_privileges() -> None:
    """preexec_fn: drop the capabilities that let root ignore file modes (inherited by the exec'd child)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {capability}) failed")


def _command(scenario: str, args: list) -> list[str]:
    return [sys.executable, "-m", "tests.ranker.core.faults", scenario, json.dumps([str(a) if isinstance(a, Path) else a for a in args])]


def _popen_kwargs(read_only: bool) -> dict:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    return {"cwd": REPO, "env": env, "preexec_fn": _drop_write_privileges if read_only and os.geteuid() == 0 else None}


def run_child(scenario: str, *args, read_only: bool = False, timeout: float = 60) -> dict:
    """Run `scenario(*args)` in a child to its end; its last JSON line ({"result"} or {"error"})."""
    completed = subprocess.run(_command(scenario, list(args)), capture_output=True, text=True, timeout=timeout,
                               **_popen_kwargs(read_only))
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise AssertionError(f"child {scenario} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1])


@contextlib.contextmanager
def child(scenario: str, *args) -> Iterator[subprocess.Popen]:
    """A running child (stdout a pipe); always killed and reaped on the way out."""
    process = subprocess.Popen(_command(scenario, list(args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               **_popen_kwargs(False))
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def kill_after_lines(process: subprocess.Popen, lines: int, delay: float, timeout: float = 30) -> list[str]:
    """Wait until `process` printed `lines` lines, sleep `delay` s, SIGKILL it; every complete line it printed.

    Lines still in the pipe when it died count (they were written, so acknowledged); a torn last line does not.
    """
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while data.count(b"\n") < lines:
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                printed = data.count(b"\n")
                process.kill()
                _, stderr = process.communicate(timeout=30)
                raise AssertionError(f"child printed {printed} of {lines} lines (exit {process.returncode}):\n"
                                     f"{stderr.decode()[-3000:]}")
            if selector.select(left):
                data += os.read(process.stdout.fileno(), 65536)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    data += process.stdout.read()
    return data.decode().split("\n")[:-1]


def assert_killed(process: subprocess.Popen, timeout: float = 60) -> None:
    """The child ended by SIGKILL (its own `kill_at`), not by finishing or failing."""
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == -signal.SIGKILL, f"child exited {process.returncode}, not by SIGKILL:\n{stderr.decode()[-3000:]}"


def tree_state(folder: Path) -> dict[str, bytes | None]:
    """Every entry under `folder` (relative path -> file bytes, None for a folder), to compare before/after."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def set_mode(folder: Path, mode: int) -> None:
    """chmod `folder` and every folder under it (files keep theirs)."""
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(mode)


# --- the child's side ---------------------------------------------------------------------------


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at(module, name: str, after: bool, when=lambda *args, **kwargs: True) -> None:
    """Make `module.name` SIGKILL this process just before (after=False) or after it runs, when `when(*args)`."""
    original = getattr(module, name)

    def dying(*args, **kwargs):
        if not when(*args, **kwargs):
            return original(*args, **kwargs)
        if not after:
            _die()
        result = original(*args, **kwargs)
        _die()
        return result

    setattr(module, name, dying)


def limit_file_size(limit: int) -> None:
    """From now on no file can grow past `limit` bytes: writes fail with EFBIG (SIGXFSZ ignored)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # unbuffered: a printed line is out before the next write starts


def probe_write(folder: str) -> dict:
    """Try to create a file in `folder` (proves a read-only setup binds this process)."""
    try:
        Path(folder, "probe.txt").write_text("x")
    except OSError as error:
        return {"errno": error.errno}
    return {"errno": None}


def write_labels(data_dir: str, run: int, seconds: float = 20.0) -> None:
    """Record a request and label it, over and over; print "<label_id> <i>" after each add_label returned."""
    import torch

    from labeling.label_store import LabelStore

    store = LabelStore(data_dir)
    gen = torch.Generator().manual_seed(run)
    end = time.monotonic() + seconds  # bounded even if the parent never kills it
    i = 0
    while time.monotonic() < end:
        request_id = store.record_request(
            f"prompt {run}.{i}", ["a", "b", "c"], torch.randn(16, generator=gen), torch.randn(3, 16, generator=gen),
            layer=1, fingerprint={"model_id": "m", "revision": "r", "num_layers": 2, "hidden_size": 16},
            ranker_version=None, ranker_scores=None, mean_logprobs=[-1.0, -2.0, -3.0], num_tokens=[1, 2, 3],
            finish_reasons=["stop"] * 3, sampling={"temperature": 1.0})
        label_id = store.add_label(request_id, i % 3, f"r{run}i{i}", [2, 0, 1])
        say(f"{label_id} {i}")
        i += 1


def open_label_store(data_dir: str) -> dict:
    from labeling.label_store import LabelStore

    store = LabelStore(data_dir)
    return {"count": store.count()}


def fill_label_store(data_dir: str, headroom: int) -> dict:
    """Open the store, then allow no file to grow more than `headroom` bytes past the largest; label until a write fails."""
    import torch

    from labeling.label_store import LabelStore

    store = LabelStore(data_dir)
    largest = max(p.stat().st_size for p in Path(data_dir).iterdir())
    limit_file_size(largest + headroom)
    acked = []
    request_id = store.record_request(
        "prompt", ["a", "b"], torch.ones(16), torch.ones(2, 16), layer=1, fingerprint={}, ranker_version=None,
        ranker_scores=None, mean_logprobs=[-1.0, -2.0], num_tokens=[1, 1], finish_reasons=["stop"] * 2, sampling={})
    for i in range(10_000):
        try:
            acked.append(store.add_label(request_id, 0, f"full{i}", [0, 1]))
        except Exception as error:
            return {"acked": acked, "error": _describe(error)}
    return {"acked": acked, "error": None}


def registry_add(root: str, ranker_path: str, point: str = "", repeat: int = 1) -> list[str]:
    """Add the ranker at `ranker_path` to the registry `root` `repeat` times, printing each version once added.

    point: where to SIGKILL this process during the (first) add: "weights" (model.safetensors just
    written, inside atomic_folder), "swap" (the version's staging folder complete, about to be renamed
    into place), "swapped" (the version folder is in place, the index not yet written), "index" (the
    new index is in its temporary file, about to replace registry.json); "" for none.
    """
    from labeling.registry import RankerRegistry
    from ranker.rankers.estimator import LanguageRanker

    _install_kill_point(point, swap_target=r"v\d{4,}")  # the version folder, not the checkpoint written inside it
    ranker_ = LanguageRanker.load(ranker_path)
    registry = RankerRegistry(root)
    versions = []
    for n in range(repeat):
        versions.append(registry.add(ranker_, {"store_accuracy": 0.5}, True, f"add {n}"))
        say(versions[-1])
    return versions


def _install_kill_point(point: str, swap_target: str = ".*") -> None:
    """SIGKILL at `point` (see registry_add); "swap"/"swapped" only where the target's name matches `swap_target`."""
    import re

    import ranker.core.file_io as atomic
    import ranker.rankers.checkpoint as checkpoint

    if point == "weights":
        kill_at(checkpoint, "save_file", after=True, when=lambda tensors, path, **kw: Path(path).name == "model.safetensors")
    elif point in ("swap", "swapped"):
        kill_at(atomic, "_swap_in", after=point == "swapped", when=lambda staging, target: re.fullmatch(swap_target, target.name))
    elif point == "index":
        kill_at(os, "replace", after=False, when=lambda src, dst, **kw: Path(dst).name == "registry.json")
    elif point:
        raise ValueError(f"unknown kill point {point!r}")


def retrain(labels_dir: str, root: str, point: str) -> dict:
    """`retrain_once` on the labels at `labels_dir` into the registry `root`, killed at `point` (see registry_add)."""
    from labeling.label_store import LabelStore
    from labeling.registry import RankerRegistry
    from labeling.retrain import RetrainConfig, retrain_once

    _install_kill_point(point, swap_target=r"v\d{4,}")
    config = RetrainConfig(every_k_labels=0, hyperparams={"projection_dim": 32, "batch_size": 32, "fusion": False},
                           min_steps=5, min_labels=5, seed=0)
    result = retrain_once(LabelStore(labels_dir), RankerRegistry(root), None, None, None, config)
    return {"version": result.version}


def registry_add_limited(root: str, ranker_path: str, limit: int) -> str:
    from labeling.registry import RankerRegistry
    from ranker.rankers.estimator import LanguageRanker

    ranker_ = LanguageRanker.load(ranker_path)
    registry = RankerRegistry(root)
    if limit:
        limit_file_size(limit)
    return registry.add(ranker_, {"store_accuracy": 0.5}, True, "limited")


def open_registry(root: str) -> list:
    from labeling.registry import RankerRegistry

    return [e["version"] for e in RankerRegistry(root).history()]


def save_ranker(ranker_path: str, target: str, limit: int = 0) -> str:
    """Load the ranker at `ranker_path` and save it to `target` (under a file size `limit` when given)."""
    from ranker.rankers.estimator import LanguageRanker

    ranker_ = LanguageRanker.load(ranker_path)
    if limit:
        limit_file_size(limit)
    ranker_.save(target)
    return target


def save_store(store_path: str, target: str, limit: int = 0) -> str:
    from ranker.capture.feature_store import FeatureStore

    store = FeatureStore.load(store_path)
    if limit:
        limit_file_size(limit)
    store.save(target)
    return target


def write_folder(target: str, size: int, limit: int = 0) -> str:
    """atomic_folder(target) holding one file of `size` bytes."""
    from ranker.core.file_io import atomic_folder

    if limit:
        limit_file_size(limit)
    with atomic_folder(target) as staging:
        (staging / "data.bin").write_bytes(b"x" * size)
    return target


def overwrite_checkpoint(ranker_path: str, target: str, point: str) -> None:
    """Save the ranker at `ranker_path` over the checkpoint `target`, SIGKILLed at `point` (see registry_add)."""
    from ranker.rankers.estimator import LanguageRanker

    ranker_ = LanguageRanker.load(ranker_path)
    _install_kill_point(point)
    ranker_.save(target)


def _describe(error: BaseException) -> dict:
    return {"type": type(error).__name__, "module": type(error).__module__, "errno": getattr(error, "errno", None),
            "message": str(error)}


SCENARIOS = {f.__name__: f for f in (probe_write, write_labels, open_label_store, fill_label_store, registry_add, retrain,
                                      registry_add_limited, open_registry, save_ranker, save_store, write_folder,
                                      overwrite_checkpoint)}


def main(argv: list[str]) -> None:
    scenario, args = SCENARIOS[argv[0]], json.loads(argv[1])
    try:
        out = {"result": scenario(*args)}
    except Exception as error:
        out = {"error": _describe(error), "traceback": traceback.format_exc()}
    say(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
