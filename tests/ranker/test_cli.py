"""The CLI end to end: build on the tiny model, train and eval on a store with a learnable signal."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from ranker.capture.feature_store import FeatureStore
from ranker.capture.fingerprint import ModelFingerprint
from ranker.capture.sampling import SamplingConfig
from ranker.cli import main
from ranker.rankers.synthetic import make_synthetic_queries
from ranker.tasks import Problem
from tests.tiny_model import tiny_base_model


def synthetic_store(num_problems: int, seed: int, n: int = 8, skip: int = 0) -> FeatureStore:
    """A store whose labels can be read from the features (instruction-relative signal).

    The generator draws its feature space from `seed`; stores meant to be train and test of
    one "model" share the seed and differ in `skip` (the queries they take).
    """
    queries = make_synthetic_queries(skip + num_problems, n, 32, seed=seed, signal=4.0, generic_signal=0.5)[skip:]
    num_problems = len(queries)
    labels = torch.stack([q.labels for q in queries])
    rows = [{"problem_index": p, "family": "synthetic", "candidate_index": k, "text": f"{p}-{k}",
             "finish_reason": "eos", "num_tokens": 3, "sum_logprob": -1.0, "mean_logprob": float(-(k % 3)),
             "correct": bool(labels[p, k]), "vote_key": str(k % 2)} for p in range(num_problems) for k in range(n)]
    return FeatureStore(
        problems=[Problem(f"synthetic {seed}-{p}", "1", "numeric", family="synthetic") for p in range(num_problems)],
        candidates=pd.DataFrame(rows),
        instruction=torch.stack([q.instruction for q in queries])[:, None],
        responses=torch.stack([q.responses for q in queries])[:, :, None],
        layers=(2,),
        model=ModelFingerprint("synthetic", "v1", 4, 32),
        sampling=SamplingConfig(num_candidates=n),
    )


def save_tiny_model(folder, seed: int = 0):
    """The tiny random Llama saved as a local model folder, loadable with --model."""
    base = tiny_base_model(seed=seed)
    base.model.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return folder


def write_digit_tasks(path, count: int):
    """A JSONL task file: "Say d." with numeric answer d."""
    path.write_text("\n".join(json.dumps({"prompt": f"Say {d}.", "answer": str(d), "checker": "numeric"}) for d in range(count)))
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    synthetic_store(300, seed=0).save(root / "train")
    synthetic_store(150, seed=0, skip=300).save(root / "test")
    return root


def test_train_then_eval_beats_the_baselines(stores, tmp_path, capsys):
    for kind in ("list", "point"):
        assert main(["train", "--store", str(stores / "train"), "--val-store", str(stores / "test"),
                     "--kind", kind, "--out", str(tmp_path / f"{kind}_ranker")]) == 0
    out = capsys.readouterr().out
    assert "trained list ranker" in out and "parameters, layer 2" in out
    assert main(["eval", "--store", str(stores / "test"), "--ranker", str(tmp_path / "list_ranker"),
                 "--ranker", str(tmp_path / "point_ranker"), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["n"] == 8 and result["prompts"] == 150
    assert set(result) >= {"list_ranker", "point_ranker", "first", "random", "majority", "max_logprob", "oracle"}
    for ranker in ("list_ranker", "point_ranker"):
        assert result[ranker] >= result["first"] + 0.2, result
        assert result[ranker] <= result["oracle"]
    assert any(line.startswith("best-of-8") for line in lines)
    # smaller N through random subsets
    assert main(["eval", "--store", str(stores / "test"), "--ranker", str(tmp_path / "list_ranker"), "--n", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 2


def test_eval_refuses_a_ranker_for_another_model(stores, tmp_path, capsys):
    main(["train", "--store", str(stores / "train"), "--out", str(tmp_path / "ranker")])
    other = synthetic_store(20, seed=3)
    other.model = ModelFingerprint("another-model", "v9", 4, 32)
    other.save(tmp_path / "other")
    capsys.readouterr()
    assert main(["eval", "--store", str(tmp_path / "other"), "--ranker", str(tmp_path / "ranker")]) == 2
    assert "does not match" in capsys.readouterr().err


def test_build_on_a_local_model_folder(tmp_path, capsys):
    folder = save_tiny_model(tmp_path / "tiny-model")
    tasks = write_digit_tasks(tmp_path / "mine.jsonl", 10)
    assert main(["build", "--tasks-file", str(tasks), "--n-train", "6", "--n-test", "4", "--n", "4",
                 "--max-new-tokens", "6", "--layers", "1,0.5", "--model", str(folder), "--out", str(tmp_path / "built")]) == 0
    train, test = FeatureStore.load(tmp_path / "built" / "train"), FeatureStore.load(tmp_path / "built" / "test")
    assert len(train.problems) == 6 and len(test.problems) == 4
    assert train.layers == (1, 2) and train.responses.shape == (6, 4, 2, 32)
    assert not set(p.prompt for p in train.problems) & set(p.prompt for p in test.problems)
    assert "per-sample accuracy" in capsys.readouterr().out


def test_bad_input_is_reported_not_raised(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "answer": "1", "checker": "nope"}\n')
    assert main(["eval", "--tasks-file", str(bad)]) == 2
    assert "line 1" in capsys.readouterr().err
    assert main(["eval", "--store", str(tmp_path)]) == 2
    assert "not a feature store" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build", "--layers", "abc", "--out", str(tmp_path)])


def test_eval_with_beam_search_on_a_local_model(tmp_path, capsys):
    folder = save_tiny_model(tmp_path / "tiny-model")
    tasks = write_digit_tasks(tmp_path / "mine.jsonl", 6)
    assert main(["build", "--tasks-file", str(tasks), "--n-train", "0", "--n-test", "6", "--n", "2",
                 "--max-new-tokens", "4", "--model", str(folder), "--out", str(tmp_path / "built")]) == 0
    capsys.readouterr()
    assert main(["eval", "--store", str(tmp_path / "built" / "test"), "--beam", "2", "--model", str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert 0.0 <= result["beam_search"] <= 1.0 and result["prompts"] == 6
    # the shipped rankers belong to the embedded model: skipped, with the reason, not an error
    assert "skipping the shipped list_ranker" in captured.err and "list_ranker" not in result
    # beam search with another model than the store's is refused
    other = save_tiny_model(tmp_path / "other-model", seed=1)
    assert main(["eval", "--store", str(tmp_path / "built" / "test"), "--beam", "2", "--model", str(other)]) == 2
    assert "beam search on this store (--beam) needs the base model" in capsys.readouterr().err


def test_eval_scores_a_reward_model_on_the_same_candidates(tmp_path, capsys):
    from ranker.capture.base_model import load_base_model
    from ranker.reward.reward_estimator import BaseRewardModel

    folder = save_tiny_model(tmp_path / "tiny-model")
    tasks = write_digit_tasks(tmp_path / "mine.jsonl", 8)
    assert main(["build", "--tasks-file", str(tasks), "--n-train", "4", "--n-test", "4", "--n", "3",
                 "--max-new-tokens", "4", "--model", str(folder), "--out", str(tmp_path / "built")]) == 0
    base = load_base_model(str(folder))
    train = FeatureStore.load(tmp_path / "built" / "train")
    train.candidates["correct"] = [k == 0 for k in train.candidates["candidate_index"]]  # both classes present
    BaseRewardModel(base, lora_rank=2, epochs=1, batch_size=4).fit(train).save(tmp_path / "rm")
    capsys.readouterr()
    assert main(["eval", "--store", str(tmp_path / "built" / "test"), "--rm", str(tmp_path / "rm"),
                 "--model", str(folder), "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert 0.0 <= result["rm_base:rm"] <= result["oracle"] + 1e-9
    assert any(line.strip().startswith("rm_base:rm") for line in out.splitlines())  # a row in the table
    other = save_tiny_model(tmp_path / "other-model", seed=1)
    assert main(["eval", "--store", str(tmp_path / "built" / "test"), "--rm", str(tmp_path / "rm"), "--model", str(other)]) == 2


def test_train_rm_verb_for_both_kinds(tmp_path, capsys):
    folder = save_tiny_model(tmp_path / "tiny-model")
    tasks = write_digit_tasks(tmp_path / "mine.jsonl", 8)
    assert main(["build", "--tasks-file", str(tasks), "--n-train", "4", "--n-test", "4", "--n", "3",
                 "--max-new-tokens", "4", "--model", str(folder), "--out", str(tmp_path / "built")]) == 0
    store = FeatureStore.load(tmp_path / "built" / "train")
    store.candidates["correct"] = [k == 0 for k in store.candidates["candidate_index"]]  # both classes present
    store.save(tmp_path / "labelled")
    capsys.readouterr()
    assert main(["train-rm", "--store", str(tmp_path / "labelled"), "--val-store", str(tmp_path / "built" / "test"),
                 "--kind", "base", "--model", str(folder), "--batch-size", "4", "--out", str(tmp_path / "rm-base")]) == 0
    assert main(["train-rm", "--store", str(tmp_path / "labelled"), "--kind", "small", "--batch-size", "4",
                 "--max-length", "32", "--out", str(tmp_path / "rm-small")]) == 0
    out = capsys.readouterr().out
    assert "trained RM (base)" in out and "held-out best-of-3" in out and "trained RM (small)" in out
    assert (tmp_path / "rm-base" / "card.json").is_file() and (tmp_path / "rm-small" / "card.json").is_file()
    other = save_tiny_model(tmp_path / "other-model", seed=1)
    assert main(["train-rm", "--store", str(tmp_path / "labelled"), "--kind", "base", "--model", str(other),
                 "--out", str(tmp_path / "rm-other")]) == 2


DATASETS = Path(__file__).resolve().parents[1] / "assets" / "datasets"


def test_build_from_a_local_benchmark_file(tmp_path, capsys):
    folder = save_tiny_model(tmp_path / "tiny-model")
    assert main(["build", "--benchmark", "gsm8k:validation", "--benchmark-file", str(DATASETS / "gsm8k.jsonl"),
                 "--n-train", "2", "--n-test", "1", "--n", "2", "--max-new-tokens", "4", "--layers", "2",
                 "--model", str(folder), "--out", str(tmp_path / "built")]) == 0
    train, test = FeatureStore.load(tmp_path / "built" / "train"), FeatureStore.load(tmp_path / "built" / "test")
    assert len(train.problems) == 2 and len(test.problems) == 1
    assert {p.family for p in train.problems + test.problems} == {"gsm8k"} and train.problems[0].checker == "numeric"
    assert main(["build", "--benchmark", "dolly", "--benchmark-file", str(DATASETS / "dolly.jsonl"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "no automatic checker" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build", "--benchmark", "gsm9k", "--out", str(tmp_path / "y")])
    assert "expected one of ['dolly', 'gsm8k', 'math', 'mbpp', 'xlam']" in capsys.readouterr().err


def test_eval_tasks_file_reports_the_confidence_baselines(tmp_path, capsys):
    """A user's own task file, sampled now: the JSON has every training-free selector, the new ones included."""
    folder = save_tiny_model(tmp_path / "tiny-model")
    tasks = write_digit_tasks(tmp_path / "mine.jsonl", 5)
    assert main(["eval", "--tasks-file", str(tasks), "--n", "4", "--max-new-tokens", "4", "--model", str(folder), "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    expected = {"first", "random", "majority", "max_logprob", "max_self_certainty", "self_certainty_borda",
                "max_group_confidence", "deepconf_vote", "deepconf_low", "deepconf_high", "oracle"}
    assert expected <= set(result) and result["prompts"] == 5 and result["n"] == 4
    assert all(0.0 <= result[m] <= result["oracle"] for m in expected)
    table = out.strip().splitlines()[:-1]
    assert {line.split()[0] for line in table[2:]} >= expected  # the printed table lists them too
