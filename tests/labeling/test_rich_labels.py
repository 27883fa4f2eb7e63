"""Labels richer than one pick: full rankings and grade scales in the LabelStore, and the display-position helpers."""

import json
import sqlite3

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from labeling.exports import preference_rows
from labeling.label_store import LabelStore, grades_from_display, ranking_from_display, split_grades
from tests.labeling.synthetic import CANDIDATES, record, synthetic_queries

SHOWN = [3, 1, 0, 5, 2, 4]  # order_shown: the candidate at each display position


@pytest.fixture
def store(tmp_path):
    return LabelStore(tmp_path / "data")


@pytest.fixture(scope="module")
def queries():
    return synthetic_queries(4, seed=7)


def rows(store):
    """Every labels row straight from SQLite, to prove a refused call wrote nothing."""
    with sqlite3.connect(store.path) as raw:
        return raw.execute("SELECT * FROM labels ORDER BY seq").fetchall()


def test_a_ranking_given_by_display_position_is_stored_read_and_exported_as_candidate_indices(store, queries, tmp_path):
    request_id = record(store, queries[0], texts=[f"answer {k}" for k in range(CANDIDATES)])
    clicked = [4, 0, 2, 5, 1, 3]  # the user's ranking, by display position, best first
    ranking = ranking_from_display(clicked, SHOWN)
    assert ranking == [SHOWN[p] for p in clicked] == [2, 3, 0, 4, 1, 5]
    label_id = store.add_label(request_id, ranking[0], "alice", SHOWN, ranking=ranking)

    assert store.labels_frame()["ranking"].tolist() == [ranking]  # candidate indices
    preference = store.preferences()[0]
    assert preference.ranking == clicked and preference.choice == clicked[0]  # display positions, Preference's convention
    torch.testing.assert_close(preference.responses[0], store.get_request(request_id)["responses"][SHOWN[0]])

    backup = store.export_parquet(tmp_path / "backup.parquet", hash_annotators=False)
    assert pq.read_table(backup).column("ranking").to_pylist() == [ranking]
    copy = LabelStore(tmp_path / "copy")
    copy.merge_parquet(backup)
    assert copy.labels_frame()["ranking"].tolist() == [ranking]

    pairs = preference_rows(copy, hash_annotators=False)
    assert len(pairs) == CANDIDATES * (CANDIDATES - 1) // 2 and {row["label_id"] for row in pairs} == {label_id}
    assert [(row["chosen_candidate"], row["rejected_candidate"]) for row in pairs[:CANDIDATES - 1]] == [
        (2, 3), (2, 0), (2, 4), (2, 1), (2, 5)]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "answer 2"}]
    assert pairs[0]["rejected"] == [{"role": "assistant", "content": "answer 3"}]


def test_numpy_and_tensor_rankings_are_accepted(store, queries):
    request_id = record(store, queries[0])
    store.add_label(request_id, 5, "alice", SHOWN, ranking=np.array([5, 4, 3, 2, 1, 0]))
    store.add_label(request_id, 0, "bob", SHOWN, ranking=torch.arange(CANDIDATES))
    assert store.labels_frame()["ranking"].tolist() == [[5, 4, 3, 2, 1, 0], list(range(CANDIDATES))]


@pytest.mark.parametrize(
    "ranking, choice, message",
    [
        ([0, 0, 1, 2, 3, 4], 0, r"ranking lists candidate 0 twice \(at 0 and 1\); a full ranking has no ties"),
        ([0, 1, 2, 3, 4], 0, r"ranking must rank all 6 candidates \(a permutation of range\(6\), best first\), got 5 entries"),
        (list(range(7)), 0, "ranking must rank all 6 candidates.*got 7 entries"),
        ([0, 1, 2, 3, 4, 6], 0, r"ranking\[5\] = 6 is not a candidate index in \[0, 5\]"),
        ([0, 1, 2, 3, 4, -1], 0, r"ranking\[5\] = -1 is not a candidate index in \[0, 5\]"),
        ([True, 1, 2, 3, 4, 5], 1, r"ranking\[0\] must be a candidate index \(an int\), got True"),
        ([0, 1.0, 2, 3, 4, 5], 0, r"ranking\[1\] must be a candidate index \(an int\), got 1.0"),
        ([0, "1", 2, 3, 4, 5], 0, r"ranking\[1\] must be a candidate index \(an int\), got '1'"),
        ([0, None, 2, 3, 4, 5], 0, r"ranking\[1\] must be a candidate index \(an int\), got None"),
        (np.array([True, False, True, True, True, True]), 0, r"ranking\[0\] must be a candidate index \(an int\), got True"),
        (torch.tensor([0.0, 1, 2, 3, 4, 5]), 0, r"ranking\[0\] must be a candidate index \(an int\), got 0.0"),
        ([[0, 1], [2, 3], [4, 5]], 0, "ranking must rank all 6 candidates.*got 3 entries"),
        ("012345", 0, "ranking must be a list of candidate indices, best first, got '012345'"),
        ({0: 1}, 0, "ranking must be a list of candidate indices"),
        (5, 0, "ranking must be a list of candidate indices, best first, got 5"),
        (np.int64(3), 0, "ranking must be a list of candidate indices"),
        (list(range(10**6)), 0, "got 1000000 entries"),  # refused by its length, before any entry is read
        ([1, 0, 2, 3, 4, 5], 0, "choice 0 must be the ranking's first \\(best\\) candidate 1 when a ranking is given"),
        ([1, 0, 2, 3, 4, 5], "tie", "choice 'tie' must be the ranking's first"),
    ],
)
def test_bad_rankings_raise_naming_the_value_and_write_nothing(store, queries, ranking, choice, message):
    request_id = record(store, queries[0])
    store.add_label(request_id, 1, "alice", SHOWN, ranking=[1, 0, 2, 3, 4, 5])
    before = rows(store)
    with pytest.raises(ValueError, match=message):
        store.add_label(request_id, choice, "bob", SHOWN, ranking=ranking)
    assert rows(store) == before


