"""Label exports that preference and reward trainers read: pairs in TRL's preference format, and graded candidates.

Both read the live labels of a `LabelStore` (not undone; a skip only for its grades) and write
one row per pair or per graded candidate, as parquet (`export_preferences`, `export_graded`) or
as a `datasets.Dataset` (`preference_dataset`, `graded_dataset`). The raw export of every label
with its features is `LabelStore.export_parquet`.

Messages: TRL's conversational format. `prompt` is [{"role": "user", "content": <prompt>}]: the
app sends the prompt as the one user message, with no system message of its own
(`ranker.capture.sampling.encode_prompts`); a chat template that adds a default system prompt
(SmolLM2's does) adds the same one when a trainer applies it. Each candidate is
[{"role": "assistant", "content": <candidate text>}], the text as the app showed it.

Preference dataset (`PREFERENCE_COLUMNS`), TRL's "preference" type (prompt, chosen, rejected):
one row per (chosen, rejected) pair a label implies, by `ranker.rankers.preferences.judgement_pairs`:
- source "pick": the picked candidate over every other candidate of the request;
- source "ranking": a full ranking's every pair, better over worse (ranking_pairs="all",
  K(K-1)/2 rows), or only neighbours (ranking_pairs="adjacent", K - 1 rows); a ranked label's
  pick pairs are among them and are not repeated;
- source "grade": a candidate with more stars over one with fewer (equal stars: no pair);
- source "thumbs": every thumbs-up candidate over every thumbs-down one;
- "tie", "all_bad" and "skip" give no pick pairs (their grades still give theirs).
A pair given by an earlier source of the same label (in the order above) is not repeated, so one
label never yields the same (chosen, rejected) twice; two labels of one request (two annotators)
may. Metadata: request_id, label_id, annotator, source, chosen_candidate and rejected_candidate
(candidate indices into the request's candidates).

Graded dataset (`GRADED_COLUMNS`), TRL's "prompt-completion" type plus a grade: one row per graded
candidate of a live label: prompt, completion, grade (float: 1..5 stars, or -1/+1 thumbs),
scale ("stars" or "thumbs"; split by `labeling.label_store.split_grades`), candidate,
request_id, label_id, annotator.

Annotators are hashed by default with the store's keyed pseudonym, exactly as `export_parquet`
hashes them (`LabelStore.annotator_pseudonyms`); hash_annotators=False writes the plain ids.
Parquet files record, in the schema metadata `language_ranker` (JSON), the format, the store's
schema_version and "annotators" ("hmac-sha256" or "plain") as the raw export does, plus
"ranking_pairs" for the preference file. Neither can be merged back (`merge_parquet` refuses
another format).

Command line: `python -m labeling.exports --format preference|graded|raw --out PATH
[--data-dir DIR] [--no-hash] [--ranking-pairs all|adjacent]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from labeling.label_store import (
    DB_NAME,
    EXPORT_METADATA_KEY,
    HASHED,
    PLAIN,
    SCHEMA_VERSION,
    SKIP,
    LabelStore,
    split_grades,
)
from ranker.core.file_io import atomic_file
from ranker.rankers.preferences import RANKING_PAIRS, TIE, judgement_pairs

PREFERENCE_FORMAT = "language-ranker-preferences"
GRADED_FORMAT = "language-ranker-graded"
SOURCES = ("ranking", "pick", "grade", "thumbs")  # a preference row's `source`, in the order pairs are taken
FORMATS = ("preference", "graded", "raw")  # what the command line writes

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))  # TRL conversational messages
PREFERENCE_SCHEMA = pa.schema([
    ("prompt", MESSAGES), ("chosen", MESSAGES), ("rejected", MESSAGES),
    ("request_id", pa.string()), ("label_id", pa.string()), ("annotator", pa.string()), ("source", pa.string()),
    ("chosen_candidate", pa.int64()), ("rejected_candidate", pa.int64()),
])
GRADED_SCHEMA = pa.schema([
    ("prompt", MESSAGES), ("completion", MESSAGES), ("grade", pa.float64()), ("scale", pa.string()),
    ("candidate", pa.int64()), ("request_id", pa.string()), ("label_id", pa.string()), ("annotator", pa.string()),
])
PREFERENCE_COLUMNS = tuple(PREFERENCE_SCHEMA.names)
GRADED_COLUMNS = tuple(GRADED_SCHEMA.names)


def prompt_messages(prompt: str) -> list[dict[str, str]]:
    """The prompt as the app sent it to the model: one user message (module docstring)."""
    return [{"role": "user", "content": prompt}]


def completion_messages(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _live_labels(store: LabelStore, hash_annotators: bool) -> tuple[list[dict], Callable[[str], str]]:
    """The store's live labels (decoded, no features), oldest first, and how to write an annotator."""
    if not isinstance(hash_annotators, bool):
        raise ValueError(f"hash_annotators must be True or False, got {hash_annotators!r}")
    pseudonym = store.annotator_pseudonyms() if hash_annotators else str
    return store.label_records(include_undone=False), pseudonym


