"""LabelStore: round trips, WAL, undo, exports, and never losing a label."""

import sqlite3
import threading

import pandas as pd
import pytest
import torch

from labeling.store import DB_NAME, LabelStore
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
    label_id = store.add_label(request_id, 2, "alice", order, blind=False, grades={2: 5, "4": -1})
    store.add_label(request_id, "0", "bob", list(range(CANDIDATES)))  # choice as a decimal string
    frame = store.labels_frame()
    assert frame["label_id"].tolist()[0] == label_id
    assert frame["choice"].tolist() == ["2", "0"] and frame["annotator"].tolist() == ["alice", "bob"]
    assert frame["order_shown"].tolist()[0] == order and frame["grades"].tolist()[0] == {2: 5, 4: -1}
    assert frame["blind"].tolist() == [False, True] and "responses" not in frame

    # Preferences follow ranker.data.Preference: display order, choice = display position of the pick.
    first = store.preferences(profile="math")[0]
    assert first.query_id == label_id and first.choice == order.index(2) == 3
    torch.testing.assert_close(first.responses, stored["responses"][order])
    assert first.mean_logprob.tolist() == [-1.0 - k for k in order]
    assert store.preferences(profile="default") == []


def test_wal_mode_is_on_and_persistent(store):
    assert store.journal_mode() == "wal"
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(1,)]


def test_undo_marks_only_that_annotators_latest_label(store, queries):
    request_id = record(store, queries[0])
    order = list(range(CANDIDATES))
    a1 = store.add_label(request_id, 1, "alice", order)
    a2 = store.add_label(request_id, "all_bad", "alice", order)
    b1 = store.add_label(request_id, 4, "bob", order)
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
    request_id = record(store, queries[1])
    order = list(range(CANDIDATES))
    for choice in ("skip", "tie", "all_bad", 0):
        store.add_label(request_id, choice, "alice", order)
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
    store.add_label(ids[2], "tie", "bob", list(range(CANDIDATES)))
    path = store.export_parquet(tmp_path / "out" / "labels.parquet")
    frame = pd.read_parquet(path)
    assert frame["request_id"].tolist() == [ids[0], ids[2]] and frame["choice"].tolist() == ["2", "tie"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["labels.parquet"]  # no temp file left behind
    stored = store.get_request(ids[2])
    torch.testing.assert_close(torch.tensor(list(map(list, frame["responses"][1])), dtype=torch.float32), stored["responses"])
    torch.testing.assert_close(torch.tensor(frame["instruction"][1], dtype=torch.float32), stored["instruction"])

    dataset = store.to_dataset()
    assert dataset.num_rows == 2 and dataset[0]["label_id"] == frame["label_id"][0]
    assert dataset[0]["grades"] == '{"2": 4}' and dataset[1]["annotator"] == "bob"
    torch.testing.assert_close(torch.tensor(dataset[1]["responses"]), stored["responses"])


def test_concurrent_writers_lose_nothing(store, queries):
    request_id = record(store, queries[0])
    errors = []

    def label_many(name):
        try:
            for k in range(10):
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
