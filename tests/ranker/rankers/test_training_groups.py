import pytest
import torch

from ranker.rankers.preferences import Preference, preference_to_query, preferences_to_queries
from ranker.rankers.synthetic import make_synthetic_queries
from ranker.rankers.training_groups import (
    FeaturePool,
    QueryLike,
    RankingQuery,
    collate,
    pad_queries,
    pointwise_examples,
    queries_from_tensors,
    sample_groups,
)

H = 4


def query(labels, qid="q", fill=0.0):
    K = len(labels)
    responses = fill + torch.arange(K, dtype=torch.float32)[:, None].expand(K, H)  # row k is all k (+ fill)
    return RankingQuery(torch.full((H,), fill), responses.clone(), torch.tensor(labels, dtype=torch.float32), qid)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_pool_stacks_queries_with_offsets():
    pool = FeaturePool.from_queries([query([1, 0, 1], "a"), query([0, 1], "b", fill=100.0)])
    assert pool.offsets.tolist() == [0, 3, 5]
    assert pool.responses.shape == (5, H)
    assert pool.labels.tolist() == [1, 0, 1, 0, 1]
    assert pool.query_ids == ["a", "b"]
    assert pool.summary()["num_candidates"] == 5
    assert isinstance(query([1]), QueryLike)


def test_pool_names_the_bad_query():
    bad = RankingQuery(torch.zeros(H), torch.zeros(3, H), torch.zeros(2), "broken")
    with pytest.raises(ValueError, match="broken.*labels"):
        FeaturePool.from_queries([query([1, 0]), bad])
    with pytest.raises(ValueError, match="empty"):
        FeaturePool.from_queries([])


def test_groups_are_distinct_candidates_of_one_query():
    queries = [query([1, 0] * 5, "a"), query([0, 1] * 5, "b", fill=100.0)]
    pool = FeaturePool.from_queries(queries)
    groups = sample_groups(pool, group_size=4, groups_per_query=3, generator=gen(), require_contrast=False)
    assert len(groups) == 6 and groups.rows.shape == (6, 4) and groups.mask.all()
    for q, rows in zip(groups.query.tolist(), groups.rows):
        assert len(set(rows.tolist())) == 4  # distinct
        start, end = pool.offsets[q].item(), pool.offsets[q + 1].item()
        assert ((rows >= start) & (rows < end)).all()  # all from the group's own query


def test_groups_without_contrast_are_dropped():
    queries = [query([1, 1, 1, 1, 1, 1], "all-right"), query([0] * 6, "all-wrong"), query([1, 0, 0, 0, 0, 0], "one")]
    pool = FeaturePool.from_queries(queries)
    groups = sample_groups(pool, group_size=3, groups_per_query=50, generator=gen(), require_contrast=True)
    assert set(groups.query.tolist()) == {2}
    labels = pool.labels[groups.rows]
    assert (labels.max(1).values == 1).all() and (labels.min(1).values == 0).all()
    # query 2 has one positive among 6: a group of 3 holds it with probability 1/2
    assert 10 < len(groups) < 40


def test_small_queries_give_one_group_with_everything():
    pool = FeaturePool.from_queries([query([1, 0, 0], "small"), query([1, 0] * 4, "big")])
    groups = sample_groups(pool, group_size=4, groups_per_query=5, generator=gen(), require_contrast=False)
    small = groups.query == 0
    assert small.sum() == 1
    assert sorted(groups.rows[small][groups.mask[small]].tolist()) == [0, 1, 2]
    assert (groups.query == 1).sum() == 5


def test_group_sampling_is_seeded():
    pool = FeaturePool.from_queries(make_synthetic_queries(20, 10, H, seed=0, topic_dim=2))
    a = sample_groups(pool, 4, 3, gen(1))
    b = sample_groups(pool, 4, 3, gen(1))
    c = sample_groups(pool, 4, 3, gen(2))
    assert torch.equal(a.rows, b.rows) and torch.equal(a.query, b.query)
    assert not (a.rows.shape == c.rows.shape and torch.equal(a.rows, c.rows))


def test_bad_group_arguments():
    pool = FeaturePool.from_queries([query([1, 0])])
    with pytest.raises(ValueError, match="group_size"):
        sample_groups(pool, 1, 2, gen())
    with pytest.raises(ValueError, match="groups_per_query"):
        sample_groups(pool, 2, 0, gen())


