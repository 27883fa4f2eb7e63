"""The ranker networks: score K candidate responses of one instruction from hidden-state features.

Both rankers read the base model's own hidden states (see `ranker/features.py`):
`instruction` is the state at the last prompt token, `responses[k]` the state at the last
token of candidate k. Both first normalise the raw features (`InputNorm`), then squeeze them to
`projection_dim` (64), which is what keeps them under 0.5M parameters even at H = 4096:
312,386 (ListRanker) and 295,618 (PointRanker) with the defaults; the paper reports 0.30M / 0.28M.

- `ListRanker`:  [i~, r~_1..r~_K] = Trans(Proj([i, r_1..r_K])),  s_k = Rele(i~, r~_k).
  The K+1 projected vectors pass through `num_blocks` pre-norm transformer blocks, so every
  candidate sees the instruction and the other candidates. There is no position embedding:
  the order of candidates carries no meaning, and the ranker is permutation-equivariant.
- `PointRanker`: i~ = MLP(Proj(i)),  r~_k = MLP(Proj(r_k)) with one shared MLP, s_k = Rele(i~, r~_k).
  Each candidate is scored alone.

Relevance (`Rele`):
- "cosine" (binary labels): s_k = scale * cos(i~, r~_k) + bias, with a learned `scale`
  (stored as its log, initialised to 10, capped at 100) and a learned `bias`. Plain cosine lives in
  [-1, 1]: softmax over such scores is nearly uniform and sigmoid stays in [0.27, 0.73], so neither
  the listwise KL nor the pointwise BCE could be driven down. The scale is the inverse temperature
  (as in CLIP). The bias matters only for sigmoid/BCE; softmax ignores a shared shift.
- "linear": s_k = W · concat(i~, r~_k) + b, the paper's form for real labels. In a PointRanker,
  r~_k does not depend on i, so the instruction can only shift all K scores by the same amount:
  it cannot make a response good for one instruction and bad for another.
- "interaction" (default for real labels): s_k = W · concat(i~, r~_k, i~ * r~_k) + b. The elementwise
  product lets the score depend on how the response relates to the instruction. On synthetic data
  whose real-valued labels depend on that relation, MSE-trained rankers learn it with this form and
  not with "linear" (see the README's "Design checks on synthetic data").

Ablation `use_instruction=False`: the instruction feature is never read; a learned constant
vector of width `projection_dim` takes the place of Proj(i). The rankers keep their shape, so the
comparison isolates what the instruction contributes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ranker.core.cards import CardEntry

KINDS = ("list", "point")
RELEVANCES = ("cosine", "linear", "interaction")
LABEL_TYPES = ("binary", "real")
INPUT_NORMS = ("standardize", "layernorm", "none")


@dataclass
class RankerConfig(CardEntry):
    """Architecture of a ranker. Stored in every checkpoint so the model can rebuild itself."""

    kind: str = "list"  # "list": ListRanker (candidates attend to each other); "point": PointRanker (each alone)
    hidden_size: int = 576  # width H of the base model's hidden states (576 SmolLM2-135M, 4096 Llama-3.1-8B)
    projection_dim: int = 64  # width d after the first projection; the paper's 64 keeps the ranker < 0.5M params
    num_blocks: int = 1  # transformer blocks (list) or residual MLP blocks (point); the paper finds 2-4 add <= 0.6 pt
    num_heads: int = 4  # attention heads per transformer block (list only); must divide projection_dim
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * projection_dim
    dropout: float = 0.0  # dropout on attention and MLP outputs; 0 since training is short and the model tiny
    use_instruction: bool = True  # False = ablation: a learned constant vector replaces the instruction feature
    relevance: str = "auto"  # "cosine" | "linear" | "interaction" | "auto" (= cosine for binary, interaction for real)
    label_type: str = "binary"  # "binary" (correct/incorrect, 0/1) or "real" (graded, e.g. a reward in [0, 1])
    input_norm: str = "standardize"  # "standardize" | "layernorm" | "none"; see InputNorm

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {LABEL_TYPES}, got {self.label_type!r}")
        if self.relevance == "auto":
            self.relevance = "cosine" if self.label_type == "binary" else "interaction"
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        if self.relevance not in RELEVANCES:
            raise ValueError(f"relevance must be 'auto' or one of {RELEVANCES}, got {self.relevance!r}")
        for name in ("hidden_size", "projection_dim", "num_blocks", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.projection_dim % self.num_heads != 0:
            raise ValueError(
                f"projection_dim ({self.projection_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")



class MLP(nn.Module):
    """d -> mlp_ratio*d -> d with GELU."""

    def __init__(self, config: RankerConfig):
        super().__init__()
        d = config.projection_dim
        hidden = max(1, round(config.mlp_ratio * d))
        self.fc = nn.Linear(d, hidden)
        self.proj = nn.Linear(hidden, d)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the K+1 vectors of a group, with a padding mask."""

    def __init__(self, config: RankerConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.projection_dim, 3 * config.projection_dim)
        self.proj = nn.Linear(config.projection_dim, config.projection_dim)
        self.dropout_p = config.dropout
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, attend: Tensor) -> Tensor:
        """x: (B, T, d); attend: (B, T) bool, True for real tokens (padding is never attended to)."""
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2) for t in (q, k, v))
        # (B, 1, 1, T): every query position may look at every real key. Token 0 (the instruction)
        # is always real, so no row is fully masked and softmax never sees all -inf.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend[:, None, None, :], dropout_p=self.dropout_p if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.dropout(self.proj(y))


