"""Train/test splits never share a prompt."""

from collections import Counter

import pytest

from ranker.tasks import FAMILIES, Problem, split, split_problems, stratified_sample


@pytest.mark.parametrize("name", ["arithmetic", "comparison", "table_lookup", "function_call"])
def test_family_split_is_disjoint_and_sized(name):
    data = split(name, n_train=60, n_test=40, seed=5)
    assert len(data.train) == 60 and len(data.test) == 40
    assert not {p.prompt for p in data.train} & {p.prompt for p in data.test}


def test_test_set_is_stable_when_train_grows():
    small, large = split("arithmetic", 20, 30, seed=1), split("arithmetic", 80, 30, seed=1)
    assert [p.prompt for p in small.test] == [p.prompt for p in large.test]
    assert [p.prompt for p in small.train] == [p.prompt for p in large.train[:20]]
    assert split("arithmetic", 20, 30, seed=2).test != small.test


def test_split_accepts_family_objects_and_difficulty():
    data = split(FAMILIES["arithmetic"], 5, 5, seed=0, difficulty=1)
    assert all(p.meta["difficulty"] == 1 for p in data.train + data.test)
    with pytest.raises(ValueError, match="n_train"):
        split("arithmetic", -1, 5)


def test_split_problems_drops_duplicate_prompts():
    pool = [Problem(f"q{i % 10}", str(i % 10), "numeric") for i in range(30)]  # 10 distinct prompts, 3 copies each
    data = split_problems(pool, n_train=6, n_test=4, seed=0)
    train, test = [p.prompt for p in data.train], [p.prompt for p in data.test]
    assert len(set(train)) == 6 and len(set(test)) == 4
    assert not set(train) & set(test)
    with pytest.raises(ValueError, match="only 10"):
        split_problems(pool, n_train=8, n_test=4)


def test_stratified_sample_is_balanced():
    pool = [Problem(f"q{i}", "1", "numeric", meta={"subject": "abc"[i % 3] if i < 60 else "a"}) for i in range(90)]
    chosen = stratified_sample(pool, 30, key=lambda p: p.meta["subject"], seed=0)
    assert Counter(p.meta["subject"] for p in chosen) == {"a": 10, "b": 10, "c": 10}
    assert len({p.prompt for p in chosen}) == 30
    with pytest.raises(ValueError, match="got 91"):
        stratified_sample(pool, 91, key=lambda p: p.meta["subject"])
