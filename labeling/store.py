"""`LabelStore`: every generation the app showed and every human judgement of it, in one SQLite file.

File: `<data_dir>/labels.sqlite`, in WAL mode (readers never block the writer), one connection per
thread plus a write lock, so the Gradio app may call it from any thread.

Tables (schema version `SCHEMA_VERSION`, recorded in `schema_version`):
- `requests`: one row per generation: prompt, the N candidate texts, the features the ranker saw
  (instruction (H,) and responses (N, H), float16 bytes; float32 when a value would overflow
  float16), layer, the base model's fingerprint, the ranker's version/scores/probabilities,
  optional reward-model scores, per-candidate mean log-prob, token count and finish reason,
  the sampling parameters and an optional profile (task or user) name.
- `labels`: one row per judgement of a request: annotator, choice, the display order, whether the
  ranker's scores were hidden (blind), optional per-candidate grades, and `undone`.

Choice: a candidate index into the request's `candidates` (NOT a display position), as a decimal
string, or "tie", "all_bad" or "skip". Grades: {candidate index: 1..5 stars, or -1/+1 thumbs}.

Nothing is ever lost: undo is a soft delete (`undone = 1`), triggers refuse DELETE on both tables,
bad input raises ValueError before anything is written, and opening a file that is not a label
store (or a newer schema) raises ValueError without touching it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ranker.data import ALL_BAD, TIE, Preference
from ranker.tasks.voting import response_keys

SCHEMA_VERSION = 1
DB_NAME = "labels.sqlite"
SKIP = "skip"
DEFAULT_PROFILE = "default"  # a request recorded without a profile belongs to this one
CHOICE_WORDS = (TIE, ALL_BAD, SKIP)
GRADE_VALUES = (-1, 1, 2, 3, 4, 5)  # thumbs down / up, or 1..5 stars
FLOAT16_MAX = 65504.0
SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION})",
    """CREATE TABLE requests (
        request_id TEXT PRIMARY KEY,
        created TEXT NOT NULL,
        prompt TEXT NOT NULL,
        candidates TEXT NOT NULL,
        num_candidates INTEGER NOT NULL,
        instruction BLOB NOT NULL,
        responses BLOB NOT NULL,
        feature_dtype TEXT NOT NULL,
        hidden_size INTEGER NOT NULL,
        layer INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        ranker_version TEXT,
        ranker_scores TEXT,
        probabilities TEXT,
        rm_scores TEXT,
        mean_logprobs TEXT NOT NULL,
        num_tokens TEXT NOT NULL,
        finish_reasons TEXT NOT NULL,
        sampling TEXT NOT NULL,
        profile TEXT
    )""",
    """CREATE TABLE labels (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        label_id TEXT NOT NULL UNIQUE,
        request_id TEXT NOT NULL REFERENCES requests(request_id),
        created TEXT NOT NULL,
        annotator TEXT NOT NULL,
        choice TEXT NOT NULL,
        order_shown TEXT NOT NULL,
        blind INTEGER NOT NULL,
        grades TEXT,
        undone INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX labels_by_request ON labels(request_id)",
    "CREATE INDEX labels_by_annotator ON labels(annotator, undone)",
    # Nothing is ever deleted: undo is a flag, and a stray DELETE fails instead of losing labels.
    "CREATE TRIGGER requests_never_deleted BEFORE DELETE ON requests "
    "BEGIN SELECT RAISE(ABORT, 'requests are never deleted'); END",
    "CREATE TRIGGER labels_never_deleted BEFORE DELETE ON labels "
    "BEGIN SELECT RAISE(ABORT, 'labels are never deleted; undo marks them undone'); END",
)

# Request columns that hold JSON, and the frame columns labels_frame() decodes them into.
_JSON_COLUMNS = ("candidates", "fingerprint", "ranker_scores", "probabilities", "rm_scores", "mean_logprobs",
                 "num_tokens", "finish_reasons", "sampling")
_REQUEST_COLUMNS = ("request_id", "created", "prompt", "num_candidates", "hidden_size", "layer", "ranker_version",
                    "profile", "feature_dtype") + _JSON_COLUMNS


@dataclass
class LabeledPreference(Preference):
    """A `ranker.data.Preference` plus where it came from.

    As in `Preference`, `responses` (K, H), `mean_logprob` (K,) and `vote_keys` (K answer keys under
    the free-form rule of `ranker.tasks.voting`, as the app scored them) are in display order and `choice`
    is a display position (or "tie"/"all_bad"); `order_shown[p]` is the candidate index shown at
    position p.
    """

    label_id: str = ""
    request_id: str = ""
    annotator: str = ""
    profile: str | None = None
    layer: int = -1  # hidden_states index the features were captured at
    fingerprint: dict = field(default_factory=dict)  # base model fingerprint recorded with the request
    order_shown: list[int] = field(default_factory=list)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, allow_nan=False)


