"""The shared training loop: optimiser groups, schedules, threads, seeded dropout, evaluation and progress."""

import math
from dataclasses import dataclass

import pytest
import torch

from ranker.core.training_loop import LoopConfig, TrainProgress, lr_factor, make_optimizer, num_threads, run_training


@dataclass
class Metrics:
    value: float

    def to_dict(self) -> dict:
        return {"value": self.value}


def model_and_batches(seed: int = 0, dropout: float = 0.5):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(dropout), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
    batches = [(torch.randn(16, 4, generator=gen), torch.randn(16, 1, generator=gen)) for _ in range(6)]
    return model, batches


def mse(model):
    return lambda batch: torch.nn.functional.mse_loss(model(batch[0]), batch[1])


def test_same_seed_same_weights_and_the_callers_rng_is_untouched():
    weights = []
    for _ in range(2):
        model, batches = model_and_batches()
        torch.manual_seed(99)
        expected = torch.rand(2)
        torch.manual_seed(99)
        run_training(model, batches, mse(model), LoopConfig(seed=3), "cpu")
        assert torch.equal(torch.rand(2), expected)  # the dropout draws came from a forked, seeded RNG
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    model, batches = model_and_batches()
    run_training(model, batches, mse(model), LoopConfig(seed=4), "cpu")  # another dropout seed: other weights
    assert not all(torch.equal(a, b) for a, b in zip(weights[0], model.parameters()))
    assert not model.training  # left in eval mode


def test_weight_decay_only_on_weight_matrices():
    model, _ = model_and_batches()
    optimizer = make_optimizer(list(model.parameters()), LoopConfig(weight_decay=0.3))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0
    assert [p.dim() for p in decay["params"]] == [2, 2] and all(p.dim() == 1 for p in no_decay["params"])
    assert isinstance(make_optimizer(list(model.parameters()), LoopConfig(optimizer="sgd", lr=0.1)), torch.optim.SGD)


def test_schedules():
    cosine = lr_factor("cosine", 4)
    assert [cosine(s) for s in range(5)] == pytest.approx([1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5,
                                                           0.5 - 0.5 * math.cos(math.pi / 4), 0.0])
    assert lr_factor("constant", 4)(3) == 1.0
    with pytest.raises(ValueError, match="'linear'"):
        lr_factor("linear", 4)


def test_evaluation_steps_progress_and_losses():
    model, batches = model_and_batches(dropout=0.0)
    seen: list[TrainProgress] = []
    evaluations = []

    def evaluate():
        evaluations.append(model.training)
        return Metrics(len(evaluations))

    result = run_training(model, batches, mse(model), LoopConfig(eval_every=2, lr=0.01), "cpu", evaluate, seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6] and {p.total_steps for p in seen} == {6}
    assert [v["step"] for v in result.val_history] == [2, 4, 6] and result.val_metrics == {"step": 6, "value": 3}
    assert [p.val_metrics is not None for p in seen] == [False, True, False, True, False, True]
    assert [p.loss for p in seen] == result.losses and result.num_steps == 6
    assert seen[0].lr == 0.01 and seen[-1].lr < seen[1].lr  # cosine decay, the lr each step used
    assert evaluations == [True, True, True]  # evaluate() is called from training mode (it switches itself)


def test_threads_are_set_for_the_loop_and_restored():
    before = torch.get_num_threads()
    model, batches = model_and_batches()
    seen = []
    run_training(model, batches[:1], lambda b: seen.append(torch.get_num_threads()) or mse(model)(b), LoopConfig(num_threads=1), "cpu")
    assert seen == [1] and torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with num_threads(1):
            raise RuntimeError("fails inside")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("field, value", [("optimizer", "adam"), ("schedule", "linear"), ("lr", 0.0), ("weight_decay", -1.0),
                                          ("grad_clip", 0.0), ("num_threads", 0), ("eval_every", -1), ("eval_every", 1.5)])
def test_bad_settings_are_refused_naming_the_value(field, value):
    with pytest.raises(ValueError, match=field):
        LoopConfig(**{field: value})


def test_of_reads_the_loop_fields_of_any_config():
    @dataclass
    class Other:
        lr: float = 0.5
        seed: int = 9
        batch_size: int = 3  # not a loop setting

    assert LoopConfig.of(Other()) == LoopConfig(lr=0.5, seed=9)
