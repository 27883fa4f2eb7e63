"""bench/arithmetic_ceiling.py, bench/make_arithmetic_tasks.py and bench/main_table.py on small data.

The benchmarks themselves are run by hand (minutes); these tests check what their numbers rest
on: the re-run of stored candidates lines up with the capture, and the task file is right.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import arithmetic_ceiling, main_table, make_arithmetic_tasks
from ranker.capture.feature_store import FeatureStore
from ranker.capture.sampling import SamplingConfig
from ranker.capture.store_builder import build_store
from ranker.tasks import Problem, check
from ranker.tasks.jsonl import load_tasks_file

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "assets" / "frozen_suite"  # embedded-model features at layer 18


@pytest.fixture(scope="module")
def tiny_store(tiny_base):
    problems = [Problem(f"What is {a} + {b}?", str(a + b), "numeric", family="arithmetic") for a, b in [(1, 2), (3, 4), (5, 6)]]
    config = SamplingConfig(num_candidates=6, max_new_tokens=12, seed=0)
    return build_store(tiny_base, problems, config, layers=[2, 4], prompts_per_call=2)


def _round_trips(tiny_base, store: FeatureStore) -> torch.Tensor:
    """(P, N) bool: the candidate's text re-tokenises to the tokens that were sampled (no stray special tokens)."""
    texts = store.column("text")
    lengths = store.column("num_tokens")
    finish = store.column("finish_reason")
    ok = [[len(tiny_base.tokenizer(t, add_special_tokens=False)["input_ids"]) + (r == "eos") == n
           for t, n, r in zip(ts, ns, rs)] for ts, ns, rs in zip(texts, lengths, finish)]
    return torch.tensor(ok)


def test_rerun_of_stored_candidates_matches_the_capture(tiny_base, tiny_store):
    forced = arithmetic_ceiling.teacher_force(tiny_base, tiny_store, (2, 4))
    assert forced["last"].shape == tiny_store.responses.shape == (3, 6, 2, tiny_base.hidden_size)
    same = _round_trips(tiny_base, tiny_store)
    assert same.sum() >= 9, "too few candidates re-tokenise exactly for this test to mean anything"
    stored_logprob = torch.tensor(tiny_store.column("mean_logprob"), dtype=torch.float64)
    assert torch.allclose(forced["mean_logprob"][same], stored_logprob[same], atol=1e-4)
    assert torch.allclose(forced["last"][same], tiny_store.responses[same], atol=1e-3)


def test_answer_pooling_reads_the_last_token_of_the_last_number(tiny_base):
    problem = Problem("What is 2 + 2?", "4", "numeric", family="arithmetic")
    texts = ["It is 4, so 4.", "no number"]
    store = _store_with_texts(tiny_base, problem, texts)
    forced = arithmetic_ceiling.teacher_force(tiny_base, store, (3,))
    prompt = arithmetic_ceiling.encode_prompts(tiny_base, [problem.prompt])["input_ids"][0].tolist()
    hidden, token_logprobs = arithmetic_ceiling._forward(
        tiny_base.model, prompt, [tiny_base.tokenizer(t, add_special_tokens=False)["input_ids"] + [1] for t in texts], (3,))
    number_at = texts[0].rindex("4")  # one character = one token in the tiny tokenizer
    assert torch.allclose(forced["answer"][0, 0, 0], hidden[0, 0, number_at])
    assert torch.allclose(forced["answer_logprob"][0, 0].float(), token_logprobs[0, number_at])
    assert torch.allclose(forced["answer"][0, 1], forced["last"][0, 1])  # no number: the last token
    assert torch.isnan(forced["answer_logprob"][0, 1]) and torch.isnan(forced["answer_rescored"][0, 1])
    assert torch.allclose(forced["mean"][0, 0, 0], hidden[0, 0, : len(texts[0]) + 1].mean(dim=0))


def _store_with_texts(tiny_base, problem: Problem, texts: list[str]) -> FeatureStore:
    """A one-problem store whose candidates are `texts`, ended by EOS (features are placeholders)."""
    import pandas as pd

    rows = [{"problem_index": 0, "family": problem.family, "candidate_index": k, "text": t, "finish_reason": "eos",
             "num_tokens": len(t) + 1, "sum_logprob": 0.0, "mean_logprob": 0.0, "correct": check(problem, t),
             "vote_key": None} for k, t in enumerate(texts)]
    hidden = tiny_base.hidden_size
    return FeatureStore(problems=[problem], candidates=pd.DataFrame(rows), instruction=torch.zeros(1, 1, hidden),
                        responses=torch.zeros(1, len(texts), 1, hidden), layers=(3,), model=tiny_base.fingerprint,
                        sampling=SamplingConfig(num_candidates=len(texts)))


def test_signal_scores_put_candidates_without_an_answer_last():
    forced = {"mean_logprob": torch.tensor([[-0.5, -0.1]], dtype=torch.float64),
              "answer_logprob": torch.tensor([[-2.0, float("nan")]], dtype=torch.float64)}
    scores = arithmetic_ceiling.signal_scores(forced, 0.5)
    assert scores[0, 0] == pytest.approx(-1.5) and scores[0, 1] < -1000


def test_committed_task_file_is_what_the_generator_writes_and_every_answer_is_right(tmp_path):
    committed = REPO / "bench" / "data" / "arithmetic_small20.jsonl"
    make_arithmetic_tasks.main(["--out", str(tmp_path / "again.jsonl")])
    assert (tmp_path / "again.jsonl").read_bytes() == committed.read_bytes()
    problems = load_tasks_file(committed)
    assert len(problems) == 300 and len({p.prompt for p in problems}) == 300
    for problem in problems:
        a, symbol, b = problem.prompt.removeprefix("What is ").split("?")[0].split()
        assert 2 <= int(a) <= 20 and 2 <= int(b) <= 20 and symbol in "+-*"
        assert check(problem, problem.answer) and not check(problem, str(int(problem.answer) + 1))
        assert int(problem.answer) >= 0
    assert json.loads(committed.read_text().splitlines()[0])["family"] == "arithmetic_small20"


def test_task_generator_refuses_more_problems_than_the_range_holds():
    with pytest.raises(ValueError, match="cannot draw 100 distinct problems from operands 2..3"):
        make_arithmetic_tasks.make_tasks(100, 2, 3, seed=0, family="x")


def test_main_table_scores_the_shipped_rankers_only_on_their_features(tiny_store):
    fixture = FeatureStore.load(FIXTURE / "test").first_per_family(2)
    rows = main_table.shipped_rows(fixture, range(1))
    assert {r["method"] for r in rows} == {"shipped_list_ranker", "shipped_point_ranker"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert main_table.shipped_rows(tiny_store, range(1)) == []  # another model's features: skipped
