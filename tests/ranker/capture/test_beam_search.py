import torch

from ranker.capture.beam_search import beam_search
from ranker.capture.sampling import encode_prompts


def test_one_beam_equals_greedy_decoding(tiny_base):
    prompts = ["hi", "a longer prompt"]
    texts = beam_search(tiny_base, prompts, num_beams=1, max_new_tokens=8)
    encoded = encode_prompts(tiny_base, prompts)
    greedy = tiny_base.model.generate(**encoded, do_sample=False, max_new_tokens=8, pad_token_id=0, eos_token_id=1)
    expected = [tiny_base.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in greedy[:, encoded["input_ids"].shape[1]:]]
    assert texts == expected


def test_bad_beam_count_is_named(tiny_base):
    import pytest

    with pytest.raises(ValueError, match="num_beams"):
        beam_search(tiny_base, ["hi"], num_beams=0)
