"""A tiny random Llama with a character-level tokenizer, for fast tests with no download."""

from __future__ import annotations

import string

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ranker.capture.base_model import BaseModel
from ranker.capture.fingerprint import ModelFingerprint

SPECIALS = ["<pad>", "<eos>", "<bos>"]
CHAT_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable character, plus <pad>=0, <eos>=1, <bos>=2."""
    vocab = {token: i for i, token in enumerate(SPECIALS + list(string.printable[:95]))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="?"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("<pad>|<eos>|<bos>|."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_base_model(num_layers: int = 4, hidden_size: int = 32, seed: int = 0, eos_boost: float = 10.0) -> BaseModel:
    """A random-weight Llama (vocab 98) wrapped as a BaseModel; float32 on CPU.

    `eos_boost` scales the EOS row of the LM head so that, at max_new_tokens around 20, some
    candidates end with EOS and others are cut by the length limit: both paths get tested.
    """
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 0
    model.requires_grad_(False)
    with torch.no_grad():
        model.lm_head.weight[config.eos_token_id] *= eos_boost
    fingerprint = ModelFingerprint(model_id="tiny-random-llama", revision=f"seed-{seed}", num_layers=num_layers, hidden_size=hidden_size)
    return BaseModel(model=model, tokenizer=tokenizer, fingerprint=fingerprint, source="memory")
