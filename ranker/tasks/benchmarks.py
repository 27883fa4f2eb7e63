"""Loaders for the real benchmarks, through the `datasets` library.

`load_benchmark(name, split=None, limit=None, data_files=None, **options)` is the entry point;
it dispatches to `load_<name>(split=..., limit=None, data_files=None)`, which returns a list
of `Problem`:

| name  | hub id                                 | default split | checker      |
|-------|----------------------------------------|---------------|--------------|
| math  | EleutherAI/hendrycks_math (7 subjects) | test          | math         |
| gsm8k | openai/gsm8k, config "main"            | test          | numeric      |
| mbpp  | google-research-datasets/mbpp, "full"  | test          | python_tests |
| xlam  | Salesforce/xlam-function-calling-60k   | train         | json_call    |
| dolly | databricks/databricks-dolly-15k        | train         | none         |

With `data_files` (a path, a list of paths, or a {split: path} dict) the loader reads local
json/jsonl/parquet/csv files in the dataset's own schema instead of the hub, which is how
to use them without network access. `limit` keeps the first `limit` problems.

Dolly has no automatic checker: its problems carry checker "none" and the human-written
response as `answer`; they are for real-valued or preference labels (the paper's
instruction-following setting), and `check` refuses them.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ranker.tasks.checkers import last_boxed, parse_number
from ranker.tasks.jsonl import parse_json
from ranker.tasks.problem import Problem

logger = logging.getLogger(__name__)

MATH_HUB_ID = "EleutherAI/hendrycks_math"
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")
GSM8K_HUB_ID = "openai/gsm8k"
MBPP_HUB_ID = "google-research-datasets/mbpp"
XLAM_HUB_ID = "Salesforce/xlam-function-calling-60k"
DOLLY_HUB_ID = "databricks/databricks-dolly-15k"

MATH_INSTRUCTION = "Put your final answer within \\boxed{}."
GSM8K_INSTRUCTION = "Solve the problem and end your reply with the final answer as a number."
MBPP_INSTRUCTION = "Reply with only the code in a ```python block."
XLAM_INSTRUCTION = (
    'Reply with only a JSON list of the function calls needed, in the form '
    '[{"name": "function_name", "arguments": {"argument": value}}].'
)

_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


# ------------------------------------------------------------------------------ loading

def _read_rows(
    name: str, hub_id: str, split: str, data_files: str | Path | Sequence[str | Path] | dict | None,
    config: str | None = None,
) -> Iterable[dict[str, Any]]:
    """Rows of one split, from local files when `data_files` is given, else from the hub."""
    import datasets  # imported here: it is slow to import and only loaders need it

    if data_files is not None:
        files = _files_for_split(data_files, split)
        first = files[split][0] if isinstance(files[split], list) else files[split]
        builder = _BUILDERS.get(Path(str(first)).suffix.lower())
        if builder is None:
            raise ValueError(f"data file {str(first)!r} for {name}: unsupported extension; expected one of {sorted(_BUILDERS)}")
        for path in (files[split] if isinstance(files[split], list) else [files[split]]):
            if not Path(str(path)).is_file():
                raise ValueError(f"data file {str(path)!r} for {name} does not exist")
        return datasets.load_dataset(builder, data_files=files, split=split)
    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except OSError as error:  # ConnectionError, offline mode, dataset not found or gated
        raise ValueError(
            f"could not load {hub_id!r} (config {config!r}, split {split!r}) from the Hugging Face Hub: {error}. "
            f"The network is probably unreachable (or the dataset is gated). Download the data elsewhere and "
            f"pass it as a local file: load_{name}(split={split!r}, data_files='path/to/{name}.jsonl') "
            "(json, jsonl, parquet or csv, in the dataset's own columns)."
        ) from error


def _files_for_split(data_files: Any, split: str) -> dict[str, Any]:
    """Normalise `data_files` to {split: files}, so the requested split name always exists."""
    if isinstance(data_files, dict):
        if split not in data_files:
            raise ValueError(f"data_files has splits {sorted(data_files)}, not the requested split {split!r}")
        return {split: [str(p) for p in data_files[split]] if isinstance(data_files[split], (list, tuple))
                else str(data_files[split])}
    if isinstance(data_files, (list, tuple)):
        if not data_files:
            raise ValueError("data_files is an empty list")
        return {split: [str(p) for p in data_files]}
    return {split: str(data_files)}


def _take(problems: Iterator[Problem], limit: int | None) -> list[Problem]:
    """The first `limit` problems (all when None)."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or a non-negative int, got {limit!r}")
    taken: list[Problem] = []
    for problem in problems:
        if limit is not None and len(taken) >= limit:
            break
        taken.append(problem)
    return taken