def preference_rows(store: LabelStore, hash_annotators: bool = True, ranking_pairs: str = "all") -> list[dict]:
    """One dict per (chosen, rejected) pair of every live label, with the `PREFERENCE_COLUMNS` (module docstring)."""
    if ranking_pairs not in RANKING_PAIRS:
        raise ValueError(f"ranking_pairs must be one of {RANKING_PAIRS}, got {ranking_pairs!r}")
    labels, pseudonym = _live_labels(store, hash_annotators)
    rows = []
    for label in labels:
        stars, thumbs = split_grades(label["grades"], label["grade_scale"])
        choice = TIE if label["choice"] == SKIP else label["choice"]  # a skip picks nothing
        pairs = judgement_pairs(choice, len(label["candidates"]), label["ranking"], stars, thumbs, ranking_pairs)
        annotator, prompt = pseudonym(label["annotator"]), prompt_messages(label["prompt"])
        rows += [{"prompt": prompt, "chosen": completion_messages(label["candidates"][chosen]),
                  "rejected": completion_messages(label["candidates"][rejected]), "request_id": label["request_id"],
                  "label_id": label["label_id"], "annotator": annotator, "source": source,
                  "chosen_candidate": chosen, "rejected_candidate": rejected}
                 for chosen, rejected, source in pairs]
    return rows


def graded_rows(store: LabelStore, hash_annotators: bool = True) -> list[dict]:
    """One dict per graded candidate of every live label, with the `GRADED_COLUMNS` (module docstring)."""
    labels, pseudonym = _live_labels(store, hash_annotators)
    rows = []
    for label in labels:
        stars, thumbs = split_grades(label["grades"], label["grade_scale"])
        annotator, prompt = pseudonym(label["annotator"]), prompt_messages(label["prompt"])
        for scale, grades in (("stars", stars), ("thumbs", thumbs)):
            rows += [{"prompt": prompt, "completion": completion_messages(label["candidates"][candidate]),
                      "grade": float(grade), "scale": scale, "candidate": candidate, "request_id": label["request_id"],
                      "label_id": label["label_id"], "annotator": annotator}
                     for candidate, grade in sorted(grades.items())]
    return rows


def _table(rows: list[dict], schema: pa.Schema, info: dict) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=schema)
    return table.replace_schema_metadata({EXPORT_METADATA_KEY: json.dumps(info).encode()})


def preference_table(store: LabelStore, hash_annotators: bool = True, ranking_pairs: str = "all") -> pa.Table:
    """`preference_rows` as an arrow table with `PREFERENCE_SCHEMA` and the `language_ranker` metadata."""
    rows = preference_rows(store, hash_annotators, ranking_pairs)
    return _table(rows, PREFERENCE_SCHEMA, {"format": PREFERENCE_FORMAT, "schema_version": SCHEMA_VERSION,
                                            "annotators": HASHED if hash_annotators else PLAIN,
                                            "ranking_pairs": ranking_pairs})


def graded_table(store: LabelStore, hash_annotators: bool = True) -> pa.Table:
    """`graded_rows` as an arrow table with `GRADED_SCHEMA` and the `language_ranker` metadata."""
    rows = graded_rows(store, hash_annotators)
    return _table(rows, GRADED_SCHEMA, {"format": GRADED_FORMAT, "schema_version": SCHEMA_VERSION,
                                        "annotators": HASHED if hash_annotators else PLAIN})


