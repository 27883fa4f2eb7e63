"""`RankerRegistry`: numbered ranker checkpoints per profile, and which one is live.

Layout under `root`:
    registry.json                      index of every version (written atomically: ranker.core.file_io.atomic_write)
    <profile>/v0001/                   a checkpoint folder (model.safetensors, card.json[, extra.safetensors]) + entry.json
    <profile>/v0002/ ...

Each version folder is written with `ranker.core.file_io.atomic_folder`, before the index names it, so
the index never points at half a checkpoint. Versions are never deleted or renumbered; a version
number is never reused even if the index was lost (the next number is above every folder on disk).

Entry fields: version, profile, created (UTC ISO 8601), parent (the version that was current when
it was added), status ("promoted", "refused" or "rolled back"), reason, metrics (its validation
metrics), label_count, info (free-form). Only versions that were promoted can become current:
`add(promoted=True)` makes the new version current; `rollback` moves back to an earlier one.

Crashes and disks: writers hold an exclusive lock (`.lock`, flock) shared by threads and
processes. A writer killed at any moment leaves the index and every indexed version intact; at
worst a hidden staging folder (`.v0003.<random>.tmp`, removed by the next `add`) or a complete
version folder that the index does not name yet (its number is then never reused). A read-only or
full disk makes `add`/`rollback` raise an OSError naming the path and saying which, changing nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from ranker.capture.fingerprint import FeatureFingerprint
from ranker.core.cards import json_bytes, read_json
from ranker.core.file_io import atomic_folder, atomic_write, clear_write_errors, remove_stale_staging
from ranker.rankers.estimator import LanguageRanker

INDEX_NAME = "registry.json"
ENTRY_NAME = "entry.json"
LOCK_NAME = ".lock"
FORMAT = "language-ranker-registry"
FORMAT_VERSION = 1
PROMOTED, REFUSED, ROLLED_BACK = "promoted", "refused", "rolled back"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_PROFILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_profile(profile: str) -> str:
    # Profiles become folder names: refuse anything that could escape `root` or clash with the index.
    if not isinstance(profile, str) or not _PROFILE_RE.match(profile) or profile == INDEX_NAME:
        raise ValueError(f"profile must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit; got {profile!r}")
    return profile


class RankerRegistry:
    """Versioned rankers under `root`, one history and one current version per profile."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"registry root {str(self.root)!r} exists and is not a folder")
        with clear_write_errors(self.root / INDEX_NAME):
            self.root.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / INDEX_NAME
        self._lock = threading.RLock()
        self._read_index()  # fail now, not at the first add, on a corrupt index

    # --- the index ----------------------------------------------------------------------------

    def _read_index(self) -> dict:
        if not self.index_path.exists():
            return {"format": FORMAT, "format_version": FORMAT_VERSION, "profiles": {}}
        index = read_json(self.index_path, "registry index")
        if index.get("format") != FORMAT:
            raise ValueError(f"{self.index_path} is not a ranker registry index (format {index.get('format')!r})")
        if index.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{self.index_path} has format_version {index.get('format_version')!r}; only {FORMAT_VERSION} is supported")
        problem = _index_problem(index)
        if problem:
            raise ValueError(f"{self.index_path} is not a consistent registry index: {problem}")
        return index

    def _write_index(self, index: dict) -> None:
        atomic_write(self.index_path, json_bytes(index))

    @contextlib.contextmanager
    def _writer(self) -> Iterator[None]:
        """Exclusive write access: this process's threads (RLock) and other processes (flock on LOCK_NAME).

        Holding it, no other writer is running, so staging left by a writer that died is removed.
        """
        with self._lock:
            with clear_write_errors(self.root / LOCK_NAME):
                handle = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
                for folder in [self.root] + [p for p in self.root.iterdir() if p.is_dir() and _PROFILE_RE.match(p.name)]:
                    remove_stale_staging(folder)
                yield
            finally:
                os.close(handle)  # releases the flock

    @staticmethod
    def _profile_record(index: dict, profile: str) -> dict:
        return index["profiles"].setdefault(profile, {"current": None, "versions": []})

    def _entry(self, index: dict, version: str, profile: str) -> dict:
        for entry in index["profiles"].get(profile, {}).get("versions", []):
            if entry["version"] == version:
                return entry
        known = [e["version"] for e in index["profiles"].get(profile, {}).get("versions", [])]
        raise ValueError(f"unknown version {version!r} for profile {profile!r}; known versions: {known}")

    def _next_version(self, index: dict, profile: str) -> str:
        numbers = [int(m.group(1)) for e in self._profile_record(index, profile)["versions"] if (m := _VERSION_RE.match(e["version"]))]
        folder = self.root / profile
        if folder.is_dir():
            numbers += [int(m.group(1)) for p in folder.iterdir() if (m := _VERSION_RE.match(p.name))]
        return f"v{max(numbers, default=0) + 1:04d}"

    # --- public API ---------------------------------------------------------------------------

    def add(
        self,
        ranker: LanguageRanker,
        metrics: dict,
        promoted: bool,
        reason: str,
        profile: str = "default",
        *,
        label_count: int | None = None,
        info: dict | None = None,
    ) -> str:
        """Save `ranker` as the profile's next version; it becomes current iff `promoted`. Returns e.g. "v0003"."""
        check_profile(profile)
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics must be a dict of metric name -> value, got {metrics!r}")
        with self._writer():
            index = self._read_index()
            record = self._profile_record(index, profile)
            version = self._next_version(index, profile)
            entry = {
                "version": version,
                "profile": profile,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "parent": record["current"],
                "status": PROMOTED if promoted else REFUSED,
                "reason": str(reason),
                "metrics": dict(metrics),
                "label_count": label_count,
                "info": dict(info or {}),
            }
            with atomic_folder(self.root / profile / version) as staging:
                ranker.save(staging)
                (staging / ENTRY_NAME).write_bytes(json_bytes(entry))
            record["versions"].append(entry)
            if promoted:
                record["current"] = version
            self._write_index(index)
        return version

    def current(self, profile: str = "default") -> str | None:
        """The live version of `profile`, or None if none was ever promoted (or all were rolled back)."""
        return self._read_index()["profiles"].get(profile, {}).get("current")

    def path(self, version: str, profile: str = "default") -> Path:
        """The checkpoint folder of `version` (ValueError if unknown)."""
        self._entry(self._read_index(), version, profile)
        return self.root / profile / version

    def load(self, version: str, profile: str = "default", expected_fingerprint: FeatureFingerprint | None = None) -> LanguageRanker:
        """The ranker saved as `version` (its calibration included, so `probability_correct` works)."""
        return LanguageRanker.load(self.path(version, profile), expected_fingerprint=expected_fingerprint)

    def rollback(self, profile: str = "default", to: str | None = None) -> str:
        """Make an earlier promoted version current again; returns it.

        Without `to`: the latest version before the current one whose status is "promoted". The
        version left is marked "rolled back". `to` names a version that was promoted once (status
        "promoted" or "rolled back"); refused versions are never made current. ValueError otherwise.
        """
        with self._writer():
            index = self._read_index()
            record = index["profiles"].get(profile)
            current = record["current"] if record else None
            if current is None:
                raise ValueError(f"profile {profile!r} has no current version to roll back from")
            versions = record["versions"]
            if to is None:
                position = next(i for i, e in enumerate(versions) if e["version"] == current)
                earlier = [e for e in versions[:position] if e["status"] == PROMOTED]
                if not earlier:
                    raise ValueError(f"profile {profile!r} has no promoted version before {current} to roll back to")
                target = earlier[-1]
            else:
                target = self._entry(index, to, profile)
                if target["status"] == REFUSED:
                    raise ValueError(f"version {to} of {profile!r} was refused ({target['reason']}); only promoted versions can become current")
                if to == current:
                    raise ValueError(f"version {to} is already current for {profile!r}")
            self._entry(index, current, profile).update(status=ROLLED_BACK, rolled_back_to=target["version"])
            target["status"] = PROMOTED
            record["current"] = target["version"]
            self._write_index(index)
            return target["version"]

    def history(self, profile: str | None = None) -> list[dict]:
        """Every version's entry (oldest first, per profile), each with `current: bool` added."""
        index = self._read_index()
        out = []
        for name, record in sorted(index["profiles"].items()):
            if profile is not None and name != profile:
                continue
            out += [{**entry, "current": entry["version"] == record["current"]} for entry in record["versions"]]
        return out

    def profiles(self) -> list[str]:
        """Profiles with at least one version, sorted."""
        return sorted(name for name, record in self._read_index()["profiles"].items() if record["versions"])


def _index_problem(index: dict) -> str | None:
    """What is wrong with the shape of a parsed index (a hand edit, another program), or None."""
    profiles = index.get("profiles")
    if not isinstance(profiles, dict):
        return f"'profiles' must be an object, got {profiles!r:.80}"
    for name, record in profiles.items():
        if not isinstance(record, dict) or not isinstance(record.get("versions"), list):
            return f"profile {name!r} must be an object with a 'versions' list, got {record!r:.80}"
        versions = [entry.get("version") if isinstance(entry, dict) else None for entry in record["versions"]]
        bad = [v for v in versions if not (isinstance(v, str) and _VERSION_RE.match(v))]
        if bad or len(set(versions)) != len(versions):
            return f"profile {name!r} has bad or repeated version entries: {versions}"
        if record.get("current") is not None and record["current"] not in versions:
            return f"profile {name!r} has current {record['current']!r}, which is not one of its versions {versions}"
    return None
