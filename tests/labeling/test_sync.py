"""Hub sync configuration (no network: only the parsing and the not-configured path)."""

import pytest

import labeling.sync as sync
from labeling.store import LabelStore
from labeling.sync import REPO_ENV, TOKEN_ENV, hub_sync_config, start_hub_sync


def test_config_comes_from_arguments_then_environment():
    off = hub_sync_config(environ={})
    assert not off.enabled and off.reason == f"Hub sync off: {REPO_ENV} and {TOKEN_ENV} not set"
    half = hub_sync_config(environ={REPO_ENV: "me/labels"})
    assert not half.enabled and half.reason == f"Hub sync off: {TOKEN_ENV} not set" and half.repo_id == "me/labels"
    on = hub_sync_config(every_minutes=2, environ={REPO_ENV: " me/labels ", TOKEN_ENV: "hf_secret"})
    assert on.enabled and on.repo_id == "me/labels" and on.token == "hf_secret" and on.every_minutes == 2.0
    assert on.reason == "Hub sync on: labels pushed to dataset me/labels every 2 min"
    assert "hf_secret" not in repr(on)
    override = hub_sync_config("you/other", "hf_arg", environ={REPO_ENV: "me/labels", TOKEN_ENV: "hf_env"})
    assert (override.repo_id, override.token) == ("you/other", "hf_arg")


@pytest.mark.parametrize("repo_id", ["labels", "a/b/c", "/labels"])
def test_malformed_repo_id_is_refused(repo_id):
    with pytest.raises(ValueError, match=f"must be a dataset repo id 'owner/name', got {repo_id!r}"):
        hub_sync_config(repo_id, "hf_x", environ={})


def test_bad_interval_is_refused():
    with pytest.raises(ValueError, match="every_minutes must be a number > 0, got 0"):
        hub_sync_config("me/labels", "hf_x", every_minutes=0, environ={})


def test_start_without_configuration_returns_none_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.delenv(REPO_ENV, raising=False)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    store = LabelStore(tmp_path)
    assert start_hub_sync(store) is None
    assert sync.last_reason == f"Hub sync off: {REPO_ENV} and {TOKEN_ENV} not set"
    assert start_hub_sync(store, repo_id="me/labels") is None
    assert sync.last_reason == f"Hub sync off: {TOKEN_ENV} not set"
    assert not (tmp_path / "hub_export").exists()  # nothing exported when off
