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
    from ranker.capture.base_model import load_base_model

    base = load_base_model("embedded", device="cpu", cache_dir=model_cache_dir)
    assert base.source == "gguf"
    return base


FROZEN_SUITE = __import__("pathlib").Path(__file__).resolve().parent / "assets" / "frozen_suite"


ROOT = FROZEN_SUITE.parents[2]
# Every test client connects from 127.0.0.1, so the per-client limits are raised for the shared app;
# tests/test_app_security.py checks the limits on an app of its own.
TEST_ENVIRONMENT = {
    "LANGUAGE_RANKER_LOCAL_MODE": "1",
    "LANGUAGE_RANKER_RATE_LABELS_PER_CLIENT": "100000/60",
    "LANGUAGE_RANKER_RATE_LABELS_PER_ANNOTATOR": "1000/60",
    "LANGUAGE_RANKER_RATE_GENERATIONS_PER_CLIENT": "100000/60",
    "LANGUAGE_RANKER_RATE_GENERATIONS_PER_ANNOTATOR": "1000/60",
}


@pytest.fixture(scope="session")
def app_service(embedded_base, tmp_path_factory):
    """The app's service on the embedded model, with a fresh data dir and no Hub backup.

    The retrain job trains on the frozen real task features (tests/assets/frozen_suite) and
    retrains only when asked (every_k_labels=0), with min_labels=1 so one label is enough.
    """
    from labeling.retrain import RetrainConfig
    from labeling.service import RankerService, ServiceConfig
    from ranker.capture.feature_store import FeatureStore

    data_dir = tmp_path_factory.mktemp("app-data")
    config = ServiceConfig.from_env(ROOT, environ={**TEST_ENVIRONMENT, "LANGUAGE_RANKER_DATA": str(data_dir)})
    config.retrain = RetrainConfig(every_k_labels=0, min_labels=1, validation_fraction=0.0)
    config.hub_backup = False
    service = RankerService(config).start(embedded_base, train_store=FeatureStore.load(FROZEN_SUITE / "train"),
                                          val_store=FeatureStore.load(FROZEN_SUITE / "test"))
    yield service
    service.close()


@pytest.fixture(scope="session")
def app_server(app_service):
    """The app on the embedded model, launched once: (module, url, service)."""
    import app

    demo = app.build_demo(app_service)
    _, url = app.launch(demo, app_service, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        yield app, url, app_service
    finally:
        demo.close()
