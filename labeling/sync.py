"""Labels and ranker versions survive a restart: a backup to a private Hugging Face Hub dataset repo.

A Space's disk is wiped on every restart (unless a persistent `/data` volume is attached, which
`default_data_dir` then uses), so the app backs up to the Hub and restores at start:

    store = LabelStore(default_data_dir())                  # $LANGUAGE_RANKER_DATA, /data/language-ranker or data/app

    backup, reason = hub_backup_from_env(store, registry)   # None and the reason when off or broken
    if backup is not None:
        report = backup.restore()   # before the retrain job starts: it may fill an empty registry
        backup.start()              # pushes every `every_minutes` on a daemon thread
    ...
    backup.push_soon()              # e.g. after a promotion: push now, in the background
    backup.stop()                   # at shutdown: one last push

Layout of the dataset repo (it must be private: the label files hold annotator identities):
    labels/<run_id>.parquet         the full, unhashed export of one run's store (`export_parquet(...,
                                    hash_annotators=False, include_unlabelled=True)`)
    registries/<run_id>/            one run's ranker registry folder (registry.json + version folders)
    data/labels.parquet             (read only) the single file the old CommitScheduler sync pushed

Each run (each `HubBackup`) has its own run id, "<UTC time>-[<instance id>-]<8 hex>", and only ever
writes under its own names, so no push overwrites another instance's or an earlier run's data.
A push sends only what changed since the last one (the store's `revision()`, the registry index's
hash). Each run's file holds its whole store, restored labels included, so the files add up with
the number of runs; pruning files whose labels a later file holds is left for later.

Restore rule:
- Labels: every `labels/*.parquet` (and the legacy file) is downloaded and merged into the store
  (`LabelStore.merge_parquet`: idempotent, the union of all files). A file that cannot be read
  or fails validation is reported in the result and skipped; the others still merge.
- Rankers: only when the local registry is empty (no versions, no version folders). Among the
  snapshots `registries/<run_id>/`, the one whose newest version entry was created last wins
  (ties: more versions, then the later run id), since a run that restored a snapshot and then
  promoted a version holds that snapshot plus its own. It is downloaded to a temporary folder,
  checked (the index opens, every indexed version folder is there, each profile's current
  version loads) and only then swapped in with `ranker.core.file_io.atomic_folder`, so a failed or
  partial download never leaves half a registry; a snapshot that fails the check is reported
  and the next one is tried. Registries of several instances are not merged.

Nothing here raises into the app: `hub_backup_from_env` returns None with a reason for a missing
setting, a malformed repo id, a read-only token, a public repo or an unreachable Hub; `restore`
and `push` return reports with the errors, and the push thread keeps them in `status()`.
Nothing touches the network at import time (huggingface_hub is imported when first needed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from labeling.label_store import LabelStore
from labeling.registry import ENTRY_NAME, INDEX_NAME, RankerRegistry
from ranker.core.file_io import atomic_folder

logger = logging.getLogger(__name__)

REPO_ENV = "LANGUAGE_RANKER_HUB_DATASET"
TOKEN_ENV = "HF_TOKEN"
REPO_TYPE = "dataset"
LABELS_FOLDER = "labels"
REGISTRIES_FOLDER = "registries"
LEGACY_LABEL_FILE = "data/labels.parquet"  # what the CommitScheduler of earlier versions pushed, before runs had files
WORK_FOLDER = "hub_backup"  # under the store's data dir: exports and downloads in flight
DATA_ENV = "LANGUAGE_RANKER_DATA"
PERSISTENT_STORAGE = Path("/data")  # a Space's persistent volume, when one is attached
PROJECT_ROOT = Path(__file__).resolve().parents[1]
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_RUN_ID_RE = r"[0-9]{8}T[0-9]{6}Z-(?:[A-Za-z0-9_.-]{1,64}-)?[0-9a-f]{8}"
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LABEL_FILE_RE = re.compile(rf"^{LABELS_FOLDER}/[A-Za-z0-9_.:-]{{1,128}}\.parquet$")
_REGISTRY_INDEX_RE = re.compile(rf"^{REGISTRIES_FOLDER}/({_RUN_ID_RE})/{re.escape(INDEX_NAME)}$")
_HIDDEN = (".*", "**/.*")  # staging folders and temp files of the registry (ranker.core.file_io, registry index)



def default_data_dir(environ: Mapping[str, str] | None = None, persistent_storage: Path = PERSISTENT_STORAGE) -> Path:
    """Where the app keeps its label store and registry.

    `$LANGUAGE_RANKER_DATA` when set; else `/data/language-ranker` when `/data` (a Space's
    persistent storage, which survives restarts) exists and is writable; else `data/app` in the
    project (a Space's own disk is wiped on every restart: that is what `HubBackup` is for).
    """
    environ = os.environ if environ is None else environ
    configured = (environ.get(DATA_ENV) or "").strip()
    if configured:
        return Path(configured).expanduser()
    storage = Path(persistent_storage)
    if storage.is_dir() and os.access(storage, os.W_OK | os.X_OK):
        return storage / "language-ranker"
    return PROJECT_ROOT / "data" / "app"


@dataclass(frozen=True)
class HubSyncConfig:
    """Where and how often to push; `enabled` is False (with `reason`) when something is missing."""

    repo_id: str | None
    token: str | None
    every_minutes: float
    enabled: bool
    reason: str

    def __repr__(self) -> str:  # never print the token
        return (f"HubSyncConfig(repo_id={self.repo_id!r}, token={'set' if self.token else None}, "
                f"every_minutes={self.every_minutes}, enabled={self.enabled})")


def check_repo_id(repo_id: Any) -> str:
    """`repo_id` if it is a Hub repo id "owner/name"; ValueError naming it otherwise."""
    if not isinstance(repo_id, str) or not _REPO_ID_RE.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise ValueError(f"{REPO_ENV} must be a dataset repo id 'owner/name', got {repo_id!r:.200}")
    return repo_id


def check_every_minutes(every_minutes: Any) -> float:
    if isinstance(every_minutes, bool) or not isinstance(every_minutes, (int, float)) or not 0 < every_minutes <= 7 * 24 * 60:
        raise ValueError(f"every_minutes must be a number > 0 and at most a week (10080), got {every_minutes!r:.100}")
    return float(every_minutes)


def hub_sync_config(
    repo_id: str | None = None,
    token: str | None = None,
    every_minutes: float = 10,
    environ: Mapping[str, str] | None = None,
) -> HubSyncConfig:
    """Resolve arguments, then environment variables. ValueError on a malformed repo id or interval."""
    environ = os.environ if environ is None else environ
    repo_id = (repo_id or environ.get(REPO_ENV) or "").strip() or None
    token = (token or environ.get(TOKEN_ENV) or "").strip() or None
    every_minutes = check_every_minutes(every_minutes)
    if repo_id is not None:
        check_repo_id(repo_id)
    missing = [name for name, value in ((REPO_ENV, repo_id), (TOKEN_ENV, token)) if value is None]
    if missing:
        return HubSyncConfig(repo_id, token, every_minutes, False, f"Hub sync off: {' and '.join(missing)} not set")
    return HubSyncConfig(repo_id, token, every_minutes, True,
                         f"Hub sync on: labels pushed to dataset {repo_id} every {every_minutes:g} min")


def new_run_id(instance_id: str | None = None) -> str:
    """"<UTC time>-[<instance_id>-]<8 random hex>": unique per run, sorted by start time."""
    if instance_id is not None and (not isinstance(instance_id, str) or not _INSTANCE_RE.match(instance_id)):
        raise ValueError(f"instance_id must be None or 1-64 letters, digits, '_', '.' or '-', got {instance_id!r:.100}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return "-".join(part for part in (stamp, instance_id, secrets.token_hex(4)) if part)


def describe_error(error: BaseException, repo_id: str = "") -> str:
    """One line for a report: permission problems say so; other errors give their type and first line."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return (f"permission denied ({status}): the token cannot write to dataset {repo_id} "
                f"(a read-only token, or one without write access to this repo)")
    first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first_line[:300]}"