def _require(row: dict[str, Any], columns: Sequence[str], name: str) -> None:
    """Fail clearly when a local file is not in the dataset's schema."""
    missing = [column for column in columns if column not in row]
    if missing:
        raise ValueError(f"{name} rows need columns {list(columns)}; missing {missing} (got {sorted(row)})")


# --------------------------------------------------------------------------------- MATH

def load_math(split: str = "test", limit: int | None = None, data_files: Any = None) -> list[Problem]:
    """Competition math (Hendrycks MATH): problem -> answer in the solution's last \\boxed{}.

    Columns: problem, solution, level ("Level 1".."Level 5"), type (subject). Checker
    "math" (boxed answer, simple LaTeX normalisation). Rows without a boxed answer are
    skipped. From the hub, the 7 subject configs are read in order and concatenated;
    use `split.stratified_sample` for the paper's uniform subject x level draw.
    """
    if data_files is not None:
        sources: Iterable[Iterable[dict]] = [_read_rows("math", MATH_HUB_ID, split, data_files)]
    else:
        sources = (_read_rows("math", MATH_HUB_ID, split, None, config=subject) for subject in MATH_SUBJECTS)
    return _take(_math_problems(sources), limit)


def _math_problems(sources: Iterable[Iterable[dict]]) -> Iterator[Problem]:
    for rows in sources:
        for index, row in enumerate(rows):
            _require(row, ("problem", "solution"), "MATH")
            answer = last_boxed(row["solution"])
            if answer is None or not answer.strip():
                logger.warning("MATH row %d has no \\boxed{} answer in its solution; skipped", index)
                continue
            yield Problem(
                prompt=f"{row['problem']}\n\n{MATH_INSTRUCTION}", answer=answer.strip(), checker="math",
                family="math",
                meta={"subject": row.get("type", ""), "level": row.get("level", ""), "solution": row["solution"]},
            )


# -------------------------------------------------------------------------------- GSM8K

def load_gsm8k(split: str = "test", limit: int | None = None, data_files: Any = None) -> list[Problem]:
    """Grade-school math: question -> the number after "####" in the answer (checker numeric)."""
    rows = _read_rows("gsm8k", GSM8K_HUB_ID, split, data_files, config="main")
    return _take(_gsm8k_problems(rows), limit)


def gsm8k_final_answer(answer_text: str) -> str:
    """The final number of a GSM8K answer: the text after "####", without thousands commas."""
    if "####" not in answer_text:
        raise ValueError(f"GSM8K answer has no '####' final answer: {answer_text[-200:]!r}")
    final = answer_text.rsplit("####", 1)[1].strip().replace(",", "")
    if parse_number(final) is None:
        raise ValueError(f"GSM8K final answer is not a number: {final!r}")
    return final


def _gsm8k_problems(rows: Iterable[dict]) -> Iterator[Problem]:
    for row in rows:
        _require(row, ("question", "answer"), "GSM8K")
        yield Problem(
            prompt=f"{row['question']}\n\n{GSM8K_INSTRUCTION}", answer=gsm8k_final_answer(row["answer"]),
            checker="numeric", family="gsm8k", meta={"solution": row["answer"]},
        )


# --------------------------------------------------------------------------------- MBPP

def load_mbpp(split: str = "test", limit: int | None = None, data_files: Any = None) -> list[Problem]:
    """Mostly Basic Python Problems: text + test_list -> python_tests.

    Reads the "full" config (columns task_id, text, code, test_list, test_setup_code) and
    also the "sanitized" one (prompt instead of text, test_imports). The prompt lists the
    tests, as in the original MBPP prompt, so the function name and signature are known.
    Setup code and imports run before the asserts. `answer` is the reference code.
    """
    rows = _read_rows("mbpp", MBPP_HUB_ID, split, data_files, config="full")
    return _take(_mbpp_problems(rows), limit)


def _mbpp_problems(rows: Iterable[dict]) -> Iterator[Problem]:
    for row in rows:
        text = row.get("text") or row.get("prompt")
        if not text or not row.get("test_list"):
            raise ValueError(f"MBPP rows need 'text' (or 'prompt') and a non-empty 'test_list'; got {sorted(row)}")
        setup = [line for line in (row.get("test_setup_code") or "").splitlines() if line.strip()]
        setup += list(row.get("test_imports") or [])
        tests = tuple(setup) + tuple(row["test_list"])
        listed = "\n".join(row["test_list"])
        yield Problem(
            prompt=f"{text}\nYour code should pass these tests:\n{listed}\n{MBPP_INSTRUCTION}",
            answer=row.get("code") or "", checker="python_tests", tests=tests, family="mbpp",
            meta={"task_id": row.get("task_id")},
        )


