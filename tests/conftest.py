"""Shared fixtures: the tiny random model (fast) and the embedded model (loaded once per session)."""

from __future__ import annotations

import pytest

from tests.tiny_model import tiny_base_model


@pytest.fixture(scope="session")
def tiny_base():
    return tiny_base_model()


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory):
    """A fresh cache directory, so every session exercises the GGUF dequantisation path once."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def embedded_base(model_cache_dir):
    """The embedded SmolLM2-135M-Instruct, dequantised from its GGUF file (about 20 s, once)."""
    from ranker.base_model import load_base_model

    base = load_base_model("embedded", device="cpu", cache_dir=model_cache_dir)
    assert base.source == "gguf"
    return base