def _token_is_read_only(me: Any) -> bool:
    """True when `HfApi.whoami()` says the token cannot write anywhere (a "read" token, or a
    fine-grained one without any repo.write permission); False when it can or when unknown."""
    token = me.get("auth", {}).get("accessToken", {}) if isinstance(me, Mapping) else {}
    role = token.get("role") if isinstance(token, Mapping) else None
    if role == "read":
        return True
    if role == "fineGrained":
        grants = token.get("fineGrained") or {}
        scoped = [p for entry in grants.get("scoped") or [] for p in entry.get("permissions") or []]
        return "repo.write" not in scoped + list(grants.get("global") or [])
    return False


def _registry_lock(registry: RankerRegistry):
    # RankerRegistry serialises its writers with a private RLock; holding it while copying or
    # swapping the folder means no version is half-written into (or lost from) a snapshot.
    return getattr(registry, "_lock", None) or contextlib.nullcontext()


def _registry_is_empty(registry: RankerRegistry) -> bool:
    folders = [p for p in registry.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return not registry.history() and not folders


def check_registry_snapshot(folder: Path, load: bool = True) -> dict:
    """ValueError unless `folder` is a complete registry: the index opens, every indexed version's
    folder holds its entry.json, and (load) each profile's current version loads. Returns
    {profile: current version}."""
    registry = RankerRegistry(folder)
    history = registry.history()
    if not history:
        raise ValueError(f"registry snapshot {folder} has no versions")
    for entry in history:
        if not (folder / entry["profile"] / entry["version"] / ENTRY_NAME).is_file():
            raise ValueError(f"registry snapshot lacks version {entry['version']} of profile {entry['profile']!r}")
    current = {profile: registry.current(profile) for profile in registry.profiles()}
    if load:
        for profile, version in current.items():
            if version is not None:
                registry.load(version, profile)
    return current


def _newest_entry(index: Any) -> tuple[str, int]:
    """(latest `created` of any version, number of versions) of a registry.json's content."""
    entries = [entry for record in index["profiles"].values() for entry in record["versions"]]
    created = [entry["created"] for entry in entries if isinstance(entry.get("created"), str)]
    if not created:
        raise ValueError("registry.json lists no version with a creation time")
    return max(created), len(entries)


class HubBackup:
    """Pushes the store (and registry) to `repo_id` under this run's own names; restores from every run.

    api: a `huggingface_hub.HfApi` (or anything with its methods `list_repo_files`,
    `hf_hub_download`, `snapshot_download`, `upload_file` and `upload_folder`, same arguments).
    registry: None to back up labels only. instance_id: an optional readable part of the run id.
    """

    def __init__(self, api: Any, repo_id: str, store: LabelStore, registry: RankerRegistry | None = None,
                 instance_id: str | None = None, every_minutes: float = 10):
        if not isinstance(store, LabelStore):
            raise ValueError(f"store must be a LabelStore, got {type(store).__name__}")
        if registry is not None and not isinstance(registry, RankerRegistry):
            raise ValueError(f"registry must be a RankerRegistry or None, got {type(registry).__name__}")
        self.api = api
        self.repo_id = check_repo_id(repo_id)
        self.store = store
        self.registry = registry
        self.every_minutes = check_every_minutes(every_minutes)
        self.run_id = new_run_id(instance_id)
        self.labels_path = f"{LABELS_FOLDER}/{self.run_id}.parquet"
        self.registry_path = f"{REGISTRIES_FOLDER}/{self.run_id}"
        self.work_dir = store.data_dir / WORK_FOLDER
        self._push_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by push_soon and stop: ends the thread's wait early
        self._thread: threading.Thread | None = None
        self._pushed_revision: tuple | None = None
        self._pushed_registry: str | None = None  # sha256 of the registry.json last pushed
        self._status: dict = {"pushes": 0, "failures": 0, "last_push": None, "last_error": None,
                              "last_error_at": None, "last_restore": None}

    def __repr__(self) -> str:
        return f"HubBackup(repo_id={self.repo_id!r}, run_id={self.run_id!r}, every_minutes={self.every_minutes:g})"

    @contextlib.contextmanager
    def _scratch(self):
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".scratch-", dir=self.work_dir) as folder:
            yield Path(folder)

    # --- restore ------------------------------------------------------------------------------

    def restore(self) -> dict:
        """Merge every run's labels into the store; fill an empty registry from the best snapshot.

        Returns {"label_files": [...], "merged": {file: merge counts}, "requests_added",
        "labels_added", "registry": "registries/<run_id>" or None, "registry_note", "errors":
        {file or step: message}}. Never raises for Hub or file problems: they go to "errors".
        """
        report: dict = {"label_files": [], "merged": {}, "requests_added": 0, "labels_added": 0,
                        "registry": None, "registry_note": "", "errors": {}}
        try:
            files = list(self.api.list_repo_files(self.repo_id, repo_type=REPO_TYPE))
        except Exception as error:  # the Hub's errors are many (HTTP, network, validation): report them all
            report["errors"]["list_repo_files"] = describe_error(error, self.repo_id)
            report["registry_note"] = "not restored: the repo could not be listed"
            return self._finish_restore(report)
        report["label_files"] = sorted(f for f in files if _LABEL_FILE_RE.match(f) or f == LEGACY_LABEL_FILE)
        with self._scratch() as scratch:
            for name in report["label_files"]:
                local = scratch / name
                try:
                    local = Path(self.api.hf_hub_download(self.repo_id, name, repo_type=REPO_TYPE, local_dir=scratch))
                    counts = self.store.merge_parquet(local)
                except Exception as error:
                    report["errors"][name] = describe_error(error, self.repo_id).replace(str(local), name)
                    continue
                finally:
                    local.unlink(missing_ok=True)  # a store's export can be large: do not keep two
                report["merged"][name] = counts
                report["requests_added"] += counts["requests_added"]
                report["labels_added"] += counts["labels_added"]
            if self.registry is not None:
                try:
                    self._restore_registry(files, scratch, report)
                except Exception as error:  # e.g. an unreadable local registry.json: labels are restored regardless
                    report["errors"]["registry"] = describe_error(error, self.repo_id)
                    report["registry_note"] = "not restored"
            else:
                report["registry_note"] = "no registry to restore into"
        return self._finish_restore(report)

    def _finish_restore(self, report: dict) -> dict:
        for name, message in report["errors"].items():
            logger.warning("Hub restore from %s: %s: %s", self.repo_id, name, message)
        logger.info("Hub restore from %s: %d labels and %d requests added from %d files; registry %s",
                    self.repo_id, report["labels_added"], report["requests_added"], len(report["merged"]),
                    report["registry"] or report["registry_note"])
        self._status["last_restore"] = report
        return report

    def _restore_registry(self, files: list[str], scratch: Path, report: dict) -> None:
        registry = self.registry
        if not _registry_is_empty(registry):
            report["registry_note"] = "kept the local registry (it has versions)"
            return
        ranked = []
        for run_id in sorted({m.group(1) for f in files if (m := _REGISTRY_INDEX_RE.match(f))}):
            name = f"{REGISTRIES_FOLDER}/{run_id}/{INDEX_NAME}"
            try:
                index = json.loads(Path(self.api.hf_hub_download(self.repo_id, name, repo_type=REPO_TYPE,
                                                                 local_dir=scratch / "indexes")).read_text())
                ranked.append((*_newest_entry(index), run_id))
            except Exception as error:
                report["errors"][name] = describe_error(error, self.repo_id)
        for _, _, run_id in sorted(ranked, reverse=True):
            prefix = f"{REGISTRIES_FOLDER}/{run_id}"
            try:
                download = Path(self.api.snapshot_download(self.repo_id, repo_type=REPO_TYPE, allow_patterns=[f"{prefix}/*"],
                                                           local_dir=scratch / run_id))
                snapshot = download / prefix
                check_registry_snapshot(snapshot)
                with _registry_lock(registry):
                    if not _registry_is_empty(registry):
                        report["registry_note"] = "kept the local registry (versions appeared during the restore)"
                        return
                    with atomic_folder(registry.root) as staging:
                        shutil.copytree(snapshot, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
            except Exception as error:
                report["errors"][prefix] = describe_error(error, self.repo_id)
                continue
            report["registry"] = prefix
            report["registry_note"] = f"restored {prefix} ({len(registry.history())} versions)"
            return
        tried = ranked or any(name.startswith(f"{REGISTRIES_FOLDER}/") for name in report["errors"])
        report["registry_note"] = "no usable registry snapshot on the Hub" if tried else "no registry snapshot on the Hub"

    # --- push ---------------------------------------------------------------------------------

    def push(self) -> dict:
        """Upload what changed since the last push: the store's export and the registry folder.

        Returns {"labels": path in repo or None, "registry": path or None, "error": message or None}.
        Never raises: a failure is logged and kept in `status()`, and the next push retries.
        """
        with self._push_lock:
            report: dict = {"labels": None, "registry": None, "error": None}
            try:
                self._push_labels(report)
                if self.registry is not None:
                    self._push_registry(report)
            except Exception as error:
                report["error"] = describe_error(error, self.repo_id)
                self._status.update(failures=self._status["failures"] + 1, last_error=report["error"],
                                    last_error_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
                logger.warning("Hub backup to %s failed: %s", self.repo_id, report["error"])
                return report
            if report["labels"] or report["registry"]:
                self._status.update(pushes=self._status["pushes"] + 1, last_error=None,
                                    last_push=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            return report

    def _push_labels(self, report: dict) -> None:
        revision = self.store.revision()
        if revision == self._pushed_revision or revision[0] == 0:
            return
        with self._scratch() as scratch:
            path = self.store.export_parquet(scratch / f"{self.run_id}.parquet", hash_annotators=False, include_unlabelled=True)
            self.api.upload_file(path_or_fileobj=str(path), path_in_repo=self.labels_path, repo_id=self.repo_id,
                                 repo_type=REPO_TYPE,
                                 commit_message=f"Labels of run {self.run_id}: {revision[1]} labels, {revision[0]} requests")
        self._pushed_revision = revision  # read before the export: a label added meanwhile is pushed next time
        report["labels"] = self.labels_path

    def _push_registry(self, report: dict) -> None:
        index = self.registry.index_path
        if not index.is_file() or hashlib.sha256(index.read_bytes()).hexdigest() == self._pushed_registry:
            return
        with self._scratch() as scratch:
            snapshot = scratch / "registry"
            with _registry_lock(self.registry):
                shutil.copytree(self.registry.root, snapshot, ignore=shutil.ignore_patterns(".*"))
            digest = hashlib.sha256((snapshot / INDEX_NAME).read_bytes()).hexdigest()
            if digest == self._pushed_registry or not RankerRegistry(snapshot).history():
                return
            check_registry_snapshot(snapshot, load=False)
            self.api.upload_folder(repo_id=self.repo_id, folder_path=str(snapshot), path_in_repo=self.registry_path,
                                   repo_type=REPO_TYPE, ignore_patterns=list(_HIDDEN),
                                   commit_message=f"Ranker registry of run {self.run_id}")
        self._pushed_registry = digest
        report["registry"] = self.registry_path

    # --- background thread --------------------------------------------------------------------

    def start(self) -> "HubBackup":
        """Push every `every_minutes` on a daemon thread (idempotent); returns self."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._wake.clear()
            self._thread = threading.Thread(target=self._run, name=f"hub-backup-{self.run_id}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.every_minutes * 60)
            self._wake.clear()
            if not self._stop.is_set():
                self.push()

    def push_soon(self) -> None:
        """Push now in the background (the thread's next round starts at once; calls made while a
        push runs are coalesced into the next one). Without a running thread, one push on its own thread."""
        if self._thread is not None and self._thread.is_alive() and not self._stop.is_set():
            self._wake.set()
        else:
            threading.Thread(target=self.push, name=f"hub-backup-once-{self.run_id}", daemon=True).start()

    def stop(self, final_push: bool = True, timeout: float = 120.0) -> dict | None:
        """Stop the thread; then push once more (final_push) so the latest labels are saved. Its report, or None."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.push() if final_push else None

    def status(self) -> dict:
        """repo_id, run_id, running, every_minutes, pushes, failures, last_push, last_error(_at), last_restore."""
        running = self._thread is not None and self._thread.is_alive()
        return {"repo_id": self.repo_id, "run_id": self.run_id, "running": running, "every_minutes": self.every_minutes,
                **self._status}


def hub_backup_from_env(store: LabelStore, registry: RankerRegistry | None, environ: Mapping[str, str] | None = None,
                        api: Any = None, every_minutes: float = 10) -> tuple[HubBackup | None, str]:
    """A `HubBackup` configured by $LANGUAGE_RANKER_HUB_DATASET and $HF_TOKEN, or None; and why.

    Checks, without writing anything: the settings are there and well-formed, the Hub answers
    and accepts the token, the token may write, and the dataset repo exists (created private if
    missing) and is private. Any failure gives (None, reason), never an exception. `api`: an
    `HfApi` stand-in for tests (default `HfApi(token=$HF_TOKEN)`). Does not restore or start.
    """
    try:
        config = hub_sync_config(environ=environ, every_minutes=every_minutes)
    except ValueError as error:
        return None, f"Hub backup off: {error}"
    if not config.enabled:
        return None, config.reason.replace("Hub sync", "Hub backup")
    repo_id = config.repo_id
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=config.token)
    try:
        me = api.whoami()
    except Exception as error:
        return None, f"Hub backup off: could not reach the Hub or the {TOKEN_ENV} token was refused ({describe_error(error, repo_id)})"
    if _token_is_read_only(me):
        return None, f"Hub backup off: the {TOKEN_ENV} token is read-only; it needs write access to dataset {repo_id}"
    try:
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=True, exist_ok=True)
        info = api.repo_info(repo_id, repo_type=REPO_TYPE)
    except Exception as error:
        return None, f"Hub backup off: could not create or open dataset {repo_id}: {describe_error(error, repo_id)}"
    if getattr(info, "private", None) is not True:
        return None, (f"Hub backup off: dataset {repo_id} is not private; the backup holds annotator identities, "
                      "so make the repo private (or name another one)")
    try:
        backup = HubBackup(api, repo_id, store, registry, every_minutes=config.every_minutes)
    except ValueError as error:
        return None, f"Hub backup off: {error}"
    return backup, (f"Hub backup on: dataset {repo_id}, run {backup.run_id}, every {config.every_minutes:g} min"
                    f"{'' if registry is not None else ' (labels only)'}")
