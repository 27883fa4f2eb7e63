"""Building a feature store on the tiny model, and its save/load round trip."""

import pytest
import torch

from ranker.capture.feature_store import FeatureStore
from ranker.capture.sampling import SamplingConfig
from ranker.capture.store_builder import build_store
from ranker.tasks import Problem, check, get_family


@pytest.fixture(scope="module")
def store(tiny_base):
    problems = get_family("arithmetic").generate(5, seed=0) + get_family("comparison").generate(2, seed=0)
    config = SamplingConfig(num_candidates=4, max_new_tokens=8, seed=0)
    return build_store(tiny_base, problems, config, layers=[1, 3], prompts_per_call=3)


def test_store_shapes_and_labels(tiny_base, store):
    assert store.instruction.shape == (7, 2, tiny_base.hidden_size)
    assert store.responses.shape == (7, 4, 2, tiny_base.hidden_size)
    assert store.layers == (1, 3)
    assert store.labels().shape == (7, 4)
    for row in store.candidates.itertuples():
        assert row.correct == check(store.problems[row.problem_index], row.text)
    assert store.families == ["arithmetic"] * 5 + ["comparison"] * 2


def test_store_features_match_a_direct_sample(tiny_base, store):
    """The store holds exactly what sampling returned for the same call and seed."""
    from ranker.capture.sampling import sample_candidates_batch

    results = sample_candidates_batch(tiny_base, [p.prompt for p in store.problems[:3]], SamplingConfig(num_candidates=4, max_new_tokens=8, seed=0), [1, 3])
    assert torch.equal(store.responses[:3], torch.stack([r.response_features for r in results]))
    instruction, responses = store.features(3)
    assert torch.equal(responses[:3], torch.stack([r.response_features[:, 1] for r in results]))


def test_round_trip(store, tmp_path):
    store.save(tmp_path / "store")
    loaded = FeatureStore.load(tmp_path / "store")
    assert loaded.problems == store.problems
    assert loaded.layers == store.layers and loaded.model == store.model and loaded.sampling == store.sampling
    assert loaded.candidates.equals(store.candidates)
    # float16 on disk: within float16 rounding of the captured float32 features
    torch.testing.assert_close(loaded.responses, store.responses, rtol=1e-3, atol=1e-3)
    sub = loaded.subset([6, 0])
    assert sub.problems == [store.problems[6], store.problems[0]]
    assert sub.candidates["problem_index"].tolist() == [0] * 4 + [1] * 4
    assert sub.candidates["text"].tolist() == store.candidates["text"].tolist()[24:28] + store.candidates["text"].tolist()[:4]


def test_bad_inputs_are_named(tiny_base, tmp_path):
    with pytest.raises(ValueError, match="checker 'none'"):
        build_store(tiny_base, [Problem("hi", "x", "none")], SamplingConfig(num_candidates=2, max_new_tokens=2))
    with pytest.raises(ValueError, match="not a feature store"):
        FeatureStore.load(tmp_path)


def test_first_candidates_keeps_the_first_k_of_every_problem(store):
    cut = store.first_candidates(2)
    assert cut.num_candidates == 2 and len(cut.problems) == len(store.problems)
    assert torch.equal(cut.responses, store.responses[:, :2])
    assert torch.equal(cut.labels(), store.labels()[:, :2])
    assert cut.column("text") == [texts[:2] for texts in store.column("text")]
    with pytest.raises(ValueError, match="k must be"):
        store.first_candidates(store.num_candidates + 1)


def test_first_per_family_keeps_the_first_k_prompts_of_every_family_in_order():
    from pathlib import Path

    store = FeatureStore.load(Path(__file__).resolve().parents[2] / "assets" / "frozen_suite" / "train")
    cut = store.first_per_family(3)
    families = sorted(set(store.families))
    assert len(cut.problems) == 3 * len(families)
    for family in families:
        first = [p.prompt for p in store.problems if p.family == family][:3]
        assert [p.prompt for p in cut.problems if p.family == family] == first
    order = [p.prompt for p in store.problems]
    assert [order.index(p.prompt) for p in cut.problems] == sorted(order.index(p.prompt) for p in cut.problems)
    assert len(store.first_per_family(1000).problems) == len(store.problems)
    assert store.first_per_family(None) is store
    with pytest.raises(ValueError, match="k must be"):
        store.first_per_family(0)
