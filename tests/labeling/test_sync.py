"""Hub backup: configuration, per-run pushes, restore after a restart, and failures that never reach the app.

No network: the Hub is `tests.labeling.fake_hub.LocalFolderHub`, a folder behind the same calls.
"""

import inspect
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import torch
from huggingface_hub import HfApi

import labeling.sync as sync
from labeling.label_store import LabelStore
from labeling.registry import RankerRegistry
from labeling.sync import PROJECT_ROOT, REPO_ENV, TOKEN_ENV, HubBackup, default_data_dir, hub_backup_from_env, hub_sync_config
from ranker.capture.fingerprint import FeatureFingerprint
from ranker.rankers.estimator import LanguageRanker
from tests.labeling.fake_hub import LocalFolderHub
from tests.labeling.synthetic import CANDIDATES, FAST, LAYER, MODEL, record, synthetic_queries

REPO = "me/ranker-backup"
ENV = {REPO_ENV: REPO, TOKEN_ENV: "hf_secret"}


# --- configuration ---------------------------------------------------------------------------------


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


@pytest.mark.parametrize("repo_id", ["labels", "a/b/c", "/labels", "me/..", "me/x y", "me/-x", "me/" + "x" * 97])
def test_malformed_repo_id_is_refused(repo_id):
    with pytest.raises(ValueError, match=f"must be a dataset repo id 'owner/name', got {repo_id!r}"):
        hub_sync_config(repo_id, "hf_x", environ={})


@pytest.mark.parametrize("every", [0, -1, True, "10", float("nan"), 10081])
def test_bad_interval_is_refused(every):
    with pytest.raises(ValueError, match="every_minutes must be a number > 0 and at most a week"):
        hub_sync_config("me/labels", "hf_x", every_minutes=every, environ={})


def test_default_data_dir(tmp_path):
    assert default_data_dir({"LANGUAGE_RANKER_DATA": str(tmp_path / "mine")}) == tmp_path / "mine"
    volume = tmp_path / "volume"
    volume.mkdir()
    assert default_data_dir({}, persistent_storage=volume) == volume / "language-ranker"
    assert default_data_dir({"LANGUAGE_RANKER_DATA": " "}, persistent_storage=volume) == volume / "language-ranker"
    assert default_data_dir({}, persistent_storage=tmp_path / "absent") == PROJECT_ROOT / "data" / "app"
    (tmp_path / "a-file").write_text("x")
    assert default_data_dir({}, persistent_storage=tmp_path / "a-file") == PROJECT_ROOT / "data" / "app"


def test_importing_the_module_does_no_hub_work():
    code = "import sys, labeling.sync; print('huggingface_hub' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_fake_hub_has_the_real_signatures():
    """Every LocalFolderHub method is an HfApi method; its parameters are a subset of the real ones,
    with the same kinds and defaults, and it takes every parameter the real one requires."""
    names = [n for n, v in vars(LocalFolderHub).items() if callable(v) and not n.startswith("_") and n != "commits"]
    assert sorted(names) == ["create_repo", "hf_hub_download", "list_repo_files", "repo_info", "snapshot_download",
                             "upload_file", "upload_folder", "whoami"]
    for name in names:
        fake = inspect.signature(getattr(LocalFolderHub, name)).parameters
        real = inspect.signature(getattr(HfApi, name)).parameters
        for parameter in fake.values():
            assert parameter.name in real, f"{name}({parameter.name}) is not a parameter of HfApi.{name}"
            assert parameter.kind == real[parameter.name].kind, f"{name}({parameter.name}) kind"
            assert parameter.default == real[parameter.name].default, f"{name}({parameter.name}) default"
        required = [p for p in real.values() if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD]
        assert all(p.name in fake for p in required), name


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def queries():
    return synthetic_queries(8, seed=5)


@pytest.fixture(scope="module")
def rankers(queries):
    """Two quickly fitted rankers that score differently."""
    return [LanguageRanker(kind="list", seed=seed, steps=3, **FAST).fit(queries, fingerprint=FeatureFingerprint(MODEL, LAYER))
            for seed in range(2)]


@pytest.fixture
def hub(tmp_path):
    hub = LocalFolderHub(tmp_path / "hub")
    hub.create_repo(REPO, repo_type="dataset", private=True)
    return hub


