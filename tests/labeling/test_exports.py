"""labeling.exports: preference pairs in TRL's conversational format, graded candidates, and the command line."""

import json
import subprocess
import sys
from collections import Counter

import datasets
import pandas as pd
import pyarrow.parquet as pq
import pytest
from trl.data_utils import apply_chat_template, is_conversational, maybe_apply_chat_template

from labeling.exports import (
    GRADED_COLUMNS,
    PREFERENCE_COLUMNS,
    export_graded,
    export_preferences,
    graded_dataset,
    main,
    preference_dataset,
)
from labeling.label_store import LabelStore
from labeling.sync import PROJECT_ROOT
from tests.labeling.synthetic import CANDIDATES, record, synthetic_queries
from tests.tiny_model import tiny_tokenizer

SHOWN = [4, 2, 0, 5, 1, 3]


@pytest.fixture(scope="module")
def queries():
    return synthetic_queries(8, seed=11)


@pytest.fixture
def store(tmp_path, queries):
    """One label of each kind, plus labels that must give nothing: {kind: (label_id, request_id)} in `store.made`."""
    store = LabelStore(tmp_path / "data")
    made = {}

    def label(kind, query, *args, annotator="alice", **kwargs):
        request_id = record(store, query, texts=[f"{kind} answer {k}" for k in range(CANDIDATES)])
        made[kind] = (store.add_label(request_id, *args, annotator, SHOWN, **kwargs), request_id)

    label("pick", queries[0], 5)
    label("ranking", queries[1], 3, ranking=[3, 0, 4, 1, 5, 2], annotator="bob")
    label("grade", queries[2], "skip", grades={0: 4, 2: 4, 5: 1, 1: 2})  # two 4s: no pair between them
    label("thumbs", queries[3], "tie", grades={0: 1, 1: 1, 4: -1}, grade_scale="thumbs")
    label("all_bad", queries[4], "all_bad")
    label("skip", queries[5], "skip")
    label("undone", queries[6], 1)
    store.undo_last("alice")
    superseded = record(store, queries[7], texts=[f"again answer {k}" for k in range(CANDIDATES)])
    made["superseded"] = (store.add_label(superseded, 0, "carol", SHOWN), superseded)
    made["newer"] = (store.add_label(superseded, "tie", "carol", SHOWN), superseded)  # supersedes: no pairs any more
    store.made = made
    return store


def read_back(path, tmp_path):
    """The parquet file as the Hub's loaders read it (two ways, which must agree)."""
    loaded = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))
    direct = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "hf-cache2"))
    assert loaded.to_list() == direct.to_list()
    return loaded


def test_the_preference_parquet_has_one_row_per_implied_pair(store, tmp_path):
    path = export_preferences(store, tmp_path / "out" / "preferences.parquet")
    dataset = read_back(path, tmp_path)
    assert tuple(dataset.column_names) == PREFERENCE_COLUMNS
    made = store.made
    kinds = {label_id: kind for kind, (label_id, _) in made.items()}
    counts = Counter((kinds[row["label_id"]], row["source"]) for row in dataset)
    assert counts == {("pick", "pick"): 5, ("ranking", "ranking"): 15, ("grade", "grade"): 5, ("thumbs", "thumbs"): 2}

    pick_label, pick_request = made["pick"]
    picks = [row for row in dataset if row["label_id"] == pick_label]
    assert [row["rejected_candidate"] for row in picks] == [0, 1, 2, 3, 4] and {row["chosen_candidate"] for row in picks} == {5}
    assert picks[0] == {
        "prompt": [{"role": "user", "content": "question synthetic-0"}],  # the one user message the app sent
        "chosen": [{"role": "assistant", "content": "pick answer 5"}],
        "rejected": [{"role": "assistant", "content": "pick answer 0"}],
        "request_id": pick_request, "label_id": pick_label, "annotator": picks[0]["annotator"], "source": "pick",
        "chosen_candidate": 5, "rejected_candidate": 0,
    }
    ranked = [(row["chosen_candidate"], row["rejected_candidate"]) for row in dataset if row["source"] == "ranking"]
    order = [3, 0, 4, 1, 5, 2]
    assert ranked == [(order[i], order[j]) for i in range(6) for j in range(i + 1, 6)]  # candidate indices, better first
    graded = {(row["chosen_candidate"], row["rejected_candidate"]) for row in dataset if row["source"] == "grade"}
    assert graded == {(0, 5), (2, 5), (0, 1), (2, 1), (1, 5)}
    thumbs = {(row["chosen_candidate"], row["rejected_candidate"]) for row in dataset if row["source"] == "thumbs"}
    assert thumbs == {(0, 4), (1, 4)}
    for row in dataset:  # the texts are those of the candidate indices
        assert row["chosen"][0]["content"].endswith(f"answer {row['chosen_candidate']}")
        assert row["rejected"][0]["content"].endswith(f"answer {row['rejected_candidate']}")

    # Annotators: the same keyed pseudonyms as the raw export; the metadata says so.
    raw = pd.read_parquet(store.export_parquet(tmp_path / "raw.parquet")).set_index("label_id")["annotator"]
    assert all(row["annotator"] == raw[row["label_id"]] for row in dataset)
    assert {row["annotator"] for row in dataset}.isdisjoint({"alice", "bob"})
    assert json.loads(pq.read_schema(path).metadata[b"language_ranker"]) == {
        "format": "language-ranker-preferences", "schema_version": 3, "annotators": "hmac-sha256", "ranking_pairs": "all"}
    assert preference_dataset(store).to_list() == dataset.to_list()


