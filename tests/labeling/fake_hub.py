"""`LocalFolderHub`: a local folder behind the subset of `huggingface_hub.HfApi` that `labeling.sync` calls.

Same method names, parameters (a subset, same kinds and defaults: `test_sync` checks them against
the installed HfApi) and return types (`RepoUrl`, `DatasetInfo`, `CommitInfo`, local paths as str).
Errors are the real client's: each is made by `huggingface_hub.utils.hf_raise_for_status` from a
fabricated HTTP response, so a missing repo raises `RepositoryNotFoundError`, a missing file
`RemoteEntryNotFoundError`, and a write with a read-only token a 403 `HfHubHTTPError`, as the Hub does.

Layout under `root`: `<repo_type>s/<owner>/<name>/<files>`, `.meta/<repo_type>s/<owner>/<name>.json`
({"private": bool}) and `.meta/commits.jsonl` (one line per commit: repo, oid, message, paths), so
several `LocalFolderHub` objects on one root (several app instances) see the same repos.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

import httpx2
from huggingface_hub.hf_api import CommitInfo, DatasetInfo, RepoUrl
from huggingface_hub.utils import filter_repo_objects, hf_raise_for_status

ENDPOINT = "https://huggingface.co"


class LocalFolderHub:
    """HfApi stand-in. read_only: writes fail as with a read token; offline: every call fails to connect."""

    def __init__(self, root: str | os.PathLike, read_only: bool = False, offline: bool = False, user: str = "tester"):
        self.root = Path(root)
        self.read_only = read_only
        self.offline = offline
        self.user = user
        self.calls: list[str] = []  # method names, in call order

    # --- helpers ------------------------------------------------------------------------------

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        if self.offline:
            raise httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")

    @staticmethod
    def _fail(status: int, method: str, url: str, error_code: str | None = None, message: str | None = None):
        headers = {}
        if error_code:
            headers["X-Error-Code"] = error_code
        if message:
            headers["X-Error-Message"] = message
        hf_raise_for_status(httpx2.Response(status, headers=headers, request=httpx2.Request(method, url)))
        raise AssertionError(f"status {status} did not raise")  # pragma: no cover

    @staticmethod
    def _kind(repo_type: str | None) -> str:
        if repo_type not in (None, "model", "dataset", "space"):
            raise ValueError(f"Invalid repo type: {repo_type!r}")
        return f"{repo_type or 'model'}s"

    def _repo(self, repo_id: str, repo_type: str | None) -> Path:
        return self.root / self._kind(repo_type) / repo_id

    def _meta(self, repo_id: str, repo_type: str | None) -> Path:
        return self.root / ".meta" / self._kind(repo_type) / f"{repo_id}.json"

    def _api_url(self, repo_id: str, repo_type: str | None, tail: str = "") -> str:
        return f"{ENDPOINT}/api/{self._kind(repo_type)}/{repo_id}{tail}"

    def _existing(self, repo_id: str, repo_type: str | None, method: str = "GET") -> Path:
        folder = self._repo(repo_id, repo_type)
        if not self._meta(repo_id, repo_type).is_file():
            self._fail(404, method, self._api_url(repo_id, repo_type), "RepoNotFound")
        return folder

    def _check_write(self, repo_id: str, repo_type: str | None, tail: str) -> Path:
        folder = self._existing(repo_id, repo_type, "POST")
        if self.read_only:
            self._fail(403, "POST", self._api_url(repo_id, repo_type, tail), message="You don't have the rights to create a commit in this repo")
        return folder

    @staticmethod
    def _clean(path_in_repo: str) -> str:
        parts = Path(path_in_repo).parts
        if path_in_repo.startswith("/") or ".." in parts or not parts:
            raise ValueError(f"Invalid path_in_repo: {path_in_repo!r}")
        return "/".join(parts)

    def _commit(self, repo_id: str, repo_type: str | None, message: str, files: dict[str, bytes]) -> CommitInfo:
        folder = self._repo(repo_id, repo_type)
        for name, data in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=target.parent, prefix=".upload.")
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temp, target)
        log = self.root / ".meta" / "commits.jsonl"
        count = len(log.read_text().splitlines()) if log.exists() else 0
        oid = hashlib.sha1(f"{repo_id}:{count}:{message}".encode()).hexdigest()
        with open(log, "a") as out:
            out.write(json.dumps({"repo_id": repo_id, "oid": oid, "message": message, "paths": sorted(files)}) + "\n")
        url = f"{ENDPOINT}/{'' if repo_type in (None, 'model') else self._kind(repo_type) + '/'}{repo_id}"
        return CommitInfo(commit_url=f"{url}/commit/{oid}", commit_message=message, commit_description="", oid=oid)

    def commits(self, repo_id: str | None = None) -> list[dict]:
        """Every commit so far (oldest first), optionally of one repo (not an HfApi method)."""
        log = self.root / ".meta" / "commits.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [row for row in rows if repo_id is None or row["repo_id"] == repo_id]

    # --- the HfApi subset ---------------------------------------------------------------------

    def whoami(self, token: bool | str | None = None, *, cache: bool = False) -> dict:
        self._enter("whoami")
        return {"type": "user", "name": self.user,
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "read" if self.read_only else "write"}}}

    def create_repo(self, repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
                    repo_type: str | None = None, exist_ok: bool = False) -> RepoUrl:
        self._enter("create_repo")
        meta = self._meta(repo_id, repo_type)
        url = RepoUrl(f"{ENDPOINT}/{'' if repo_type in (None, 'model') else self._kind(repo_type) + '/'}{repo_id}", endpoint=ENDPOINT)
        if meta.is_file():
            if not exist_ok:
                self._fail(409, "POST", f"{ENDPOINT}/api/repos/create", message="You already created this repo")
            return url  # the real client returns the existing repo's url even for a read-only token
        if self.read_only:
            self._fail(403, "POST", f"{ENDPOINT}/api/repos/create", message="You don't have the rights to create a repo")
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"private": bool(private)}))
        self._repo(repo_id, repo_type).mkdir(parents=True, exist_ok=True)
        return url

    def repo_info(self, repo_id: str, *, revision: str | None = None, repo_type: str | None = None,
                  token: bool | str | None = None) -> DatasetInfo:
        self._enter("repo_info")
        self._existing(repo_id, repo_type)
        private = json.loads(self._meta(repo_id, repo_type).read_text())["private"]
        return DatasetInfo(id=repo_id, private=private, sha=(self.commits(repo_id) or [{"oid": None}])[-1]["oid"])

    def list_repo_files(self, repo_id: str, *, revision: str | None = None, repo_type: str | None = None,
                        token: str | bool | None = None) -> list[str]:
        self._enter("list_repo_files")
        folder = self._existing(repo_id, repo_type)
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                      if p.is_file() and not p.name.startswith(".upload."))

    def upload_file(self, *, path_or_fileobj: str | Path | bytes | BinaryIO, path_in_repo: str, repo_id: str,
                    token: str | bool | None = None, repo_type: str | None = None, revision: str | None = None,
                    commit_message: str | None = None, commit_description: str | None = None) -> CommitInfo:
        self._enter("upload_file")
        self._check_write(repo_id, repo_type, "/commit/main")
        if isinstance(path_or_fileobj, (str, Path)):
            data = Path(path_or_fileobj).read_bytes()
        elif isinstance(path_or_fileobj, bytes):
            data = path_or_fileobj
        else:
            data = path_or_fileobj.read()
        return self._commit(repo_id, repo_type, commit_message or f"Upload {path_in_repo} with huggingface_hub",
                            {self._clean(path_in_repo): data})

    def upload_folder(self, *, repo_id: str, folder_path: str | Path, path_in_repo: str | None = None,
                      commit_message: str | None = None, commit_description: str | None = None,
                      token: str | bool | None = None, repo_type: str | None = None, revision: str | None = None,
                      allow_patterns: list[str] | str | None = None, ignore_patterns: list[str] | str | None = None,
                      delete_patterns: list[str] | str | None = None) -> CommitInfo:
        self._enter("upload_folder")
        self._check_write(repo_id, repo_type, "/commit/main")
        folder = Path(folder_path)
        names = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
        ignore = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
        ignore += [".git", ".git/*", "*/.git", "**/.git/**", ".cache/huggingface", ".cache/huggingface/*"]  # as the real one
        names = list(filter_repo_objects(names, allow_patterns=allow_patterns, ignore_patterns=ignore))
        prefix = self._clean(path_in_repo) + "/" if path_in_repo else ""
        if delete_patterns:
            repo = self._repo(repo_id, repo_type)
            patterns = [delete_patterns] if isinstance(delete_patterns, str) else delete_patterns
            for old in self.list_repo_files(repo_id, repo_type=repo_type):
                if old.startswith(prefix) and any(fnmatch.fnmatch(old[len(prefix):], p) for p in patterns):
                    (repo / old).unlink()
        return self._commit(repo_id, repo_type, commit_message or "Upload folder using huggingface_hub",
                            {prefix + name: (folder / name).read_bytes() for name in names})

    def hf_hub_download(self, repo_id: str, filename: str, *, subfolder: str | None = None, repo_type: str | None = None,
                        revision: str | None = None, local_dir: str | Path | None = None,
                        token: bool | str | None = None) -> str:
        self._enter("hf_hub_download")
        folder = self._existing(repo_id, repo_type)
        name = self._clean(f"{subfolder}/{filename}" if subfolder else filename)
        if not (folder / name).is_file():
            self._fail(404, "GET", f"{ENDPOINT}/{self._kind(repo_type)}/{repo_id}/resolve/main/{name}", "EntryNotFound")
        target = Path(local_dir if local_dir is not None else self.root / ".cache" / self._kind(repo_type) / repo_id) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / name, target)
        return str(target)

    def snapshot_download(self, repo_id: str, *, repo_type: str | None = None, revision: str | None = None,
                          local_dir: str | Path | None = None, token: bool | str | None = None,
                          allow_patterns: list[str] | str | None = None, ignore_patterns: list[str] | str | None = None) -> str:
        self._enter("snapshot_download")
        folder = self._existing(repo_id, repo_type)
        target = Path(local_dir if local_dir is not None else self.root / ".cache" / self._kind(repo_type) / repo_id)
        names = filter_repo_objects(self.list_repo_files(repo_id, repo_type=repo_type),
                                    allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
        for name in names:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, target / name)
        target.mkdir(parents=True, exist_ok=True)
        return str(target)