def instance(folder, hub, instance_id=None, every_minutes=10):
    """One app instance: a data dir with its store and registry, and its backup."""
    store, registry = LabelStore(folder), RankerRegistry(folder / "rankers")
    return store, registry, HubBackup(hub, REPO, store, registry, instance_id=instance_id, every_minutes=every_minutes)


def label_some(store, queries, annotator):
    ids = []
    for query in queries:
        request_id = record(store, query)
        ids.append(store.add_label(request_id, 1, annotator, list(range(CANDIDATES)), client_key=f"key-{request_id}"))
    return ids


def label_ids(store):
    return sorted(store.labels_frame()["label_id"])


# --- pushing and restoring -----------------------------------------------------------------------------


def test_two_runs_never_overwrite_each_other_and_a_restart_restores_both(tmp_path, hub, queries, rankers):
    store_a, registry_a, a = instance(tmp_path / "a", hub, "a")
    assert a.push() == {"labels": None, "registry": None, "error": None} and hub.commits() == []  # nothing to push yet
    mine_a = label_some(store_a, queries[:3], "alice")
    registry_a.add(rankers[0], {"store_accuracy": 0.5}, True, "first")
    assert a.push() == {"labels": a.labels_path, "registry": a.registry_path, "error": None}
    assert a.labels_path == f"labels/{a.run_id}.parquet" and a.run_id.split("-")[1] == "a"

    # Another instance starts (or the next run): it restores A's labels and registry, labels, promotes, pushes.
    store_b, registry_b, b = instance(tmp_path / "b", hub, "b")
    report = b.restore()
    assert (report["labels_added"], report["requests_added"], report["errors"]) == (3, 3, {})
    assert report["registry"] == a.registry_path and registry_b.current() == "v0001"
    mine_b = label_some(store_b, queries[3:5], "bob")
    assert registry_b.add(rankers[1], {"store_accuracy": 0.6}, True, "second") == "v0002"
    unlabelled = record(store_b, queries[7])  # shown, not labelled yet: a label after the restart must find it
    assert b.push()["error"] is None
    # A goes on, still only into its own file.
    mine_a += label_some(store_a, queries[5:7], "alice")
    assert a.push() == {"labels": a.labels_path, "registry": None, "error": None}  # registry unchanged: not re-sent
    commits = len(hub.commits())
    assert a.push() == {"labels": None, "registry": None, "error": None} and len(hub.commits()) == commits

    files = hub.list_repo_files(REPO, repo_type="dataset")
    assert [f for f in files if f.startswith("labels/")] == sorted([a.labels_path, b.labels_path])
    assert {f.split("/")[1] for f in files if f.startswith("registries/")} == {a.run_id, b.run_id}
    for commit in hub.commits(REPO):  # every commit stays inside one run's names
        runs = {path.split("/")[1].removesuffix(".parquet") for path in commit["paths"]}
        assert len(runs) == 1 and runs <= {a.run_id, b.run_id}, commit
    on_hub = LabelStore(tmp_path / "check")
    on_hub.merge_parquet(hub.hf_hub_download(REPO, a.labels_path, repo_type="dataset", local_dir=tmp_path / "dl"))
    assert label_ids(on_hub) == label_ids(store_a) == sorted(mine_a)  # A's last push is A's whole store

    # Restart with an empty disk: every pushed label of both runs, and B's registry (the newest) come back.
    store_c, registry_c, c = instance(tmp_path / "c", hub)
    report = c.restore()
    assert report["errors"] == {} and sorted(report["merged"]) == sorted([a.labels_path, b.labels_path])
    assert report["labels_added"] == 7 and label_ids(store_c) == sorted(mine_a + mine_b)
    assert store_c.count() == 7 and store_c.count("bob") == 2
    assert store_c.get_request(unlabelled)["candidates"] == [f"answer {k}" for k in range(CANDIDATES)]
    assert report["registry"] == b.registry_path
    assert registry_c.current() == "v0002" and [e["version"] for e in registry_c.history()] == ["v0001", "v0002"]
    q = queries[0]
    torch.testing.assert_close(registry_c.load("v0002").score(q.instruction, q.responses), rankers[1].score(q.instruction, q.responses))
    torch.testing.assert_close(registry_c.load("v0001").score(q.instruction, q.responses), rankers[0].score(q.instruction, q.responses))
    assert sorted(p.name for p in registry_c.root.iterdir()) == ["default", "registry.json"]  # no staging left
    # Restoring again adds nothing and keeps the (now filled) registry.
    again = c.restore()
    assert again["labels_added"] == 0 and again["registry"] is None
    assert again["registry_note"] == "kept the local registry (it has versions)"
    assert c.status()["last_restore"] is again


