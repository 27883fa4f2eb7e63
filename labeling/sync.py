"""Optional backup of the labels to a Hugging Face Hub dataset repo, every few minutes.

Enabled only when both a dataset repo id and a token are configured, as arguments or through the
environment variables `LANGUAGE_RANKER_HUB_DATASET` (e.g. "me/ranker-labels") and `HF_TOKEN`.
A `huggingface_hub.CommitScheduler` pushes `<data_dir>/hub_export/labels.parquet` (the store's
`export_parquet`, refreshed just before each push when the store changed) on a background thread.

    sync = start_hub_sync(store)   # None when not configured; the reason is in `last_reason`
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labeling.store import LabelStore

logger = logging.getLogger(__name__)

REPO_ENV = "LANGUAGE_RANKER_HUB_DATASET"
TOKEN_ENV = "HF_TOKEN"
EXPORT_FOLDER = "hub_export"
EXPORT_NAME = "labels.parquet"

last_reason: str = "start_hub_sync was not called"  # why the last start_hub_sync did or did not start


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
    if not isinstance(every_minutes, (int, float)) or isinstance(every_minutes, bool) or not every_minutes > 0:
        raise ValueError(f"every_minutes must be a number > 0, got {every_minutes!r}")
    if repo_id is not None and (repo_id.count("/") != 1 or not all(repo_id.split("/"))):
        raise ValueError(f"{REPO_ENV} must be a dataset repo id 'owner/name', got {repo_id!r}")
    missing = [name for name, value in ((REPO_ENV, repo_id), (TOKEN_ENV, token)) if value is None]
    if missing:
        reason = f"Hub sync off: {' and '.join(missing)} not set"
        return HubSyncConfig(repo_id, token, float(every_minutes), False, reason)
    return HubSyncConfig(repo_id, token, float(every_minutes), True,
                         f"Hub sync on: labels pushed to dataset {repo_id} every {every_minutes:g} min")


def start_hub_sync(store: LabelStore, repo_id: str | None = None, token: str | None = None,
                   every_minutes: float = 10):
    """Start pushing the store's export to the Hub; the scheduler, or None when not configured.

    The reason (on or off, and why) is kept in the module attribute `last_reason`. Creating the
    scheduler creates the (private) dataset repo if needed, so this needs the network when enabled.
    """
    global last_reason
    config = hub_sync_config(repo_id, token, every_minutes)
    last_reason = config.reason
    if not config.enabled:
        logger.info(config.reason)
        return None
    from huggingface_hub import CommitScheduler

    class LabelExportScheduler(CommitScheduler):
        """Refresh the parquet export (under the scheduler's lock) before each push."""

        def push_to_hub(self):
            revision = store.revision()
            if revision != getattr(self, "_exported_revision", None):
                with self.lock:
                    store.export_parquet(Path(self.folder_path) / EXPORT_NAME)
                self._exported_revision = revision
            return super().push_to_hub()

    folder = store.data_dir / EXPORT_FOLDER
    store.export_parquet(folder / EXPORT_NAME)
    scheduler = LabelExportScheduler(repo_id=config.repo_id, repo_type="dataset", folder_path=folder,
                                     path_in_repo="data", every=config.every_minutes, token=config.token, private=True)
    logger.info(config.reason)
    return scheduler
