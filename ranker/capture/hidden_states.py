"""Which hidden state is a ranking feature, and how to record it without an extra pass.

Layer index rule (used everywhere in this project)
-------------------------------------------------
A layer index `l` means entry `l` of Hugging Face's `output_hidden_states`:

- `l = 0`: the token embeddings;
- `1 <= l < L`: the output of decoder block `l` (1-based), before any norm;
- `l = L` (the number of blocks): the last block's output *after* the final norm.

A float in (0, 1] is a fraction of depth: `round(f * L)`, at least 1. The paper's default
is 0.6, which is layer 18 of SmolLM2-135M's 30.

Token rule
----------
- Instruction feature: the state at the prompt's last token (prompts are left-padded, so
  that is position -1 of the prefill pass).
- Response feature: the state at the candidate's last token, which is its EOS token when
  it ended with one, else the last token before `max_new_tokens` cut it off.

Recording
---------
`LastPositionRecorder` puts a forward hook on the module whose output is `hidden_states[l]`
and copies only the last position of every forward call into a preallocated buffer
`(num_layers, capacity, rows, H)`. In `generate`, call 0 is the prefill, and call `t >= 1`
feeds generated token `t - 1`, so generated token `j`'s state lands in slot `j + 1`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def resolve_layer(layer: int | float, num_layers: int) -> int:
    """Turn an index or a fraction of depth into a hidden_states index in [0, num_layers]."""
    if isinstance(layer, bool):
        raise ValueError(f"layer must be an int index or a float fraction, got {layer!r}")
    if isinstance(layer, float):
        if not 0.0 < layer <= 1.0:
            raise ValueError(f"layer fraction must be in (0, 1], got {layer}")
        return max(1, round(layer * num_layers))
    if isinstance(layer, int):
        if not 0 <= layer <= num_layers:
            raise ValueError(f"layer index must be in [0, {num_layers}] for this model, got {layer}")
        return layer
    raise ValueError(f"layer must be an int index or a float fraction, got {layer!r}")


def resolve_layers(layers: int | float | Sequence[int | float], num_layers: int) -> tuple[int, ...]:
    """Resolve one layer or several; duplicates are dropped, order is kept."""
    items = [layers] if isinstance(layers, (int, float)) else list(layers)
    if not items:
        raise ValueError("at least one layer is needed")
    resolved: list[int] = []
    for item in items:
        index = resolve_layer(item, num_layers)
        if index not in resolved:
            resolved.append(index)
    return tuple(resolved)


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder stack (embeddings, blocks, final norm) without the LM head."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model


def decoder_parts(model: nn.Module) -> tuple[nn.Module, Sequence[nn.Module], nn.Module]:
    """(embedding, blocks, final norm) of a decoder-only Hugging Face model."""
    decoder = decoder_of(model)
    for embed_name, blocks_name, norm_name in (("embed_tokens", "layers", "norm"), ("wte", "h", "ln_f")):
        if all(hasattr(decoder, name) for name in (embed_name, blocks_name, norm_name)):
            return getattr(decoder, embed_name), getattr(decoder, blocks_name), getattr(decoder, norm_name)
    raise ValueError(
        f"Cannot find the embedding, blocks and final norm of {type(model).__name__}; "
        "supported layouts are Llama-style (embed_tokens/layers/norm) and GPT-2-style (wte/h/ln_f)."
    )


def hidden_state_module(model: nn.Module, layer: int) -> nn.Module:
    """The module whose output is `hidden_states[layer]` (see the layer index rule above)."""
    embedding, blocks, norm = decoder_parts(model)
    if layer == 0:
        return embedding
    if layer == len(blocks):
        return norm
    if 0 < layer < len(blocks):
        return blocks[layer - 1]
    raise ValueError(f"layer must be in [0, {len(blocks)}], got {layer}")


class LastPositionRecorder:
    """Context manager that records the last position of `hidden_states[l]` on every forward call.

    buffer: (num_layers, capacity, rows, H). `steps` counts forward calls seen so far.
    `rows_for_next_call` lets a call with fewer rows (the final decode step over only the
    candidates that need it) write into the right rows. `record_only` runs such a call only
    as deep as the deepest recorded layer.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], capacity: int, rows: int):
        self.model = model
        self.layers = tuple(layers)
        parameter = next(model.parameters())
        hidden_size = model.config.get_text_config().hidden_size
        self.buffer = torch.zeros(len(self.layers), capacity, rows, hidden_size, dtype=parameter.dtype, device=parameter.device)
        self.steps = 0
        self.rows_for_next_call: torch.Tensor | None = None
        self._handles: list = []
        self._written = 0
        self._stop_after_deepest = False

    def __enter__(self) -> "LastPositionRecorder":
        for slot, layer in enumerate(self.layers):
            module = hidden_state_module(self.model, layer)
            self._handles.append(module.register_forward_hook(self._hook(slot)))
        # Runs after every layer hook of the same call: advance the step counter once per call.
        # On the decoder, not the LM wrapper, so a decoder-only call (no LM head) counts too.
        self._handles.append(decoder_of(self.model).register_forward_hook(self._advance))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, slot: int):
        def record(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output  # (rows, T, H)
            if self.steps >= self.buffer.shape[1]:
                raise RuntimeError(f"recorder capacity {self.buffer.shape[1]} exceeded")
            if self.rows_for_next_call is None:
                self.buffer[slot, self.steps].copy_(hidden[:, -1])
            else:
                self.buffer[slot, self.steps, self.rows_for_next_call] = hidden[:, -1]
            if self._stop_after_deepest and self.layers[slot] == max(self.layers):
                raise _DeepestLayerRecorded

        return record

    def record_only(self, forward: Callable[[], object], rows: torch.Tensor | None = None) -> None:
        """Run one forward call for its recorded states only, into `rows` (None: all rows).

        The call stops right after the deepest recorded layer's hook (the blocks above it and
        the LM head would only compute what nobody reads), so its outputs and the cache
        entries of the deeper blocks are not produced; use it for a last call whose cache is
        thrown away.
        """
        self.rows_for_next_call, self._stop_after_deepest = rows, True
        try:
            forward()
        except _DeepestLayerRecorded:
            self._advance(None, None, None)
        finally:
            self._stop_after_deepest = False

    def _advance(self, module, inputs, output) -> None:
        self.steps += 1
        self.rows_for_next_call = None


class _DeepestLayerRecorded(Exception):
    """Ends a `record_only` forward call once every recorded layer has its state."""


@torch.no_grad()
def reference_hidden_states(
    model: nn.Module, input_ids: torch.Tensor, layers: Sequence[int], attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """A separate full forward pass: `hidden_states[l]` at every position.

    This is what capture during generation avoids; it serves as the reference in the parity
    tests and as the avoided cost in the capture benchmark.

    input_ids: (B, T); attention_mask: (B, T) or None. Returns (B, len(layers), T, H).
    Position ids follow the attention mask, as `generate` does for left-padded batches.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    outputs = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        output_hidden_states=True,
        use_cache=False,
    )
    return torch.stack([outputs.hidden_states[layer] for layer in layers], dim=1)