def _float_list(name: str, values: Any, n: int, optional: bool = False) -> list[float] | None:
    """`values` as n finite floats (a list, tuple, array or tensor); ValueError naming `name` otherwise."""
    if values is None:
        if optional:
            return None
        raise ValueError(f"{name} is required ({n} numbers, one per candidate), got None")
    try:
        out = [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}") from None
    if len(out) != n:
        raise ValueError(f"{name} must have one value per candidate ({n}), got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite numbers, got {out}")
    return out


def _feature_dtype(*features: Tensor) -> str:
    """float16, or float32 when a value would overflow float16 (as `ranker.store` does)."""
    overflow = max(f.abs().max().item() for f in features) >= FLOAT16_MAX
    return "float32" if overflow else "float16"


def _features_to_bytes(features: Tensor, dtype: str) -> bytes:
    return features.detach().cpu().float().numpy().astype(dtype).tobytes()


def _features_from_bytes(blob: bytes, dtype: str, shape: tuple[int, ...]) -> Tensor:
    return torch.from_numpy(np.frombuffer(blob, dtype=dtype).astype(np.float32).reshape(shape).copy())


def _fingerprint_dict(fingerprint: Any) -> dict:
    """A fingerprint as a dict: accepts a dict or anything with `to_dict()` (Model/FeatureFingerprint)."""
    if hasattr(fingerprint, "to_dict"):
        fingerprint = fingerprint.to_dict()
    if not isinstance(fingerprint, Mapping):
        raise ValueError(f"fingerprint must be a dict (e.g. ModelFingerprint.to_dict()), got {fingerprint!r}")
    return dict(fingerprint)


def _fingerprint_hidden_size(fingerprint: dict) -> int | None:
    model = fingerprint.get("model", fingerprint)
    return int(model["hidden_size"]) if isinstance(model, Mapping) and "hidden_size" in model else None


