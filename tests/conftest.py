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


FROZEN_SUITE = __import__("pathlib").Path(__file__).resolve().parent / "assets" / "frozen_suite"


@pytest.fixture(scope="session")
def app_server(embedded_base, tmp_path_factory):
    """The app on the embedded model, launched once: (module, url). Labels go to a fresh data dir.

    The retrain job trains on the frozen real task features (tests/assets/frozen_suite) and
    retrains only when asked (every_k_labels=0), with min_labels=1 so one label is enough.
    """
    import app
    from labeling.retrain import RetrainConfig
    from ranker.store import FeatureStore

    app.set_base_model(
        embedded_base,
        retrain=RetrainConfig(every_k_labels=0, min_labels=1, validation_fraction=0.0),
        train_store=FeatureStore.load(FROZEN_SUITE / "train"),
        val_store=FeatureStore.load(FROZEN_SUITE / "test"),
        data_dir=tmp_path_factory.mktemp("app-data"),
    )
    app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True, **app.LAUNCH_KWARGS)
    try:
        yield app, app.demo.local_url
    finally:
        app.demo.close()