# --------------------------------------------------------------------------------- xLAM

def load_xlam(
    split: str = "train", limit: int | None = None, data_files: Any = None,
    min_tools: int = 0, single_call_only: bool = False,
) -> list[Problem]:
    """xLAM function calling: query + tools -> the expected calls (checker json_call).

    Columns: id, query, tools (JSON string: list of {name, description, parameters}),
    answers (JSON string: list of {name, arguments}). The hub dataset only has a "train"
    split. `answer` is the JSON list of all expected calls (the checker accepts them in
    any order; a lone object counts as a one-call list). `min_tools` keeps rows offering
    at least that many tools (the paper uses "more than 3": min_tools=4);
    `single_call_only` keeps rows whose answer is one call.
    """
    rows = _read_rows("xlam", XLAM_HUB_ID, split, data_files)
    return _take(_xlam_problems(rows, min_tools, single_call_only), limit)


def _xlam_problems(rows: Iterable[dict], min_tools: int, single_call_only: bool) -> Iterator[Problem]:
    for row in rows:
        _require(row, ("query", "tools", "answers"), "xLAM")
        tools = _json_field(row["tools"], "tools", row)
        calls = _json_field(row["answers"], "answers", row)
        if len(tools) < min_tools or (single_call_only and len(calls) != 1):
            continue
        tool_lines = "\n".join(json.dumps(tool) for tool in tools)
        yield Problem(
            prompt=f"You can call these tools:\n{tool_lines}\n\nUser request: {row['query']}\n\n{XLAM_INSTRUCTION}",
            answer=json.dumps(calls), checker="json_call", family="xlam",
            meta={"id": row.get("id"), "num_tools": len(tools), "num_calls": len(calls)},
        )


def _json_field(value: Any, column: str, row: dict) -> list:
    """xLAM stores tools and answers as JSON strings; accept already-parsed lists too."""
    what = f"xLAM row {row.get('id')!r}: column {column!r}"
    if isinstance(value, str):
        return parse_json(value, list, what)
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list, got {type(value).__name__} {value!r:.200}")
    return value


# -------------------------------------------------------------------------------- Dolly

def load_dolly(split: str = "train", limit: int | None = None, data_files: Any = None) -> list[Problem]:
    """Dolly-15k instructions, for real-valued / preference labels (checker "none").

    Columns: instruction, context, response, category. The prompt is the instruction,
    followed by the context when there is one; `answer` is the human response (a
    reference, not a key). The hub dataset only has a "train" split; the paper trains on
    its first 1000 rows (`limit=1000`).
    """
    rows = _read_rows("dolly", DOLLY_HUB_ID, split, data_files)
    return _take(_dolly_problems(rows), limit)


def _dolly_problems(rows: Iterable[dict]) -> Iterator[Problem]:
    for row in rows:
        _require(row, ("instruction", "response"), "Dolly")
        context = (row.get("context") or "").strip()
        prompt = row["instruction"] if not context else f"{row['instruction']}\n\nContext:\n{context}"
        yield Problem(prompt=prompt, answer=row["response"], checker="none", family="dolly",
                      meta={"category": row.get("category", ""), "context": context})


# ---------------------------------------------------------------------------- entry point

BENCHMARKS: dict[str, Callable[..., list[Problem]]] = {
    "math": load_math, "gsm8k": load_gsm8k, "mbpp": load_mbpp, "xlam": load_xlam, "dolly": load_dolly,
}
_COMMON_PARAMETERS = ("split", "limit", "data_files")


def load_benchmark(
    name: str, split: str | None = None, limit: int | None = None, data_files: Any = None, **options: Any,
) -> list[Problem]:
    """The problems of benchmark `name` (a key of `BENCHMARKS`), via its `load_<name>` loader.

    `split` None takes the loader's default split (see the module table); `limit` keeps the
    first `limit` problems; `data_files` reads local files in the dataset's schema instead of
    the hub. `options` go to the loader (only xLAM has any: `min_tools`, `single_call_only`).
    Raises ValueError for an unknown name or option, naming the accepted ones.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}")
    loader = BENCHMARKS[name]
    accepted = [p for p in inspect.signature(loader).parameters if p not in _COMMON_PARAMETERS]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"benchmark {name!r} has no option(s) {unknown}; it accepts {accepted or 'none'}")
    if split is not None:
        options["split"] = split
    return loader(limit=limit, data_files=data_files, **options)
