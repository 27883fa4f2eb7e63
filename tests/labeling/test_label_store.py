"""LabelStore: round trips, WAL, undo, idempotent labels, the v1 and v2 migrations, exports and merges,
and never losing a label. Rankings and grade scales: tests/labeling/test_rich_labels.py."""

import hashlib
import hmac
import json
import sqlite3
import stat
import subprocess
import sys
import threading

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

import labeling.label_store
from labeling.label_store import DB_NAME, HMAC_KEY_NAME, LabelStore
from labeling.sync import PROJECT_ROOT
from tests.labeling.synthetic import CANDIDATES, HIDDEN, LAYER, MODEL, record, synthetic_queries


@pytest.fixture
def store(tmp_path):
    return LabelStore(tmp_path / "data")


@pytest.fixture(scope="module")
def queries():
    return synthetic_queries(6, seed=3)


def test_request_and_label_round_trip(store, queries):
    request_id = record(store, queries[0], profile="math")
    stored = store.get_request(request_id)
    assert len(request_id) == 32 and stored["request_id"] == request_id
    assert stored["candidates"] == [f"answer {k}" for k in range(CANDIDATES)]
    assert stored["instruction"].shape == (HIDDEN,) and stored["responses"].shape == (CANDIDATES, HIDDEN)
    assert stored["feature_dtype"] == "float16"
    torch.testing.assert_close(stored["responses"], queries[0].responses, rtol=1e-3, atol=1e-2)  # float16 on disk
    assert stored["layer"] == LAYER and stored["fingerprint"] == MODEL.to_dict()
    assert stored["mean_logprobs"] == [-1.0 - k for k in range(CANDIDATES)] and stored["rm_scores"] is None
    assert stored["profile"] == "math" and stored["sampling"]["temperature"] == 1.0

    order = [3, 1, 0, 2, 5, 4]
    label_id = store.add_label(request_id, 2, "alice", order, blind=False, grades={2: 5, "4": 2})
    store.add_label(request_id, "0", "bob", list(range(CANDIDATES)))  # choice as a decimal string
    frame = store.labels_frame()
    assert frame["label_id"].tolist()[0] == label_id
    assert frame["choice"].tolist() == ["2", "0"] and frame["annotator"].tolist() == ["alice", "bob"]
    assert frame["order_shown"].tolist()[0] == order and frame["grades"].tolist()[0] == {2: 5, 4: 2}
    assert frame["blind"].tolist() == [False, True] and "responses" not in frame

    # Preferences follow ranker.rankers.preferences.Preference: display order, choice = display position of the pick.
    first = store.preferences(profile="math")[0]
    assert first.query_id == label_id and first.choice == order.index(2) == 3
    torch.testing.assert_close(first.responses, stored["responses"][order])
    assert first.mean_logprob.tolist() == [-1.0 - k for k in order]
    assert store.preferences(profile="default") == []


def test_wal_mode_is_on_and_persistent(store):
    assert store.journal_mode() == "wal"
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(3,)]


def test_undo_marks_only_that_annotators_latest_label(store, queries):
    first, second = record(store, queries[0]), record(store, queries[1])
    order = list(range(CANDIDATES))
    a1 = store.add_label(first, 1, "alice", order)
    a2 = store.add_label(second, "all_bad", "alice", order)
    b1 = store.add_label(first, 4, "bob", order)
    assert store.count() == 3 and store.count("alice") == 2
    assert store.undo_last("alice") == a2
    assert store.undo_last("alice") == a1
    assert store.undo_last("alice") is None
    assert store.count() == 1 and store.count("bob") == 1
    frame = store.labels_frame()
    assert frame.set_index("label_id")["undone"].to_dict() == {a1: True, a2: True, b1: False}  # kept, flagged
    assert [p.label_id for p in store.preferences()] == [b1]
    assert len(store.labels_frame(include_undone=False)) == 1