def test_pointwise_examples_cover_every_candidate_once():
    pool = FeaturePool.from_queries([query([1, 0, 1], "a"), query([0, 1], "b")])
    examples = pointwise_examples(pool)
    assert examples.rows.squeeze(1).tolist() == [0, 1, 2, 3, 4]
    assert examples.query.tolist() == [0, 0, 0, 1, 1]


def test_collate_gathers_and_pads():
    pool = FeaturePool.from_queries([query([1, 0, 1], "a"), query([0, 1], "b", fill=100.0)])
    batch = pad_queries([query([1, 0, 1], "a"), query([0, 1], "b", fill=100.0)])
    assert batch.responses.shape == (2, 3, H)
    assert batch.mask.tolist() == [[True, True, True], [True, True, False]]
    assert batch.labels.tolist() == [[1, 0, 1], [0, 1, 0]]
    assert batch.instruction[1, 0].item() == 100.0
    assert batch.responses[1, 1, 0].item() == 101.0  # query b's candidate 1
    examples = pointwise_examples(pool)
    single = collate(pool, examples.select(torch.tensor([4])))
    assert single.responses.shape == (1, 1, H) and single.labels.tolist() == [[1.0]]


# --- preferences: the documented rule ---


def shown(K=3):
    return torch.zeros(H), torch.randn(K, H)


def test_pick_gives_pairs_against_every_other_candidate_and_a_one_hot_group():
    instruction, responses = shown(4)
    pref = Preference(instruction, responses, choice=2, query_id="p")
    q = preference_to_query(pref)
    assert q.labels.tolist() == [0, 0, 1, 0]
    assert torch.equal(q.responses, responses) and q.query_id == "p"


def test_tie_gives_nothing():
    pref = Preference(*shown(), choice="tie")
    assert preference_to_query(pref) is None


def test_all_bad_gives_negatives_dropped_for_kl_but_kept_pointwise():
    pref = Preference(*shown(), choice="all_bad")
    q = preference_to_query(pref)
    assert q.labels.tolist() == [0, 0, 0]
    pool = FeaturePool.from_queries([q])
    assert len(sample_groups(pool, 2, 5, gen(), require_contrast=True)) == 0
    assert len(pointwise_examples(pool)) == 3


def test_preferences_to_queries_drops_ties():
    prefs = [Preference(*shown(), choice=0), Preference(*shown(), choice="tie"), Preference(*shown(), choice="all_bad")]
    assert [q.labels.tolist() for q in preferences_to_queries(prefs)] == [[1, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("choice", [3, -1, "both", "TIE"])
def test_bad_choice_is_refused(choice):
    with pytest.raises(ValueError, match="choice"):
        Preference(*shown(3), choice=choice)


def test_synthetic_queries():
    queries = make_synthetic_queries(10, 6, 24, seed=3, topic_dim=4)
    assert len(queries) == 10
    assert queries[0].instruction.shape == (24,) and queries[0].responses.shape == (6, 24)
    assert set(torch.cat([q.labels for q in queries]).tolist()) <= {0.0, 1.0}
    again = make_synthetic_queries(10, 6, 24, seed=3, topic_dim=4)
    assert torch.equal(queries[5].responses, again[5].responses)
    real = make_synthetic_queries(4, 6, 24, label_type="real", topic_dim=4)
    assert not set(torch.cat([q.labels for q in real]).tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="topic_dim"):
        make_synthetic_queries(2, 2, 8, topic_dim=8)


def test_queries_from_tensors():
    instructions, responses, labels = torch.randn(3, H), torch.randn(3, 5, H), torch.randint(0, 2, (3, 5))
    queries = queries_from_tensors(instructions, responses, labels, ["a", "b", "c"])
    assert [q.query_id for q in queries] == ["a", "b", "c"]
    assert torch.equal(queries[1].responses, responses[1]) and queries[2].labels.dtype == torch.float32
    assert queries_from_tensors(instructions, responses, labels)[0].query_id == "0"
    with pytest.raises(ValueError, match="labels"):
        queries_from_tensors(instructions, responses, labels[:, :4])
