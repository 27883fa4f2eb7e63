import math

import pytest
import torch

from ranker.core.training_loop import TrainProgress
from ranker.rankers.networks import RankerConfig, build_ranker
from ranker.rankers.synthetic import make_synthetic_queries
from ranker.rankers.train_config import TrainConfig
from ranker.rankers.training import evaluate_ranker, score_queries, train_ranker
from ranker.rankers.training_groups import RankingQuery

H = 32


def synthetic(n=400, seed=0, **kw):
    queries = make_synthetic_queries(n, 8, H, seed=seed, signal=4.0, topic_dim=4, **kw)
    cut = int(0.75 * n)
    return queries[:cut], queries[cut:]


def tiny(kind="list", **kw):
    torch.manual_seed(0)
    return build_ranker(RankerConfig(kind=kind, hidden_size=H, projection_dim=16, num_heads=2, **kw))


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.mark.parametrize("kind", ["list", "point"])
def test_training_reduces_loss_and_beats_random(data, kind):
    train, val = data
    result = train_ranker(tiny(kind), train, TrainConfig(epochs=5), val_queries=val)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.5 * first
    m = result.val_metrics
    assert m["best_of_n"] > m["random"] + 0.15  # random ~0.5, a trained ranker ~0.75-0.9
    assert m["auroc"] > 0.7
    assert result.loss_name == ("kl" if kind == "list" else "bce")
    assert result.num_steps == len(result.losses) > 0 and result.wall_time_s > 0


@pytest.mark.parametrize("kind", ["list", "point"])
def test_instruction_feature_matters_when_correctness_depends_on_it(data, kind):
    # In the synthetic task a response is correct iff it lies along its own query's topic; the
    # wrong responses lie along another topic drawn from the same distribution. Without the
    # instruction the two clusters look alike, so the ablation should stay near random.
    train, val = data
    with_instruction = train_ranker(tiny(kind), train, TrainConfig(epochs=5), val).val_metrics
    without = train_ranker(tiny(kind, use_instruction=False), train, TrainConfig(epochs=5), val).val_metrics
    assert with_instruction["best_of_n"] > without["best_of_n"] + 0.15
    assert with_instruction["auroc"] > without["auroc"] + 0.15
    assert abs(without["auroc"] - 0.5) < 0.1


def test_same_seed_same_weights_and_caller_rng_untouched(data):
    train, _ = data
    config = TrainConfig(steps=15, seed=3)
    a, b, c = tiny(dropout=0.1), tiny(dropout=0.1), tiny(dropout=0.1)
    torch.manual_seed(123)
    train_ranker(a, train, config)
    after_training = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after_training)  # training forked the global RNG
    train_ranker(b, train, config)
    train_ranker(c, train, TrainConfig(steps=15, seed=4))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.proj.weight, c.proj.weight)


def test_threads_are_restored(data):
    before = torch.get_num_threads()
    train_ranker(tiny(), data[0], TrainConfig(steps=2, num_threads=1))
    assert torch.get_num_threads() == before


def test_steps_progress_and_cosine_schedule(data):
    train, val = data
    seen: list[TrainProgress] = []
    result = train_ranker(tiny(), train, TrainConfig(steps=30, eval_every=10, lr=1e-3), val, progress=seen.append)
    assert result.num_steps == 30 and [p.step for p in seen] == list(range(1, 31))
    assert seen[0].lr == pytest.approx(1e-3)
    assert seen[15].lr == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 15 / 30)))
    assert seen[-1].lr < 1e-5
    assert [h["step"] for h in result.val_history] == [10, 20, 30]
    assert [p.step for p in seen if p.val_metrics] == [10, 20, 30]
    assert result.val_metrics == result.val_history[-1]
    constant = []
    train_ranker(tiny(), train, TrainConfig(steps=5, schedule="constant"), progress=constant.append)
    assert {p.lr for p in constant} == {TrainConfig().lr}


def test_epochs_redraw_groups(data):
    train, _ = data
    result = train_ranker(tiny(), train, TrainConfig(epochs=2, batch_size=32))
    per_epoch = result.data_summary["groups_per_epoch"]
    assert len(per_epoch) == 2 and result.num_steps == sum(math.ceil(n / 32) for n in per_epoch)
    point = train_ranker(tiny("point"), train, TrainConfig(epochs=1, batch_size=100))
    assert point.data_summary["listwise"] is False and point.num_steps == math.ceil(len(train) * 8 / 100)


@pytest.mark.parametrize(
    "kind,config",
    [
        ("list", TrainConfig(epochs=5, optimizer="sgd", lr=0.1)),
        ("list", TrainConfig(epochs=5, loss="bt")),
        ("point", TrainConfig(epochs=5, loss="kl")),
    ],
)
def test_other_optimisers_and_losses_learn(data, kind, config):
    train, val = data
    result = train_ranker(tiny(kind), train, config, val)
    assert result.val_metrics["best_of_n"] > result.val_metrics["random"] + 0.15


def test_real_labels_train_with_mse():
    train, val = synthetic(n=400, label_type="real")
    model = tiny("point", label_type="real")
    result = train_ranker(model, train, TrainConfig(epochs=5), val)
    assert result.loss_name == "mse" and model.config.relevance == "interaction"
    assert sum(result.losses[-5:]) / 5 < sum(result.losses[:5]) / 5
    # a useful regressor of the label should rank candidates better than chance
    scores = torch.cat(score_queries(model, val))
    labels = torch.cat([q.labels for q in val])
    assert torch.corrcoef(torch.stack([scores, labels]))[0, 1] > 0.3


def test_input_statistics_are_fitted_once(data):
    train, _ = data
    model = tiny()
    train_ranker(model, train, TrainConfig(steps=2))
    mean = model.input_norm.response_mean.clone()
    assert mean.abs().sum() > 0
    shifted = [RankingQuery(q.instruction + 5, q.responses + 5, q.labels, q.query_id) for q in train]
    train_ranker(model, shifted, TrainConfig(steps=2))  # continued training keeps the statistics
    assert torch.equal(model.input_norm.response_mean, mean)


def test_score_queries_does_not_depend_on_chunking(data):
    _, val = data
    model = tiny()
    sizes = [3 + i % 6 for i in range(len(val))]
    ragged = [RankingQuery(q.instruction, q.responses[:k], q.labels[:k], q.query_id) for k, q in zip(sizes, val)]
    whole, chunked = score_queries(model, ragged, batch_size=1000), score_queries(model, ragged, batch_size=7)
    assert [s.shape[0] for s in whole] == sizes
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert 0.0 <= evaluate_ranker(model, ragged).best_of_n <= 1.0


def test_bad_inputs_are_refused(data):
    train, _ = data
    with pytest.raises(ValueError, match="hidden size 32"):
        wider = build_ranker(RankerConfig(hidden_size=48, projection_dim=16, num_heads=2))
        train_ranker(wider, train, TrainConfig(steps=1))
    all_right = [RankingQuery(q.instruction, q.responses, torch.ones(8), q.query_id) for q in train[:5]]
    with pytest.raises(ValueError, match="no training groups"):
        train_ranker(tiny(), all_right, TrainConfig(steps=1))
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_tqdm_progress_runs(data, capsys):
    result = train_ranker(tiny(), data[0], TrainConfig(steps=3), data[1], progress="tqdm")
    assert result.num_steps == 3
    assert "train ranker" in capsys.readouterr().err