def test_skips_and_ties(store, queries):
    order = list(range(CANDIDATES))
    for query, choice in zip(queries, ("skip", "tie", "all_bad", 0)):
        store.add_label(record(store, query), choice, "alice", order)
    assert store.count() == 3 and store.count(include_skips=True) == 4
    assert [p.choice for p in store.preferences()] == ["tie", "all_bad", 0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"choice": 6}, r"choice must be a candidate index in \[0, 5\].*got 6"),
        ({"choice": "best"}, "got 'best'"),
        ({"choice": -1}, "got -1"),
        ({"annotator": "  "}, "annotator must be a non-empty string"),
        ({"order_shown": [0, 1, 2, 3, 4, 4]}, r"permutation of range\(6\)"),
        ({"order_shown": [0, 1, 2]}, r"permutation of range\(6\)"),
        ({"grades": {0: 6}}, "grade for candidate 0 must be 1..5 stars or -1/\\+1 thumbs, got 6"),
        ({"grades": {9: 3}}, "grade key must be a candidate index"),
        ({"request_id": "nope"}, "unknown request_id 'nope'"),
        ({"request_id": 7}, "request_id must be an id of 1-64 letters"),
        ({"request_id": "../x"}, "request_id must be an id"),
        ({"annotator": "a\x00b"}, "annotator must be at most 256 printable characters"),
        ({"annotator": "x" * 257}, "annotator must be at most 256 printable characters"),
        ({"annotator": ["alice"]}, "annotator must be a non-empty string"),
        ({"order_shown": "012345"}, r"permutation of range\(6\)"),  # a string iterates as digits
        ({"order_shown": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}, r"permutation of range\(6\)"),
        ({"order_shown": [True, False, 2, 3, 4, 5]}, r"permutation of range\(6\)"),
        ({"choice": 1.0}, "got 1.0"),
        ({"choice": True}, "got True"),
        ({"grades": {0: 5.0}}, "grade for candidate 0 must be 1..5 stars or -1/\\+1 thumbs, got 5.0"),
        ({"grades": {1.5: 5}}, "grade key must be a candidate index"),
        ({"grades": [5, 5]}, "grades must be a dict"),
        ({"blind": "false"}, "blind must be True or False, got 'false'"),
        ({"client_key": ""}, "client_key must be None or 1-128 characters"),
        ({"client_key": "has space"}, "client_key must be None or 1-128 characters"),
        ({"client_key": "k" * 129}, "client_key must be None or 1-128 characters"),
        ({"client_key": 12345}, "client_key must be None or 1-128 characters"),
    ],
)
def test_bad_labels_raise_and_leave_rows_intact(store, queries, kwargs, message):
    request_id = record(store, queries[0])
    store.add_label(request_id, 1, "alice", list(range(CANDIDATES)))
    before = store.labels_frame()
    args = {"request_id": request_id, "choice": 0, "annotator": "bob", "order_shown": list(range(CANDIDATES)), **kwargs}
    with pytest.raises(ValueError, match=message):
        store.add_label(**args)
    pd.testing.assert_frame_equal(store.labels_frame(), before)


def test_bad_requests_raise_and_write_nothing(store, queries):
    q = queries[0]
    good = dict(layer=LAYER, fingerprint=MODEL.to_dict(), ranker_version="v", ranker_scores=[0.0] * CANDIDATES,
                mean_logprobs=[0.0] * CANDIDATES, num_tokens=[1] * CANDIDATES, finish_reasons=["stop"] * CANDIDATES,
                sampling={})
    texts = [f"c{k}" for k in range(CANDIDATES)]
    with pytest.raises(ValueError, match=r"responses must have shape \(N, H\) = \(5, 32\) for 5 candidates, got \(6, 32\)"):
        store.record_request("p", texts[:5], q.instruction, q.responses, **good)
    with pytest.raises(ValueError, match="ranker_scores must have one value per candidate \\(6\\), got 2"):
        store.record_request("p", texts, q.instruction, q.responses, **{**good, "ranker_scores": [1.0, 2.0]})
    with pytest.raises(ValueError, match="hidden size 32, but the fingerprint's model has 64"):
        store.record_request("p", texts, q.instruction, q.responses, **{**good, "fingerprint": {**MODEL.to_dict(), "hidden_size": 64}})
    bad = q.responses.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        store.record_request("p", texts, q.instruction, bad, **good)
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        store.record_request("", texts, q.instruction, q.responses, **good)
    assert store.revision() == (0, 0, 0)
    # Without a ranker there are no scores; a huge feature value is kept exactly in float32.
    big = q.responses.clone()
    big[0, 0] = 1e6
    request_id = store.record_request("p", texts, q.instruction, big, **{**good, "ranker_scores": None, "ranker_version": None})
    stored = store.get_request(request_id)
    assert stored["feature_dtype"] == "float32" and stored["responses"][0, 0].item() == 1e6
    assert stored["ranker_scores"] is None


def test_reopening_keeps_everything_and_deletes_are_refused(tmp_path, queries):
    first = LabelStore(tmp_path)
    request_id = record(first, queries[0])
    label_id = first.add_label(request_id, 3, "alice", list(range(CANDIDATES)))
    first.undo_last("alice")
    again = LabelStore(tmp_path)
    pd.testing.assert_frame_equal(again.labels_frame(), first.labels_frame())
    assert again.labels_frame()["label_id"].tolist() == [label_id] and again.count() == 0
    with sqlite3.connect(again.path) as raw, pytest.raises(sqlite3.DatabaseError, match="never deleted"):
        raw.execute("DELETE FROM labels")
    assert again.revision() == (1, 1, 1)


def test_corrupt_or_foreign_files_are_refused_untouched(tmp_path):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / DB_NAME).write_bytes(b"these are my notes, not a database" * 10)
    with pytest.raises(ValueError, match="is not a SQLite database"):
        LabelStore(garbage)
    assert (garbage / DB_NAME).read_bytes() == b"these are my notes, not a database" * 10

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / DB_NAME) as raw:
        raw.execute("CREATE TABLE orders (id INTEGER)")
        raw.execute("INSERT INTO orders VALUES (7)")
    with pytest.raises(ValueError, match=r"not a label store \(tables \['orders'\]"):
        LabelStore(foreign)
    with sqlite3.connect(foreign / DB_NAME) as raw:
        assert raw.execute("SELECT id FROM orders").fetchall() == [(7,)]
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not even switched to WAL

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        LabelStore(tmp_path / "file")


