"""Benchmark loaders on small fixture files in each dataset's real schema."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ranker.tasks import BENCHMARKS, benchmarks, check, load_benchmark

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "datasets"
REPO_ROOT = Path(__file__).resolve().parents[3]


def test_math_takes_the_boxed_answer_and_skips_unboxed_rows():
    problems = benchmarks.load_math(data_files=ASSETS / "math.jsonl")
    assert [p.answer for p in problems] == ["\\frac{3}{4}", "4", "6", "9\\pi"]  # the 5th row has no box
    assert problems[0].checker == "math" and problems[0].family == "math"
    assert problems[0].meta["subject"] == "Prealgebra" and problems[0].meta["level"] == "Level 1"
    assert problems[0].prompt.endswith("Put your final answer within \\boxed{}.")
    assert check(problems[0], "It is \\boxed{0.75}") is True
    assert check(problems[3], "\\boxed{9 \\pi}") is True and check(problems[3], "\\boxed{6\\pi}") is False


def test_gsm8k_answer_is_the_number_after_hashes():
    problems = benchmarks.load_gsm8k(data_files=str(ASSETS / "gsm8k.jsonl"))
    assert [p.answer for p in problems] == ["10", "1200", "-2.5"]
    assert check(problems[1], "400 * 3 = 1,200 pens") is True
    assert check(problems[1], "The shop sells 1200 pens in 3 days.") is False  # last number is 3
    with pytest.raises(ValueError, match="####"):
        benchmarks.gsm8k_final_answer("no final answer")


def test_mbpp_tests_run_with_setup_code():
    problems = benchmarks.load_mbpp(data_files=ASSETS / "mbpp.jsonl")
    assert [p.meta["task_id"] for p in problems] == [11, 12, 13]
    assert problems[2].tests[0] == "import math" and len(problems[2].tests) == 4
    assert "assert square(3) == 9" in problems[0].prompt
    assert [check(p, f"```python\n{p.answer}\n```") for p in problems] == [True, True, True]
    assert check(problems[0], "def square(n):\n    return n + n") is False


def test_mbpp_reads_parquet(tmp_path):
    import pandas as pd

    rows = [json.loads(line) for line in (ASSETS / "mbpp.jsonl").read_text().splitlines()]
    pd.DataFrame(rows).to_parquet(tmp_path / "mbpp.parquet")
    problems = benchmarks.load_mbpp(split="test", data_files=tmp_path / "mbpp.parquet", limit=2)
    assert [p.meta["task_id"] for p in problems] == [11, 12]


def test_xlam_answers_are_call_lists():
    problems = benchmarks.load_xlam(data_files=ASSETS / "xlam.json")
    assert [p.meta["num_tools"] for p in problems] == [2, 4, 4]
    assert json.loads(problems[2].answer) == [{"name": "is_prime", "arguments": {"num": 97}}]
    assert '"name": "get_weather"' in problems[0].prompt and "Oslo in celsius" in problems[0].prompt
    # parallel calls match in any order; a single object matches a one-call answer
    assert check(problems[1], '[{"name": "stock_price", "arguments": {"symbol": "AAPL"}}, '
                              '{"name": "convert_currency", "arguments": {"target": "EUR", "amount": 100.0, "source": "USD"}}]')
    assert not check(problems[1], '{"name": "stock_price", "arguments": {"symbol": "AAPL"}}')
    assert check(problems[2], 'Call: {"name": "is_prime", "arguments": {"num": 97}}')
    assert not check(problems[2], '{"name": "is_prime", "arguments": {"num": 79}}')


def test_xlam_filters():
    assert [p.meta["id"] for p in benchmarks.load_xlam(data_files=ASSETS / "xlam.json", min_tools=4)] == [2, 3]
    assert [p.meta["id"] for p in benchmarks.load_xlam(data_files=ASSETS / "xlam.json", single_call_only=True)] == [1, 3]
    assert [p.meta["id"] for p in benchmarks.load_xlam(data_files=ASSETS / "xlam.json", limit=1)] == [1]


def test_dolly_has_no_checker():
    problems = benchmarks.load_dolly(data_files=ASSETS / "dolly.jsonl")
    assert [p.meta["category"] for p in problems] == ["open_qa", "closed_qa", "brainstorming"]
    assert problems[0].prompt == "What is a haiku?"
    assert problems[1].prompt.endswith("Context:\nMoby-Dick is an 1851 novel by Herman Melville.")
    assert problems[1].checker == "none" and problems[1].answer == "Herman Melville."
    with pytest.raises(ValueError, match="no automatic"):
        check(problems[1], "Herman Melville")


def test_data_files_dict_and_bad_inputs(tmp_path):
    problems = benchmarks.load_gsm8k(split="validation", data_files={"validation": str(ASSETS / "gsm8k.jsonl")})
    assert len(problems) == 3
    with pytest.raises(ValueError, match="not the requested split 'test'"):
        benchmarks.load_gsm8k(data_files={"validation": str(ASSETS / "gsm8k.jsonl")})
    with pytest.raises(ValueError, match="does not exist"):
        benchmarks.load_gsm8k(data_files=tmp_path / "missing.jsonl")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported extension"):
        benchmarks.load_gsm8k(data_files=tmp_path / "data.txt")
    with pytest.raises(ValueError, match="missing \\['question', 'answer'\\]"):
        benchmarks.load_gsm8k(data_files=ASSETS / "dolly.jsonl")
    with pytest.raises(ValueError, match="limit"):
        benchmarks.load_gsm8k(data_files=ASSETS / "gsm8k.jsonl", limit=-1)


def test_xlam_rejects_columns_that_are_not_json_lists(tmp_path):
    row = {"id": 7, "query": "q", "tools": "[{broken", "answers": "[]"}
    (tmp_path / "bad.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="xLAM row 7: column 'tools' is not valid JSON"):
        benchmarks.load_xlam(data_files=tmp_path / "bad.jsonl")
    (tmp_path / "dict.jsonl").write_text(json.dumps({**row, "tools": '{"name": "f"}'}) + "\n")
    with pytest.raises(ValueError, match="xLAM row 7: column 'tools' must be a list, got dict"):
        benchmarks.load_xlam(data_files=tmp_path / "dict.jsonl")


FIXTURES = {"math": "math.jsonl", "gsm8k": "gsm8k.jsonl", "mbpp": "mbpp.jsonl", "xlam": "xlam.json", "dolly": "dolly.jsonl"}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_load_benchmark_gives_what_the_named_loader_gives(name):
    data_files = ASSETS / FIXTURES[name]
    problems = load_benchmark(name, data_files=data_files)
    direct = BENCHMARKS[name](data_files=data_files)
    assert [p.prompt for p in problems] == [p.prompt for p in direct] and len(problems) >= 3
    assert {p.family for p in problems} == {name}
    assert [p.answer for p in load_benchmark(name, data_files=data_files, limit=2)] == [p.answer for p in direct[:2]]


def test_load_benchmark_split_and_options_reach_the_loader():
    files = {"validation": str(ASSETS / "gsm8k.jsonl")}
    assert [p.answer for p in load_benchmark("gsm8k", split="validation", data_files=files)] == ["10", "1200", "-2.5"]
    with pytest.raises(ValueError, match="not the requested split 'test'"):  # None: the loader's default split
        load_benchmark("gsm8k", data_files=files)
    xlam = load_benchmark("xlam", data_files=ASSETS / "xlam.json", min_tools=4, single_call_only=True)
    assert [p.meta["id"] for p in xlam] == [3]


def test_load_benchmark_refuses_unknown_names_and_options():
    with pytest.raises(ValueError) as raised:
        load_benchmark("gsm9k")
    assert str(raised.value) == "unknown benchmark 'gsm9k'; expected one of ['dolly', 'gsm8k', 'math', 'mbpp', 'xlam']"
    with pytest.raises(ValueError, match=r"benchmark 'gsm8k' has no option\(s\) \['min_tools'\]"):
        load_benchmark("gsm8k", data_files=ASSETS / "gsm8k.jsonl", min_tools=4)
    with pytest.raises(ValueError, match=r"accepts \['min_tools', 'single_call_only'\]"):
        load_benchmark("xlam", data_files=ASSETS / "xlam.json", min_tool=4)


def test_hub_failure_says_how_to_use_local_files(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(ValueError) as raised:
        benchmarks.load_gsm8k()
    message = str(raised.value)
    assert "openai/gsm8k" in message and "network" in message and "data_files=" in message


def test_offline_hub_really_raises_value_error():
    # The real library path, in offline mode so it fails at once instead of retrying.
    script = (
        "from ranker.tasks import benchmarks\n"
        "try:\n    benchmarks.load_mbpp()\n"
        "except ValueError as error:\n    print('VALUE_ERROR', error)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert "VALUE_ERROR" in result.stdout, result.stderr[-2000:]
    assert "google-research-datasets/mbpp" in result.stdout and "data_files=" in result.stdout
