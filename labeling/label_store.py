"""`LabelStore`: every generation the app showed and every human judgement of it, in one SQLite file.

File: `<data_dir>/labels.sqlite`, in WAL mode (readers never block the writer), one connection per
thread plus a write lock, so the Gradio app may call it from any thread; several processes may
share the file too (every write is one `BEGIN IMMEDIATE` transaction).

Tables (schema version `SCHEMA_VERSION`, recorded in `schema_version`):
- `requests`: one row per generation: prompt, the N candidate texts, the features the ranker saw
  (instruction (H,) and responses (N, H), float16 bytes; float32 when a value would overflow
  float16), layer, the base model's fingerprint, the ranker's version/scores/probabilities,
  optional reward-model scores (filled once, after the request is ranked: `set_rm_scores`),
  per-candidate mean log-prob, token count and finish reason, the sampling parameters and an
  optional profile (task or user) name.
- `labels`: one row per judgement of a request: annotator, choice, the display order, whether the
  ranker's scores were hidden (blind), optional per-candidate grades and their `grade_scale`, an
  optional full `ranking`, `undone`, the client's idempotency key `client_key` and `superseded_by`
  (the label that replaced this one).

Every index a label stores is a candidate index into the request's `candidates`, NEVER a display
position (`order_shown[p]` is the candidate shown at position p; `ranking_from_display` and
`grades_from_display` convert what a user clicked):
- choice: a candidate index as a decimal string, or "tie", "all_bad" or "skip".
- grades: {candidate index: grade}, on one `grade_scale`: "stars" (1..5) or "thumbs" (-1 down,
  +1 up). 1 is both one star and thumbs up, so the scale is stored with the grades: given by the
  caller, or inferred when the values decide it (a -1: thumbs; a 2..5: stars); grades that are all 1
  without a scale, or that mix -1 with 2..5, are refused. Labels written before version 3 have no
  scale; `split_grades` reads them per value (-1 thumbs down, 2..5 stars, 1 a star unless the
  label has a -1 and no 2..5).
- ranking: a full ranking, best first: every candidate index exactly once (a permutation of
  range(N); a partial or tied ranking is refused). A label with a ranking has its first candidate
  as its choice, so everything that reads picks reads the ranking's best.
A "skip" that carries grades is a judgement too: it counts, and trains as its grades (no pick).

Idempotency and the one-live-judgement rule (both enforced by UNIQUE indexes, not only in Python,
so concurrent threads or processes cannot break them):
- `(annotator, client_key)` is unique. A client that retries `add_label` with the same key gets
  the same label_id back and no second row (even if the label was undone or superseded since);
  the same key with different content (request, choice, order, blind, grades) is a client bug
  and raises ValueError.
- An annotator has at most one live (not undone) label per request. A new label of the same
  request by the same annotator (a new key, or no key) supersedes the live one: that one is
  marked undone with `superseded_by` = the new label_id, so counts and training see one
  judgement, the newest. `undo_last` does not bring a superseded label back.

Schema versions: 1 had neither client_key nor superseded_by; 2 had no ranking or grade_scale.
Opening an older file migrates it in place, in one transaction per open (all steps or none):
1 -> 2: the two columns are added, older duplicate live labels of an (annotator, request) are
superseded by the newest (by insertion order), the indexes are created; 2 -> 3: `ranking` and
`grade_scale` are added (NULL: no ranking, and grades of unrecorded scale). No row is changed
otherwise, none is removed.

Exports (`export_parquet`, `to_dataset`) hash annotator identities by default: HMAC-SHA256 under
a random key kept in `<data_dir>/annotator_hmac.key` (created 0600 on first use), so the same
annotator gets the same pseudonym within a store, and nobody without the key can find who is who
by hashing a list of user names. A hashed export drops the client keys too. Each export says
whether it is hashed: the `annotator_hashed` column, and in parquet the schema metadata
`language_ranker` (JSON: format, schema_version, annotators "hmac-sha256" or "plain").
`merge_parquet` imports an unhashed export (a backup): requests by request_id and labels by
label_id are inserted only if missing, and `undone` set in either copy stays set, so merging is
idempotent and merging several stores' exports gives their union. Exports of older versions (no
client_key/superseded_by/annotator_hashed, or no ranking/grade_scale) merge too.
Exports for preference trainers (pairs, graded candidates) are `labeling.exports`.

Nothing is ever lost: undo is a soft delete (`undone = 1`), triggers refuse DELETE on both tables,
bad input raises ValueError before anything is written, and opening a file that is not a label
store (or a newer schema) raises ValueError without touching it.

Where the data dir is by default: `labeling.sync.default_data_dir`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from ranker.core.file_io import atomic_file, clear_write_errors
from ranker.core.tensors import storage_dtype
from ranker.rankers.preferences import ALL_BAD, TIE, Preference
from ranker.tasks.voting import response_keys

SCHEMA_VERSION = 3
DB_NAME = "labels.sqlite"
SKIP = "skip"
DEFAULT_PROFILE = "default"  # a request recorded without a profile belongs to this one
CHOICE_WORDS = (TIE, ALL_BAD, SKIP)
GRADE_VALUES = (-1, 1, 2, 3, 4, 5)  # thumbs down / up, or 1..5 stars
STARS, THUMBS = "stars", "thumbs"
GRADE_SCALES = {STARS: (1, 2, 3, 4, 5), THUMBS: (-1, 1)}  # the values each grade_scale allows
SQLITE_HEADER = b"SQLite format 3\x00"
# Limits on what one call may store: far above what the app sends, low enough that a hostile
# caller or file cannot make one row unreasonably large.
MAX_ANNOTATOR_CHARS = 256
MAX_TEXT_CHARS = 1_000_000  # the prompt and each candidate text
MAX_CANDIDATES = 1024
MAX_HIDDEN_SIZE = 65536
HMAC_KEY_NAME = "annotator_hmac.key"
EXPORT_FORMAT = "language-ranker-labels"
EXPORT_METADATA_KEY = b"language_ranker"  # parquet schema metadata: JSON {format, schema_version, annotators}
HASHED, PLAIN = "hmac-sha256", "plain"
_CLIENT_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # request and label ids (uuid4 hex here; other stores' too)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_LABEL_INDEXES = (
    # A retry with the same key finds its label; two concurrent inserts of one key cannot both succeed.
    "CREATE UNIQUE INDEX labels_by_client_key ON labels(annotator, client_key)",
    # At most one live judgement per annotator and request (add_label supersedes the older one).
    "CREATE UNIQUE INDEX labels_live_per_annotator ON labels(annotator, request_id) WHERE undone = 0",
)

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
    # client_key, superseded_by, ranking and grade_scale come last, where the migrations (ALTER TABLE) put them.
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
        undone INTEGER NOT NULL DEFAULT 0,
        client_key TEXT,
        superseded_by TEXT,
        ranking TEXT,
        grade_scale TEXT
    )""",
    "CREATE INDEX labels_by_request ON labels(request_id)",
    "CREATE INDEX labels_by_annotator ON labels(annotator, undone)",
    *_LABEL_INDEXES,
    # Nothing is ever deleted: undo is a flag, and a stray DELETE fails instead of losing labels.
    "CREATE TRIGGER requests_never_deleted BEFORE DELETE ON requests "
    "BEGIN SELECT RAISE(ABORT, 'requests are never deleted'); END",
    "CREATE TRIGGER labels_never_deleted BEFORE DELETE ON labels "
    "BEGIN SELECT RAISE(ABORT, 'labels are never deleted; undo marks them undone'); END",
)

