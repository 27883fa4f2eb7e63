"""The paper's reward-model baselines, trained on the same labelled data as the rankers.

- RM (base), `BaseRewardModel`: the base LLM with LoRA adapters and a scalar head.
- RM (small), `SmallRewardModel`: a separate small encoder (all-MiniLM-L6-v2 by default), fully fine-tuned.

Modules: `reward_config` (the configs), `text_data` (text training data), `reward_networks` (the
networks), `reward_training` (batches and loss on the shared loop of `ranker.core.training_loop`, and
scoring), `reward_card` (the card, in the shared format of `ranker.core.cards`), `reward_estimator`
(fit / score / save / load).
"""

from ranker.reward.reward_card import RewardCard, read_reward_card
from ranker.reward.reward_config import DEFAULT_ENCODER, RewardModelConfig, RewardTrainConfig
from ranker.reward.reward_estimator import BaseRewardModel, SmallRewardModel
from ranker.reward.text_data import RewardData, TextGroup, TextPreference

__all__ = [
    "DEFAULT_ENCODER",
    "BaseRewardModel",
    "RewardCard",
    "RewardData",
    "RewardModelConfig",
    "RewardTrainConfig",
    "SmallRewardModel",
    "TextGroup",
    "TextPreference",
    "read_reward_card",
]