def test_the_thread_pushes_and_stop_pushes_the_last_labels(tmp_path, hub, queries):
    store, _, backup = instance(tmp_path / "a", hub, every_minutes=0.001)  # every 60 ms
    label_some(store, queries[:1], "alice")
    backup.start()
    assert backup.start() is backup  # idempotent
    deadline = time.monotonic() + 10
    while backup.status()["pushes"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backup.status()["running"] and backup.status()["pushes"] == 1 and backup.status()["last_error"] is None
    # A label right before shutdown is saved by stop()'s final push.
    assert backup.stop(final_push=False) is None
    last = label_some(store, queries[1:2], "bob")
    assert backup.stop() == {"labels": backup.labels_path, "registry": None, "error": None}
    assert not backup.status()["running"]
    restored, _, fresh = instance(tmp_path / "b", hub)
    fresh.restore()
    assert last[0] in label_ids(restored) and restored.count() == 2


def test_push_soon_pushes_without_waiting_for_the_interval(tmp_path, hub, queries, rankers):
    store, registry, backup = instance(tmp_path / "a", hub, every_minutes=60)
    label_some(store, queries[:1], "alice")
    backup.push_soon()  # no thread yet: one push of its own
    deadline = time.monotonic() + 10
    while backup.status()["pushes"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [c["paths"] for c in hub.commits()] == [[backup.labels_path]]
    backup.start()
    registry.add(rankers[0], {"store_accuracy": 0.5}, True, "first")
    backup.push_soon()
    while backup.status()["pushes"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backup.status()["pushes"] == 2 and backup.status()["running"]
    assert hub.commits()[-1]["paths"] == [f"{backup.registry_path}/{name}" for name in (
        "default/v0001/card.json", "default/v0001/entry.json", "default/v0001/model.safetensors", "registry.json")]
    assert backup.stop() == {"labels": None, "registry": None, "error": None}  # nothing new to push


def test_a_read_only_token_is_reported_and_the_app_goes_on(tmp_path, hub, queries):
    store_a, _, writer = instance(tmp_path / "a", hub)
    label_some(store_a, queries[:2], "alice")
    writer.push()
    read_only = LocalFolderHub(hub.root, read_only=True)
    store, registry = LabelStore(tmp_path / "b"), RankerRegistry(tmp_path / "b" / "rankers")
    backup, reason = hub_backup_from_env(store, registry, environ=ENV, api=read_only)
    assert backup is None
    assert reason == f"Hub backup off: the {TOKEN_ENV} token is read-only; it needs write access to dataset {REPO}"

    # A token that passes the check but may not write this repo: reads work, pushes report, nothing raises.
    backup = HubBackup(read_only, REPO, store, registry, every_minutes=0.001)
    assert backup.restore()["labels_added"] == 2
    label_id = store.add_label(record(store, queries[3]), 0, "bob", list(range(CANDIDATES)))
    commits = hub.commits()
    result = backup.push()
    assert result["labels"] is None
    assert result["error"] == (f"permission denied (403): the token cannot write to dataset {REPO} "
                               "(a read-only token, or one without write access to this repo)")
    backup.start()
    deadline = time.monotonic() + 10
    while backup.status()["failures"] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    status = backup.status()
    assert status["running"] and status["failures"] >= 3 and status["pushes"] == 0
    assert status["last_error"] == result["error"]
    assert backup.stop(final_push=False) is None and not backup.status()["running"]
    assert hub.commits() == commits  # nothing was written
    assert store.count() == 3 and label_id in label_ids(store)  # the store works as before


def test_corrupt_label_files_are_reported_and_do_not_block_the_others(tmp_path, hub, queries):
    store_a, _, writer = instance(tmp_path / "a", hub)
    label_some(store_a, queries[:3], "alice")
    writer.push()
    hub.upload_file(path_or_fileobj=b"PAR1 this is not parquet", path_in_repo="labels/garbage.parquet",
                    repo_id=REPO, repo_type="dataset")
    hub.upload_file(path_or_fileobj=str(store_a.export_parquet(tmp_path / "hashed.parquet")),
                    path_in_repo="labels/hashed.parquet", repo_id=REPO, repo_type="dataset")
    table = pq.read_table(store_a.export_parquet(tmp_path / "plain.parquet", hash_annotators=False))
    rows = table.to_pylist()
    rows[1]["choice"] = "99"
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), tmp_path / "tampered.parquet")
    hub.upload_file(path_or_fileobj=str(tmp_path / "tampered.parquet"), path_in_repo="labels/tampered.parquet",
                    repo_id=REPO, repo_type="dataset")

    store, registry, backup = instance(tmp_path / "b", hub)
    report = backup.restore()
    assert sorted(report["errors"]) == ["labels/garbage.parquet", "labels/hashed.parquet", "labels/tampered.parquet"]
    assert report["errors"]["labels/garbage.parquet"].startswith("ValueError: labels/garbage.parquet is not a readable parquet file")
    assert "is an export with hashed annotators" in report["errors"]["labels/hashed.parquet"]
    assert "row 1: choice must be a candidate index in [0, 5]" in report["errors"]["labels/tampered.parquet"]
    assert list(report["merged"]) == [writer.labels_path] and report["labels_added"] == 3
    assert label_ids(store) == label_ids(store_a)
    assert registry.history() == [] and report["registry_note"] == "no registry snapshot on the Hub"


def test_a_broken_registry_snapshot_is_skipped_and_never_half_restored(tmp_path, hub, queries, rankers):
    store_a, registry_a, a = instance(tmp_path / "a", hub, "a")
    registry_a.add(rankers[0], {"store_accuracy": 0.5}, True, "first")
    record(store_a, queries[0])
    a.push()
    _, registry_b, b = instance(tmp_path / "b", hub, "b")
    b.restore()
    registry_b.add(rankers[1], {"store_accuracy": 0.6}, True, "second")
    b.push()
    # B's snapshot (the newest) loses the weights of its current version on the Hub.
    (hub.root / "datasets" / REPO / b.registry_path / "default" / "v0002" / "model.safetensors").unlink()

    _, registry_c, c = instance(tmp_path / "c", hub)
    report = c.restore()
    assert report["registry"] == a.registry_path and list(report["errors"]) == [b.registry_path]
    assert registry_c.current() == "v0001" and [e["version"] for e in registry_c.history()] == ["v0001"]
    q = queries[1]
    torch.testing.assert_close(registry_c.load("v0001").score(q.instruction, q.responses), rankers[0].score(q.instruction, q.responses))

    # With every snapshot broken, the local registry stays empty: nothing half-restored.
    (hub.root / "datasets" / REPO / a.registry_path / "default" / "v0001" / "card.json").write_text("{not json")
    _, registry_d, d = instance(tmp_path / "d", hub)
    report = d.restore()
    assert report["registry"] is None and sorted(report["errors"]) == sorted([a.registry_path, b.registry_path])
    assert report["registry_note"] == "no usable registry snapshot on the Hub"
    assert registry_d.history() == [] and list(registry_d.root.iterdir()) == []


def test_the_old_single_file_backup_is_restored_too(tmp_path, hub, queries):
    """What the CommitScheduler of earlier versions pushed: data/labels.parquet, an unhashed version-1 export."""
    old = LabelStore(tmp_path / "old")
    label_some(old, queries[:2], "alice")
    table = pq.read_table(old.export_parquet(tmp_path / "old.parquet", hash_annotators=False))
    legacy = table.drop_columns(["client_key", "superseded_by", "annotator_hashed"]).replace_schema_metadata(None)
    pq.write_table(legacy, tmp_path / "legacy.parquet")
    hub.upload_file(path_or_fileobj=str(tmp_path / "legacy.parquet"), path_in_repo="data/labels.parquet",
                    repo_id=REPO, repo_type="dataset")
    store, _, backup = instance(tmp_path / "new", hub)
    report = backup.restore()
    assert report["label_files"] == ["data/labels.parquet"] and report["labels_added"] == 2
    assert label_ids(store) == label_ids(old)


def test_an_unreachable_hub_is_reported(tmp_path, hub, queries):
    store, registry = LabelStore(tmp_path / "a"), RankerRegistry(tmp_path / "a" / "rankers")
    offline = LocalFolderHub(hub.root, offline=True)
    backup, reason = hub_backup_from_env(store, registry, environ=ENV, api=offline)
    assert backup is None and reason == (f"Hub backup off: could not reach the Hub or the {TOKEN_ENV} token was refused "
                                         "(ConnectError: [Errno -3] Temporary failure in name resolution)")
    backup = HubBackup(offline, REPO, store, registry)  # the Hub goes away after the start
    report = backup.restore()
    assert report["errors"] == {"list_repo_files": "ConnectError: [Errno -3] Temporary failure in name resolution"}
    record(store, queries[0])
    assert backup.push()["error"] == "ConnectError: [Errno -3] Temporary failure in name resolution"
    assert backup.status()["failures"] == 1


# --- hub_backup_from_env ------------------------------------------------------------------------------


def test_backup_from_env_checks_everything_before_saying_on(tmp_path):
    store, registry = LabelStore(tmp_path / "a"), RankerRegistry(tmp_path / "a" / "rankers")
    hub = LocalFolderHub(tmp_path / "hub")
    assert hub_backup_from_env(store, registry, environ={}, api=hub) == (
        None, f"Hub backup off: {REPO_ENV} and {TOKEN_ENV} not set")
    assert hub_backup_from_env(store, registry, environ={REPO_ENV: REPO}, api=hub) == (None, f"Hub backup off: {TOKEN_ENV} not set")
    assert hub_backup_from_env(store, registry, environ={REPO_ENV: "no-slash", TOKEN_ENV: "hf_x"}, api=hub) == (
        None, f"Hub backup off: {REPO_ENV} must be a dataset repo id 'owner/name', got 'no-slash'")
    assert hub.calls == []  # nothing asked of the Hub for a bad configuration

    backup, reason = hub_backup_from_env(store, registry, environ=ENV, api=hub, every_minutes=5)
    assert isinstance(backup, HubBackup) and backup.repo_id == REPO and backup.every_minutes == 5.0
    assert reason == f"Hub backup on: dataset {REPO}, run {backup.run_id}, every 5 min"
    assert hub.repo_info(REPO, repo_type="dataset").private is True  # created private
    assert hub.commits() == [] and not backup.status()["running"]  # nothing written, nothing started

    hub.create_repo("me/public", repo_type="dataset", private=False)
    assert hub_backup_from_env(store, registry, environ={**ENV, REPO_ENV: "me/public"}, api=hub) == (None, (
        "Hub backup off: dataset me/public is not private; the backup holds annotator identities, "
        "so make the repo private (or name another one)"))
    read_only = LocalFolderHub(tmp_path / "hub", read_only=True)
    read_only.whoami = lambda token=None, *, cache=False: {"auth": {"accessToken": {"role": "write"}}}  # lies
    backup, reason = hub_backup_from_env(store, registry, environ={**ENV, REPO_ENV: "me/absent"}, api=read_only)
    assert backup is None and reason.startswith("Hub backup off: could not create or open dataset me/absent: permission denied (403)")


@pytest.mark.parametrize("grants, read_only", [
    ({"role": "read"}, True),
    ({"role": "write"}, False),
    ({"role": "fineGrained", "fineGrained": {"scoped": [{"entity": {"name": "me"}, "permissions": ["repo.content.read"]}]}}, True),
    ({"role": "fineGrained", "fineGrained": {"scoped": [{"entity": {"name": "me"}, "permissions": ["repo.write"]}]}}, False),
    ({}, False),  # unknown: the first push will tell
])
def test_token_roles(grants, read_only):
    assert sync._token_is_read_only({"auth": {"accessToken": grants}}) is read_only


def test_backup_arguments_are_checked(tmp_path, hub):
    store = LabelStore(tmp_path / "a")
    with pytest.raises(ValueError, match="must be a dataset repo id 'owner/name', got 'x'"):
        HubBackup(hub, "x", store)
    with pytest.raises(ValueError, match="store must be a LabelStore, got str"):
        HubBackup(hub, REPO, "store")
    with pytest.raises(ValueError, match="instance_id must be None or 1-64 letters"):
        HubBackup(hub, REPO, store, instance_id="../x")
    with pytest.raises(ValueError, match="every_minutes must be a number > 0"):
        HubBackup(hub, REPO, store, every_minutes=0)