# Version v -> v + 1, all run in one transaction. Version 1 let an annotator hold several live
# labels of one request; the newest (highest seq) stays live and the others point at it.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE labels ADD COLUMN client_key TEXT",
        "ALTER TABLE labels ADD COLUMN superseded_by TEXT",
        """UPDATE labels SET undone = 1, superseded_by = (
               SELECT newest.label_id FROM labels AS newest
               WHERE newest.annotator = labels.annotator AND newest.request_id = labels.request_id
                 AND newest.undone = 0 ORDER BY newest.seq DESC LIMIT 1)
           WHERE undone = 0 AND EXISTS (
               SELECT 1 FROM labels AS later
               WHERE later.annotator = labels.annotator AND later.request_id = labels.request_id
                 AND later.undone = 0 AND later.seq > labels.seq)""",
        *_LABEL_INDEXES,
        "UPDATE schema_version SET version = 2",
    ),
    2: (
        "ALTER TABLE labels ADD COLUMN ranking TEXT",  # JSON list of candidate indices, best first
        "ALTER TABLE labels ADD COLUMN grade_scale TEXT",  # "stars" or "thumbs"; NULL for older graded labels
        "UPDATE schema_version SET version = 3",
    ),
}

# Request columns that hold JSON, and the frame columns labels_frame() decodes them into.
_JSON_COLUMNS = ("candidates", "fingerprint", "ranker_scores", "probabilities", "rm_scores", "mean_logprobs",
                 "num_tokens", "finish_reasons", "sampling")
_REQUEST_COLUMNS = ("request_id", "created", "prompt", "num_candidates", "hidden_size", "layer", "ranker_version",
                    "profile", "feature_dtype") + _JSON_COLUMNS
_LABEL_COLUMNS = ("label_id", "request_id", "created", "annotator", "choice", "order_shown", "blind", "grades",
                  "undone", "client_key", "superseded_by", "ranking", "grade_scale")
# One export row per label: the label, then its request (request_created is the request's `created`).
_EXPORT_COLUMNS = (*_LABEL_COLUMNS, "request_created", *[c for c in _REQUEST_COLUMNS if c not in ("request_id", "created")],
                   "instruction", "responses", "annotator_hashed")
# Columns an export must have to be merged (version-1 exports lack client_key, superseded_by, annotator_hashed;
# version-2 exports lack ranking and grade_scale).
_OPTIONAL_EXPORT_COLUMNS = ("client_key", "superseded_by", "annotator_hashed", "ranking", "grade_scale")
_MERGE_REQUIRED = tuple(c for c in _EXPORT_COLUMNS if c not in _OPTIONAL_EXPORT_COLUMNS)
# Arrow types of the label columns that may be all null in an export (pandas would make them untyped).
_EXPORT_TYPES = {"ranking": pa.list_(pa.int64()), "grade_scale": pa.string()}


@dataclass
class LabeledPreference(Preference):
    """A `ranker.rankers.preferences.Preference` plus where it came from.

    As in `Preference`, `responses` (K, H), `mean_logprob` (K,) and `vote_keys` (K answer keys under
    the free-form rule of `ranker.tasks.voting`, as the app scored them) are in display order and `choice`
    is a display position (or "tie"/"all_bad"); so are the keys of `stars`/`thumbs` and the entries of
    `ranking`. `order_shown[p]` is the candidate index shown at position p. A "skip" that carries
    grades comes as choice "tie" (no pick) with its grades.
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


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_bool(name: str, value: Any) -> bool:
    # Strict: bool("false") is True, so a string or number must not pass for a flag.
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_text(name: str, value: Any, max_chars: int = MAX_TEXT_CHARS, allow_empty: bool = True) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ValueError(f"{name} must be a{'' if allow_empty else ' non-empty'} string, got {value!r:.200}")
    if len(value) > max_chars:
        raise ValueError(f"{name} must be at most {max_chars} characters, got {len(value)}")
    return value


def _check_annotator(annotator: Any) -> str:
    """The stored form of an annotator id: stripped, 1..MAX_ANNOTATOR_CHARS printable characters."""
    if not isinstance(annotator, str) or not annotator.strip():
        raise ValueError(f"annotator must be a non-empty string, got {annotator!r:.200}")
    annotator = annotator.strip()
    if len(annotator) > MAX_ANNOTATOR_CHARS or _CONTROL_RE.search(annotator):
        raise ValueError(f"annotator must be at most {MAX_ANNOTATOR_CHARS} printable characters, got {annotator!r:.300}")
    return annotator


def _check_client_key(client_key: Any) -> str | None:
    if client_key is None:
        return None
    if not isinstance(client_key, str) or not _CLIENT_KEY_RE.match(client_key):
        raise ValueError(f"client_key must be None or 1-128 characters of A-Z a-z 0-9 _ . : -, got {client_key!r:.200}")
    return client_key


def _check_id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError(f"{name} must be an id of 1-64 letters, digits, '_' or '-', got {value!r:.200}")
    return value


def _check_timestamp(name: str, value: Any) -> str:
    """An ISO 8601 time with a time zone, in the store's form (UTC, microseconds)."""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) and len(value) <= 64 else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(f"{name} must be an ISO 8601 time with a time zone, got {value!r:.100}")
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _float_list(name: str, values: Any, n: int, optional: bool = False) -> list[float] | None:
    """`values` as n finite floats (a list, tuple, array or tensor); ValueError naming `name` otherwise."""
    if values is None:
        if optional:
            return None
        raise ValueError(f"{name} is required ({n} numbers, one per candidate), got None")
    try:
        items = values.tolist() if hasattr(values, "tolist") else values
        if isinstance(items, (str, bytes, Mapping)) or any(isinstance(v, (str, bytes, bool)) for v in items):
            raise TypeError
        out = [float(v) for v in items]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of numbers, got {values!r:.200}") from None
    if len(out) != n:
        raise ValueError(f"{name} must have one value per candidate ({n}), got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite numbers, got {out}")
    return out


def _features_to_bytes(features: Tensor, dtype: str) -> bytes:
    return features.detach().cpu().float().numpy().astype(dtype).tobytes()


def _features_from_bytes(blob: bytes, dtype: str, shape: tuple[int, ...]) -> Tensor:
    return torch.from_numpy(np.frombuffer(blob, dtype=dtype).astype(np.float32).reshape(shape).copy())


def _as_features(name: str, values: Any) -> Tensor:
    """A tensor of features from a tensor, array or (nested) list of numbers; ValueError otherwise."""
    if isinstance(values, Tensor):
        return values
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers (a tensor, array or nested list), got {type(values).__name__}") from None
    return torch.from_numpy(array)


