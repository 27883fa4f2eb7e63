"""Sample N candidates per prompt and capture their ranking features in the same pass.

`sample_candidates(base, prompt, config)` returns the candidates' texts, token ids, finish
reasons, log-probabilities, confidence signals (self-certainty and DeepConf's, see
`ranker.capture.confidence`), the instruction feature and the response features. The
features are recorded by hooks during `generate` (see `ranker.capture.hidden_states`) and the
signals by a logits processor, not by a second forward pass. The only extra model work is one decode step for the candidates whose last
token `generate` never fed back through the model (those still running at the final step),
over those rows alone, reusing the generation cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import LogitsProcessorList

from ranker.capture.base_model import BaseModel
from ranker.capture.confidence import ConfidenceConfig, StepSignals, trace_confidences
from ranker.capture.hidden_states import LastPositionRecorder, decoder_of, resolve_layers
from ranker.core.seeding import seeded


@dataclass
class SamplingConfig:
    """How candidates are sampled."""

    num_candidates: int = 8  # N, candidates per prompt
    temperature: float = 1.0  # 0 means greedy (all N candidates identical)
    top_p: float = 1.0  # nucleus sampling mass; 1.0 disables it
    top_k: int = 0  # keep the k most likely tokens; 0 disables it
    max_new_tokens: int = 64  # candidates longer than this are cut ("length")
    seed: int | None = 0  # same seed, same prompts -> same candidates; None draws from the global RNG
    # DeepConf's signals (ranker.capture.confidence); defaults are the paper's
    confidence_top_k: int = 20  # top-k tokens of each step's token confidence
    group_window: int = 2048  # tokens per sliding group
    tail_tokens: int = 2048  # tokens that tail confidence averages
    bottom_fraction: float = 0.1  # share of lowest groups that bottom-group confidence averages

    def validate(self) -> "SamplingConfig":
        if not isinstance(self.num_candidates, int) or not 1 <= self.num_candidates <= 1024:
            raise ValueError(f"num_candidates must be an integer in [1, 1024], got {self.num_candidates!r}")
        if not 0.0 <= float(self.temperature) <= 10.0:
            raise ValueError(f"temperature must be in [0, 10], got {self.temperature!r}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer, got {self.top_k!r}")
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= 8192:
            raise ValueError(f"max_new_tokens must be an integer in [1, 8192], got {self.max_new_tokens!r}")
        top_k = self.confidence_top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 1000:
            raise ValueError(f"confidence_top_k must be an integer in [1, 1000], got {top_k!r}")
        self.confidence  # noqa: B018 (validates the reduction settings)
        return self

    @property
    def confidence(self) -> ConfidenceConfig:
        """How each candidate's token confidences are reduced (raises ValueError on bad settings)."""
        return ConfidenceConfig(self.group_window, self.tail_tokens, self.bottom_fraction)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidate:
    """One sampled answer."""

    index: int  # position among the prompt's N samples (sampling order)
    text: str  # decoded without special tokens
    token_ids: list[int]  # generated tokens, including the final EOS when there is one
    finish_reason: str  # "eos" or "length"
    num_tokens: int  # len(token_ids)
    sum_logprob: float  # sum of log p(token) under the model's raw (untempered) distribution
    mean_logprob: float  # sum_logprob / num_tokens
    self_certainty: float  # mean over its tokens of KL(uniform || p), raw distribution (ranker.capture.confidence)
    token_confidences: list[float]  # DeepConf's confidence of each token (top-k mean of -log p)
    lowest_group_confidence: float  # reductions of token_confidences with the config's windows
    bottom_group_confidence: float
    tail_confidence: float


@dataclass
class SampleResult:
    """N candidates for one prompt, with their features at each requested layer."""

    prompt: str
    prompt_token_ids: list[int]  # the chat-formatted prompt, unpadded
    layers: tuple[int, ...]  # hidden_states indices (see ranker.capture.hidden_states)
    instruction_features: torch.Tensor  # (num_layers, H) float32, CPU
    response_features: torch.Tensor  # (N, num_layers, H) float32, CPU
    candidates: list[Candidate]
    config: SamplingConfig
    generation_seconds: float = 0.0  # wall time of the batch this prompt was sampled in

    def features(self, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(instruction (H,), responses (N, H)) at one of the recorded layers (default: the first)."""
        slot = 0 if layer is None else self._slot(layer)
        return self.instruction_features[slot], self.response_features[:, slot]

    def _slot(self, layer: int) -> int:
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not recorded; recorded layers are {list(self.layers)}")
        return self.layers.index(layer)


def encode_prompts(base: BaseModel, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Chat-format (when the tokenizer has a template) and left-pad the prompts.

    Returns input_ids and attention_mask, both (B, T), on the model's device.
    """
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {i} must be a non-empty string, got {prompt!r}")
    tokenizer = base.tokenizer
    if getattr(tokenizer, "chat_template", None):
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
            for p in prompts
        ]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    else:
        encoded = tokenizer(list(prompts), return_tensors="pt", padding=True)
    return {"input_ids": encoded["input_ids"].to(base.device), "attention_mask": encoded["attention_mask"].to(base.device)}


