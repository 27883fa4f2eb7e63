"""The layer index rule and the hook recorder, on the tiny random model."""

import pytest
import torch

from ranker.capture.hidden_states import (
    LastPositionRecorder,
    decoder_of,
    decoder_parts,
    hidden_state_module,
    reference_hidden_states,
    resolve_layer,
    resolve_layers,
)


def test_fractions_and_indices_resolve_to_hidden_states_indices():
    assert resolve_layer(0.6, 30) == 18
    assert resolve_layer(1.0, 30) == 30
    assert resolve_layer(0.01, 30) == 1  # never the embeddings by fraction
    assert resolve_layer(0, 30) == 0
    assert resolve_layers([0.6, 18, 30, 0.1], 30) == (18, 30, 3)


@pytest.mark.parametrize("bad", [31, -1, 0.0, 1.5, True, "18", None])
def test_bad_layers_are_refused_with_the_value(bad):
    with pytest.raises(ValueError, match="layer"):
        resolve_layer(bad, 30)


def test_every_recorded_layer_equals_hf_hidden_states(tiny_base):
    """Index 0 = embeddings, 1..L-1 = block outputs, L = after the final norm, as in HF."""
    model = tiny_base.model
    layers = list(range(tiny_base.num_layers + 1))
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    recorder = LastPositionRecorder(model, layers, capacity=1, rows=2)
    with recorder:
        outputs = model(input_ids, output_hidden_states=True)
    assert recorder.steps == 1
    for slot, layer in enumerate(layers):
        torch.testing.assert_close(recorder.buffer[slot, 0], outputs.hidden_states[layer][:, -1], rtol=0, atol=0)
    reference = reference_hidden_states(model, input_ids, layers)
    torch.testing.assert_close(reference[:, -1, -1], outputs.hidden_states[-1][:, -1])
    # the last entry really is after the final norm, not the raw block output
    assert hidden_state_module(model, tiny_base.num_layers) is model.model.norm


def test_hooks_are_removed_after_the_context(tiny_base):
    model = tiny_base.model
    recorder = LastPositionRecorder(model, [1, 2], capacity=2, rows=1)
    with recorder:
        model(torch.tensor([[5, 6]]))
    model(torch.tensor([[5, 6]]))
    assert recorder.steps == 1


def test_record_only_stops_after_the_deepest_recorded_layer(tiny_base):
    """The states of a record_only call equal a full forward's, and the blocks above are never run."""
    model = tiny_base.model
    input_ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    full = model(input_ids, output_hidden_states=True).hidden_states
    # The same row alone: CPU kernels may round differently for another batch size, so exactness is
    # checked against a full forward of the same input as the record_only call.
    row = model(input_ids[1:], output_hidden_states=True).hidden_states
    _, blocks, _ = decoder_parts(model)
    calls = []
    handle = blocks[-1].register_forward_hook(lambda *args: calls.append(1))
    recorder = LastPositionRecorder(model, [1], capacity=2, rows=2)
    try:
        with recorder:
            recorder.record_only(lambda: decoder_of(model)(input_ids=input_ids[1:]), rows=torch.tensor([1]))
            model(input_ids)  # a normal call afterwards runs every block and writes all rows
    finally:
        handle.remove()
    assert calls == [1]  # only the normal call reached the last block
    assert recorder.steps == 2
    torch.testing.assert_close(recorder.buffer[0, 0, 1], row[1][0, -1], rtol=0, atol=0)
    torch.testing.assert_close(recorder.buffer[0, 0, 1], full[1][1, -1])
    assert recorder.buffer[0, 0, 0].abs().sum() == 0  # row 0 was not part of the record_only call
    torch.testing.assert_close(recorder.buffer[0, 1], full[1][:, -1])
