"""The OpenAI-compatible routes (labeling.openai_api) on the tiny random model, over real HTTP.

The official `openai` client drives the app's own server (the routes mounted by `app.launch`),
with a ranker fitted for the tiny model so that the choices carry real ranker scores; plain
httpx sends what no well-behaved client would. A second, standalone server (`create_app`, what
`python -m labeling.openai_api` serves) has no ranker and a tight rate limit; the command
itself is started once in a subprocess.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn

import labeling.openai_api
from labeling.identity import AccessConfig
from labeling.limits import ServiceLimits
from labeling.openai_api import create_app
from labeling.ratelimit import Rate, RateLimits
from labeling.retrain import RetrainConfig
from labeling.service import RankerService, ServiceConfig
from ranker.capture.fingerprint import FeatureFingerprint
from ranker.rankers.estimator import LanguageRanker
from tests.labeling.synthetic import FAST, LAYER, synthetic_queries

TOKEN = "c0ffee" * 5 + "00"  # 32 hex characters: an anonymous id, as the browser's
OTHER_TOKEN = "beef" * 8
MODEL = "tiny-random-llama"  # tests.tiny_model's fingerprint model id
SYSTEM, QUESTION = "Answer briefly.", "What is 2 + 3?"
TEMPLATE_TOKENS = len("<user>") + 1 + len("<assistant>")  # the tiny chat template around one user turn; "<eos>" is one token
MAX_TOKENS = 6


@pytest.fixture(autouse=True)
def seeded_uuids():
    """Overrides tests/labeling/conftest.py: these servers outlive one test, and seeded ids would repeat across tests."""


def public_config(data_dir, rates: RateLimits) -> ServiceConfig:
    return ServiceConfig(data_dir=data_dir, hub_backup=False, access=AccessConfig(local_mode=False), rates=rates,
                         limits=ServiceLimits(max_candidates=8, max_new_tokens=16, max_total_tokens=64),
                         retrain=RetrainConfig(every_k_labels=0))


@pytest.fixture(scope="module")
def ranked_app(tiny_base, tmp_path_factory):
    """The app (UI and routes, `app.launch`) on the tiny model, with a fitted ranker live: (service, url)."""
    import app

    service = RankerService(public_config(tmp_path_factory.mktemp("openai-app"), RateLimits.unlimited())).start(tiny_base)
    ranker = LanguageRanker(kind="list", seed=0, steps=3, **FAST).fit(
        synthetic_queries(12, seed=1), fingerprint=FeatureFingerprint(tiny_base.fingerprint, LAYER), calibrate=True)
    service.registry.add(ranker, {}, True, "fitted for the tiny model")  # now "latest retrained"
    demo = app.build_demo(service)
    _, url = app.launch(demo, service, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        yield service, url.rstrip("/")
    finally:
        demo.close()
        service.close()


@pytest.fixture(scope="module")
def standalone(tiny_base, tmp_path_factory):
    """`create_app` under uvicorn on a free port; no ranker; 2 generations a minute per annotator: (service, url)."""
    rates = RateLimits(labels_per_annotator=Rate(100, 60), labels_per_client=Rate(1000, 60),
                       generations_per_annotator=Rate(2, 60), generations_per_client=Rate(1000, 60))
    service = RankerService(public_config(tmp_path_factory.mktemp("openai-standalone"), rates)).start(tiny_base)
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield service, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        service.close()


def client(url: str, api_key: str = TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=60)


def chat(url: str, api_key: str = TOKEN, seed: int = 3, **extra):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    return client(url, api_key).chat.completions.create(model=MODEL, messages=messages, n=4, max_tokens=MAX_TOKENS, seed=seed,
                                                        temperature=1.0, **extra)


def check_against_the_stored_request(service, response, texts: list[str], prompt: str, prompt_tokens: int):
    """Choices best first by ranker score, indices a permutation, usage and texts as the service stored them."""
    summary = response.ranking
    stored = service.labels.get_request(summary["request_id"])
    assert stored["prompt"] == prompt
    assert response.id.endswith(summary["request_id"]) and response.model == MODEL
    assert summary["ranked_by"] == "ranker" and summary["ranker"] == "latest retrained" and summary["candidates"] == 4
    rankings = [choice.ranking for choice in response.choices]
    scores = [r["ranker_score"] for r in rankings]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4  # best first, and really scored
    assert [r["rank"] for r in rankings] == [1, 2, 3, 4]
    indices = [choice.index for choice in response.choices]
    assert sorted(indices) == [0, 1, 2, 3]
    for choice, ranking, text in zip(response.choices, rankings, texts):
        index = choice.index
        assert text == stored["candidates"][index]
        assert ranking["ranker_score"] == pytest.approx(stored["ranker_scores"][index], abs=1e-6)
        assert ranking["p_correct"] == pytest.approx(stored["probabilities"][index], abs=1e-6) and 0 < ranking["p_correct"] < 1
        assert ranking["mean_logprob"] == pytest.approx(stored["mean_logprobs"][index], abs=1e-6)
        assert ranking["tokens"] == stored["num_tokens"][index] and "rm_score" not in ranking
        assert choice.finish_reason == {"eos": "stop", "length": "length"}[stored["finish_reasons"][index]]
        if choice.finish_reason == "length":
            assert ranking["tokens"] == MAX_TOKENS
        assert choice.logprobs is None
    assert response.usage.prompt_tokens == prompt_tokens
    assert response.usage.completion_tokens == sum(stored["num_tokens"]) == sum(r["tokens"] for r in rankings)
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_chat_completions_are_ranked_best_first(ranked_app):
    service, url = ranked_app
    uses = service.lane.uses
    response = chat(url)
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-") and len(response.choices) == 4
    assert all(choice.message.role == "assistant" for choice in response.choices)
    # The tiny tokenizer has a token per printable character; the blank line joining the system
    # and user text ("\n\n", outside its vocabulary) is one unknown token.
    prompt = f"{SYSTEM}\n\n{QUESTION}"
    check_against_the_stored_request(service, response, [c.message.content for c in response.choices], prompt,
                                     len(prompt) - 1 + TEMPLATE_TOKENS)
    assert service.lane.uses == uses + 1  # one generation, through the service's model lane


def test_completions_are_ranked_best_first(ranked_app):
    service, url = ranked_app
    response = client(url).completions.create(model=MODEL, prompt=QUESTION, n=4, max_tokens=MAX_TOKENS, seed=5)
    assert response.object == "text_completion" and response.id.startswith("cmpl-") and len(response.choices) == 4
    check_against_the_stored_request(service, response, [c.text for c in response.choices], QUESTION,
                                     len(QUESTION) + TEMPLATE_TOKENS)


def test_rank_only_returns_the_top_choice(ranked_app):
    _, url = ranked_app
    full = chat(url)
    best = chat(url, extra_body={"rank_only": True})
    assert len(best.choices) == 1
    top, only = full.choices[0], best.choices[0]
    assert (only.index, only.message.content, only.finish_reason) == (top.index, top.message.content, top.finish_reason)
    assert only.ranking["ranker_score"] == pytest.approx(top.ranking["ranker_score"]) and only.ranking["rank"] == 1
    assert best.usage == full.usage  # all four candidates were sampled, same seed, same tokens
    assert best.ranking["request_id"] != full.ranking["request_id"]  # each request is stored on its own


def test_the_reward_model_score_is_added_when_asked(ranked_app, monkeypatch):
    service, url = ranked_app

    class LengthRM:  # stands in for the shipped RM, which does not fit the tiny model
        def score(self, prompt, candidates):
            return torch.tensor([len(text) + 0.5 for text in candidates])

    monkeypatch.setattr(service, "rm", LengthRM())
    monkeypatch.setattr(service, "rm_note", "length stand-in")
    with_rm = chat(url, extra_body={"reward_model": True})
    assert [c.ranking["rm_score"] for c in with_rm.choices] == [len(c.message.content) + 0.5 for c in with_rm.choices]
    assert with_rm.ranking["reward_model"] == "length stand-in"
    assert service.labels.get_request(with_rm.ranking["request_id"])["rm_scores"] is not None
    without = chat(url)
    assert all("rm_score" not in c.ranking for c in without.choices) and "reward_model" not in without.ranking


def test_models_lists_the_loaded_base_model(ranked_app):
    _, url = ranked_app
    models = client(url).models.list()
    assert [(m.id, m.object, m.owned_by) for m in models.data] == [(MODEL, "model", "language-ranker")]
    assert client(url).models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError, match="does not exist here"):
        client(url).models.retrieve("gpt-4o")
    with pytest.raises(openai.NotFoundError, match="the model 'gpt-4o' does not exist here; this server runs 'tiny-random-llama'"):
        client(url).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_a_request_can_be_labelled_by_its_id(ranked_app):
    service, url = ranked_app
    response = chat(url)
    top = response.choices[0].index
    with httpx.Client(base_url=url, timeout=30) as http:
        label = http.post("/api/label", json={"request_id": response.ranking["request_id"], "choice": str(top)},
                          headers={"x-annotator-token": TOKEN})
    assert label.status_code == 200, label.text
    row = service.labels.labels_frame().set_index("label_id").loc[label.json()["label_id"]]
    assert row["request_id"] == response.ranking["request_id"] and str(row["choice"]) == str(top)
    assert row["annotator"] == service.identify(browser_token=TOKEN).annotator  # the bearer token's id is the header's


def test_streaming_is_refused(ranked_app):
    _, url = ranked_app
    with pytest.raises(openai.BadRequestError, match="streaming is not supported"):
        client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)


USER = [{"role": "user", "content": "hi"}]
BAD_CHAT = [  # (body, param, words the message must contain)
    ({}, "messages", "messages is required"),
    ({"messages": []}, "messages", "messages is empty"),
    ({"messages": "hi"}, "messages", "messages must be a list"),
    ({"messages": [42]}, "messages[0]", "messages[0] must be an object"),
    ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content", "messages[0].content must be a string"),
    ({"messages": [{"role": "user", "content": {"text": "hi"}}]}, "messages[0].content", "must be a string"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "not supported), got null"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "messages[0].role must be one of"),
    ({"messages": [{"role": 1, "content": "hi"}]}, "messages[0].role", "role must be one of"),
    ({"messages": [{"role": "tool", "content": "hi"}]}, "messages[0].role", "'tool'"),
    ({"messages": [{"role": "user", "content": "hi", "tool_calls": []}]}, "messages[0]", "unsupported fields ['tool_calls']"),
    ({"messages": [{"role": "user", "content": "hi", "name": 7}]}, "messages[0].name", "messages[0].name must be a string, got 7"),
    ({"messages": [{"role": "system", "content": "be nice"}]}, "messages", "exactly one user message"),
    ({"messages": [*USER, {"role": "user", "content": "again"}]}, "messages", "exactly one user message"),
    ({"messages": [*USER, {"role": "system", "content": "late"}]}, "messages", "got roles ['user', 'system']"),
    ({"messages": [*USER, {"role": "assistant", "content": "hello"}, *USER]}, "messages[1].role", "assistant turns are not supported"),
    ({"messages": [{"role": "user", "content": "bell \x07"}]}, "messages[0].content", "control character U+0007"),
    ({"messages": [{"role": "user", "content": "   "}]}, "messages[0].content", "messages[0].content is empty"),
    ({"messages": [{"role": "user", "content": "x" * 9000}]}, "messages[0].content", "9,000 characters long; the limit is 8,000"),
    ({"messages": [{"role": "user", "content": "x" * 600}]}, "messages", "the prompt is 618 tokens with the chat template"),
    ({"messages": [USER[0]] * 40}, "messages", "1 to 32 messages, got 40"),
    ({"messages": USER, "n": 0}, "n", "n must be between 1 and 8, got 0"),
    ({"messages": USER, "n": 10**9}, "n", "n must be between 1 and 8"),
    ({"messages": USER, "n": True}, "n", "n must be an integer, got true"),
    ({"messages": USER, "n": "4"}, "n", "n must be an integer, got '4'"),
    ({"messages": USER, "n": 2.5}, "n", "n must be an integer, got 2.5"),
    ({"messages": USER, "n": [4]}, "n", "n must be an integer, got a list"),
    ({"messages": USER, "temperature": 5}, "temperature", "temperature must be between 0 and 2"),
    ({"messages": USER, "temperature": "hot"}, "temperature", "temperature must be a finite number"),
    ({"messages": USER, "temperature": False}, "temperature", "temperature must be a finite number, got false"),
    ({"messages": USER, "top_p": 0}, "top_p", "top_p must be in (0, 1]"),
    ({"messages": USER, "max_tokens": 0}, "max_tokens", "max_tokens must be between 1 and 16, got 0"),
    ({"messages": USER, "max_tokens": 17}, "max_tokens", "max_tokens must be between 1 and 16"),
    ({"messages": USER, "max_completion_tokens": -1}, "max_completion_tokens", "max_completion_tokens must be between 1 and 16"),
    ({"messages": USER, "n": 8, "max_completion_tokens": 9}, "max_completion_tokens", "n x max_completion_tokens is 8 x 9"),
    ({"messages": USER, "max_tokens": 4, "max_completion_tokens": 5}, "max_completion_tokens", "disagree"),
    ({"messages": USER, "n": 8, "max_tokens": 16}, "max_tokens", "n x max_tokens is 8 x 16 = 128; the limit is 64"),
    ({"messages": USER, "seed": 2**40}, "seed", "seed must be -1 (random) or between 0 and"),
    ({"messages": USER, "seed": "lucky"}, "seed", "seed must be an integer"),
    ({"messages": USER, "stream": True}, "stream", "streaming is not supported"),
    ({"messages": USER, "stream": "no"}, "stream", "stream must be true or false"),
    ({"messages": USER, "rank_only": "yes"}, "rank_only", "rank_only must be true or false"),
    ({"messages": USER, "reward_model": 1}, "reward_model", "reward_model must be true or false, got 1"),
    ({"messages": USER, "ranker": "best one"}, "ranker", "unknown ranker 'best one'"),
    ({"messages": USER, "ranker": 3}, "ranker", "ranker must be a string"),
    ({"messages": USER, "model": ["x"]}, "model", "model must be a string"),
    ({"messages": USER, "stop": ["\n"]}, "stop", "unsupported parameter 'stop'"),
    ({"messages": USER, "tools": [{"type": "function"}], "logprobs": True}, "logprobs", "'logprobs', 'tools'"),
    ({"messages": USER, "user": {"id": 1}}, "user", "user must be a string"),
]
BAD_COMPLETIONS = [
    ({}, "prompt", "prompt must be a string"),
    ({"prompt": ["a", "b"]}, "prompt", "lists of prompts and token ids are not supported"),
    ({"prompt": [1, 2, 3]}, "prompt", "prompt must be a string"),
    ({"prompt": "nul \x00"}, "prompt", "control character U+0000"),
    ({"prompt": "hi", "messages": USER}, "messages", "unsupported parameter 'messages'"),
    ({"prompt": "hi", "max_completion_tokens": 4}, "max_completion_tokens", "unsupported parameter"),
    ({"prompt": "hi", "best_of": 4}, "best_of", "unsupported parameter 'best_of'"),
]


def assert_error(response: httpx.Response, status: int, words: str, param=None, kind="invalid_request_error"):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ["code", "message", "param", "type"], body
    assert words in body["error"]["message"], body
    assert body["error"]["type"] == kind and body["error"]["param"] == param, body
    assert "Traceback" not in response.text
    return body["error"]


def test_bad_fields_get_400_naming_the_field_before_any_model_work(ranked_app):
    service, url = ranked_app
    before = (service.lane.uses, service.labels.revision())
    with httpx.Client(base_url=url, timeout=30) as http:
        for route, cases in (("/v1/chat/completions", BAD_CHAT), ("/v1/completions", BAD_COMPLETIONS)):
            for body, param, words in cases:
                error = assert_error(http.post(route, json=body), 400, words, param)
                assert param.split("[")[0] in error["message"]  # the message names the field
    assert (service.lane.uses, service.labels.revision()) == before


def test_non_finite_numbers_lone_surrogates_and_nulls(ranked_app):
    service, url = ranked_app
    user = '"messages": [{"role": "user", "content": "hi"}]'
    with httpx.Client(base_url=url, timeout=30) as http:
        post = lambda text: http.post("/v1/chat/completions", content=text.encode())  # noqa: E731
        assert_error(post(f'{{{user}, "temperature": NaN}}'), 400, "temperature must be a finite number, got nan", "temperature")
        assert_error(post(f'{{{user}, "top_p": Infinity}}'), 400, "top_p must be a finite number, got inf", "top_p")
        assert_error(post(f'{{{user}, "temperature": 1e999}}'), 400, "temperature must be a finite number", "temperature")
        assert_error(post(f'{{{user}, "n": {"9" * 5000}}}'), 400, "the body must be a JSON object")  # too many digits for int()
        assert_error(post('{"messages": [{"role": "user", "content": "a \\ud800 b"}]}'), 400, "lone surrogate U+D800",
                     "messages[0].content")
        assert_error(post(f'{{{user}, "model": "\\udfff"}}'), 404, "'\\udfff' does not exist here", "model")
        # null is "not given", as the openai client means it: defaults apply.
        ok = post(f'{{{user}, "n": null, "temperature": null, "seed": null, "stream": null, "stop": null, "max_tokens": 2}}')
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["choices"]) == 1 and ok.json()["usage"]["completion_tokens"] <= 2


def test_bodies_that_are_not_json_objects(ranked_app, monkeypatch):
    service, url = ranked_app
    before = service.lane.uses
    limit = labeling.openai_api.body_limit(service)
    with httpx.Client(base_url=url, timeout=30) as http:
        post = lambda content: http.post("/v1/chat/completions", content=content)  # noqa: E731
        assert_error(post(b"hello"), 400, "the body must be a JSON object: Expecting value")
        assert_error(post(b""), 400, "the body must be a JSON object")
        assert_error(post(b"[1, 2]"), 400, "the body must be a JSON object, got a list")
        assert_error(post(b'"text"'), 400, "the body must be a JSON object, got str")
        assert_error(post(b"\xff\xfe\xfa"), 400, "the body must be a JSON object")
        assert_error(post(b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"), 400, "nested too deeply")
        error = assert_error(post(b'{"prompt": "' + b"x" * (limit + 10) + b'"}'), 413, f"the limit is {limit:,}")
        assert error["code"] == "request_too_large"
        chunks = (b'{"prompt": "' if k == 0 else b"x" * 65536 for k in range(3))  # no Content-Length: counted as it arrives
        assert_error(http.post("/v1/completions", content=chunks), 413, "over", None)
    assert service.lane.uses == before


def test_a_body_that_never_arrives_gets_408_not_a_hang(ranked_app, monkeypatch):
    _, url = ranked_app
    monkeypatch.setattr(labeling.openai_api, "BODY_TIMEOUT_S", 0.5)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"prompt\": ")
        start = time.monotonic()
        reply = b""
        while b"within" not in reply and (chunk := sock.recv(4096)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in reply, reply[:300]
    assert time.monotonic() - start < 5


def test_unknown_routes_and_methods(ranked_app):
    _, url = ranked_app
    with httpx.Client(base_url=url, timeout=30) as http:
        error = assert_error(http.post("/v1/embeddings", json={"input": "hi"}), 404, "unknown route POST '/v1/embeddings'")
        assert error["code"] == "unknown_url"
        assert_error(http.get("/v1/"), 404, "unknown route GET '/v1/'")
        wrong = http.get("/v1/chat/completions")
        assert_error(wrong, 405, "GET /v1/chat/completions is not allowed; use POST")
        assert wrong.headers["allow"] == "POST"
        assert_error(http.post("/v1/models"), 405, "use GET")


def test_requests_beyond_the_in_flight_bound_get_503_not_a_queue_without_end(ranked_app):
    service, url = ranked_app
    statuses = []

    def call(k):
        with httpx.Client(base_url=url, timeout=60) as http:
            statuses.append(http.post("/v1/completions", json={"prompt": f"q{k}", "max_tokens": 2}).status_code)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(labeling.openai_api.MAX_IN_FLIGHT + 1)]
    with service.lane:  # the model is busy: accepted requests wait for it
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while (service.lane.waiting() < labeling.openai_api.MAX_IN_FLIGHT or not statuses) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert statuses == [503] and service.lane.waiting() == labeling.openai_api.MAX_IN_FLIGHT
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200] * labeling.openai_api.MAX_IN_FLIGHT + [503]


def test_an_internal_error_is_a_500_without_details(ranked_app, monkeypatch):
    service, url = ranked_app

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr(service, "generate", broken)
    with httpx.Client(base_url=url, timeout=30) as http:
        response = http.post("/v1/chat/completions", json={"messages": USER})
    error = assert_error(response, 500, "internal server error", kind="server_error")
    assert "secret" not in response.text and "RuntimeError" not in response.text and error["code"] is None


# --- the standalone server: no ranker fits, rate limits ------------------------------------------


def test_without_a_ranker_choices_are_ordered_by_mean_logprob(standalone):
    service, url = standalone
    response = client(url, OTHER_TOKEN).completions.create(model=MODEL, prompt=QUESTION, n=4, max_tokens=MAX_TOKENS, seed=1)
    logprobs = [c.ranking["mean_logprob"] for c in response.choices]
    assert logprobs == sorted(logprobs, reverse=True) and sorted(c.index for c in response.choices) == [0, 1, 2, 3]
    stored = service.labels.get_request(response.ranking["request_id"])
    assert logprobs == pytest.approx(sorted(stored["mean_logprobs"], reverse=True), abs=1e-6)
    assert all(c.ranking["ranker_score"] is None and c.ranking["p_correct"] is None for c in response.choices)
    assert response.ranking["ranked_by"] == "mean_logprob" and response.ranking["ranker"] is None
    assert response.ranking["note"] == "no ranker fits this base model (no ranker loaded); choices are ordered by mean log-prob"


def test_a_rate_limited_caller_gets_429(standalone):
    service, url = standalone
    token = "0123456789abcdef" * 2
    for seed in range(2):  # 2 generations a minute per annotator
        assert len(chat(url, token, seed=seed).choices) == 4
    with pytest.raises(openai.RateLimitError, match="Slow down: you sent 2 generations in the last 60 s") as refused:
        chat(url, token)
    assert int(refused.value.response.headers["retry-after"]) > 0
    assert refused.value.body == {"message": refused.value.body["message"], "type": "rate_limit_error", "param": None,
                                  "code": "rate_limit_exceeded"}
    with httpx.Client(base_url=url, timeout=30) as http:  # the same id through the annotator header
        same = http.post("/v1/chat/completions", json={"messages": USER}, headers={"x-annotator-token": token})
    assert_error(same, 429, "Slow down", kind="rate_limit_error")
    assert len(chat(url, "fedcba9876543210" * 2).choices) == 4  # another token is another annotator
    # Keys that are not 32 hex characters identify nobody: both fall back to this client's address.
    assert len(chat(url, "sk-not-a-real-key").choices) == 4
    assert len(chat(url, "EMPTY").choices) == 4
    with pytest.raises(openai.RateLimitError):
        chat(url, "sk-another-key")


def test_the_standalone_command_serves_the_api(tiny_base, tmp_path):
    """`python -m labeling.openai_api --model FOLDER --port P`: binds 127.0.0.1, builds the app's service, stops on SIGTERM."""
    folder = tmp_path / "tiny-model"
    tiny_base.model.save_pretrained(folder)
    tiny_base.tokenizer.save_pretrained(folder)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "LANGUAGE_RANKER_DATA": str(tmp_path / "data"), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "labeling.openai_api", "--model", str(folder), "--port", str(port)],
                              cwd=Path(__file__).parents[2], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            try:
                models = httpx.get(url + "/v1/models", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start in 180 s"
                time.sleep(0.25)
        assert [m["id"] for m in models.json()["data"]] == ["tiny-model"]  # a local folder's model id is its name
        response = client(url).chat.completions.create(model="tiny-model", messages=USER, n=2, max_tokens=3)
        assert len(response.choices) == 2 and response.ranking["ranked_by"] == "mean_logprob"
        assert (tmp_path / "data").is_dir()  # the app's label store, from LANGUAGE_RANKER_DATA
        assert json.loads(httpx.get(url + "/docs").text) == {"detail": "Not Found"}  # the API only, no docs or UI
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0].decode()
    assert server.returncode == 0, output[-3000:]  # a graceful stop, through service.close()
    assert "Uvicorn running on http://127.0.0.1:" in output
