"""Selection rules and accuracy on a hand-made store."""

import pandas as pd
import pytest
import torch

from ranker.capture.feature_store import FeatureStore
from ranker.capture.fingerprint import ModelFingerprint
from ranker.capture.sampling import SamplingConfig
from ranker.evaluation.selection import evaluate_selection, select_majority, subsets
from ranker.tasks import Problem


def make_store(labels, vote_keys, mean_logprobs):
    num_problems, n = len(labels), len(labels[0])
    rows = [
        {"problem_index": p, "candidate_index": k, "text": "", "correct": bool(labels[p][k]),
         "vote_key": vote_keys[p][k], "mean_logprob": mean_logprobs[p][k]}
        for p in range(num_problems) for k in range(n)
    ]
    return FeatureStore(
        problems=[Problem(f"q{p}", "1", "numeric") for p in range(num_problems)],
        candidates=pd.DataFrame(rows),
        instruction=torch.zeros(num_problems, 1, 4),
        responses=torch.zeros(num_problems, n, 1, 4),
        layers=(1,),
        model=ModelFingerprint("m", "r", 2, 4),
        sampling=SamplingConfig(num_candidates=n),
    )


def test_majority_vote_rules():
    assert select_majority(["7", "8", "8", None]) == 1
    assert select_majority(["7", "8", "7", "8"]) == 0  # tie: the key seen first
    assert select_majority([None, None]) == 0


def test_accuracy_of_every_method_at_full_n():
    store = make_store(
        labels=[[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]],
        vote_keys=[["5", "6", "6", None], ["1", "2", "2", "2"], [None, None, None, None]],
        mean_logprobs=[[-1, -2, -0.5, -3], [-0.1, -2, -3, -4], [0, 0, 0, 0]],
    )
    scores = {"ranker": torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])}
    result = evaluate_selection(store, scores)
    assert result["first"] == pytest.approx(1 / 3)  # only problem 1's first is right
    assert result["majority"] == pytest.approx(1 / 3)  # "6" wins on problem 0, "2" (wrong) on problem 1
    assert result["max_logprob"] == pytest.approx(2 / 3)  # candidate 2 of problem 0, 0 of problem 1
    assert result["ranker"] == pytest.approx(1 / 3)
    assert result["oracle"] == pytest.approx(2 / 3)
    assert result["per_sample"] == pytest.approx(3 / 12)


def test_subsets_are_distinct_and_n_one_gives_per_sample_accuracy():
    index = subsets(num_problems=3, n_total=8, n=5, draws=4, seed=0)
    assert index.shape == (4, 3, 5)
    assert all(len(set(row)) == 5 for draw in index for row in draw)
    store = make_store([[1, 0, 0, 0]] * 40, [["1", "2", "3", "4"]] * 40, [[0, 0, 0, 0]] * 40)
    result = evaluate_selection(store, n=1, draws=50)
    assert result["oracle"] == pytest.approx(result["per_sample"]) and result["first"] == pytest.approx(0.25, abs=0.05)
    with pytest.raises(ValueError, match="n must be in"):
        evaluate_selection(store, n=5)


def test_candidates_without_an_answer_do_not_vote_together_after_a_round_trip(tmp_path):
    """Parquet gives back missing vote keys as one shared NaN object; they must read as None."""
    store = make_store(labels=[[0, 0, 1, 0]], vote_keys=[[None, None, "7", None]], mean_logprobs=[[0, 0, 0, 0]])
    loaded = FeatureStore.load(store.save(tmp_path / "store"))
    assert loaded.column("vote_key") == [[None, None, "7", None]]
    assert evaluate_selection(loaded)["majority"] == 1.0  # "7" is the only answer; three non-answers are not a majority


def test_a_scorer_function_scores_each_drawn_subset_on_its_own():
    labels = [[k % 2 for k in range(6)] for _ in range(5)]
    store = make_store(labels, [[str(k) for k in range(6)]] * 5, [[0.0] * 6] * 5)
    fixed = torch.arange(30, dtype=torch.float32).view(5, 6) % 7  # set-independent scores
    seen = []

    def scorer(index):
        seen.append(index.copy())
        return fixed[torch.arange(5)[:, None], torch.as_tensor(index)]

    result = evaluate_selection(store, {"function": scorer, "tensor": fixed}, n=3, draws=4, seed=1)
    assert result["function"] == result["tensor"]
    assert len(seen) == 4 and all(index.shape == (5, 3) for index in seen)
    assert [index.tolist() for index in seen] == subsets(5, 6, 3, 4, seed=1).tolist()
    with pytest.raises(ValueError, match="returned shape"):
        evaluate_selection(store, {"bad": lambda index: torch.zeros(5, 6)}, n=3)