class Block(nn.Module):
    """Pre-norm transformer encoder block (as in GPT-2, without the causal mask)."""

    def __init__(self, config: RankerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.projection_dim)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.projection_dim)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, attend: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x), attend)
        return x + self.mlp(self.ln_2(x))


class MLPBlock(nn.Module):
    """Pre-norm residual MLP: the PointRanker's `MLP`, a transformer block without attention."""

    def __init__(self, config: RankerConfig):
        super().__init__()
        self.ln = nn.LayerNorm(config.projection_dim)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.ln(x))


class InputNorm(nn.Module):
    """Normalise raw H-wide features before the projection.

    Raw hidden states have a large shared mean and a few "massive activation" dims whose values
    dwarf the rest; fed as they are, they dominate the projection and every cosine starts near 1.
    - "standardize": per-dim z-score, (x - mean) / std, with statistics of the training features,
      kept separately for instructions and responses (they come from different token positions).
      `fit` sets them once, before the first training step; they are buffers, not parameters, and
      travel with the checkpoint. Until fitted it is the identity.
    - "layernorm": LayerNorm without affine (a following Linear absorbs gain and bias anyway).
      Needs no statistics, but removes only each vector's own mean and scale, and a massive dim
      still sets that scale. On synthetic data with a large shared offset it left a long plateau
      that "standardize" does not (see the README's "Design checks on synthetic data").
    - "none": raw features.
    """

    def __init__(self, hidden_size: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode == "standardize":
            for kind in ("instruction", "response"):
                self.register_buffer(f"{kind}_mean", torch.zeros(hidden_size))
                self.register_buffer(f"{kind}_std", torch.ones(hidden_size))
            self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def needs_fit(self) -> bool:
        return self.mode == "standardize" and not bool(self.fitted)

    @torch.no_grad()
    def fit(self, instructions: Tensor, responses: Tensor) -> None:
        """instructions: (Q, H), responses: (N, H) training features. Only "standardize" uses them."""
        if self.mode != "standardize":
            return
        for kind, x in (("instruction", instructions), ("response", responses)):
            x = x.to(self.instruction_mean.device, torch.float32)
            std = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else torch.ones_like(x[0])
            getattr(self, f"{kind}_mean").copy_(x.mean(dim=0))
            # Floor tiny stds so constant dims map to ~0 instead of dividing by zero.
            getattr(self, f"{kind}_std").copy_(std.clamp_min(1e-3 * float(std.mean()) + 1e-8))
        self.fitted.fill_(True)

    def forward(self, x: Tensor, kind: str) -> Tensor:
        """x: (..., H); kind: "instruction" or "response" -> (..., H)."""
        if self.mode == "standardize":
            mean, std = getattr(self, f"{kind}_mean"), getattr(self, f"{kind}_std")
            return (x - mean.to(x.dtype)) / std.to(x.dtype)
        if self.mode == "layernorm":
            return F.layer_norm(x, x.shape[-1:])
        return x


class Relevance(nn.Module):
    """s_k = Rele(i~, r~_k); see the module docstring for the two kinds."""

    MAX_SCALE = 100.0  # caps the inverse temperature so scores cannot blow up

    def __init__(self, config: RankerConfig):
        super().__init__()
        self.kind = config.relevance
        if self.kind == "cosine":
            self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
            self.bias = nn.Parameter(torch.zeros(()))
        else:
            width = (2 if self.kind == "linear" else 3) * config.projection_dim
            self.linear = nn.Linear(width, 1)

    def forward(self, instruction: Tensor, responses: Tensor) -> Tensor:
        """instruction: (B, d); responses: (B, K, d) -> scores (B, K)."""
        if self.kind == "cosine":
            cos = F.cosine_similarity(instruction[:, None, :], responses, dim=-1)  # (B, K)
            return self.log_scale.exp().clamp(max=self.MAX_SCALE) * cos + self.bias
        instruction = instruction[:, None, :].expand_as(responses)  # (B, K, d)
        parts = [instruction, responses] if self.kind == "linear" else [instruction, responses, instruction * responses]
        return self.linear(torch.cat(parts, dim=-1)).squeeze(-1)  # (B, K, 2d or 3d) -> (B, K)


class Ranker(nn.Module):
    """What both rankers share: input normalisation, projection, instruction handling, relevance."""

    def __init__(self, config: RankerConfig):
        super().__init__()
        self.config = config
        d = config.projection_dim
        self.input_norm = InputNorm(config.hidden_size, config.input_norm)
        self.proj = nn.Linear(config.hidden_size, d)
        # One projection serves two kinds of vectors (prompt end and response end); a learned
        # offset marks the instruction so later layers can tell it apart.
        self.instruction_type = nn.Parameter(torch.zeros(d))
        if not config.use_instruction:
            self.instruction_constant = nn.Parameter(0.02 * torch.randn(d))
        self.relevance = Relevance(config)

    def embed(self, instruction: Tensor, responses: Tensor) -> tuple[Tensor, Tensor]:
        """instruction: (B, H); responses: (B, K, H) -> projected (B, d) and (B, K, d)."""
        dtype = self.proj.weight.dtype  # features may arrive as bf16/fp16 from the base model
        r = self.proj(self.input_norm(responses.to(dtype), "response"))
        if self.config.use_instruction:
            i = self.proj(self.input_norm(instruction.to(dtype), "instruction"))
        else:
            i = self.instruction_constant.expand(responses.size(0), -1)
        return i + self.instruction_type, r

    @staticmethod
    def _check_inputs(instruction: Tensor, responses: Tensor, mask: Tensor | None, hidden_size: int) -> Tensor:
        if responses.dim() != 3:
            raise ValueError(f"responses must be (B, K, H), got shape {tuple(responses.shape)}")
        B, K, H = responses.shape
        if H != hidden_size:
            raise ValueError(f"features have hidden size {H}, but this ranker expects {hidden_size}")
        if tuple(instruction.shape) != (B, H):
            raise ValueError(f"instruction must be (B, H) = {(B, H)}, got {tuple(instruction.shape)}")
        if mask is None:
            return torch.ones(B, K, dtype=torch.bool, device=responses.device)
        if tuple(mask.shape) != (B, K):
            raise ValueError(f"mask must be (B, K) = {(B, K)}, got {tuple(mask.shape)}")
        return mask.bool()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ListRanker(Ranker):
    """Candidates interact: one set of K+1 vectors through `num_blocks` transformer blocks."""

    def __init__(self, config: RankerConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_blocks))
        self.ln_f = nn.LayerNorm(config.projection_dim)

    def forward(self, instruction: Tensor, responses: Tensor, mask: Tensor | None = None) -> Tensor:
        """Score every candidate of every group.

        instruction: (B, H) last-prompt-token features.
        responses:   (B, K, H) last-response-token features, padded to the longest group.
        mask:        (B, K) bool, True for real candidates (None = all real).
        Returns scores (B, K); padded positions hold 0 and must be ignored (losses take the mask).
        """
        mask = self._check_inputs(instruction, responses, mask, self.config.hidden_size)
        i, r = self.embed(instruction, responses)
        x = torch.cat([i[:, None, :], r], dim=1)  # (B, K+1, d)
        attend = torch.cat([mask.new_ones(mask.size(0), 1), mask], dim=1)  # (B, K+1)
        for block in self.blocks:
            x = block(x, attend)
        x = self.ln_f(x)
        scores = self.relevance(x[:, 0], x[:, 1:])
        return scores.masked_fill(~mask, 0.0)


class PointRanker(Ranker):
    """Each candidate scored alone: a shared residual MLP on Proj(i) and on each Proj(r_k)."""

    def __init__(self, config: RankerConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(MLPBlock(config) for _ in range(config.num_blocks))
        self.ln_f = nn.LayerNorm(config.projection_dim)

    def encode(self, x: Tensor) -> Tensor:
        """(..., d) -> (..., d): the shared MLP."""
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, instruction: Tensor, responses: Tensor, mask: Tensor | None = None) -> Tensor:
        """Same contract as `ListRanker.forward`: (B, H), (B, K, H), (B, K) -> scores (B, K)."""
        mask = self._check_inputs(instruction, responses, mask, self.config.hidden_size)
        i, r = self.embed(instruction, responses)
        scores = self.relevance(self.encode(i), self.encode(r))
        return scores.masked_fill(~mask, 0.0)


def build_ranker(config: RankerConfig) -> Ranker:
    """The ranker that `config.kind` names, freshly initialised (from torch's global RNG)."""
    return ListRanker(config) if config.kind == "list" else PointRanker(config)