def eos_token_ids(base: BaseModel) -> list[int]:
    """Every token id that ends a candidate (generation config first, then the tokenizer)."""
    configured = base.model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    if base.tokenizer.eos_token_id is not None and base.tokenizer.eos_token_id not in ids:
        ids.append(base.tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model defines no EOS token; candidates could never finish with 'eos'")
    return ids


StepCallback = Callable[[int, int], None]  # (decode steps done, max_new_tokens), called once per decode step


class _StepProgress:
    """A logits processor that only reports each decode step to a callback (for progress bars)."""

    def __init__(self, prompt_length: int, max_new_tokens: int, on_step: StepCallback):
        self.prompt_length, self.max_new_tokens, self.on_step = prompt_length, max_new_tokens, on_step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.on_step(input_ids.shape[1] - self.prompt_length + 1, self.max_new_tokens)
        return scores


def sample_candidates(
    base: BaseModel, prompt: str, config: SamplingConfig | None = None, layers: int | float | Sequence = 0.6,
    on_step: StepCallback | None = None,
) -> SampleResult:
    """Sample `config.num_candidates` answers to one prompt, with features at `layers`.

    on_step: called after each decode step with (steps done, max_new_tokens), e.g. to move a
    progress bar while sampling; generation may end before max_new_tokens when every candidate
    has finished.
    """
    return sample_candidates_batch(base, [prompt], config, layers, on_step=on_step)[0]


@torch.no_grad()
def sample_candidates_batch(
    base: BaseModel,
    prompts: Sequence[str],
    config: SamplingConfig | None = None,
    layers: int | float | Sequence = 0.6,
    max_rows: int = 256,
    on_step: StepCallback | None = None,
) -> list[SampleResult]:
    """Sample N answers for each prompt, several prompts per `generate` call.

    Prompts are grouped so that one call holds at most `max_rows` = prompts x N rows (at least
    one prompt per call). The seed applies per call, so results are reproducible for the
    same prompts, config and `max_rows`. on_step: as in `sample_candidates`, for every call.
    """
    config = (config or SamplingConfig()).validate()
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings; use sample_candidates for one prompt")
    if not prompts:
        return []
    resolved = resolve_layers(layers, base.num_layers)
    per_call = max(1, max_rows // config.num_candidates)
    results: list[SampleResult] = []
    for start in range(0, len(prompts), per_call):
        results.extend(_sample_one_call(base, list(prompts[start : start + per_call]), config, resolved, on_step))
    return results


def _sample_one_call(base: BaseModel, prompts: list[str], config: SamplingConfig, layers: tuple[int, ...],
                     on_step: StepCallback | None = None) -> list[SampleResult]:
    model, n = base.model, config.num_candidates
    encoded = encode_prompts(base, prompts)
    prompt_length = encoded["input_ids"].shape[1]
    rows = len(prompts) * n
    eos_ids = eos_token_ids(base)
    recorder = LastPositionRecorder(model, layers, capacity=config.max_new_tokens + 1, rows=rows)
    signals = StepSignals(prompt_length, rows, config.max_new_tokens, base.device, top_k=config.confidence_top_k,
                          eos_token_ids=eos_ids)
    sampling = dict(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
    if config.temperature == 0:
        sampling = dict(do_sample=False, temperature=None, top_p=None, top_k=None)

    start = time.perf_counter()
    with seeded(config.seed, base.device), recorder:
        # Rows b*n .. b*n+n-1 are prompt b's candidates. Expanding here rather than with
        # num_return_sequences lets greedy decoding (which refuses that option) share the path.
        output = model.generate(
            input_ids=encoded["input_ids"].repeat_interleave(n, dim=0),
            attention_mask=encoded["attention_mask"].repeat_interleave(n, dim=0),
            **sampling,
            max_new_tokens=config.max_new_tokens,
            eos_token_id=eos_ids,
            pad_token_id=base.tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList(
                [signals] if on_step is None else [signals, _StepProgress(prompt_length, config.max_new_tokens, on_step)]),
            return_dict_in_generate=True,
        )
        generated = output.sequences[:, prompt_length:]  # (rows, G)
        lengths, ended = _candidate_lengths(generated, eos_ids)
        _final_decode_step(model, recorder, output, encoded["attention_mask"], n, lengths)
    seconds = time.perf_counter() - start
    steps = {name: values.cpu() for name, values in signals.finish(output.sequences).items()}  # each (rows, G)

    # Response feature of row r: slot lengths[r] (its last token j = lengths[r] - 1 lands in slot j + 1).
    row_index = torch.arange(rows, device=recorder.buffer.device)
    responses = recorder.buffer[:, lengths, row_index].permute(1, 0, 2).float().cpu()  # (rows, num_layers, H)
    # .clone(): a view would keep the whole (num_layers, capacity, rows, H) buffer alive.
    instructions = recorder.buffer[:, 0, ::n].permute(1, 0, 2).float().cpu().clone()  # (B, num_layers, H)

    results = []
    for b, prompt in enumerate(prompts):
        candidates = []
        for k in range(n):
            r = b * n + k
            length = int(lengths[r])
            ids = generated[r, :length].tolist()
            total = float(steps["log_probs"][r, :length].sum())
            confidences = steps["confidence"][r, :length].tolist()
            candidates.append(
                Candidate(
                    index=k,
                    text=base.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                    token_ids=ids,
                    finish_reason="eos" if bool(ended[r]) else "length",
                    num_tokens=length,
                    sum_logprob=total,
                    mean_logprob=total / length,
                    self_certainty=float(steps["certainty"][r, :length].mean()),
                    token_confidences=confidences,
                    **trace_confidences(confidences, config.confidence),
                )
            )
        prompt_ids = encoded["input_ids"][b][encoded["attention_mask"][b].bool()].tolist()
        results.append(
            SampleResult(
                prompt=prompt,
                prompt_token_ids=prompt_ids,
                layers=layers,
                instruction_features=instructions[b],
                response_features=responses[b * n : (b + 1) * n],
                candidates=candidates,
                config=config,
                generation_seconds=seconds,
            )
        )
    return results


def _candidate_lengths(generated: torch.Tensor, eos_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: number of tokens up to and including the first EOS (else all), and whether it ended with EOS."""
    is_eos = torch.isin(generated, torch.tensor(eos_ids, device=generated.device))
    ended = is_eos.any(dim=1)
    first_eos = is_eos.int().argmax(dim=1)
    lengths = torch.where(ended, first_eos + 1, torch.full_like(first_eos, generated.shape[1]))
    return lengths, ended


def _final_decode_step(model, recorder: LastPositionRecorder, output, prompt_mask: torch.Tensor, n: int, lengths: torch.Tensor) -> None:
    """Feed the last generated token of the rows whose last-token state was never computed.

    During generate, call t feeds token t - 1, so with G generated columns the calls cover
    tokens 0..G-2. Rows whose last token is column G - 1 (cut by max_new_tokens, or ending at
    the very last step) need one more decode step: just those rows, one token each, on the
    generation cache, and only as deep as the deepest recorded layer. Its states land in slot G
    of the recorder.
    """
    sequences = output.sequences
    generated_length = sequences.shape[1] - prompt_mask.shape[1]
    if recorder.steps != generated_length:
        raise RuntimeError(f"expected {generated_length} forward calls during generate, recorded {recorder.steps}")
    need = torch.nonzero(lengths == generated_length).flatten()
    if need.numel() == 0:
        return
    cache = output.cache
    cache.batch_select_indices(need)
    full_mask = torch.cat(
        [prompt_mask.repeat_interleave(n, dim=0)[need], prompt_mask.new_ones(need.numel(), generated_length)], dim=1
    )
    position_ids = (full_mask.long().cumsum(-1) - 1)[:, -1:]
    # The decoder alone, up to the deepest recorded layer: the hooks need hidden states, not
    # next-token logits, and this cache is not used again.
    recorder.record_only(
        lambda: decoder_of(model)(
            input_ids=sequences[need, -1:], attention_mask=full_mask, position_ids=position_ids, cache=cache, use_cache=True
        ),
        rows=need,
    )