def _fingerprint_dict(fingerprint: Any) -> dict:
    """A fingerprint as a dict: accepts a dict or anything with `to_dict()` (Model/FeatureFingerprint)."""
    if hasattr(fingerprint, "to_dict"):
        fingerprint = fingerprint.to_dict()
    if not isinstance(fingerprint, Mapping):
        raise ValueError(f"fingerprint must be a dict (e.g. ModelFingerprint.to_dict()), got {fingerprint!r:.200}")
    return dict(fingerprint)


def _fingerprint_hidden_size(fingerprint: dict) -> int | None:
    model = fingerprint.get("model", fingerprint)
    if not isinstance(model, Mapping) or "hidden_size" not in model:
        return None
    if not _is_int(model["hidden_size"]):
        raise ValueError(f"the fingerprint's hidden_size must be an int, got {model['hidden_size']!r:.100}")
    return int(model["hidden_size"])


def _validated_request(
    prompt: Any, candidates: Any, instruction: Any, responses: Any, *, layer: Any, fingerprint: Any,
    ranker_version: Any, ranker_scores: Any, mean_logprobs: Any, num_tokens: Any, finish_reasons: Any,
    sampling: Any, rm_scores: Any = None, probabilities: Any = None, profile: Any = None,
) -> dict:
    """A validated `requests` row without request_id and created (see `LabelStore.record_request`)."""
    _check_text("prompt", prompt, allow_empty=False)
    if (isinstance(candidates, (str, bytes, Mapping)) or not isinstance(candidates, Sequence)
            or not 0 < len(candidates) <= MAX_CANDIDATES or not all(isinstance(c, str) for c in candidates)):
        raise ValueError(f"candidates must be a list of 1..{MAX_CANDIDATES} strings, got {candidates!r:.200}")
    for k, text in enumerate(candidates):
        _check_text(f"candidates[{k}]", text)
    n = len(candidates)
    instruction, responses = _as_features("instruction", instruction), _as_features("responses", responses)
    if instruction.dim() != 1 or not 0 < instruction.shape[0] <= MAX_HIDDEN_SIZE:
        raise ValueError(f"instruction must have shape (H,) with 1 <= H <= {MAX_HIDDEN_SIZE}, got {tuple(instruction.shape)}")
    hidden = instruction.shape[0]
    if tuple(responses.shape) != (n, hidden):
        raise ValueError(
            f"responses must have shape (N, H) = ({n}, {hidden}) for {n} candidates, got {tuple(responses.shape)}"
        )
    if not (torch.isfinite(instruction).all() and torch.isfinite(responses).all()):
        raise ValueError("instruction and responses features must be finite (found nan or inf)")
    if not _is_int(layer) or layer < 0:
        raise ValueError(f"layer must be a hidden_states index (int >= 0), got {layer!r:.100}")
    fingerprint = _fingerprint_dict(fingerprint)
    fp_hidden = _fingerprint_hidden_size(fingerprint)
    if fp_hidden is not None and fp_hidden != hidden:
        raise ValueError(f"features have hidden size {hidden}, but the fingerprint's model has {fp_hidden}")
    if ranker_version is not None:
        _check_text("ranker_version", ranker_version, max_chars=256)
    if not isinstance(sampling, Mapping):
        raise ValueError(f"sampling must be a dict of sampling parameters, got {sampling!r:.200}")
    if profile is not None and (not isinstance(profile, str) or not profile.strip() or len(profile) > 256):
        raise ValueError(f"profile must be None or a non-empty string of at most 256 characters, got {profile!r:.300}")
    values = num_tokens.tolist() if hasattr(num_tokens, "tolist") else num_tokens
    tokens = list(values) if isinstance(values, Sequence) and not isinstance(values, (str, bytes)) else None
    if tokens is None or len(tokens) != n or not all(_is_int(t) and t >= 0 for t in tokens):
        raise ValueError(f"num_tokens must be {n} non-negative ints, got {num_tokens!r:.200}")
    if isinstance(finish_reasons, (str, bytes)) or not isinstance(finish_reasons, Sequence):
        raise ValueError(f"finish_reasons must be a list of strings, got {finish_reasons!r:.200}")
    finish = [str(f) for f in finish_reasons]
    if len(finish) != n or any(len(f) > 64 for f in finish):
        raise ValueError(f"finish_reasons must have one entry of at most 64 characters per candidate ({n}), got {finish!r:.200}")
    dtype = str(storage_dtype(instruction, responses)).removeprefix("torch.")  # "float16" or "float32", for numpy
    try:
        fingerprint_text = json.dumps(fingerprint, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"fingerprint must be JSON (numbers, strings, lists, dicts): {error}") from None
    return {
        "prompt": prompt,
        "candidates": _dumps(list(candidates)),
        "num_candidates": n,
        "instruction": _features_to_bytes(instruction, dtype),
        "responses": _features_to_bytes(responses, dtype),
        "feature_dtype": dtype,
        "hidden_size": hidden,
        "layer": int(layer),
        "fingerprint": fingerprint_text,
        "ranker_version": ranker_version,
        "ranker_scores": _dumps(_float_list("ranker_scores", ranker_scores, n, optional=True)),
        "probabilities": _dumps(_float_list("probabilities", probabilities, n, optional=True)),
        "rm_scores": _dumps(_float_list("rm_scores", rm_scores, n, optional=True)),
        "mean_logprobs": _dumps(_float_list("mean_logprobs", mean_logprobs, n)),
        "num_tokens": _dumps([int(t) for t in tokens]),
        "finish_reasons": _dumps(finish),
        "sampling": json.dumps(dict(sampling), default=str),
        "profile": profile,
    }


