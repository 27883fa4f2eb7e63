"""The launched app as the public sees it (not in local mode), on the tiny random model, through gradio_client.

Roles, identity from the request, rate limits and idempotent labels, over HTTP exactly as a
hostile client would call them.
"""

from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from labeling.identity import AccessConfig
from labeling.limits import ServiceLimits
from labeling.ratelimit import Rate, RateLimits
from labeling.retrain import RetrainConfig
from labeling.service import RankerService, ServiceConfig

TOKEN = "admin-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def public_app(tiny_base, tmp_path_factory):
    import app

    config = ServiceConfig(
        data_dir=tmp_path_factory.mktemp("public-app"), hub_backup=False,
        access=AccessConfig(admins=frozenset({"boss"}), admin_token=TOKEN, local_mode=False),
        rates=RateLimits(labels_per_annotator=Rate(5, 60), labels_per_client=Rate(1000, 60),
                         generations_per_annotator=Rate(8, 60), generations_per_client=Rate(1000, 60)),
        limits=ServiceLimits(max_candidates=4, max_new_tokens=8, max_total_tokens=16), retrain=RetrainConfig(every_k_labels=0),
    )
    service = RankerService(config).start(tiny_base)
    demo = app.build_demo(service)
    _, url = app.launch(demo, service, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        yield service, url
    finally:
        demo.close()
        service.close()


def generate(client, seed=0):
    return client.predict("What is 1 + 1?", 2, 1.0, 1.0, 4, seed, "latest retrained", "default", api_name="/generate")


@pytest.mark.parametrize("endpoint, args", [("/retrain", ("default", "")), ("/rollback", ("default", "", "")),
                                            ("/bootstrap", ("",)), ("/retrain", ("default", "wrong-token-0123456789"))])
def test_admin_actions_are_refused_to_the_public(public_app, endpoint, args):
    service, url = public_app
    with pytest.raises(AppError, match="for admins only .LANGUAGE_RANKER_ADMINS, or the admin token.; you are anon:"):
        Client(url, verbose=False).predict(*args, api_name=endpoint)
    assert service.worker.queued() == [] and service.bootstrap_state == "" and service.registry.history() == []


def test_the_admin_token_opens_them(public_app):
    service, url = public_app
    client = Client(url, verbose=False)
    assert client.predict("default", TOKEN, api_name="/retrain") == "Retraining queued; it runs in the background."
    assert service.jobs["default"].wait(60)
    with pytest.raises(AppError, match="no current version to roll back from"):  # allowed, and told why it cannot
        client.predict("default", "", TOKEN, api_name="/rollback")


def test_identity_comes_from_the_session_not_from_an_argument(public_app):
    service, url = public_app
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    request_id = generate(alice)[0]
    with pytest.raises(AppError, match="accepted only in local mode"):
        alice.predict(request_id, "0", "boss", api_name="/label")  # claiming to be someone else
    first = alice.predict(request_id, "0", "", "", api_name="/label")
    second = bob.predict(request_id, "1", "", "", api_name="/label")
    frame = service.labels.labels_frame()
    annotators = dict(zip(frame.label_id, frame.annotator))
    assert annotators[first].startswith("anon:") and annotators[second].startswith("anon:")
    assert annotators[first] != annotators[second]  # two clients, two ids
    assert alice.predict("", api_name="/undo") == first  # the same client is the same annotator


def test_labels_are_idempotent_and_rate_limited_over_http(public_app):
    service, url = public_app
    client = Client(url, verbose=False)
    requests = [generate(client, seed)[0] for seed in range(6)]
    before = service.labels.revision()[1]
    ids = [client.predict(request_id, "0", "", f"key-{k}", api_name="/label") for k, request_id in enumerate(requests[:5])]
    assert client.predict(requests[0], "0", "", "key-0", api_name="/label") == ids[0]  # a retry: same id, nothing stored
    with pytest.raises(AppError, match="Slow down: you sent 5 labels in the last 60 s, the limit; try again in"):
        client.predict(requests[5], "0", "", "key-5", api_name="/label")
    assert service.labels.revision()[1] == before + 5


def test_generations_are_rate_limited_and_bounded_over_http(public_app):
    service, url = public_app
    client = Client(url, verbose=False)
    with pytest.raises(AppError, match="Value 5 is greater than maximum value 4"):  # the slider follows the limit
        client.predict("hi", 5, 1.0, 1.0, 4, 0, "latest retrained", "default", api_name="/generate")
    with pytest.raises(AppError, match="N x max new tokens is 4 x 8 = 32; the limit is 16"):
        client.predict("hi", 4, 1.0, 1.0, 8, 0, "latest retrained", "default", api_name="/generate")
    uses = service.lane.uses
    for seed in range(8):
        generate(client, seed)
    with pytest.raises(AppError, match="Slow down: you sent 8 generations"):
        generate(client, 9)
    assert service.lane.uses == uses + 8


def test_the_json_label_route_has_the_same_rules(public_app):
    import httpx

    service, url = public_app
    request_ids = [generate(Client(url, verbose=False), seed)[0] for seed in (11, 12)]
    token = {"x-annotator-token": "c0ffee" * 5 + "00"}
    with httpx.Client(base_url=url, timeout=30) as http:
        first = http.post("/api/label", json={"request_id": request_ids[0], "choice": "1", "client_key": "rest-1"}, headers=token)
        again = http.post("/api/label", json={"request_id": request_ids[0], "choice": "1", "client_key": "rest-1"}, headers=token)
        assert first.status_code == 200 and again.json() == first.json()
        label_id = first.json()["label_id"]
        annotator = service.labels.labels_frame().set_index("label_id").loc[label_id, "annotator"]
        assert annotator == service.identify(browser_token="c0ffee" * 5 + "00").annotator  # the token is the id
        refused = [
            (http.post("/api/label", json={"request_id": "f" * 32, "choice": "0"}, headers=token), 400, "unknown request_id"),
            (http.post("/api/label", json={"request_id": request_ids[1], "choice": "7"}, headers=token), 400, "choice must be"),
            (http.post("/api/label", json={"request_id": request_ids[1], "choice": "0", "x": 1}, headers=token), 400, "unknown fields"),
            (http.post("/api/label", content=b"[1, 2]", headers=token), 400, "must be a JSON object"),
            (http.post("/api/label", content=b"\xff\xfe", headers=token), 400, "must be a JSON object"),
            (http.post("/api/label", content=b"{" + b" " * 5000 + b"}", headers=token), 413, "the limit is 4096"),
            (http.post("/api/label", json={"request_id": request_ids[1], "choice": "0", "annotator": "boss"}, headers=token),
             403, "accepted only in local mode"),
        ]
        before = service.labels.revision()
        for response, status, message in refused:
            assert response.status_code == status and message in response.json()["error"], response.text
        assert service.labels.revision() == before
        assert http.post("/api/undo", json={}, headers=token).json() == {"label_id": label_id}
        for k in range(5):  # 5 labels a minute per annotator in this app
            http.post("/api/label", json={"request_id": request_ids[k % 2], "choice": str(k % 2)}, headers=token)
        limited = http.post("/api/label", json={"request_id": request_ids[1], "choice": "0"}, headers=token)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert limited.json()["error"].startswith("Slow down: you sent 5 labels")


def test_importing_the_app_has_no_side_effects(tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "LANGUAGE_RANKER_DATA": str(tmp_path / "data"), "HF_TOKEN": "hf_read_only",
           "LANGUAGE_RANKER_HUB_DATASET": "not a repo id", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", "import app; print(app.build_demo.__name__)"], cwd=Path(__file__).parents[1],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "build_demo", done.stderr[-2000:]
    assert not (tmp_path / "data").exists()  # no label store, no Hub sync, no thread


def test_hugging_face_sign_in_makes_the_user_name_the_annotator_id(public_app, monkeypatch):
    """OAuth as on a Space, with Gradio's local stand-in for the Hub's login (offline): the session
    cookie it sets makes the caller hf:<user>, an admin here, in the Gradio handlers and the JSON route."""
    import time

    import gradio as gr
    import gradio.oauth
    import httpx

    import app

    service, _ = public_app
    user = {"preferred_username": "boss", "name": "Boss", "profile": "", "picture": ""}
    monkeypatch.setattr(gradio.oauth, "_get_mocked_oauth_info", lambda: {
        "access_token": "mock", "token_type": "bearer", "expires_in": 3600, "id_token": "x", "scope": "openid profile",
        "expires_at": int(time.time()) + 3600, "userinfo": user})
    demo = app.build_demo(service, oauth=True)
    assert any(isinstance(block, gr.LoginButton) for block in demo.blocks.values())
    assert not any(isinstance(block, gr.LoginButton) for block in app.build_demo(service, oauth=False).blocks.values())
    _, url = app.launch(demo, service, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        request_id = generate(Client(url, verbose=False), 21)[0]
        with httpx.Client(base_url=url, timeout=30) as http:
            login = http.get("/login/callback")  # where the Hub's login returns to; sets the session cookie
            cookie = login.headers["set-cookie"].split(";")[0]  # https-only cookie: sent by hand over http
            label = http.post("/api/label", json={"request_id": request_id, "choice": "0"}, headers={"cookie": cookie})
            anonymous = http.post("/api/label", json={"request_id": request_id, "choice": "1"})
        assert label.status_code == 200 and anonymous.status_code == 200
        annotators = service.labels.labels_frame().set_index("label_id").annotator
        assert annotators[label.json()["label_id"]] == "hf:boss" and annotators[anonymous.json()["label_id"]].startswith("anon:")
    finally:
        demo.close()
    profile = gr.OAuthProfile(user)  # what Gradio injects into the handlers from the same cookie
    caller = app.Handlers(service)._caller(None, profile)
    assert caller.annotator == "hf:boss" and caller.is_admin
    front_matter = (Path(__file__).parents[1] / "README.md").read_text().split("---")[1]
    assert "\nhf_oauth: true\n" in front_matter