@pytest.mark.parametrize(
    "grades, scale, stored, message",
    [
        ({0: 5, 1: 1}, None, "stars", None),
        ({0: 1, 1: -1}, None, "thumbs", None),
        ({0: -1}, None, "thumbs", None),
        ({0: 1}, "thumbs", "thumbs", None),
        ({0: 1, 3: 1}, "stars", "stars", None),
        ({}, None, None, None),
        ({0: 1}, None, None, r"grades \{0: 1\} are ambiguous: 1 is both one star and thumbs up; pass grade_scale='stars'"),
        ({0: 5, 1: -1}, None, None, r"grades \{0: 5, 1: -1\} mix thumbs \(-1\) and stars \(2..5\)"),
        ({0: 3}, "thumbs", None, r"grade for candidate 0 must be one of \[-1, 1\] on grade_scale 'thumbs', got 3"),
        ({0: -1}, "stars", None, r"grade for candidate 0 must be one of \[1, 2, 3, 4, 5\] on grade_scale 'stars', got -1"),
        ({0: 5}, "Stars", None, "grade_scale must be None, 'stars' or 'thumbs', got 'Stars'"),
        ({0: 5}, True, None, "grade_scale must be None, 'stars' or 'thumbs', got True"),
        ({0: 5}, ["stars"], None, r"grade_scale must be None, 'stars' or 'thumbs', got \['stars'\]"),
        (None, "stars", None, "grade_scale 'stars' was given without grades"),
        ({0: True}, "thumbs", None, "grade for candidate 0 must be 1..5 stars or -1/\\+1 thumbs, got True"),
    ],
)
def test_the_grade_scale_is_given_or_inferred_and_never_ambiguous(store, queries, grades, scale, stored, message):
    request_id = record(store, queries[0])
    if message is not None:
        with pytest.raises(ValueError, match=message):
            store.add_label(request_id, 0, "alice", SHOWN, grades=grades, grade_scale=scale)
        assert rows(store) == []
        return
    store.add_label(request_id, 0, "alice", SHOWN, grades=grades, grade_scale=scale)
    [label] = store.label_records()
    assert label["grade_scale"] == stored and label["grades"] == grades


def test_split_grades_by_scale_and_for_labels_without_one():
    assert split_grades({0: 1, 1: 5}, "stars") == ({0: 1, 1: 5}, {})
    assert split_grades({0: 1, 1: -1}, "thumbs") == ({}, {0: 1, 1: -1})
    # No scale (written before schema version 3): by value.
    assert split_grades({0: 1, 1: -1}, None) == ({}, {0: 1, 1: -1})
    assert split_grades({0: 1, 1: 3}, None) == ({0: 1, 1: 3}, {})
    assert split_grades({0: 1, 1: 3, 2: -1}, None) == ({0: 1, 1: 3}, {2: -1})
    assert split_grades(None, None) == ({}, {})


def test_a_graded_skip_counts_and_becomes_a_preference_without_a_pick(store, queries):
    ids = [record(store, q) for q in queries[:3]]
    store.add_label(ids[0], "skip", "alice", SHOWN)
    store.add_label(ids[1], "skip", "alice", SHOWN, grades={3: 4, 5: 2})
    store.add_label(ids[2], "skip", "alice", SHOWN, grades={})
    assert store.count() == 1 and store.count(include_skips=True) == 3
    [preference] = store.preferences()
    assert preference.choice == "tie" and preference.stars == {SHOWN.index(3): 4, SHOWN.index(5): 2}