class LabelStore:
    """Requests and labels in `<data_dir>/labels.sqlite`; safe to share between threads."""

    def __init__(self, data_dir: str | os.PathLike):
        if not isinstance(data_dir, (str, os.PathLike)):
            raise ValueError(f"data_dir must be a path, got {data_dir!r:.200}")
        self.data_dir = Path(data_dir)
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ValueError(f"data_dir {str(self.data_dir)!r} exists and is not a folder")
        self.path = self.data_dir / DB_NAME
        with clear_write_errors(self.path):  # a read-only or full disk: OSError saying so
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- connection and schema ----------------------------------------------------------------

    def _open(self) -> None:
        """Create the schema in a new file, migrate an older one, or check that a file is a label store."""
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as handle:
                if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    raise ValueError(f"{self.path} is not a SQLite database; refusing to open or overwrite it")
        try:
            # Check before writing anything: switching the journal mode would modify a foreign file.
            with self._connect() as conn:
                self._schema_version(conn)
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise ValueError(f"could not put {self.path} in WAL mode (journal_mode is {mode!r})")
            with self._write() as conn:
                # Decided again inside the transaction: another process may have created or migrated it meanwhile.
                version = self._schema_version(conn)
                if version is None:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                else:
                    for old in range(version, SCHEMA_VERSION):
                        for statement in _MIGRATIONS[old]:
                            conn.execute(statement)
        except sqlite3.DatabaseError as error:
            raise _write_failure(error, self.path) or ValueError(f"{self.path} is not a readable label store: {error}") from error

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        """None for an empty database, the version of a label store this code reads; ValueError otherwise."""
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "schema_version" not in tables:
            raise ValueError(
                f"{self.path} is a SQLite database but not a label store (tables {sorted(tables)}, "
                "no schema_version); refusing to use it"
            )
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version != SCHEMA_VERSION and version not in _MIGRATIONS:
            raise ValueError(f"{self.path} has label-store schema version {version!r}; this code reads versions "
                             f"{sorted(_MIGRATIONS)} (migrated on open) and {SCHEMA_VERSION}")
        return int(version)

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
        """One write transaction, serialised with the other writers of this process (and, by
        BEGIN IMMEDIATE, of other processes)."""
        with self._write_lock, self._connect() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                failure = _write_failure(error, self.path) if isinstance(error, sqlite3.Error) else None
                if failure is not None:
                    raise failure from error
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
        row = {"request_id": uuid.uuid4().hex, "created": _now()}
        row.update(_validated_request(
            prompt, candidates, instruction, responses, layer=layer, fingerprint=fingerprint,
            ranker_version=ranker_version, ranker_scores=ranker_scores, mean_logprobs=mean_logprobs,
            num_tokens=num_tokens, finish_reasons=finish_reasons, sampling=sampling, rm_scores=rm_scores,
            probabilities=probabilities, profile=profile,
        ))
        with self._write() as conn:
            self._insert(conn, "requests", row)
        return row["request_id"]

    @staticmethod
    def _insert(conn: sqlite3.Connection, table: str, row: Mapping) -> None:
        conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))

    def _request_row(self, conn: sqlite3.Connection, request_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
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
        request_id = _check_id("request_id", request_id)
        with self._connect() as conn:
            return self._decode_request(self._request_row(conn, request_id))

    def set_rm_scores(self, request_id: str, rm_scores: Sequence[float] | Tensor) -> None:
        """Add the reward model's scores (N finite floats) to a request stored without them.

        The app records a request as soon as it is ranked and the RM scores it afterwards. Scores
        once stored are never replaced: the same scores again are a no-op, others raise ValueError.
        """
        request_id = _check_id("request_id", request_id)
        with self._write() as conn:
            row = self._request_row(conn, request_id)
            stored = _dumps(_float_list("rm_scores", rm_scores, row["num_candidates"]))
            if row["rm_scores"] is not None and row["rm_scores"] != stored:
                raise ValueError(f"request {request_id} already has reward-model scores; they are never replaced")
            conn.execute("UPDATE requests SET rm_scores = ? WHERE request_id = ?", (stored, request_id))

    # --- labels -------------------------------------------------------------------------------

    def add_label(
        self,
        request_id: str,
        choice: int | str,
        annotator: str,
        order_shown: Sequence[int],
        blind: bool = True,
        grades: Mapping[int | str, int] | None = None,
        client_key: str | None = None,
        *,
        ranking: Sequence[int] | None = None,
        grade_scale: str | None = None,
    ) -> str:
        """Store one judgement of `request_id`; returns its label_id (uuid4 hex).

        Every index is a candidate index into the request's candidates, never a display position
        (`ranking_from_display` / `grades_from_display` convert what the user clicked).
        choice: a candidate index (int or decimal string), or "tie", "all_bad", "skip". order_shown:
        the candidate indices in the order they were displayed (a permutation of range(N)).
        grades: {candidate index: 1..5 or -1/+1}, on `grade_scale` "stars" or "thumbs" (None: inferred
        from the values where they decide it; see the module docstring).
        ranking: all N candidate indices, best first, each once; choice must then be ranking[0].
        client_key: the client's idempotency key (1-128 of A-Z a-z 0-9 _ . : -), unique per
        annotator: a retry with the same key and content returns the first call's label_id and
        writes nothing; the same key with other content raises ValueError.
        The annotator's live label of this request, if any, is superseded (see the module docstring).
        ValueError on bad input; nothing is written then.
        """
        request_id = _check_id("request_id", request_id)
        annotator = _check_annotator(annotator)
        client_key = _check_client_key(client_key)
        blind = _check_bool("blind", blind)
        with self._write() as conn:
            n = self._request_row(conn, request_id)["num_candidates"]
            stored_choice = _normalise_choice(choice, n)
            order = json.dumps(_normalise_order(order_shown, n))
            normalised_grades = _normalise_grades(grades, n)
            stored_scale = _check_grade_scale(normalised_grades, grade_scale)
            stored_grades = _dumps(normalised_grades)
            ranked = _normalise_ranking(ranking, n)
            if ranked is not None and stored_choice != str(ranked[0]):
                raise ValueError(f"choice {choice!r:.40} must be the ranking's first (best) candidate {ranked[0]} "
                                 "when a ranking is given")
            stored_ranking = _dumps(ranked)
            if client_key is not None:
                earlier = conn.execute(
                    "SELECT label_id, request_id, choice, order_shown, blind, grades, ranking, grade_scale FROM labels "
                    "WHERE annotator = ? AND client_key = ?", (annotator, client_key)).fetchone()
                if earlier is not None:
                    content = (request_id, stored_choice, order, int(blind), stored_grades, stored_ranking, stored_scale)
                    if tuple(earlier)[1:] != content:
                        raise ValueError(
                            f"client_key {client_key!r} of annotator {annotator!r} was already used for label "
                            f"{earlier['label_id']} (request {earlier['request_id']}, choice {earlier['choice']!r}, "
                            f"order {earlier['order_shown']}, blind {bool(earlier['blind'])}, grades {earlier['grades']} "
                            f"on scale {earlier['grade_scale']}, ranking {earlier['ranking']}); "
                            f"a retry must resend the same label, a new label needs a new key")
                    return earlier["label_id"]
            label_id = uuid.uuid4().hex
            # Supersede first: the partial UNIQUE index allows one live label per (annotator, request).
            conn.execute("UPDATE labels SET undone = 1, superseded_by = ? WHERE annotator = ? AND request_id = ? AND undone = 0",
                         (label_id, annotator, request_id))
            self._insert(conn, "labels", {
                "label_id": label_id, "request_id": request_id, "created": _now(), "annotator": annotator,
                "choice": stored_choice, "order_shown": order, "blind": int(blind), "grades": stored_grades,
                "client_key": client_key, "ranking": stored_ranking, "grade_scale": stored_scale,
            })
        return label_id

    def label_for_key(self, annotator: str, client_key: str) -> str | None:
        """The label_id stored under (annotator, client_key), or None: lets a caller see a retry coming."""
        annotator, client_key = _check_annotator(annotator), _check_client_key(client_key)
        with self._connect() as conn:
            row = conn.execute("SELECT label_id FROM labels WHERE annotator = ? AND client_key = ?",
                               (annotator, client_key)).fetchone()
        return None if row is None else row[0]

    def live_choice(self, annotator: str, request_id: str) -> str | None:
        """The choice of `annotator`'s live (not undone) label of `request_id`, or None."""
        annotator, request_id = _check_annotator(annotator), _check_id("request_id", request_id)
        with self._connect() as conn:
            row = conn.execute("SELECT choice FROM labels WHERE annotator = ? AND request_id = ? AND undone = 0",
                               (annotator, request_id)).fetchone()
        return None if row is None else row[0]

    def requests_to_review(self, annotator: str, overlap: int, limit: int = 1) -> list[str]:
        """Requests another annotator should judge too (the app's overlap for inter-annotator agreement).

        Oldest first, at most `limit`: requests with at least one live judgement (a pick, "tie" or
        "all_bad", or a graded skip), judged by fewer than `overlap` distinct annotators, and never
        labelled by `annotator` (not even a skip or an undone label).
        """
        annotator = _check_annotator(annotator)
        for name, value, low in (("overlap", overlap, 2), ("limit", limit, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1000:
                raise ValueError(f"{name} must be a whole number in {low}..1000, got {value!r:.40}")
        judged = "labels.undone = 0 AND (labels.choice != ? OR (labels.grades IS NOT NULL AND labels.grades != '{}'))"
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT request_id FROM labels JOIN requests USING (request_id) WHERE {judged} "
                "AND request_id NOT IN (SELECT request_id FROM labels WHERE annotator = ?) "
                "GROUP BY request_id HAVING COUNT(DISTINCT labels.annotator) < ? "
                "ORDER BY MIN(requests.created), request_id LIMIT ?",
                (SKIP, annotator, overlap, limit),
            ).fetchall()
        return [row[0] for row in rows]

    def undo_last(self, annotator: str) -> str | None:
        """Mark `annotator`'s latest label that is not undone as undone; its label_id, or None if none."""
        annotator = _check_annotator(annotator)
        with self._write() as conn:
            row = conn.execute(
                "SELECT label_id FROM labels WHERE annotator = ? AND undone = 0 ORDER BY seq DESC LIMIT 1",
                (annotator,),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE labels SET undone = 1 WHERE label_id = ?", (row[0],))
            return row[0]

    def count(self, annotator: str | None = None, include_skips: bool = False, profile: str | None = None) -> int:
        """Labels that are not undone (skips only with include_skips), optionally of one annotator/profile.

        A skip that carries grades is a judgement and counts without include_skips. A request
        recorded without a profile counts as profile "default".
        """
        sql = "SELECT COUNT(*) FROM labels JOIN requests USING (request_id) WHERE labels.undone = 0"
        args: list = []
        if not _check_bool("include_skips", include_skips):
            sql += " AND (labels.choice != ? OR (labels.grades IS NOT NULL AND labels.grades != '{}'))"
            args.append(SKIP)
        if annotator is not None:
            sql += " AND labels.annotator = ?"
            args.append(_check_annotator(annotator))
        if profile is not None:
            sql += " AND COALESCE(requests.profile, ?) = ?"
            args += [DEFAULT_PROFILE, _check_text("profile", profile, max_chars=256)]
        with self._connect() as conn:
            return int(conn.execute(sql, args).fetchone()[0])

    def revision(self) -> tuple[int, int, int]:
        """(requests, label rows, undone rows): changes whenever anything is written (for export caching)."""
        with self._connect() as conn:
            requests = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
            labels, undone = conn.execute("SELECT COUNT(*), COALESCE(SUM(undone), 0) FROM labels").fetchone()
        return int(requests), int(labels), int(undone)

    # --- reading everything -------------------------------------------------------------------

    def _joined_rows(self, with_features: bool, include_unlabelled: bool = False) -> list[dict]:
        """Labels joined with their requests, oldest first; with include_unlabelled, then one row
        (label columns None) per request that has no label."""
        columns = ", ".join(f"requests.{c}" for c in _REQUEST_COLUMNS if c not in ("request_id", "created"))
        blobs = ", requests.instruction, requests.responses" if with_features else ""
        label_columns = ", ".join(f"labels.{c}" if c != "request_id" else "requests.request_id" for c in _LABEL_COLUMNS)
        join = ("FROM requests LEFT JOIN labels USING (request_id) ORDER BY labels.seq IS NULL, labels.seq, requests.rowid"
                if include_unlabelled else "FROM labels JOIN requests USING (request_id) ORDER BY labels.seq")
        sql = f"SELECT labels.seq, {label_columns}, requests.created AS request_created, {columns}{blobs} {join}"
        with self._connect() as conn:
            rows = conn.execute(sql).fetchall()
        out = []
        for row in rows:
            record = {key: row[key] for key in row.keys() if key not in ("instruction", "responses")}
            for name in (*_JSON_COLUMNS, "order_shown", "ranking"):
                record[name] = None if row[name] is None else json.loads(row[name])
            record["grades"] = None if row["grades"] is None else {int(k): v for k, v in json.loads(row["grades"]).items()}
            if row["label_id"] is None:  # a request nobody labelled (include_unlabelled)
                record["blind"] = record["undone"] = None
            else:
                record["blind"], record["undone"] = bool(row["blind"]), bool(row["undone"])
            if with_features:
                n, hidden = row["num_candidates"], row["hidden_size"]
                record["instruction"] = _features_from_bytes(row["instruction"], row["feature_dtype"], (hidden,))
                record["responses"] = _features_from_bytes(row["responses"], row["feature_dtype"], (n, hidden))
            out.append(record)
        return out

    def label_records(self, include_undone: bool = True) -> list[dict]:
        """`labels_frame`'s rows as dicts, oldest first, with None (not pandas' NaN) where a value is missing."""
        include_undone = _check_bool("include_undone", include_undone)
        records = [row for row in self._joined_rows(with_features=False) if include_undone or not row["undone"]]
        for row in records:
            del row["seq"]
        return records

    def labels_frame(self, include_undone: bool = True) -> pd.DataFrame:
        """One row per label joined with its request (JSON decoded, no features), in insertion order."""
        frame = pd.DataFrame(self._joined_rows(with_features=False))
        if frame.empty:
            return pd.DataFrame(columns=["label_id", "request_id", "created", "annotator", "choice", "undone"])
        if not include_undone:
            frame = frame[~frame["undone"]].reset_index(drop=True)
        return frame.drop(columns=["seq"])

    # --- exports and merging --------------------------------------------------------------------

    def _hmac_key(self) -> bytes:
        """The store's secret for annotator pseudonyms; created (mode 0600) on first use."""
        path = self.data_dir / HMAC_KEY_NAME
        if not path.exists():
            # Written in full to a private temp file, then linked into place: a concurrent reader
            # never sees a half-written key, and of two concurrent creators the first link wins.
            handle, temp = tempfile.mkstemp(prefix=f".{HMAC_KEY_NAME}.", dir=self.data_dir)  # mode 0600
            try:
                with os.fdopen(handle, "w") as file:
                    file.write(secrets.token_hex(32) + "\n")
                    file.flush()
                    os.fsync(file.fileno())
                with contextlib.suppress(FileExistsError):
                    os.link(temp, path)
            finally:
                os.unlink(temp)
        text = path.read_text().strip()
        if not re.fullmatch(r"[0-9a-f]{64}", text):
            raise ValueError(f"{path} is not an annotator hash key (64 hex digits); refusing to hash identities with it")
        return bytes.fromhex(text)

    def _pseudonym(self) -> Callable[[str], str]:
        key = self._hmac_key()
        return lambda annotator: hmac.new(key, annotator.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def annotator_pseudonyms(self) -> Callable[[str], str]:
        """annotator id -> the keyed pseudonym the exports use (module docstring); makes the key on first use."""
        return self._pseudonym()

    def _export_frame(self, hash_annotators: bool, include_unlabelled: bool = False) -> pd.DataFrame:
        hash_annotators = _check_bool("hash_annotators", hash_annotators)
        pseudonym = self._pseudonym() if hash_annotators else None
        rows = self._joined_rows(with_features=True, include_unlabelled=_check_bool("include_unlabelled", include_unlabelled))
        for row in rows:
            row["instruction"] = row["instruction"].numpy()  # float32 lists in parquet
            row["responses"] = list(row["responses"].numpy())
            # Mixed-type JSON columns go out as JSON text, so every parquet column has one type.
            for name in ("fingerprint", "sampling", "grades"):
                row[name] = _dumps({str(k): v for k, v in row[name].items()} if isinstance(row[name], dict) else row[name])
            if pseudonym is not None and row["annotator"] is not None:
                row["annotator"] = pseudonym(row["annotator"])
                row["client_key"] = None  # a client may build its keys from the user's name
            row["annotator_hashed"] = hash_annotators
        return pd.DataFrame(rows, columns=list(_EXPORT_COLUMNS))

    def export_parquet(self, path: str | os.PathLike, hash_annotators: bool = True, include_unlabelled: bool = False) -> Path:
        """All labels (undone ones too, flagged) with their requests and features (as lists) to a parquet file.

        hash_annotators: replace each annotator by its keyed pseudonym (see the module docstring)
        and drop the client keys; False only for a private backup (which `merge_parquet` reads).
        include_unlabelled: also one row per request nobody labelled yet, its label columns null
        (a full backup: a label sent after a restart still finds its request).
        Written to a temporary file next to `path` and renamed, so readers never see half a file.
        fingerprint, sampling and grades are JSON strings; ranking is a list of candidate indices
        (null without one). Schema metadata `language_ranker` records the format and whether
        annotators are hashed.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path must be a file path, got {path!r:.200}")
        path = Path(path)
        frame = self._export_frame(hash_annotators, include_unlabelled)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        for name, kind in _EXPORT_TYPES.items():  # a column that is all null has no type of its own
            table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(kind))
        info = {"format": EXPORT_FORMAT, "schema_version": SCHEMA_VERSION, "annotators": HASHED if hash_annotators else PLAIN}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), EXPORT_METADATA_KEY: json.dumps(info).encode()})
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, mode=0o600) as temp:  # it may hold plain annotator ids: owner only, as the store
            pq.write_table(table, temp)
        return path

    def to_dataset(self, hash_annotators: bool = True):
        """The export as a `datasets.Dataset` (same columns as `export_parquet`, `annotator_hashed` included)."""
        import datasets

        return datasets.Dataset.from_pandas(self._export_frame(hash_annotators), preserve_index=False)

    def merge_parquet(self, path: str | os.PathLike) -> dict:
        """Import an unhashed export (`export_parquet(path, hash_annotators=False)`) of this or another store.

        Requests (by request_id) and labels (by label_id) are inserted only when missing; a label
        undone in either copy ends up undone. A missing label whose (annotator, client_key) is
        already taken by another label is the same client request stored twice: it is skipped.
        A live label meeting a live label of the same annotator and request: the later `created`
        stays live, the other is superseded. Rows without a label_id (`include_unlabelled`) bring
        only their request. Returns counts: rows (in the file), requests_added,
        labels_added, labels_marked_undone, labels_superseded, duplicate_client_keys.
        ValueError for a hashed, foreign or invalid file (naming the row); nothing is written then.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path must be a file path, got {path!r:.200}")
        path = Path(path)
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as error:
            raise ValueError(f"{path} is not a readable parquet file: {error}") from error
        _check_export_header(path, parquet.schema_arrow)
        requests: dict[str, dict] = {}
        labels: list[dict] = []
        position = 0
        try:
            for batch in parquet.iter_batches(batch_size=256):
                for record in batch.to_pylist():
                    if record.get("annotator_hashed"):
                        raise ValueError("annotator_hashed is true: a hashed export cannot be merged back")
                    request_id = _check_id("request_id", record["request_id"])
                    if request_id not in requests:
                        requests[request_id] = _request_from_export(record)
                    if record["label_id"] is not None:  # None: a request nobody labelled (include_unlabelled)
                        labels.append(_label_from_export(record, requests[request_id]["num_candidates"]))
                    position += 1
        except (OSError, pa.ArrowException) as error:
            raise ValueError(f"{path} could not be read at row {position}: {error}") from error
        except ValueError as error:
            raise ValueError(f"{path} row {position}: {error}") from None
        counts = dict.fromkeys(("requests_added", "labels_added", "labels_marked_undone", "labels_superseded",
                                "duplicate_client_keys"), 0)
        with self._write() as conn:
            for request_id, request in requests.items():
                local = conn.execute("SELECT num_candidates FROM requests WHERE request_id = ?", (request_id,)).fetchone()
                if local is None:
                    self._insert(conn, "requests", request)
                    counts["requests_added"] += 1
                elif local[0] != request["num_candidates"]:
                    raise ValueError(f"{path}: request {request_id} has {request['num_candidates']} candidates, "
                                     f"but this store's request of that id has {local[0]}; refusing to merge")
            for label in labels:
                self._merge_label(conn, label, counts)
        return {"rows": position, **counts}

    @staticmethod
    def _merge_label(conn: sqlite3.Connection, label: dict, counts: dict) -> None:
        local = conn.execute("SELECT undone FROM labels WHERE label_id = ?", (label["label_id"],)).fetchone()
        if local is not None:
            if label["undone"] and not local["undone"]:
                conn.execute("UPDATE labels SET undone = 1, superseded_by = COALESCE(superseded_by, ?) WHERE label_id = ?",
                             (label["superseded_by"], label["label_id"]))
                counts["labels_marked_undone"] += 1
            return
        if label["client_key"] is not None and conn.execute(
                "SELECT 1 FROM labels WHERE annotator = ? AND client_key = ?", (label["annotator"], label["client_key"])).fetchone():
            counts["duplicate_client_keys"] += 1
            return
        if not label["undone"]:
            live = conn.execute("SELECT label_id, created FROM labels WHERE annotator = ? AND request_id = ? AND undone = 0",
                                (label["annotator"], label["request_id"])).fetchone()
            if live is not None:
                if (label["created"], label["label_id"]) > (live["created"], live["label_id"]):
                    conn.execute("UPDATE labels SET undone = 1, superseded_by = ? WHERE label_id = ?",
                                 (label["label_id"], live["label_id"]))
                else:
                    label = {**label, "undone": 1, "superseded_by": live["label_id"]}
                counts["labels_superseded"] += 1
        LabelStore._insert(conn, "labels", label)
        counts["labels_added"] += 1

    def preferences(self, profile: str | None = None, annotator: str | None = None) -> list[LabeledPreference]:
        """Non-undone labels as preferences (query_id = label_id), oldest first; skips only when graded.

        profile: only requests of this profile (None: all; requests without one are "default").
        Responses are reordered to display order (`Preference`'s convention): the choice becomes
        the display position of the pick ("tie" and "all_bad" pass through; a graded skip becomes
        "tie", no pick), and the ranking and the grades' keys become display positions too. Grades
        are split by `split_grades` into `stars` and `thumbs`.
        """
        annotator = None if annotator is None else _check_annotator(annotator)
        out = []
        for row in self._joined_rows(with_features=True):
            if row["undone"] or (row["choice"] == SKIP and not row["grades"]):
                continue
            if profile is not None and (row["profile"] or DEFAULT_PROFILE) != profile:
                continue
            if annotator is not None and row["annotator"] != annotator:
                continue
            order = row["order_shown"]
            position = {candidate: p for p, candidate in enumerate(order)}
            choice: int | str = TIE if row["choice"] == SKIP else row["choice"]
            if choice not in (TIE, ALL_BAD):
                choice = position[int(choice)]
            stars, thumbs = split_grades(row["grades"], row["grade_scale"])
            out.append(LabeledPreference(
                instruction=row["instruction"],
                responses=row["responses"][order],
                choice=choice,
                query_id=row["label_id"],
                mean_logprob=torch.tensor(row["mean_logprobs"], dtype=torch.float32)[order],
                vote_keys=response_keys([row["candidates"][i] for i in order]),
                ranking=None if row["ranking"] is None else [position[c] for c in row["ranking"]],
                stars={position[c]: g for c, g in stars.items()} or None,
                thumbs={position[c]: g for c, g in thumbs.items()} or None,
                label_id=row["label_id"],
                request_id=row["request_id"],
                annotator=row["annotator"],
                profile=row["profile"],
                layer=row["layer"],
                fingerprint=row["fingerprint"],
                order_shown=order,
            ))
        return out


def _check_export_header(path: Path, schema: pa.Schema) -> None:
    """ValueError unless `schema` is an unhashed label export (a version-1 export has no metadata: never hashed)."""
    raw = (schema.metadata or {}).get(EXPORT_METADATA_KEY)
    if raw is not None:
        try:
            info = json.loads(raw)
        except ValueError:
            info = None
        if not isinstance(info, dict) or info.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path} has language_ranker metadata {raw[:200]!r}, not a {EXPORT_FORMAT} export")
        if info.get("annotators") != PLAIN:
            raise ValueError(f"{path} is an export with hashed annotators ({info.get('annotators')!r}); only an "
                             "unhashed export (export_parquet(..., hash_annotators=False)) can be merged")
    missing = [name for name in _MERGE_REQUIRED if name not in schema.names]
    if missing:
        raise ValueError(f"{path} is not a label export: columns {missing} are missing")


def _json_field(name: str, text: Any, kind: type) -> Any:
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"{name} must be JSON text, got {text!r:.100}")
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError(f"{name} is not valid JSON: {text!r:.100}") from None
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be a JSON {kind.__name__}, got {value!r:.100}")
    return value


def _request_from_export(record: dict) -> dict:
    """A validated `requests` row from one export row (parquet values as Python objects)."""
    row = {"request_id": record["request_id"], "created": _check_timestamp("request_created", record["request_created"])}
    row.update(_validated_request(
        record["prompt"], record["candidates"], record["instruction"], record["responses"], layer=record["layer"],
        fingerprint=_json_field("fingerprint", record["fingerprint"], dict), ranker_version=record["ranker_version"],
        ranker_scores=record["ranker_scores"], mean_logprobs=record["mean_logprobs"], num_tokens=record["num_tokens"],
        finish_reasons=record["finish_reasons"], sampling=_json_field("sampling", record["sampling"], dict),
        rm_scores=record["rm_scores"], probabilities=record["probabilities"], profile=record["profile"],
    ))
    if record["num_candidates"] != row["num_candidates"] or record["hidden_size"] != row["hidden_size"]:
        raise ValueError(f"num_candidates {record['num_candidates']!r:.20} / hidden_size {record['hidden_size']!r:.20} "
                         f"disagree with the {row['num_candidates']} candidates of {row['hidden_size']} features")
    return row


def _label_from_export(record: dict, n: int) -> dict:
    """A validated `labels` row from one export row, for a request with n candidates."""
    grades = None if record["grades"] is None else _normalise_grades(_json_field("grades", record["grades"], dict), n)
    superseded_by = record.get("superseded_by")
    choice = _normalise_choice(record["choice"], n)
    ranking = _normalise_ranking(record.get("ranking"), n)
    if ranking is not None and choice != str(ranking[0]):
        raise ValueError(f"choice {choice!r} is not the ranking's first candidate {ranking[0]}")
    return {
        "label_id": _check_id("label_id", record["label_id"]),
        "request_id": record["request_id"],
        "created": _check_timestamp("created", record["created"]),
        "annotator": _check_annotator(record["annotator"]),
        "choice": choice,
        "order_shown": json.dumps(_normalise_order(record["order_shown"], n)),
        "blind": int(_check_bool("blind", record["blind"])),
        "grades": _dumps(grades),
        "grade_scale": _check_grade_scale(grades, record.get("grade_scale"), infer=False),
        "ranking": _dumps(ranking),
        "undone": int(_check_bool("undone", record["undone"])),
        "client_key": _check_client_key(record.get("client_key")),
        "superseded_by": None if superseded_by is None else _check_id("superseded_by", superseded_by),
    }


def _normalise_choice(choice: int | str, n: int) -> str:
    """The stored form of a choice: a decimal index in [0, n) or one of CHOICE_WORDS."""
    if isinstance(choice, str) and choice.strip() in CHOICE_WORDS:
        return choice.strip()
    index = None
    if _is_int(choice):
        index = int(choice)
    elif isinstance(choice, str) and re.fullmatch(r"\s*[0-9]{1,6}\s*", choice):
        index = int(choice)
    if index is None or not 0 <= index < n:
        raise ValueError(f"choice must be a candidate index in [0, {n - 1}] or one of {list(CHOICE_WORDS)}, got {choice!r:.100}")
    return str(index)


def _normalise_order(order_shown: Sequence[int], n: int) -> list[int]:
    values = order_shown.tolist() if hasattr(order_shown, "tolist") else order_shown
    ok = (isinstance(values, Sequence) and not isinstance(values, (str, bytes)) and len(values) == n
          and all(_is_int(i) for i in values))
    order = [int(i) for i in values] if ok else None
    if order is None or sorted(order) != list(range(n)):
        raise ValueError(f"order_shown must be a permutation of range({n}), got {order_shown!r:.200}")
    return order


def _normalise_grades(grades: Mapping[int | str, int] | None, n: int) -> dict[str, int] | None:
    if grades is None:
        return None
    if not isinstance(grades, Mapping) or len(grades) > n:
        raise ValueError(f"grades must be a dict {{candidate index: grade}} with at most {n} entries, got {grades!r:.200}")
    out = {}
    for key, value in grades.items():
        index = -1
        if _is_int(key):
            index = int(key)
        elif isinstance(key, str) and re.fullmatch(r"[0-9]{1,6}", key.strip()):
            index = int(key)
        if not 0 <= index < n:
            raise ValueError(f"grade key must be a candidate index in [0, {n - 1}], got {key!r:.100}")
        if not _is_int(value) or value not in GRADE_VALUES:
            raise ValueError(f"grade for candidate {index} must be 1..5 stars or -1/+1 thumbs, got {value!r:.100}")
        out[str(index)] = int(value)
    return out


def _check_grade_scale(grades: Mapping[str, int] | None, grade_scale: Any, infer: bool = True) -> str | None:
    """The grade_scale to store with normalised `grades` (see the module docstring); ValueError when it is
    wrong for them, or (infer=True) when none is given and the values do not decide it.

    infer=False (a merged row): a missing scale stays None, as the exporting store had it.
    """
    if grade_scale is not None and (not isinstance(grade_scale, str) or grade_scale not in GRADE_SCALES):
        raise ValueError(f"grade_scale must be None, {STARS!r} or {THUMBS!r}, got {grade_scale!r:.100}")
    if grades is None:
        if grade_scale is not None:
            raise ValueError(f"grade_scale {grade_scale!r} was given without grades")
        return None
    if grade_scale is not None:
        for index, value in grades.items():
            if value not in GRADE_SCALES[grade_scale]:
                raise ValueError(f"grade for candidate {index} must be one of {list(GRADE_SCALES[grade_scale])} "
                                 f"on grade_scale {grade_scale!r}, got {value!r}")
        return grade_scale
    values = set(grades.values())
    if not infer or not values:
        return None
    if -1 in values and values <= set(GRADE_SCALES[THUMBS]):
        return THUMBS
    if values <= set(GRADE_SCALES[STARS]) and values != {1}:
        return STARS
    if values == {1}:
        raise ValueError(f"grades {_int_keys(grades)} are ambiguous: 1 is both one star and thumbs up; "
                         f"pass grade_scale={STARS!r} or {THUMBS!r}")
    raise ValueError(f"grades {_int_keys(grades)} mix thumbs (-1) and stars (2..5); one label grades on one scale")


def _int_keys(grades: Mapping[str, int]) -> dict[int, int]:
    return {int(k): v for k, v in grades.items()}


def split_grades(grades: Mapping[int, int] | None, grade_scale: str | None) -> tuple[dict[int, int], dict[int, int]]:
    """(stars, thumbs): a label's grades by kind, {candidate index: 1..5} and {candidate index: -1/+1}.

    grade_scale None (a label from before schema version 3): by value, -1 is thumbs down, 2..5 are
    stars, and 1 is a star unless the label has a -1 and no 2..5 (then it is thumbs up).
    """
    grades = {int(k): int(v) for k, v in (grades or {}).items()}
    if grade_scale == STARS:
        return grades, {}
    if grade_scale == THUMBS:
        return {}, grades
    values = set(grades.values())
    ones_are_thumbs = -1 in values and not values & {2, 3, 4, 5}
    thumbs = {k: v for k, v in grades.items() if v == -1 or (v == 1 and ones_are_thumbs)}
    return {k: v for k, v in grades.items() if k not in thumbs}, thumbs


def _normalise_ranking(ranking: Any, n: int) -> list[int] | None:
    """The stored form of a full ranking: all n candidate indices, best first, each once; ValueError otherwise.

    The length is checked before any entry is read, so a huge list costs nothing.
    """
    if ranking is None:
        return None
    if isinstance(ranking, (str, bytes, Mapping)) or not (isinstance(ranking, Sequence) or hasattr(ranking, "tolist")):
        raise ValueError(f"ranking must be a list of candidate indices, best first, got {ranking!r:.200}")
    try:
        size = len(ranking)
    except TypeError:  # a 0-d array or tensor
        raise ValueError(f"ranking must be a list of candidate indices, best first, got {ranking!r:.200}") from None
    if size != n:
        raise ValueError(f"ranking must rank all {n} candidates (a permutation of range({n}), best first), "
                         f"got {size} entries")
    values = ranking.tolist() if hasattr(ranking, "tolist") else list(ranking)
    seen: dict[int, int] = {}
    for place, value in enumerate(values):
        if not _is_int(value):
            raise ValueError(f"ranking[{place}] must be a candidate index (an int), got {value!r:.100}")
        if not 0 <= value < n:
            raise ValueError(f"ranking[{place}] = {value} is not a candidate index in [0, {n - 1}]")
        if int(value) in seen:
            raise ValueError(f"ranking lists candidate {value} twice (at {seen[int(value)]} and {place}); "
                             "a full ranking has no ties")
        seen[int(value)] = place
    return [int(v) for v in values]


def _display_positions(name: str, positions: Sequence[int], k: int) -> list[int]:
    values = positions.tolist() if hasattr(positions, "tolist") else positions
    ok = (isinstance(values, Sequence) and not isinstance(values, (str, bytes)) and len(values) <= MAX_CANDIDATES
          and all(_is_int(p) and 0 <= p < k for p in values))
    if not ok:
        raise ValueError(f"{name} must be display positions in [0, {k - 1}], got {positions!r:.200}")
    return [int(p) for p in values]


def _shown_order(order_shown: Any) -> list[int]:
    """A display order of any length up to MAX_CANDIDATES (its own length is N), validated."""
    size = len(order_shown) if isinstance(order_shown, Sequence) or hasattr(order_shown, "tolist") else -1
    if not 0 < size <= MAX_CANDIDATES:
        raise ValueError(f"order_shown must be a permutation of range(N) with 1 <= N <= {MAX_CANDIDATES}, "
                         f"got {order_shown!r:.200}")
    return _normalise_order(order_shown, size)


def ranking_from_display(positions: Sequence[int], order_shown: Sequence[int]) -> list[int]:
    """A ranking the user gave by display position (0-based, best first) as candidate indices, for `add_label`.

    order_shown[p] is the candidate shown at position p (what `add_label` stores as `order_shown`).
    ValueError unless `positions` lists every position exactly once.
    """
    order = _shown_order(order_shown)
    places = _display_positions("ranking positions", positions, len(order))
    if sorted(places) != list(range(len(order))):
        raise ValueError(f"ranking positions must list every display position 0..{len(order) - 1} once, got {places}")
    return [order[p] for p in places]


def grades_from_display(grades: Mapping[int, int], order_shown: Sequence[int]) -> dict[int, int]:
    """Grades the user gave by display position (0-based) as {candidate index: grade}, for `add_label`."""
    order = _shown_order(order_shown)
    if not isinstance(grades, Mapping):
        raise ValueError(f"grades must be a dict {{display position: grade}}, got {grades!r:.200}")
    places = _display_positions("grade positions", list(grades), len(order))
    return {order[p]: value for p, value in zip(places, grades.values())}


def _write_failure(error: sqlite3.Error, path: Path) -> OSError | None:
    """An OSError saying why SQLite could not write `path` (read-only folder, full or failing disk), else None."""
    name = getattr(error, "sqlite_errorname", "")
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) and not os.access(path.parent, os.W_OK):
        return OSError(errno.EACCES, f"cannot write {path}: {path.parent} is read-only (this process may not write there); "
                                     "nothing was written")
    if name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR"):
        return OSError(errno.ENOSPC, f"cannot write {path}: the disk is full or failing ({error}); "
                                     "what was committed before is kept, this write was not made")
    return None
