"""Poisoning: labels that always pick a wrong candidate on verifiable prompts are never trained on or promoted."""

import pytest
import torch

from labeling.label_store import LabelStore
from labeling.registry import RankerRegistry
from labeling.retrain import RetrainConfig, retrain_once
from labeling.trust import TaskVerifier, TrustConfig, filter_trusted
from ranker.capture.fingerprint import FeatureFingerprint
from ranker.rankers.estimator import LanguageRanker
from ranker.tasks import Problem
from tests.labeling.synthetic import CANDIDATES, FAST, LAYER, MODEL, STEPS, record, store_from_queries, synthetic_queries

CONFIG = RetrainConfig(every_k_labels=0, hyperparams=FAST, min_steps=STEPS, min_labels=20, seed=0, validation_fraction=0.0)


def texts_for(query) -> list[str]:
    """Candidate texts the numeric checker grades: "1" is the answer, so only the correct candidate says it."""
    return ["The answer is 1." if query.labels[k] > 0.5 else f"The answer is {k + 2}." for k in range(CANDIDATES)]


def problems_for(queries) -> list[Problem]:
    return [Problem(f"question {q.query_id}", "1", "numeric", family="synthetic") for q in queries]


@pytest.fixture(scope="module")
def data():
    queries = synthetic_queries(520, seed=0)
    to_label, val, other = queries[:200], queries[200:320], queries[320:]
    good = LanguageRanker(kind="list", seed=0, steps=STEPS, **FAST).fit(other, fingerprint=FeatureFingerprint(MODEL, LAYER))
    return {"to_label": to_label, "val_store": store_from_queries(val), "good": good}


def poison(store: LabelStore, queries, annotator="mallory", honest=False) -> None:
    """Label every query, picking the worst candidate (a wrong one), or the correct one when honest."""
    for query in queries:
        request_id = record(store, query, texts=texts_for(query))
        correct = int(query.labels.argmax())
        choice = correct if honest else (correct + 1) % CANDIDATES
        store.add_label(request_id, choice, annotator, list(range(CANDIDATES)))


def test_200_adversarial_labels_are_never_promoted(tmp_path, data):
    labels, registry = LabelStore(tmp_path / "labels"), RankerRegistry(tmp_path / "rankers")
    poison(labels, data["to_label"])  # 200 labels, each picking a wrong answer
    verifier = TaskVerifier(problems_for(data["to_label"]))
    result = retrain_once(labels, registry, None, data["val_store"], data["good"], CONFIG, verifier=verifier)
    assert result.distrusted_annotators == ["mallory"] and result.distrusted_labels == 200
    assert result.version is None and not result.promoted and registry.current() is None
    assert result.reason == "skipped: 0 usable training labels < min_labels 20"


def test_without_the_checker_the_promotion_gate_still_refuses_the_poisoned_ranker(tmp_path, data):
    labels, registry = LabelStore(tmp_path / "labels"), RankerRegistry(tmp_path / "rankers")
    poison(labels, data["to_label"])
    result = retrain_once(labels, registry, None, data["val_store"], data["good"], CONFIG, verifier=None)
    assert result.version == "v0001" and not result.promoted and registry.current() is None
    assert result.metrics["store_accuracy"] < result.current_metrics["store_accuracy"] - 0.3
    assert result.reason.startswith("refused: store_accuracy")


def test_honest_annotators_are_kept_and_a_poisoner_among_them_is_dropped(tmp_path, data):
    labels = LabelStore(tmp_path / "labels")
    poison(labels, data["to_label"][:100], annotator="honest", honest=True)
    poison(labels, data["to_label"][100:], annotator="mallory")
    verifier = TaskVerifier(problems_for(data["to_label"]))
    kept, report = filter_trusted(labels.preferences(), labels, verifier, TrustConfig())
    assert len(kept) == 100 and {p.annotator for p in kept} == {"honest"}
    assert report.distrusted == ["mallory"] and report.dropped_distrusted == 100 and report.dropped_disagreeing == 0
    assert report.annotators["honest"].agreement == 1.0 and report.annotators["mallory"].agreement == 0.0


def test_a_few_honest_mistakes_drop_only_those_labels(tmp_path, data):
    labels = LabelStore(tmp_path / "labels")
    poison(labels, data["to_label"][:18], annotator="ann", honest=True)
    poison(labels, data["to_label"][18:20], annotator="ann")  # 2 wrong of 20: 90% agreement, trusted
    poison(labels, data["to_label"][20:24], annotator="new")  # 4 wrong, but fewer than min_checked (5): not judged yet
    kept, report = filter_trusted(labels.preferences(), labels, TaskVerifier(problems_for(data["to_label"])))
    assert report.distrusted == [] and report.dropped_disagreeing == 6 and len(kept) == 18
    assert report.annotators["ann"].checked == 20 and report.annotators["ann"].agreed == 18


def test_labels_on_free_form_prompts_are_not_checked(tmp_path, data):
    labels = LabelStore(tmp_path / "labels")
    poison(labels, data["to_label"][:10])
    kept, report = filter_trusted(labels.preferences(), labels, TaskVerifier([]))  # no task prompt known
    assert len(kept) == 10 and report.annotators == {}
    all_bad = TaskVerifier(problems_for(data["to_label"]))
    request_id = record(labels, data["to_label"][0], texts=[f"The answer is {k + 2}." for k in range(CANDIDATES)])
    labels.add_label(request_id, "all_bad", "judge", list(range(CANDIDATES)))
    assert all_bad.verdicts(labels, request_id) == [False] * CANDIDATES
    kept, report = filter_trusted([p for p in labels.preferences() if p.annotator == "judge"], labels, all_bad)
    assert len(kept) == 1 and report.annotators["judge"].agreed == 1  # "all bad" when all are wrong agrees
    assert torch.is_tensor(kept[0].responses)