def test_export_parquet_and_dataset_round_trip(store, queries, tmp_path):
    ids = [record(store, q) for q in queries[:3]]
    store.add_label(ids[0], 2, "alice", [2, 0, 1, 3, 4, 5], grades={2: 4})
    store.add_label(ids[2], "tie", "bob", list(range(CANDIDATES)), client_key="bob-1")
    path = store.export_parquet(tmp_path / "out" / "labels.parquet", hash_annotators=False)
    frame = pd.read_parquet(path)
    assert frame["request_id"].tolist() == [ids[0], ids[2]] and frame["choice"].tolist() == ["2", "tie"]
    assert frame["annotator"].tolist() == ["alice", "bob"]
    assert pq.read_table(path).column("client_key").to_pylist() == [None, "bob-1"]
    assert frame["annotator_hashed"].tolist() == [False, False]
    assert json.loads(pq.read_schema(path).metadata[b"language_ranker"]) == {
        "format": "language-ranker-labels", "schema_version": 3, "annotators": "plain"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["labels.parquet"]  # no temp file left behind
    stored = store.get_request(ids[2])
    torch.testing.assert_close(torch.tensor(list(map(list, frame["responses"][1])), dtype=torch.float32), stored["responses"])
    torch.testing.assert_close(torch.tensor(frame["instruction"][1], dtype=torch.float32), stored["instruction"])

    dataset = store.to_dataset(hash_annotators=False)
    assert dataset.num_rows == 2 and dataset[0]["label_id"] == frame["label_id"][0]
    assert dataset[0]["grades"] == '{"2": 4}' and dataset[1]["annotator"] == "bob"
    torch.testing.assert_close(torch.tensor(dataset[1]["responses"]), stored["responses"])


def test_exports_hash_annotators_with_the_stores_secret_key(store, queries, tmp_path):
    ids = [record(store, q) for q in queries[:3]]
    for request_id, name in zip(ids, ["alice", "bob", "alice"]):
        store.add_label(request_id, 0, name, list(range(CANDIDATES)), client_key=f"{name}-{request_id[:6]}")
    assert not (store.data_dir / HMAC_KEY_NAME).exists()  # only made when first needed
    path = store.export_parquet(tmp_path / "hashed.parquet")  # hashed is the default
    frame = pd.read_parquet(path)
    key_file = store.data_dir / HMAC_KEY_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    assert len(key) == 32
    expected = [hmac.new(key, name.encode(), hashlib.sha256).hexdigest()[:32] for name in ["alice", "bob", "alice"]]
    assert frame["annotator"].tolist() == expected
    assert expected[0] != expected[1] and expected[0] != hashlib.sha256(b"alice").hexdigest()[:32]
    assert pq.read_table(path).column("client_key").to_pylist() == [None] * 3 and frame["annotator_hashed"].tolist() == [True] * 3
    assert json.loads(pq.read_schema(path).metadata[b"language_ranker"])["annotators"] == "hmac-sha256"
    # Stable within a store (the key is kept), different in another store (another key).
    assert pd.read_parquet(store.export_parquet(tmp_path / "again.parquet"))["annotator"].tolist() == expected
    assert store.to_dataset()["annotator"] == expected
    other = LabelStore(tmp_path / "other")
    other.add_label(record(other, queries[0]), 0, "alice", list(range(CANDIDATES)))
    assert other.to_dataset()["annotator"] != [expected[0]]
    unlabelled = record(store, queries[3])  # a full export has a row for it, with no annotator to hash
    table = pq.read_table(store.export_parquet(tmp_path / "full.parquet", include_unlabelled=True))
    assert table.column("request_id").to_pylist() == [*ids, unlabelled]
    assert table.column("annotator").to_pylist() == [*expected, None] and table.column("label_id").to_pylist()[3] is None
    with pytest.raises(ValueError, match="hash_annotators must be True or False, got 'no'"):
        store.export_parquet(tmp_path / "x.parquet", hash_annotators="no")


def test_concurrent_writers_lose_nothing(store, queries):
    request_ids = [record(store, queries[k % len(queries)]) for k in range(10)]
    errors = []

    def label_many(name):
        try:
            for k, request_id in enumerate(request_ids):
                store.add_label(request_id, k % CANDIDATES, name, list(range(CANDIDATES)))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=label_many, args=(f"user{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and store.count() == 40 and store.count("user2") == 10


def test_preferences_carry_the_vote_keys_the_app_scored_with(store, queries):
    """Answer keys come from the stored texts by the free-form rule, in display order."""
    texts = ["The answer is 12.", "5 + 7 = 12", "13", "no idea\n\nmaybe 14", "", "12"]
    request_id = record(store, queries[0], texts=texts)
    order = [4, 2, 0, 1, 3, 5]
    store.add_label(request_id, 0, "alice", order)
    preference = store.preferences()[0]
    assert preference.vote_keys == [None, "13", "12", "12", "maybe 14", "12"]


# --- idempotent labels and one live judgement per annotator and request ----------------------------


def column(store, name):
    """{label_id: value} of one labels column, straight from SQLite (pandas would turn None into nan)."""
    with sqlite3.connect(store.path) as raw:
        return dict(raw.execute(f"SELECT label_id, {name} FROM labels ORDER BY seq").fetchall())


def test_a_retry_with_the_same_client_key_returns_the_same_label(store, queries):
    request_id = record(store, queries[0])
    order = [5, 4, 3, 2, 1, 0]
    first = store.add_label(request_id, 3, "alice", order, blind=False, grades={3: 5}, client_key="tab1:42")
    before = store.revision()
    assert store.add_label(request_id, 3, "alice", order, blind=False, grades={"3": 5}, client_key="tab1:42") == first
    assert store.add_label(request_id, "3", " alice ", order, blind=False, grades={3: 5}, client_key="tab1:42") == first
    assert store.revision() == before == (1, 1, 0)
    # Keys are per annotator: bob's "tab1:42" is another label (and does not supersede alice's).
    bobs = store.add_label(request_id, 3, "bob", order, blind=False, client_key="tab1:42")
    assert bobs != first and store.count() == 2
    # The same key with other content is a client bug; nothing is written.
    for change in ({"choice": 2}, {"order_shown": list(range(CANDIDATES))}, {"blind": True}, {"grades": None}):
        args = {"request_id": request_id, "choice": 3, "annotator": "alice", "order_shown": order, "blind": False,
                "grades": {3: 5}, "client_key": "tab1:42", **change}
        with pytest.raises(ValueError, match=f"client_key 'tab1:42' of annotator 'alice' was already used for label {first}"):
            store.add_label(**args)
    other_request = record(store, queries[1])
    with pytest.raises(ValueError, match="already used for label"):
        store.add_label(other_request, 3, "alice", order, blind=False, grades={3: 5}, client_key="tab1:42")
    assert store.revision() == (2, 2, 0)
    # A retry after an undo gets the (undone) label back, and does not revive it.
    assert store.undo_last("alice") == first
    assert store.add_label(request_id, 3, "alice", order, blind=False, grades={3: 5}, client_key="tab1:42") == first
    assert store.revision() == (2, 2, 1) and store.count("alice") == 0


def test_the_database_enforces_the_unique_keys(store, queries):
    request_id = record(store, queries[0])
    label_id = store.add_label(request_id, 1, "alice", list(range(CANDIDATES)), client_key="k1")
    with sqlite3.connect(store.path) as raw:
        insert = ("INSERT INTO labels (label_id, request_id, created, annotator, choice, order_shown, blind, undone, "
                  "client_key) VALUES (?, ?, '2024-01-01T00:00:00+00:00', 'alice', '1', '[0,1,2,3,4,5]', 1, ?, ?)")
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE constraint failed: labels.annotator, labels.client_key"):
            raw.execute(insert, ("other1", request_id, 1, "k1"))  # same key, even for an undone row
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE constraint failed: labels.annotator, labels.request_id"):
            raw.execute(insert, ("other2", request_id, 0, "k2"))  # a second live label of alice for this request
    assert store.labels_frame()["label_id"].tolist() == [label_id]


def test_concurrent_retries_from_separate_connections_store_one_label(tmp_path, queries):
    """Each thread has its own LabelStore (own lock, own connection), like separate processes."""
    request_id = record(LabelStore(tmp_path), queries[0])
    barrier, results, errors = threading.Barrier(8), [], []

    def retry():
        try:
            mine = LabelStore(tmp_path)
            barrier.wait()
            results.append(mine.add_label(request_id, 2, "alice", list(range(CANDIDATES)), client_key="retry-1"))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = LabelStore(tmp_path)
    assert errors == [] and len(results) == 8 and len(set(results)) == 1
    assert store.labels_frame()["label_id"].tolist() == results[:1]


# Each process opens the store, waits for the start file, then sends the same keyed label.
RETRY_SCRIPT = """
import pathlib, sys, time
from labeling.label_store import LabelStore
store = LabelStore(sys.argv[1])
go = pathlib.Path(sys.argv[1]) / "go"
while not go.exists():
    time.sleep(0.005)
print(store.add_label(sys.argv[2], 1, "alice", [0, 1, 2, 3, 4, 5], client_key="proc-1"))
"""


def test_concurrent_retries_from_other_processes_store_one_label(tmp_path, queries):
    request_id = record(LabelStore(tmp_path), queries[0])
    processes = [subprocess.Popen([sys.executable, "-c", RETRY_SCRIPT, str(tmp_path), request_id], cwd=PROJECT_ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    (tmp_path / "go").touch()
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * 2, [err for _, err in outputs]
    results = {out.strip() for out, _ in outputs}
    assert len(results) == 1 and LabelStore(tmp_path).labels_frame()["label_id"].tolist() == list(results)


def test_a_newer_label_of_the_same_request_supersedes_the_older(store, queries):
    request_id, other = record(store, queries[0]), record(store, queries[1])
    order = list(range(CANDIDATES))
    a1 = store.add_label(request_id, 1, "alice", order, client_key="a1")
    b1 = store.add_label(request_id, 4, "bob", order)
    a_other = store.add_label(other, 0, "alice", order)
    a2 = store.add_label(request_id, "tie", "alice", order, client_key="a2")
    assert column(store, "undone") == {a1: 1, b1: 0, a_other: 0, a2: 0}
    assert column(store, "superseded_by") == {a1: a2, b1: None, a_other: None, a2: None}
    assert store.count() == 3 and store.count("alice") == 2
    assert [p.label_id for p in store.preferences(annotator="alice")] == [a_other, a2]
    a3 = store.add_label(request_id, 5, "alice", order)  # without a key too
    assert column(store, "superseded_by") == {a1: a2, b1: None, a_other: None, a2: a3, a3: None}  # a chain, newest live
    assert store.count("alice") == 2
    # Undo takes back the newest judgement; it does not bring the superseded one back.
    assert store.undo_last("alice") == a3
    assert store.count("alice") == 1 and [p.label_id for p in store.preferences(annotator="alice")] == [a_other]


# --- schema version 1 -> 2 -----------------------------------------------------------------------

# The version-1 DDL, as the store created it before client keys.
V1_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "INSERT INTO schema_version VALUES (1)",
    """CREATE TABLE requests (
        request_id TEXT PRIMARY KEY, created TEXT NOT NULL, prompt TEXT NOT NULL, candidates TEXT NOT NULL,
        num_candidates INTEGER NOT NULL, instruction BLOB NOT NULL, responses BLOB NOT NULL,
        feature_dtype TEXT NOT NULL, hidden_size INTEGER NOT NULL, layer INTEGER NOT NULL, fingerprint TEXT NOT NULL,
        ranker_version TEXT, ranker_scores TEXT, probabilities TEXT, rm_scores TEXT, mean_logprobs TEXT NOT NULL,
        num_tokens TEXT NOT NULL, finish_reasons TEXT NOT NULL, sampling TEXT NOT NULL, profile TEXT
    )""",
    """CREATE TABLE labels (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, label_id TEXT NOT NULL UNIQUE,
        request_id TEXT NOT NULL REFERENCES requests(request_id), created TEXT NOT NULL, annotator TEXT NOT NULL,
        choice TEXT NOT NULL, order_shown TEXT NOT NULL, blind INTEGER NOT NULL, grades TEXT,
        undone INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX labels_by_request ON labels(request_id)",
    "CREATE INDEX labels_by_annotator ON labels(annotator, undone)",
    "CREATE TRIGGER requests_never_deleted BEFORE DELETE ON requests "
    "BEGIN SELECT RAISE(ABORT, 'requests are never deleted'); END",
    "CREATE TRIGGER labels_never_deleted BEFORE DELETE ON labels "
    "BEGIN SELECT RAISE(ABORT, 'labels are never deleted; undo marks them undone'); END",
)
# (label_id, request, annotator, choice, undone): alice judged r0 twice, as version 1 allowed.
V1_LABELS = [("l1", "r0", "alice", "1", 0), ("l2", "r0", "bob", "tie", 0), ("l3", "r1", "alice", "skip", 1),
             ("l4", "r0", "alice", "3", 0), ("l5", "r1", "bob", "all_bad", 0)]


def make_v1_store(folder, queries):
    folder.mkdir()
    with sqlite3.connect(folder / DB_NAME) as raw:
        raw.execute("PRAGMA journal_mode=WAL")
        for statement in V1_SCHEMA:
            raw.execute(statement)
        for n, query in enumerate(queries[:2]):
            row = {"request_id": f"r{n}", "created": "2024-05-01T12:00:00.000000+00:00", **labeling.label_store._validated_request(
                f"question {n}", [f"answer {k}" for k in range(CANDIDATES)], query.instruction, query.responses,
                layer=LAYER, fingerprint=MODEL.to_dict(), ranker_version="v1", ranker_scores=None,
                mean_logprobs=[0.0] * CANDIDATES, num_tokens=[2] * CANDIDATES, finish_reasons=["stop"] * CANDIDATES,
                sampling={"temperature": 0.7})}
            raw.execute(f"INSERT INTO requests ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
        for label_id, request_id, annotator, choice, undone in V1_LABELS:
            raw.execute("INSERT INTO labels (label_id, request_id, created, annotator, choice, order_shown, blind, undone) "
                        "VALUES (?, ?, '2024-05-01T12:00:01.000000+00:00', ?, ?, '[0,1,2,3,4,5]', 1, ?)",
                        (label_id, request_id, annotator, choice, undone))
    return folder / DB_NAME


def test_a_version_1_file_is_migrated_in_place_and_keeps_its_labels(tmp_path, queries):
    path = make_v1_store(tmp_path / "old", queries)
    store = LabelStore(tmp_path / "old")
    frame = store.labels_frame().set_index("label_id")
    assert frame.index.tolist() == [label[0] for label in V1_LABELS]
    assert frame["choice"].tolist() == [label[3] for label in V1_LABELS]
    assert frame["annotator"].tolist() == [label[2] for label in V1_LABELS]
    # alice's older judgement of r0 is superseded by her newer one; the rest keep their flags.
    assert frame["undone"].to_dict() == {"l1": True, "l2": False, "l3": True, "l4": False, "l5": False}
    assert column(store, "superseded_by") == {"l1": "l4", "l2": None, "l3": None, "l4": None, "l5": None}
    assert store.count(include_skips=True) == 3 and store.get_request("r1")["sampling"] == {"temperature": 0.7}
    torch.testing.assert_close(store.get_request("r0")["responses"], queries[0].responses, rtol=1e-3, atol=1e-2)
    fresh = LabelStore(tmp_path / "fresh")
    with sqlite3.connect(path) as raw, sqlite3.connect(fresh.path) as new:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(3,)]  # through 2, in one transaction
        for pragma in ("PRAGMA table_info(labels)", "PRAGMA index_list(labels)"):
            assert sorted(raw.execute(pragma).fetchall()) == sorted(new.execute(pragma).fetchall())
    # The migrated store takes keyed labels; reopening it migrates nothing again.
    label_id = store.add_label("r1", 0, "carol", list(range(CANDIDATES)), client_key="c-1")
    assert LabelStore(tmp_path / "old").add_label("r1", 0, "carol", list(range(CANDIDATES)), client_key="c-1") == label_id


def test_a_failing_migration_leaves_the_version_1_file_as_it_was(tmp_path, queries, monkeypatch):
    path = make_v1_store(tmp_path / "old", queries)
    failing = (*labeling.label_store._MIGRATIONS[1][:-1], "SELECT no_such_column FROM labels", labeling.label_store._MIGRATIONS[1][-1])
    monkeypatch.setitem(labeling.label_store._MIGRATIONS, 1, failing)
    with pytest.raises(ValueError, match="no such column: no_such_column"):
        LabelStore(tmp_path / "old")
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert "client_key" not in [row[1] for row in raw.execute("PRAGMA table_info(labels)")]
        assert raw.execute("SELECT label_id, undone FROM labels ORDER BY seq").fetchall() == [(l[0], l[4]) for l in V1_LABELS]


# --- schema version 2 -> 3 -----------------------------------------------------------------------

# What version 2 added to version 1 (its migration, as version 2 of the code wrote it).
V2_ADDITIONS = (
    "ALTER TABLE labels ADD COLUMN client_key TEXT",
    "ALTER TABLE labels ADD COLUMN superseded_by TEXT",
    "CREATE UNIQUE INDEX labels_by_client_key ON labels(annotator, client_key)",
    "CREATE UNIQUE INDEX labels_live_per_annotator ON labels(annotator, request_id) WHERE undone = 0",
    "UPDATE schema_version SET version = 2",
)
# (label_id, request, annotator, choice, grades): grades as version 2 stored them, with no scale.
V2_LABELS = [("m1", "r0", "alice", "1", '{"1": 5, "3": 1}'), ("m2", "r0", "bob", "2", '{"2": 1, "4": -1}'),
             ("m3", "r1", "alice", "skip", '{"0": 1}'), ("m4", "r1", "bob", "tie", None)]


def make_v2_store(folder, queries):
    path = make_v1_store(folder, queries)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE labels SET undone = 1")  # the version-1 labels are history here
        for statement in V2_ADDITIONS:
            raw.execute(statement)
        for label_id, request_id, annotator, choice, grades in V2_LABELS:
            raw.execute("INSERT INTO labels (label_id, request_id, created, annotator, choice, order_shown, blind, grades, "
                        "client_key) VALUES (?, ?, '2024-06-01T12:00:00.000000+00:00', ?, ?, '[5, 4, 3, 2, 1, 0]', 1, ?, ?)",
                        (label_id, request_id, annotator, choice, grades, f"key-{label_id}"))
    return path


def test_a_version_2_file_is_migrated_in_place_and_reads_its_grades_by_value(tmp_path, queries):
    path = make_v2_store(tmp_path / "old", queries)
    with sqlite3.connect(path) as raw:
        before = raw.execute("SELECT * FROM labels ORDER BY seq").fetchall()
    store = LabelStore(tmp_path / "old")
    with sqlite3.connect(path) as raw, sqlite3.connect(LabelStore(tmp_path / "fresh").path) as new:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
        for pragma in ("PRAGMA table_info(labels)", "PRAGMA index_list(labels)"):
            assert sorted(raw.execute(pragma).fetchall()) == sorted(new.execute(pragma).fetchall())
        after = raw.execute("SELECT * FROM labels ORDER BY seq").fetchall()
    assert [row[:-2] for row in after] == before and {row[-2:] for row in after} == {(None, None)}  # rows unchanged
    # No scale was recorded: split_grades reads by value (m2's 1 is thumbs up beside a thumbs down).
    frame = store.labels_frame(include_undone=False).set_index("label_id")
    assert frame["grade_scale"].isna().all() and frame["ranking"].isna().all()
    preferences = {p.label_id: p for p in store.preferences()}
    assert sorted(preferences) == ["m1", "m2", "m3", "m4"]  # m3 is a skip that carries grades
    position = {candidate: 5 - candidate for candidate in range(CANDIDATES)}  # order shown [5, 4, ..., 0]
    assert preferences["m1"].stars == {position[1]: 5, position[3]: 1} and preferences["m1"].thumbs is None
    assert preferences["m2"].thumbs == {position[2]: 1, position[4]: -1} and preferences["m2"].stars is None
    assert preferences["m3"].choice == "tie" and preferences["m3"].stars == {position[0]: 1}
    assert store.count() == 4 and store.count(include_skips=True) == 4
    # Reopening migrates nothing again, and the old keys still find their labels.
    assert LabelStore(tmp_path / "old").add_label("r1", "tie", "bob", [5, 4, 3, 2, 1, 0], client_key="key-m4") == "m4"


def test_a_failing_migration_leaves_the_version_2_file_as_it_was(tmp_path, queries, monkeypatch):
    path = make_v2_store(tmp_path / "old", queries)
    with sqlite3.connect(path) as raw:
        before = raw.execute("SELECT * FROM labels ORDER BY seq").fetchall()
    failing = (*labeling.label_store._MIGRATIONS[2][:-1], "SELECT no_such_column FROM labels", labeling.label_store._MIGRATIONS[2][-1])
    monkeypatch.setitem(labeling.label_store._MIGRATIONS, 2, failing)
    with pytest.raises(ValueError, match="no such column: no_such_column"):
        LabelStore(tmp_path / "old")
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
        assert "ranking" not in [row[1] for row in raw.execute("PRAGMA table_info(labels)")]
        assert raw.execute("SELECT * FROM labels ORDER BY seq").fetchall() == before


def test_merge_reads_a_version_2_export(tmp_path, queries):
    """Exports made before version 3 have no ranking or grade_scale column; their grades keep no scale."""
    make_v2_store(tmp_path / "a", queries)
    source = LabelStore(tmp_path / "a")
    plain = pq.read_table(source.export_parquet(tmp_path / "plain.parquet", hash_annotators=False))
    info = {"format": "language-ranker-labels", "schema_version": 2, "annotators": "plain"}
    old = plain.drop_columns(["ranking", "grade_scale"]).replace_schema_metadata({b"language_ranker": json.dumps(info)})
    pq.write_table(old, tmp_path / "v2.parquet")
    target = LabelStore(tmp_path / "b")
    counts = target.merge_parquet(tmp_path / "v2.parquet")
    assert counts["labels_added"] == len(V1_LABELS) + len(V2_LABELS)
    pd.testing.assert_frame_equal(comparable(target), comparable(source))
    assert set(column(target, "grade_scale").values()) == {None}
    assert [(p.label_id, p.stars, p.thumbs) for p in target.preferences()] == [
        (p.label_id, p.stars, p.thumbs) for p in source.preferences()]


def test_a_newer_schema_is_refused_untouched(tmp_path):
    folder = tmp_path / "future"
    folder.mkdir()
    with sqlite3.connect(folder / DB_NAME) as raw:
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        raw.execute("INSERT INTO schema_version VALUES (4)")
    with pytest.raises(ValueError, match="has label-store schema version 4; this code reads versions \\[1, 2\\] "
                                         "\\(migrated on open\\) and 3"):
        LabelStore(folder)


# --- merging exports -----------------------------------------------------------------------------


def filled_store(folder, queries, annotators=("alice", "bob")):
    """A store with a label per query and annotator, one of them undone and one superseded."""
    store = LabelStore(folder)
    order = list(range(CANDIDATES))
    for query in queries:
        request_id = record(store, query)
        for name in annotators:
            store.add_label(request_id, 1, name, order, client_key=f"{name}-{request_id[:8]}")
    store.undo_last(annotators[0])
    store.add_label(request_id, "tie", annotators[-1], order, grades={0: -1})  # supersedes the last one
    return store


def comparable(store):
    frame = store.labels_frame().sort_values("label_id").reset_index(drop=True)
    return frame[["label_id", "request_id", "created", "annotator", "choice", "order_shown", "blind", "grades",
                  "undone", "client_key", "superseded_by", "prompt", "candidates", "sampling", "fingerprint"]]


def test_merge_imports_a_backup_exactly_and_only_once(tmp_path, queries):
    source = filled_store(tmp_path / "a", queries[:3])
    path = source.export_parquet(tmp_path / "a.parquet", hash_annotators=False)
    target = LabelStore(tmp_path / "b")
    assert target.merge_parquet(path) == {"rows": 7, "requests_added": 3, "labels_added": 7, "labels_marked_undone": 0,
                                          "labels_superseded": 0, "duplicate_client_keys": 0}
    pd.testing.assert_frame_equal(comparable(target), comparable(source))
    assert target.count() == source.count() == 5
    for request_id in source.labels_frame()["request_id"].unique():
        with sqlite3.connect(source.path) as a, sqlite3.connect(target.path) as b:
            query = "SELECT instruction, responses, feature_dtype FROM requests WHERE request_id = ?"
            assert a.execute(query, (request_id,)).fetchone() == b.execute(query, (request_id,)).fetchone()  # same bytes
    assert target.merge_parquet(path) == {"rows": 7, "requests_added": 0, "labels_added": 0, "labels_marked_undone": 0,
                                          "labels_superseded": 0, "duplicate_client_keys": 0}
    assert target.revision() == source.revision() == (3, 7, 2)
    # The client keys came along: a retry that reaches the restored store gets the original label back.
    frame = source.labels_frame()
    key, label_id, request_id = frame.loc[0, "client_key"], frame.loc[0, "label_id"], frame.loc[0, "request_id"]
    assert target.add_label(request_id, 1, "alice", list(range(CANDIDATES)), client_key=key) == label_id


def test_merge_gives_the_union_and_undone_stays_set(tmp_path, queries):
    first = filled_store(tmp_path / "a", queries[:2])
    second = filled_store(tmp_path / "c", queries[2:5], annotators=("carol",))
    union = LabelStore(tmp_path / "union")
    union.merge_parquet(first.export_parquet(tmp_path / "a.parquet", hash_annotators=False))
    union.merge_parquet(second.export_parquet(tmp_path / "c.parquet", hash_annotators=False))
    assert sorted(union.labels_frame()["label_id"]) == sorted([*first.labels_frame()["label_id"], *second.labels_frame()["label_id"]])
    assert union.count() == first.count() + second.count() == 3 + 3
    # An undo in the source reaches the copy on the next merge; a copy's own undo survives a merge.
    live = first.labels_frame(include_undone=False)["label_id"].tolist()
    assert first.undo_last("bob") == live[-1]
    assert union.undo_last("alice") == live[0]
    counts = union.merge_parquet(first.export_parquet(tmp_path / "a2.parquet", hash_annotators=False))
    assert counts["labels_added"] == 0 and counts["labels_marked_undone"] == 1
    assert union.labels_frame().set_index("label_id").loc[live, "undone"].tolist() == [True, False, True]


def test_merge_keeps_one_live_judgement_whichever_order(tmp_path, queries):
    """Two instances restored from the same backup; alice judges the same request on both."""
    base = LabelStore(tmp_path / "base")
    request_id = record(base, queries[0])  # not labelled yet: only a full backup carries it
    backup = base.export_parquet(tmp_path / "base.parquet", hash_annotators=False, include_unlabelled=True)
    exports = []
    for name in ("one", "two"):
        instance = LabelStore(tmp_path / name)
        instance.merge_parquet(backup)
        instance.add_label(request_id, 2 if name == "one" else 4, "alice", list(range(CANDIDATES)))
        exports.append(instance.export_parquet(tmp_path / f"{name}.parquet", hash_annotators=False))
    for order, folder in ((exports, "ab"), (exports[::-1], "ba")):
        merged = LabelStore(tmp_path / folder)
        counts = [merged.merge_parquet(path) for path in order]
        assert [c["labels_superseded"] for c in counts] == [0, 1]
        assert [(p.choice, p.annotator) for p in merged.preferences()] == [(4, "alice")]  # "two" labelled later
        assert merged.count() == 1 and merged.revision() == (1, 2, 1)
    assert LabelStore(tmp_path / "plain").merge_parquet(backup) == {
        "rows": 1, "requests_added": 1, "labels_added": 0, "labels_marked_undone": 0, "labels_superseded": 0,
        "duplicate_client_keys": 0}


def test_merge_refuses_hashed_foreign_or_invalid_files_and_writes_nothing(tmp_path, queries):
    source = filled_store(tmp_path / "a", queries[:3])
    target = LabelStore(tmp_path / "b")
    target.add_label(record(target, queries[4]), 0, "zed", list(range(CANDIDATES)))
    before = comparable(target)

    hashed = source.export_parquet(tmp_path / "hashed.parquet")
    with pytest.raises(ValueError, match="is an export with hashed annotators \\('hmac-sha256'\\)"):
        target.merge_parquet(hashed)
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="is not a readable parquet file"):
        target.merge_parquet(tmp_path / "garbage.parquet")
    pd.DataFrame({"label_id": ["x"]}).to_parquet(tmp_path / "foreign.parquet")
    with pytest.raises(ValueError, match="is not a label export: columns \\['request_id'"):
        target.merge_parquet(tmp_path / "foreign.parquet")
    with pytest.raises(ValueError, match="path must be a file path, got 3"):
        target.merge_parquet(3)

    table = pq.read_table(source.export_parquet(tmp_path / "plain.parquet", hash_annotators=False))
    rows = table.to_pylist()
    for field, value, message in [
        ("choice", "9", r"row 4: choice must be a candidate index in \[0, 5\].*got '9'"),
        ("annotator", "", "row 4: annotator must be a non-empty string"),
        ("responses", [[float("nan")] * 32] * CANDIDATES, "row 4: instruction and responses features must be finite"),
        ("responses", [[0.0] * 31] * CANDIDATES, r"row 4: responses must have shape \(N, H\) = \(6, 32\)"),
        ("label_id", "../../etc", "row 4: label_id must be an id"),
        ("created", "yesterday", "row 4: created must be an ISO 8601 time with a time zone, got 'yesterday'"),
        ("undone", None, "row 4: undone must be True or False, got None"),
        ("sampling", "{not json", "row 4: sampling is not valid JSON"),
        ("annotator_hashed", True, "row 4: annotator_hashed is true"),
    ]:
        tampered = [dict(row) for row in rows]
        tampered[4][field] = value
        bad = tmp_path / f"bad-{field}.parquet"
        pq.write_table(type(table).from_pylist(tampered, schema=table.schema), bad)
        with pytest.raises(ValueError, match=message):
            target.merge_parquet(bad)
    pd.testing.assert_frame_equal(comparable(target), before)  # rows 0-3 were valid: still nothing written
    assert target.revision() == (1, 1, 0)


def test_merge_reads_a_version_1_export(tmp_path, queries):
    """Exports made before version 2 (no metadata, no client_key/superseded_by/annotator_hashed) were never hashed."""
    source = filled_store(tmp_path / "a", queries[:2])
    plain = pq.read_table(source.export_parquet(tmp_path / "plain.parquet", hash_annotators=False))
    old = plain.drop_columns(["client_key", "superseded_by", "annotator_hashed"]).replace_schema_metadata(None)
    pq.write_table(old, tmp_path / "v1.parquet")
    target = LabelStore(tmp_path / "b")
    counts = target.merge_parquet(tmp_path / "v1.parquet")
    assert counts["labels_added"] == 5 and target.count() == source.count() == 3
    assert list(column(target, "client_key").values()) == [None] * 5