def test_a_preference_row_is_trls_conversational_preference_format(store, tmp_path):
    dataset = read_back(export_preferences(store, tmp_path / "preferences.parquet"), tmp_path)
    row = dataset[0]
    assert is_conversational(row)
    example = {key: row[key] for key in ("prompt", "chosen", "rejected")}
    text = apply_chat_template(example, tiny_tokenizer())
    assert text == {"prompt": "<user>question synthetic-0<eos><assistant>", "chosen": "pick answer 5<eos>",
                    "rejected": "pick answer 0<eos>"}
    assert maybe_apply_chat_template(row, tiny_tokenizer()) == text  # the metadata columns are ignored
    templated = dataset.map(apply_chat_template, fn_kwargs={"processing_class": tiny_tokenizer()},
                            remove_columns=["prompt", "chosen", "rejected"])
    assert templated.num_rows == dataset.num_rows and templated[0]["chosen"] == "pick answer 5<eos>"


def test_adjacent_ranking_pairs_and_plain_annotators(store, tmp_path):
    path = export_preferences(store, tmp_path / "adjacent.parquet", hash_annotators=False, ranking_pairs="adjacent")
    dataset = read_back(path, tmp_path)
    ranked = [(row["chosen_candidate"], row["rejected_candidate"]) for row in dataset if row["source"] == "ranking"]
    assert ranked == [(3, 0), (0, 4), (4, 1), (1, 5), (5, 2)]
    assert {row["annotator"] for row in dataset} == {"alice", "bob"}
    assert json.loads(pq.read_schema(path).metadata[b"language_ranker"])["annotators"] == "plain"
    with pytest.raises(ValueError, match="ranking_pairs must be one of \\('all', 'adjacent'\\), got 'some'"):
        export_preferences(store, tmp_path / "x.parquet", ranking_pairs="some")
    with pytest.raises(ValueError, match="hash_annotators must be True or False, got 'no'"):
        export_preferences(store, tmp_path / "x.parquet", hash_annotators="no")