class LabelStore:
    """Requests and labels in `<data_dir>/labels.sqlite`; safe to share between threads."""

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir)
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ValueError(f"data_dir {str(self.data_dir)!r} exists and is not a folder")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_NAME
        self._write_lock = threading.Lock()
        self._local = threading.local()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- connection and schema ----------------------------------------------------------------

    def _open(self) -> None:
        """Create the schema in a new file, or check that an existing file is a label store."""
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as handle:
                if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    raise ValueError(f"{self.path} is not a SQLite database; refusing to open or overwrite it")
        try:
            # Check before writing anything: switching the journal mode would modify a foreign file.
            with self._connect() as conn:
                self._check_schema(conn)
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise ValueError(f"could not put {self.path} in WAL mode (journal_mode is {mode!r})")
            with self._write() as conn:
                if not self._check_schema(conn):  # a new file: create the schema in the transaction that found it empty
                    for statement in _SCHEMA:
                        conn.execute(statement)
        except sqlite3.DatabaseError as error:
            raise ValueError(f"{self.path} is not a readable label store: {error}") from error

    def _check_schema(self, conn: sqlite3.Connection) -> bool:
        """False for an empty database, True for a label store of this schema; ValueError otherwise."""
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return False
        if "schema_version" not in tables:
            raise ValueError(
                f"{self.path} is a SQLite database but not a label store (tables {sorted(tables)}, "
                "no schema_version); refusing to use it"
            )
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise ValueError(f"{self.path} has label-store schema version {version!r}; this code reads only version {SCHEMA_VERSION}")
        return True

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (threads never share one). Kept open: closing the last
        connection of a WAL database checkpoints it, which would cost a sync on every call."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=FULL")  # a committed label survives a power cut too
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        yield self._connection()

    def close(self) -> None:
        """Close the calling thread's connection (other threads' close when those threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, serialised with the other writers of this process."""
        with self._write_lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def journal_mode(self) -> str:
        with self._connect() as conn:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]

    # --- requests -----------------------------------------------------------------------------

    def record_request(
        self,
        prompt: str,
        candidates: Sequence[str],
        instruction: Tensor,
        responses: Tensor,
        *,
        layer: int,
        fingerprint: dict,
        ranker_version: str | None,
        ranker_scores: Sequence[float] | Tensor | None,
        mean_logprobs: Sequence[float] | Tensor,
        num_tokens: Sequence[int],
        finish_reasons: Sequence[str],
        sampling: dict,
        rm_scores: Sequence[float] | Tensor | None = None,
        probabilities: Sequence[float] | Tensor | None = None,
        profile: str | None = None,
    ) -> str:
        """Store one generation; returns its request_id (uuid4 hex).

        instruction (H,) and responses (N, H) are the features at hidden_states[layer]; every
        per-candidate list has N entries, in the order of `candidates`. `ranker_scores` may be None
        when no ranker was loaded. Raises ValueError naming the first bad value; nothing is written then.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        if isinstance(candidates, str) or not all(isinstance(c, str) for c in candidates) or len(candidates) == 0:
            raise ValueError(f"candidates must be a non-empty list of strings, got {candidates!r}")
        n = len(candidates)
        instruction, responses = torch.as_tensor(instruction), torch.as_tensor(responses)
        if instruction.dim() != 1 or instruction.shape[0] < 1:
            raise ValueError(f"instruction must have shape (H,), got {tuple(instruction.shape)}")
        hidden = instruction.shape[0]
        if tuple(responses.shape) != (n, hidden):
            raise ValueError(
                f"responses must have shape (N, H) = ({n}, {hidden}) for {n} candidates, got {tuple(responses.shape)}"
            )
        if not (torch.isfinite(instruction).all() and torch.isfinite(responses).all()):
            raise ValueError("instruction and responses features must be finite (found nan or inf)")
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
            raise ValueError(f"layer must be a hidden_states index (int >= 0), got {layer!r}")
        fingerprint = _fingerprint_dict(fingerprint)
        fp_hidden = _fingerprint_hidden_size(fingerprint)
        if fp_hidden is not None and fp_hidden != hidden:
            raise ValueError(f"features have hidden size {hidden}, but the fingerprint's model has {fp_hidden}")
        if ranker_version is not None and not isinstance(ranker_version, str):
            raise ValueError(f"ranker_version must be a string or None, got {ranker_version!r}")
        if not isinstance(sampling, Mapping):
            raise ValueError(f"sampling must be a dict of sampling parameters, got {sampling!r}")
        if profile is not None and (not isinstance(profile, str) or not profile.strip()):
            raise ValueError(f"profile must be None or a non-empty string, got {profile!r}")
        try:
            tokens = [int(t) for t in num_tokens]
        except (TypeError, ValueError):
            tokens = []
        if len(tokens) != n or any(t < 0 for t in tokens):
            raise ValueError(f"num_tokens must be {n} non-negative ints, got {list(num_tokens)}")
        finish = [str(f) for f in finish_reasons]
        if len(finish) != n:
            raise ValueError(f"finish_reasons must have one entry per candidate ({n}), got {len(finish)}")
        dtype = _feature_dtype(instruction, responses)
        row = {
            "request_id": uuid.uuid4().hex,
            "created": _now(),
            "prompt": prompt,
            "candidates": _dumps(list(candidates)),
            "num_candidates": n,
            "instruction": _features_to_bytes(instruction, dtype),
            "responses": _features_to_bytes(responses, dtype),
            "feature_dtype": dtype,
            "hidden_size": hidden,
            "layer": int(layer),
            "fingerprint": _dumps(fingerprint),
            "ranker_version": ranker_version,
            "ranker_scores": _dumps(_float_list("ranker_scores", ranker_scores, n, optional=True)),
            "probabilities": _dumps(_float_list("probabilities", probabilities, n, optional=True)),
            "rm_scores": _dumps(_float_list("rm_scores", rm_scores, n, optional=True)),
            "mean_logprobs": _dumps(_float_list("mean_logprobs", mean_logprobs, n)),
            "num_tokens": _dumps(tokens),
            "finish_reasons": _dumps(finish),
            "sampling": json.dumps(dict(sampling), default=str),
            "profile": profile,
        }
        names = ", ".join(row)
        with self._write() as conn:
            conn.execute(f"INSERT INTO requests ({names}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
        return row["request_id"]

    def _request_row(self, conn: sqlite3.Connection, request_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM requests WHERE request_id = ?", (str(request_id),)).fetchone()
        if row is None:
            raise ValueError(f"unknown request_id {request_id!r}")
        return row

    @staticmethod
    def _decode_request(row: Mapping) -> dict:
        out = {name: row[name] for name in _REQUEST_COLUMNS}
        for name in _JSON_COLUMNS:
            out[name] = None if row[name] is None else json.loads(row[name])
        n, hidden = row["num_candidates"], row["hidden_size"]
        out["instruction"] = _features_from_bytes(row["instruction"], row["feature_dtype"], (hidden,))
        out["responses"] = _features_from_bytes(row["responses"], row["feature_dtype"], (n, hidden))
        return out

    def get_request(self, request_id: str) -> dict:
        """The stored request: JSON fields decoded; `instruction` (H,) and `responses` (N, H) float32 tensors."""
        with self._connect() as conn:
            return self._decode_request(self._request_row(conn, request_id))

    # --- labels -------------------------------------------------------------------------------

    def add_label(
        self,
        request_id: str,
        choice: int | str,
        annotator: str,
        order_shown: Sequence[int],
        blind: bool = True,
        grades: Mapping[int | str, int] | None = None,
    ) -> str:
        """Store one judgement of `request_id`; returns its label_id (uuid4 hex).

        choice: a candidate index (int or decimal string, into the request's candidates), or "tie",
        "all_bad", "skip". order_shown: the candidate indices in the order they were displayed (a
        permutation of range(N)). grades: {candidate index: 1..5 or -1/+1}. ValueError on bad input.
        """
        if not isinstance(annotator, str) or not annotator.strip():
            raise ValueError(f"annotator must be a non-empty string, got {annotator!r}")
        with self._write() as conn:
            n = self._request_row(conn, request_id)["num_candidates"]
            stored_choice = _normalise_choice(choice, n)
            order = _normalise_order(order_shown, n)
            stored_grades = _normalise_grades(grades, n)
            label_id = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO labels (label_id, request_id, created, annotator, choice, order_shown, blind, grades) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (label_id, str(request_id), _now(), annotator.strip(), stored_choice, json.dumps(order), int(bool(blind)),
                 _dumps(stored_grades)),
            )
        return label_id

    def undo_last(self, annotator: str) -> str | None:
        """Mark `annotator`'s latest label that is not undone as undone; its label_id, or None if none."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT label_id FROM labels WHERE annotator = ? AND undone = 0 ORDER BY seq DESC LIMIT 1",
                (str(annotator).strip(),),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE labels SET undone = 1 WHERE label_id = ?", (row[0],))
            return row[0]

    def count(self, annotator: str | None = None, include_skips: bool = False, profile: str | None = None) -> int:
        """Labels that are not undone (skips only with include_skips), optionally of one annotator/profile.

        A request recorded without a profile counts as profile "default".
        """
        sql = "SELECT COUNT(*) FROM labels JOIN requests USING (request_id) WHERE labels.undone = 0"
        args: list = []
        if not include_skips:
            sql += " AND labels.choice != ?"
            args.append(SKIP)
        if annotator is not None:
            sql += " AND labels.annotator = ?"
            args.append(annotator.strip())
        if profile is not None:
            sql += " AND COALESCE(requests.profile, ?) = ?"
            args += [DEFAULT_PROFILE, profile]
        with self._connect() as conn:
            return int(conn.execute(sql, args).fetchone()[0])

    def revision(self) -> tuple[int, int, int]:
        """(requests, label rows, undone rows): changes whenever anything is written (for export caching)."""
        with self._connect() as conn:
            requests = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
            labels, undone = conn.execute("SELECT COUNT(*), COALESCE(SUM(undone), 0) FROM labels").fetchone()
        return int(requests), int(labels), int(undone)

    # --- reading everything -------------------------------------------------------------------

    def _joined_rows(self, with_features: bool) -> list[dict]:
        columns = ", ".join(f"requests.{c}" for c in _REQUEST_COLUMNS if c not in ("request_id", "created"))
        blobs = ", requests.instruction, requests.responses" if with_features else ""
        sql = (
            "SELECT labels.seq, labels.label_id, labels.request_id, labels.created, labels.annotator, labels.choice, "
            "labels.order_shown, labels.blind, labels.grades, labels.undone, requests.created AS request_created, "
            f"{columns}{blobs} FROM labels JOIN requests USING (request_id) ORDER BY labels.seq"
        )
        with self._connect() as conn:
            rows = conn.execute(sql).fetchall()
        out = []
        for row in rows:
            record = {key: row[key] for key in row.keys() if key not in ("instruction", "responses")}
            for name in (*_JSON_COLUMNS, "order_shown"):
                record[name] = None if row[name] is None else json.loads(row[name])
            record["grades"] = None if row["grades"] is None else {int(k): v for k, v in json.loads(row["grades"]).items()}
            record["blind"], record["undone"] = bool(row["blind"]), bool(row["undone"])
            if with_features:
                n, hidden = row["num_candidates"], row["hidden_size"]
                record["instruction"] = _features_from_bytes(row["instruction"], row["feature_dtype"], (hidden,))
                record["responses"] = _features_from_bytes(row["responses"], row["feature_dtype"], (n, hidden))
            out.append(record)
        return out

    def labels_frame(self, include_undone: bool = True) -> pd.DataFrame:
        """One row per label joined with its request (JSON decoded, no features), in insertion order."""
        frame = pd.DataFrame(self._joined_rows(with_features=False))
        if frame.empty:
            return pd.DataFrame(columns=["label_id", "request_id", "created", "annotator", "choice", "undone"])
        if not include_undone:
            frame = frame[~frame["undone"]].reset_index(drop=True)
        return frame.drop(columns=["seq"])

    def _export_frame(self) -> pd.DataFrame:
        rows = self._joined_rows(with_features=True)
        for row in rows:
            row["instruction"] = row["instruction"].numpy()  # float32 lists in parquet
            row["responses"] = list(row["responses"].numpy())
            # Mixed-type JSON columns go out as JSON text, so every parquet column has one type.
            for name in ("fingerprint", "sampling", "grades"):
                row[name] = _dumps({str(k): v for k, v in row[name].items()} if isinstance(row[name], dict) else row[name])
        return pd.DataFrame(rows).drop(columns=["seq"]) if rows else pd.DataFrame()

    def export_parquet(self, path: str | os.PathLike) -> Path:
        """All labels (undone ones too, flagged) with their requests and features (as lists) to a parquet file.

        Written to a temporary file next to `path` and renamed, so readers never see half a file.
        fingerprint, sampling and grades are JSON strings.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = self._export_frame()
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        try:
            frame.to_parquet(temp, index=False)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return path

    def to_dataset(self):
        """The export as a `datasets.Dataset` (same columns as `export_parquet`)."""
        import datasets

        return datasets.Dataset.from_pandas(self._export_frame(), preserve_index=False)

    def preferences(self, profile: str | None = None, annotator: str | None = None) -> list[LabeledPreference]:
        """Non-undone, non-skip labels as preferences (query_id = label_id), oldest first.

        profile: only requests of this profile (None: all; requests without one are "default").
        Responses are reordered to display order (`Preference`'s convention) and the choice becomes
        the display position of the pick; "tie" and "all_bad" pass through.
        """
        out = []
        for row in self._joined_rows(with_features=True):
            if row["undone"] or row["choice"] == SKIP:
                continue
            if profile is not None and (row["profile"] or DEFAULT_PROFILE) != profile:
                continue
            if annotator is not None and row["annotator"] != annotator.strip():
                continue
            order = row["order_shown"]
            choice: int | str = row["choice"] if row["choice"] in (TIE, ALL_BAD) else order.index(int(row["choice"]))
            out.append(LabeledPreference(
                instruction=row["instruction"],
                responses=row["responses"][order],
                choice=choice,
                query_id=row["label_id"],
                mean_logprob=torch.tensor(row["mean_logprobs"], dtype=torch.float32)[order],
                vote_keys=response_keys([row["candidates"][i] for i in order]),
                label_id=row["label_id"],
                request_id=row["request_id"],
                annotator=row["annotator"],
                profile=row["profile"],
                layer=row["layer"],
                fingerprint=row["fingerprint"],
                order_shown=order,
            ))
        return out


def _normalise_choice(choice: int | str, n: int) -> str:
    """The stored form of a choice: a decimal index in [0, n) or one of CHOICE_WORDS."""
    if isinstance(choice, str) and choice.strip() in CHOICE_WORDS:
        return choice.strip()
    try:
        index = int(choice) if not isinstance(choice, (bool, float)) else None
    except ValueError:
        index = None
    if index is None or not 0 <= index < n:
        raise ValueError(f"choice must be a candidate index in [0, {n - 1}] or one of {list(CHOICE_WORDS)}, got {choice!r}")
    return str(index)


def _normalise_order(order_shown: Sequence[int], n: int) -> list[int]:
    try:
        order = [int(i) for i in order_shown]
    except (TypeError, ValueError):
        order = None
    if order is None or sorted(order) != list(range(n)):
        raise ValueError(f"order_shown must be a permutation of range({n}), got {order_shown!r}")
    return order


def _normalise_grades(grades: Mapping[int | str, int] | None, n: int) -> dict[str, int] | None:
    if grades is None:
        return None
    if not isinstance(grades, Mapping):
        raise ValueError(f"grades must be a dict {{candidate index: grade}}, got {grades!r}")
    out = {}
    for key, value in grades.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < n:
            raise ValueError(f"grade key must be a candidate index in [0, {n - 1}], got {key!r}")
        if isinstance(value, bool) or value not in GRADE_VALUES:
            raise ValueError(f"grade for candidate {index} must be 1..5 stars or -1/+1 thumbs, got {value!r}")
        out[str(index)] = int(value)
    return out