def test_retries_compare_the_ranking_and_the_grade_scale(store, queries):
    request_id = record(store, queries[0])
    args = dict(request_id=request_id, choice=2, annotator="alice", order_shown=SHOWN, client_key="k1",
                ranking=[2, 0, 1, 3, 4, 5], grades={0: 1}, grade_scale="thumbs")
    first = store.add_label(**args)
    assert store.add_label(**{**args, "ranking": np.array([2, 0, 1, 3, 4, 5])}) == first
    for change in ({"ranking": [2, 1, 0, 3, 4, 5]}, {"ranking": None}, {"grade_scale": "stars"}):
        with pytest.raises(ValueError, match=f"client_key 'k1' of annotator 'alice' was already used for label {first}"):
            store.add_label(**{**args, **change})
    assert store.revision() == (1, 1, 0)


def test_display_position_helpers_convert_and_refuse_bad_input():
    assert ranking_from_display([0, 1, 2, 3, 4, 5], SHOWN) == SHOWN
    assert grades_from_display({0: 5, 4: 1}, SHOWN) == {3: 5, 2: 1}
    for positions, message in [([0, 0, 1, 2, 3, 4], "every display position 0..5 once"), ([0, 1, 2], "every display position"),
                               ([0, 1, 2, 3, 4, 6], r"display positions in \[0, 5\]"), ([True, 1, 2, 3, 4, 5], "display positions"),
                               ("012345", "display positions")]:
        with pytest.raises(ValueError, match=message):
            ranking_from_display(positions, SHOWN)
    with pytest.raises(ValueError, match=r"order_shown must be a permutation of range\(2\), got \[0, 0\]"):
        ranking_from_display([0, 1], [0, 0])
    with pytest.raises(ValueError, match="grade positions must be display positions"):
        grades_from_display({6: 5}, SHOWN)


def test_labels_frame_and_exports_carry_rankings_next_to_plain_labels(store, queries, tmp_path):
    first, second = record(store, queries[0]), record(store, queries[1])
    store.add_label(first, 4, "alice", SHOWN)
    store.add_label(second, 1, "alice", SHOWN, ranking=[1, 0, 2, 3, 4, 5], grades={1: 5, 0: 2})
    frame = store.labels_frame()
    assert frame["ranking"].tolist() == [None, [1, 0, 2, 3, 4, 5]]
    assert [record["grade_scale"] for record in store.label_records()] == [None, "stars"]
    table = pq.read_table(store.export_parquet(tmp_path / "labels.parquet", hash_annotators=False))
    assert str(table.schema.field("ranking").type) == "list<element: int64>"
    assert table.column("grade_scale").to_pylist() == [None, "stars"]
    assert json.loads(table.column("grades").to_pylist()[1]) == {"1": 5, "0": 2}
    assert store.to_dataset(hash_annotators=False)["ranking"] == [None, [1, 0, 2, 3, 4, 5]]
    copy = LabelStore(tmp_path / "copy")
    copy.merge_parquet(tmp_path / "labels.parquet")
    columns = ("ranking", "grade_scale", "grades")
    assert [[r[c] for c in columns] for r in copy.label_records()] == [[r[c] for c in columns] for r in store.label_records()]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("ranking", [1, 1, 2, 3, 4, 5], r"row 1: ranking lists candidate 1 twice"),
        ("ranking", [0, 1, 2, 3, 4, 5], "row 1: choice '1' is not the ranking's first candidate 0"),
        ("ranking", [1, 0, 2], "row 1: ranking must rank all 6 candidates"),
        ("grade_scale", "thumbs", r"row 1: grade for candidate 1 must be one of \[-1, 1\] on grade_scale 'thumbs', got 5"),
        ("grade_scale", "likert", "row 1: grade_scale must be None, 'stars' or 'thumbs', got 'likert'"),
    ],
)
def test_merge_refuses_a_tampered_ranking_or_grade_scale_and_writes_nothing(store, queries, tmp_path, field, value, message):
    first, second = record(store, queries[0]), record(store, queries[1])
    store.add_label(first, 4, "alice", SHOWN)
    store.add_label(second, 1, "alice", SHOWN, ranking=[1, 0, 2, 3, 4, 5], grades={1: 5, 0: 2})
    table = pq.read_table(store.export_parquet(tmp_path / "plain.parquet", hash_annotators=False))
    rows = table.to_pylist()
    rows[1][field] = value
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), tmp_path / "bad.parquet")
    target = LabelStore(tmp_path / "target")
    with pytest.raises(ValueError, match=message):
        target.merge_parquet(tmp_path / "bad.parquet")
    assert target.revision() == (0, 0, 0)
