"""Score fusion with the mean log-prob: weight choice, cross-fitting in fit, save/load, errors."""

import pytest
import torch

from ranker.data import RankingQuery, make_synthetic_queries
from ranker.estimator import LanguageRanker
from ranker.fusion import choose_weight, fold_indices, fuse


def _labels(num_queries=60, k=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.rand(num_queries, k, generator=gen) < 0.3).float()
    labels[:, 0] = 1.0  # every query has a positive
    labels[:, 1] = 0.0  # ... and a negative
    return list(labels), gen


def test_choose_weight_uses_an_informative_logprob():
    labels, gen = _labels()
    noise_scores = [torch.randn(8, generator=gen) for _ in labels]
    logprobs = [-2.0 + 0.5 * y + 0.05 * torch.randn(8, generator=gen) for y in labels]  # lp separates the classes
    weight, report = choose_weight(noise_scores, logprobs, labels)
    assert weight > 0 and report["c"] > 0
    assert report["grid"][str(report["c"])] > report["grid"]["0.0"] + 0.3


def test_choose_weight_ignores_a_useless_logprob():
    labels, gen = _labels()
    good_scores = [3.0 * y + 0.1 * torch.randn(8, generator=gen) for y in labels]  # scores already perfect
    logprobs = [torch.randn(8, generator=gen) for _ in labels]
    weight, report = choose_weight(good_scores, logprobs, labels)
    assert weight == 0.0 and report["c"] == 0.0 and report["grid"]["0.0"] == 1.0


def test_fuse_adds_the_weighted_logprob_and_needs_it():
    scores, lp = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -3.0])
    torch.testing.assert_close(fuse(scores, lp, 0.5), torch.tensor([0.5, 0.5]))
    assert fuse(scores, None, 0.0) is scores
    with pytest.raises(ValueError, match="mean_logprob"):
        fuse(scores, None, 0.5)
    with pytest.raises(ValueError, match="shape"):
        fuse(scores, torch.zeros(3), 0.5)


def test_fold_indices_partition_and_are_seeded():
    folds = fold_indices(10, 4, seed=3)
    assert sorted(i for f in folds for i in f) == list(range(10))
    assert fold_indices(10, 4, seed=3) == folds and fold_indices(10, 4, seed=4) != folds
    with pytest.raises(ValueError, match="folds"):
        fold_indices(10, 1, seed=0)


def _with_logprobs(queries, informative: bool, seed=0):
    """Attach mean log-probs; informative ones are higher for correct candidates."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for q in queries:
        lp = -2.0 + 0.3 * torch.randn(q.labels.shape, generator=gen)
        if informative:
            lp = lp + 1.0 * q.labels
        out.append(RankingQuery(q.instruction, q.responses, q.labels, q.query_id, lp))
    return out


@pytest.fixture(scope="module")
def weak_features():
    # Hidden states carry little signal, so an informative log-prob must get weight.
    return make_synthetic_queries(80, 8, 32, seed=1, signal=0.2)


def test_fit_learns_a_fusion_weight_and_it_survives_save_load(weak_features, tmp_path):
    queries = _with_logprobs(weak_features, informative=True)
    ranker = LanguageRanker(kind="list", epochs=3).fit(queries)
    assert ranker.logprob_weight > 0
    plain = LanguageRanker(kind="list", epochs=3, logprob_fusion=False).fit(queries)
    assert plain.logprob_weight == 0.0
    assert ranker.evaluate(queries).best_of_n > plain.evaluate(queries).best_of_n
    q = queries[0]
    with pytest.raises(ValueError, match="mean_logprob"):
        ranker.score(q.instruction, q.responses)
    ranker.save(tmp_path / "r")
    loaded = LanguageRanker.load(tmp_path / "r")
    assert loaded.logprob_weight == pytest.approx(ranker.logprob_weight)
    assert torch.equal(loaded.score(q.instruction, q.responses, q.mean_logprob),
                       ranker.score(q.instruction, q.responses, q.mean_logprob))


def test_fit_without_logprobs_is_the_hidden_state_ranker(weak_features):
    ranker = LanguageRanker(kind="point", epochs=2).fit(weak_features)
    assert ranker.logprob_weight == 0.0
    q = weak_features[0]
    assert ranker.score(q.instruction, q.responses).shape == (8,)