def _write(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write to a temporary file next to `path`, then rename (readers never see half a file); owner-only."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file path, got {path!r:.200}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the parquet file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, mode=0o600) as temp:  # plain annotator ids, when asked for: owner only, as the store
        pq.write_table(table, temp)
    return path


def export_preferences(store: LabelStore, path: str | os.PathLike, hash_annotators: bool = True,
                       ranking_pairs: str = "all") -> Path:
    """The preference dataset as a parquet file at `path`; returns the path."""
    return _write(preference_table(store, hash_annotators, ranking_pairs), path)


def export_graded(store: LabelStore, path: str | os.PathLike, hash_annotators: bool = True) -> Path:
    """The graded dataset as a parquet file at `path`; returns the path."""
    return _write(graded_table(store, hash_annotators), path)


def _dataset(table: pa.Table):
    import datasets

    return datasets.Dataset.from_dict(table.to_pydict(), features=datasets.Features.from_arrow_schema(table.schema))


def preference_dataset(store: LabelStore, hash_annotators: bool = True, ranking_pairs: str = "all"):
    """The preference dataset as a `datasets.Dataset` (columns `PREFERENCE_COLUMNS`)."""
    return _dataset(preference_table(store, hash_annotators, ranking_pairs))


def graded_dataset(store: LabelStore, hash_annotators: bool = True):
    """The graded dataset as a `datasets.Dataset` (columns `GRADED_COLUMNS`)."""
    return _dataset(graded_table(store, hash_annotators))


# --- command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m labeling.exports",
        description="Export the labels of a label store: preference pairs (TRL's conversational preference format), "
                    "graded candidates, or the raw export with features (LabelStore.export_parquet).")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="preference: one row per (chosen, rejected) pair; graded: one row per graded candidate; "
                             "raw: every label with its request and features")
    parser.add_argument("--out", required=True, help="parquet file to write")
    parser.add_argument("--data-dir", help="folder holding labels.sqlite (default: the app's, see "
                                           "labeling.sync.default_data_dir)")
    parser.add_argument("--no-hash", action="store_true",
                        help="write plain annotator ids (and, for raw, client keys) instead of keyed pseudonyms")
    parser.add_argument("--ranking-pairs", choices=RANKING_PAIRS, default="all",
                        help="preference only: every pair of a full ranking (all), or only neighbours (adjacent)")
    return parser


def run(args: argparse.Namespace) -> str:
    """Write the export `args` ask for; returns the line to print. ValueError for a bad data dir or path."""
    if args.data_dir is None:
        from labeling.sync import default_data_dir

        data_dir = default_data_dir()
    else:
        data_dir = Path(args.data_dir)
    if not (data_dir / DB_NAME).is_file():  # never create an empty store where a typo pointed
        raise ValueError(f"no label store in {data_dir} (no {DB_NAME}); pass --data-dir with the app's data folder")
    if Path(args.out).is_dir():
        raise ValueError(f"{args.out} is a folder; give the parquet file to write")
    store = LabelStore(data_dir)
    hashed = not args.no_hash
    if args.format == "raw":
        path = store.export_parquet(args.out, hash_annotators=hashed)
        rows, what = pq.read_metadata(path).num_rows, "labels"
    elif args.format == "preference":
        path = export_preferences(store, args.out, hash_annotators=hashed, ranking_pairs=args.ranking_pairs)
        rows, what = pq.read_metadata(path).num_rows, "preference pairs"
    else:
        path = export_graded(store, args.out, hash_annotators=hashed)
        rows, what = pq.read_metadata(path).num_rows, "graded candidates"
    return f"wrote {rows} {what} to {path} (annotators {'hashed' if hashed else 'plain'})"


def main(argv: list[str] | None = None) -> int:
    """The command line; 0 on success, 2 with a one-line error (no traceback) otherwise."""
    args = build_parser().parse_args(argv)  # bad arguments: argparse prints the usage and exits with 2
    try:
        print(run(args))
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