def test_the_graded_parquet_has_one_row_per_graded_candidate(store, tmp_path):
    path = export_graded(store, tmp_path / "graded.parquet", hash_annotators=False)
    dataset = read_back(path, tmp_path)
    assert tuple(dataset.column_names) == GRADED_COLUMNS
    grade_label, grade_request = store.made["grade"]
    rows = [(row["label_id"], row["candidate"], row["grade"], row["scale"]) for row in dataset]
    assert rows == [(grade_label, 0, 4.0, "stars"), (grade_label, 1, 2.0, "stars"), (grade_label, 2, 4.0, "stars"),
                    (grade_label, 5, 1.0, "stars"), (store.made["thumbs"][0], 0, 1.0, "thumbs"),
                    (store.made["thumbs"][0], 1, 1.0, "thumbs"), (store.made["thumbs"][0], 4, -1.0, "thumbs")]
    assert dataset[0]["prompt"] == [{"role": "user", "content": "question synthetic-2"}]
    assert dataset[0]["completion"] == [{"role": "assistant", "content": "grade answer 0"}]
    assert dataset[0]["request_id"] == grade_request and dataset[0]["annotator"] == "alice"
    assert is_conversational(dataset[0])
    assert apply_chat_template({k: dataset[0][k] for k in ("prompt", "completion")}, tiny_tokenizer()) == {
        "prompt": "<user>question synthetic-2<eos><assistant>", "completion": "grade answer 0<eos>"}
    assert json.loads(pq.read_schema(path).metadata[b"language_ranker"])["format"] == "language-ranker-graded"
    assert graded_dataset(store, hash_annotators=False).to_list() == dataset.to_list()


def test_an_empty_store_exports_empty_files_with_the_columns(tmp_path):
    store = LabelStore(tmp_path / "empty")
    for export, columns in ((export_preferences, PREFERENCE_COLUMNS), (export_graded, GRADED_COLUMNS)):
        path = export(store, tmp_path / f"{export.__name__}.parquet")
        assert pq.read_table(path).num_rows == 0 and tuple(pq.read_schema(path).names) == columns
    assert preference_dataset(store).num_rows == 0 and tuple(graded_dataset(store).column_names) == GRADED_COLUMNS


def test_trainer_exports_cannot_be_merged_as_backups(store, tmp_path):
    path = export_preferences(store, tmp_path / "preferences.parquet", hash_annotators=False)
    with pytest.raises(ValueError, match="not a language-ranker-labels export"):
        LabelStore(tmp_path / "other").merge_parquet(path)


# --- command line ----------------------------------------------------------------------------------


def test_the_command_line_writes_each_format(store, tmp_path, capsys):
    data = str(store.data_dir)
    assert main(["--format", "preference", "--out", str(tmp_path / "p.parquet"), "--data-dir", data]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 27 preference pairs to {tmp_path / 'p.parquet'} (annotators hashed)"
    assert main(["--format", "graded", "--out", str(tmp_path / "g.parquet"), "--data-dir", data, "--no-hash"]) == 0
    assert "wrote 7 graded candidates" in capsys.readouterr().out
    assert pq.read_table(tmp_path / "g.parquet").column("annotator").to_pylist()[0] == "alice"
    assert main(["--format", "raw", "--out", str(tmp_path / "raw.parquet"), "--data-dir", data, "--no-hash"]) == 0
    assert "wrote 9 labels" in capsys.readouterr().out  # every label, undone ones too, as export_parquet writes
    LabelStore(tmp_path / "restored").merge_parquet(tmp_path / "raw.parquet")  # an unhashed raw export is a backup
    assert main(["--format", "preference", "--ranking-pairs", "adjacent", "--out", str(tmp_path / "a.parquet"),
                 "--data-dir", data]) == 0
    assert "wrote 17 preference pairs" in capsys.readouterr().out


def test_the_command_line_reports_bad_arguments_without_a_traceback(store, tmp_path, capsys):
    data = str(store.data_dir)
    assert main(["--format", "preference", "--out", str(tmp_path), "--data-dir", data]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path} is a folder; give the parquet file to write"
    missing = tmp_path / "nowhere"
    assert main(["--format", "graded", "--out", str(tmp_path / "g.parquet"), "--data-dir", str(missing)]) == 2
    assert "error: no label store in" in capsys.readouterr().err and not missing.exists()  # nothing created there
    for argv, message in [(["--format", "csv", "--out", "x"], "invalid choice: 'csv'"),
                          (["--format", "preference"], "the following arguments are required: --out"),
                          (["--format", "raw", "--out", "x", "--ranking-pairs", "few"], "invalid choice: 'few'")]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "labeling.exports", "--format", "preference", "--out",
                           str(tmp_path / "p.parquet"), "--data-dir", str(missing)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: no label store in") and "Traceback" not in done.stderr
