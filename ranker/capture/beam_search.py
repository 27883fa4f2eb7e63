"""Beam search, the paper's deterministic baseline: the single highest-likelihood sequence per prompt."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ranker.capture.base_model import BaseModel
from ranker.capture.sampling import encode_prompts, eos_token_ids


@torch.no_grad()
def beam_search(base: BaseModel, prompts: Sequence[str], num_beams: int = 4, max_new_tokens: int = 64,
                prompts_per_call: int = 4) -> list[str]:
    """The top beam's text for each prompt (decoded without special tokens)."""
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive integer, got {num_beams!r}")
    texts: list[str] = []
    for start in range(0, len(prompts), prompts_per_call):
        encoded = encode_prompts(base, list(prompts[start : start + prompts_per_call]))
        output = base.model.generate(
            **encoded, do_sample=False, num_beams=num_beams, num_return_sequences=1, max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_ids(base), pad_token_id=base.tokenizer.pad_token_id, early_stopping=True,
            temperature=None, top_p=None, top_k=None,
        )
        generated = output[:, encoded["input_ids"].shape[1] :]
        texts += [base.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]
    return texts
