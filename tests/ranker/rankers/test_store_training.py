"""Training on a store, store queries and subset scoring: a ranker ranks exactly the candidates it is given."""

import numpy as np
import pandas as pd
import pytest
import torch

from ranker.capture.feature_store import FeatureStore
from ranker.capture.fingerprint import ModelFingerprint
from ranker.capture.sampling import SamplingConfig
from ranker.evaluation.store_scores import subset_scorer
from ranker.rankers.calibration import PlattCalibration, fit_platt
from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.store_training import train_on_store
from ranker.rankers.training_groups import store_queries
from ranker.tasks import Problem


@pytest.fixture(scope="module")
def store():
    gen = torch.Generator().manual_seed(0)
    P, N, H = 12, 6, 8
    labels = torch.rand(P, N, generator=gen) < 0.4
    labels[:, 0], labels[:, 1] = True, False
    keys = [["right" if labels[p, k] else ("wrong" if k % 2 else None) for k in range(N)] for p in range(P)]
    rows = [{"problem_index": p, "candidate_index": k, "text": "", "correct": bool(labels[p, k]), "vote_key": keys[p][k],
             "mean_logprob": float(-1.0 + 0.5 * labels[p, k] + 0.1 * torch.randn(1, generator=gen))}
            for p in range(P) for k in range(N)]
    return FeatureStore(
        problems=[Problem(f"q{p}", "1", "numeric") for p in range(P)], candidates=pd.DataFrame(rows),
        instruction=torch.randn(P, 1, H, generator=gen), responses=torch.randn(P, N, 1, H, generator=gen),
        layers=(1,), model=ModelFingerprint("m", "r", 2, H), sampling=SamplingConfig(num_candidates=N),
    )


def test_store_queries_of_a_subset_carry_that_subsets_signals(store):
    index = np.array([[5, 0, 3]] * len(store.problems))
    full, part = store_queries(store), store_queries(store, index=index)
    assert part[2].responses.shape == (3, 8) and torch.equal(part[2].responses, full[2].responses[[5, 0, 3]])
    assert torch.equal(part[2].labels, full[2].labels[[5, 0, 3]])
    assert torch.equal(part[2].mean_logprob, full[2].mean_logprob[[5, 0, 3]])
    assert part[2].vote_keys == [full[2].vote_keys[k] for k in (5, 0, 3)]
    with pytest.raises(ValueError, match="index must be"):
        store_queries(store, index=np.zeros((2, 3), dtype=int))


def test_subset_scores_are_the_scores_of_those_candidates_alone(store):
    ranker = LanguageRanker(kind="list", epochs=2, fusion_folds=2).fit(store_queries(store, 1))
    assert ranker.fusion_weights.get("vote_share", 0.0) != 0.0  # the subset changes the vote shares
    index = np.array([[1, 2, 4]] * len(store.problems))
    scores = subset_scorer(ranker, store)(index)
    q = store_queries(store, 1)[3]
    expected = ranker.score(q.instruction, q.responses[[1, 2, 4]], q.mean_logprob[[1, 2, 4]],
                            [q.vote_keys[k] for k in (1, 2, 4)])
    torch.testing.assert_close(scores[3], expected)
    assert not torch.allclose(scores, ranker.score_store(store)[:, [1, 2, 4]])  # not the full list's scores


def test_train_on_store_fits_a_calibrated_ranker_and_describes_the_store(store):
    ranker = train_on_store(store, 1, kind="point", epochs=2, fusion_folds=2, training_data={"source": "synthetic"})
    assert ranker.fingerprint_ == store.feature_fingerprint(1)
    # Platt on out-of-fold scores (tests/ranker/rankers/test_calibration.py rebuilds them), not on the
    # fitted ranker's own scores of its training candidates
    a, b = fit_platt(ranker.score_store(store).flatten(), store.labels().flatten())
    assert ranker.calibration_.source == "out_of_fold"
    assert ranker.calibration_ != PlattCalibration(a, b, "out_of_fold")
    assert {k: ranker.training_data_[k] for k in ("store_problems", "candidates_per_problem", "families", "layer", "source")} == {
        "store_problems": 12, "candidates_per_problem": 6, "families": [""], "layer": 1, "source": "synthetic"}
    assert ranker.training_data_["num_candidates"] == 72  # the counts training adds
