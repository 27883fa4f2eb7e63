"""OpenAI-compatible routes over `RankerService`: sample N answers, return them best first.

    POST /v1/chat/completions  {"messages": [{"role": "user", "content": "What is 7 + 5?"}], "n": 8}
    POST /v1/completions       {"prompt": "What is 7 + 5?", "n": 8}
    GET  /v1/models            the loaded base model (GET /v1/models/{id}: that one, or 404)

Mounted by `app.py` on the app's own server, beside the label routes (`labeling.http_api`);
`python -m labeling.openai_api --port 8000` serves the same routes on their own (127.0.0.1 unless
`--host` says otherwise), with the service the app builds from the same environment.

Requests: `model` (optional; must be the loaded model's id), `n` (default 1, as OpenAI's),
`temperature`, `top_p`, `max_tokens` (chat also takes `max_completion_tokens`), `seed`, `stream`
(false only), `user` (accepted, ignored), and three extensions: `rank_only` (return only the
best choice), `ranker` (a name the service's `ranker()` accepts, default "latest retrained") and
`reward_model` (add the reward model's score). Any other field is refused unless it is null.
Chat messages: optional system (or developer) messages, then one user message, all with string
content. The service formats a prompt as the app does (one user turn in the base model's chat
template), so system messages are joined to the user's text with a blank line in that turn.
Completions prompts go through the same chat template.

Responses have OpenAI's shape. `choices` are ordered best first by the live ranker (by mean
log-prob, saying so, when no ranker fits the model); each choice's `index` is its sampling order.
Extensions: per choice `ranking` {rank, ranker_score, p_correct, mean_logprob, tokens[, rm_score]},
and on the response `ranking` {request_id, ranked_by, ranker, candidates[, note][, reward_model]}.
The request is stored like an app request: label it with POST /api/label and its request_id
(`choice` = a choice's `index`). `usage.completion_tokens` counts all N sampled candidates.

Identity (who the rate limits count): the Hugging Face login of the session cookie, else the
header X-Annotator-Token, else `Authorization: Bearer <token>` when the token is 32 lowercase
hex characters (the same anonymous id), else the client address: so the "sk-..." or "EMPTY"
keys OpenAI clients send are accepted and simply identify nobody.

Errors: {"error": {"message", "type", "param", "code"}} with 400 bad input (param names the
field), 403, 404 unknown model or route, 405, 408 body too slow, 413 body too large, 429 rate
limited (Retry-After), 503 too many requests in flight, 500 (no details). Everything is checked,
and the prompt's tokens counted, before any model work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

from labeling.http_api import label_router, oauth_username
from labeling.identity import ANON_TOKEN, Forbidden
from labeling.limits import check_prompt, check_sampling, clean_text
from labeling.ratelimit import RateLimited
from labeling.service import LATEST, Generation, RankerService

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]  # the repository: assets/ (shipped rankers, RM, task data)
DEFAULT_MAX_TOKENS = 64  # when a request does not say; lowered to fit the service's N x tokens budget
MAX_MESSAGES = 32
BODY_TIMEOUT_S = 30.0  # a client that stops sending its body gets 408 instead of holding a slot
MAX_IN_FLIGHT = 8  # generations accepted at once (they queue for the one model lane); more get 503
SAMPLING_FIELDS = ("n", "temperature", "top_p", "max_tokens", "seed")
COMMON_FIELDS = frozenset({"model", *SAMPLING_FIELDS, "stream", "user", "rank_only", "ranker", "reward_model"})
FIELDS = {"chat": COMMON_FIELDS | {"messages", "max_completion_tokens"}, "text": COMMON_FIELDS | {"prompt"}}
ROLES = ("system", "developer", "user", "assistant")  # developer: OpenAI's newer name for system
FINISH_REASONS = {"eos": "stop", "length": "length"}
# check_sampling's names for the sampling fields (it serves the app's sliders) -> this API's names.
SAMPLING_NAMES = (("N x max new tokens", "n x max_tokens", "max_tokens"), ("N ", "n ", "n"),
                  ("max new tokens", "max_tokens", "max_tokens"), ("temperature", "temperature", "temperature"),
                  ("top_p", "top_p", "top_p"), ("seed", "seed", "seed"))


class APIError(Exception):
    """One OpenAI-style error response."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def response(self) -> Response:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        # ensure_ascii: a message may quote a client's string, lone surrogates included.
        return Response(json.dumps(body, ensure_ascii=True), status_code=self.status, headers=self.headers,
                        media_type="application/json")


def _show(value) -> str:
    """A client's value for an error message: short, and safe whatever it holds."""
    if isinstance(value, (dict, list)):
        return f"a {'JSON object' if isinstance(value, dict) else 'list'}"
    text = "true" if value is True else "false" if value is False else "null" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- the request body --------------------------------------------------------------------------


def body_limit(service: RankerService) -> int:
    """Bytes a body may have: room for the longest prompt the limits allow, each character \\u-escaped."""
    return 16_384 + 12 * service.config.limits.max_prompt_chars


async def read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object, read at most `limit` bytes far; APIError 400, 408 or 413 otherwise."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body is {int(declared):,} bytes; the limit is {limit:,}", code="request_too_large")
    chunks, size = [], 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"the request body is over {limit:,} bytes, the limit", code="request_too_large")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
        raise APIError(408, f"the request body did not arrive within {BODY_TIMEOUT_S:g} s", code="timeout") from None
    try:
        body = json.loads(b"".join(chunks))  # NaN and Infinity parse to floats; each field's check refuses them
    except RecursionError:
        raise APIError(400, "the body is not usable JSON: it is nested too deeply") from None
    except ValueError as error:  # invalid JSON, invalid UTF-8, a 5000-digit integer
        raise APIError(400, f"the body must be a JSON object: {str(error)[:200]}") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the body must be a JSON object, got {_show(body) if isinstance(body, list) else type(body).__name__}")
    return body


@dataclass(frozen=True)
class CompletionRequest:
    """One validated request (either endpoint); the sampling values are within the service's limits."""

    prompt: str  # what the service samples from (inside the chat template)
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int  # -1: random
    ranker: str
    rank_only: bool
    reward_model: bool


def _field(body: dict, name: str, kind: str, default):
    """body[name] checked against a JSON type ("integer", "number", "boolean", "string"); null means absent."""
    value = body.get(name)
    if value is None:
        return default
    ok = {"integer": isinstance(value, int) and not isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
          "boolean": isinstance(value, bool), "string": isinstance(value, str)}[kind]
    if not ok:
        what = "a finite number" if kind == "number" else f"a {kind}" if kind == "string" else f"an {kind}" if kind == "integer" else "true or false"
        raise APIError(400, f"{name} must be {what}, got {_show(value)}", param=name)
    return value


def _sampling_error(error: ValueError, tokens_field: str) -> APIError:
    """check_sampling's error in this API's words: the field it is about, as the client named it."""
    message = str(error)
    for theirs, ours, param in SAMPLING_NAMES:
        if message.startswith(theirs):
            return APIError(400, (ours + message[len(theirs):]).replace("max_tokens", tokens_field),
                            param=param.replace("max_tokens", tokens_field))
    return APIError(400, message)


def messages_prompt(messages, max_chars: int) -> str:
    """The prompt for a chat request: system messages, then the user message, joined by blank lines."""
    if not isinstance(messages, list):
        raise APIError(400, f"messages must be a list of {{role, content}} objects, got {_show(messages)}", param="messages")
    if not messages:
        raise APIError(400, "messages is empty; send one user message (after optional system messages)", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise APIError(400, f"messages must hold 1 to {MAX_MESSAGES} messages, got {len(messages)}", param="messages")
    roles, contents = [], []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise APIError(400, f"{where} must be an object with role and content, got {_show(message)}", param=where)
        unknown = sorted(set(message) - {"role", "content", "name"})
        if unknown:
            raise APIError(400, f"{where} has unsupported fields {[name[:40] for name in unknown[:5]]}; send role and content",
                           param=where)
        if message.get("name") is not None and not isinstance(message["name"], str):
            raise APIError(400, f"{where}.name must be a string, got {_show(message['name'])}", param=f"{where}.name")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise APIError(400, f"{where}.role must be one of {list(ROLES)}, got {_show(role)}", param=f"{where}.role")
        content = message.get("content")
        if not isinstance(content, str):
            raise APIError(400, f"{where}.content must be a string (content parts are not supported), got {_show(content)}",
                           param=f"{where}.content")
        try:
            contents.append(clean_text(f"{where}.content", content, max_chars))
        except ValueError as error:
            raise APIError(400, str(error), param=f"{where}.content") from None
        roles.append(role)
    if "assistant" in roles:
        where = f"messages[{roles.index('assistant')}]"
        raise APIError(400, f"{where}: conversations with assistant turns are not supported; this server ranks answers to "
                       "one prompt: send system messages, then one user message", param=f"{where}.role")
    if roles[-1] != "user" or roles.count("user") != 1:
        raise APIError(400, "messages must be system messages (optional) followed by exactly one user message, "
                       f"got roles {roles}", param="messages")
    return "\n\n".join(contents)


def parse_request(service: RankerService, body: dict, kind: str) -> CompletionRequest:
    """Validate a chat ("chat") or completions ("text") body; APIError naming the first bad field.

    Checks what the service would (sampling ranges, prompt text and tokens, the ranker name), with
    this API's field names, so a bad request costs no model work and says which field is wrong.
    """
    unknown = sorted(name for name in set(body) - FIELDS[kind] if body[name] is not None)
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise APIError(400, f"unsupported parameter {shown}; this endpoint accepts {sorted(FIELDS[kind])}",
                       param=unknown[0][:40])
    base = service.base
    if base is None:
        raise APIError(503, "the server has not loaded a base model yet", kind="server_error")
    model = _field(body, "model", "string", None)
    if model is not None and model != base.fingerprint.model_id:
        raise APIError(404, f"the model {_show(model)} does not exist here; this server runs {base.fingerprint.model_id!r} "
                       "(GET /v1/models)", param="model", code="model_not_found")
    if _field(body, "stream", "boolean", False):
        raise APIError(400, "stream: streaming is not supported; send stream: false (or leave it out)", param="stream")
    _field(body, "user", "string", None)
    limits = service.config.limits
    n = _field(body, "n", "integer", 1)
    max_tokens = _field(body, "max_tokens", "integer", None)
    if kind == "chat":
        newer = _field(body, "max_completion_tokens", "integer", None)
        if newer is not None and max_tokens is not None and newer != max_tokens:
            raise APIError(400, f"max_tokens ({max_tokens}) and max_completion_tokens ({newer}) disagree; send one",
                           param="max_completion_tokens")
        max_tokens, tokens_field = (newer, "max_completion_tokens") if newer is not None else (max_tokens, "max_tokens")
    else:
        tokens_field = "max_tokens"
    if max_tokens is None and 1 <= n <= limits.max_candidates:
        max_tokens = max(1, min(DEFAULT_MAX_TOKENS, limits.max_new_tokens, limits.max_total_tokens // n))
    temperature = _field(body, "temperature", "number", 1.0)
    top_p = _field(body, "top_p", "number", 1.0)
    seed = _field(body, "seed", "integer", -1)
    try:
        sampling = check_sampling(limits, n, temperature, top_p, DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens, seed)
    except ValueError as error:
        raise _sampling_error(error, tokens_field) from None
    rank_only = _field(body, "rank_only", "boolean", False)
    reward_model = _field(body, "reward_model", "boolean", False)
    ranker = _field(body, "ranker", "string", LATEST)
    try:
        service.ranker(ranker)
    except ValueError as error:
        raise APIError(400, str(error), param="ranker") from None
    if kind == "chat":
        if "messages" not in body:
            raise APIError(400, "messages is required: a list of {role, content} objects", param="messages")
        prompt, param = messages_prompt(body["messages"], limits.max_prompt_chars), "messages"
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise APIError(400, f"prompt must be a string (lists of prompts and token ids are not supported), got {_show(prompt)}",
                           param="prompt")
        param = "prompt"
    try:
        prompt, _ = check_prompt(limits, base, prompt, sampling.max_new_tokens)
    except ValueError as error:
        raise APIError(400, f"{param}: {error}", param=param) from None
    return CompletionRequest(prompt, sampling.num_candidates, sampling.temperature, sampling.top_p, sampling.max_new_tokens,
                             -1 if sampling.seed is None else sampling.seed, ranker, rank_only, reward_model)


def caller_of(service: RankerService, request: Request):
    """The Caller: OAuth session, else X-Annotator-Token, else a 32-hex bearer token, else the client address."""
    token = request.headers.get("x-annotator-token")
    if not (isinstance(token, str) and ANON_TOKEN.match(token)):
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" and ANON_TOKEN.match(bearer.strip()) else None
    return service.identify(request, oauth_username(request), token)


# --- the response ------------------------------------------------------------------------------


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def ranked_order(generation: Generation) -> tuple[list[int], str]:
    """Candidate indices best first, and by what: "ranker", or "mean_logprob" when no ranker scored them."""
    result = generation.result
    if result.ranker_scores is not None:
        return result.ranker_order(), "ranker"
    return torch.argsort(result.mean_logprob, descending=True, stable=True).tolist(), "mean_logprob"


def completion_body(service: RankerService, generation: Generation, request: CompletionRequest, kind: str) -> dict:
    """The OpenAI response for one generation: choices best first, with the `ranking` extensions."""
    result = generation.result
    order, ranked_by = ranked_order(generation)
    choices = []
    for rank, index in enumerate(order[:1] if request.rank_only else order, start=1):
        ranking = {"rank": rank,
                   "ranker_score": None if result.ranker_scores is None else _finite(result.ranker_scores[index]),
                   "p_correct": None if result.probabilities is None else _finite(result.probabilities[index]),
                   "mean_logprob": _finite(result.mean_logprob[index]), "tokens": int(result.num_tokens[index])}
        if request.reward_model:
            ranking["rm_score"] = None if result.rm_scores is None else _finite(result.rm_scores[index])
        choice = {"index": index, "finish_reason": FINISH_REASONS.get(result.finish_reasons[index], "stop"), "logprobs": None}
        if kind == "chat":
            choice["message"] = {"role": "assistant", "content": result.texts[index], "refusal": None}
        else:
            choice["text"] = result.texts[index]
        choice["ranking"] = ranking
        choices.append(choice)
    summary = {"request_id": generation.request_id, "ranked_by": ranked_by,
               "ranker": generation.ranker_name if ranked_by == "ranker" else None, "candidates": result.num_candidates}
    if ranked_by == "mean_logprob":
        reason = service.unranked_reason() or f"the ranker {generation.ranker_name!r} is not available for this base model"
        summary["note"] = f"no ranker fits this base model ({reason}); choices are ordered by mean log-prob"
    if request.reward_model:
        summary["reward_model"] = service.rm_note
    completion_tokens = int(sum(result.num_tokens))  # every sampled candidate, shown or not
    return {
        "id": ("chatcmpl-" if kind == "chat" else "cmpl-") + generation.request_id,
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": service.base.fingerprint.model_id,
        "system_fingerprint": None,
        "choices": choices,
        "usage": {"prompt_tokens": generation.prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": generation.prompt_tokens + completion_tokens},
        "ranking": summary,
    }


def _model_card(service: RankerService, created: int) -> dict:
    return {"id": service.base.fingerprint.model_id, "object": "model", "created": created, "owned_by": "language-ranker"}


# --- the routes --------------------------------------------------------------------------------


def openai_router(service: RankerService) -> APIRouter:
    """The /v1 routes, bound to one started `RankerService`."""
    router = APIRouter(prefix="/v1")
    created = int(time.time())
    in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
    routes = {"/v1/chat/completions": "POST", "/v1/completions": "POST", "/v1/models": "GET"}

    def complete(request: Request, body: dict, kind: str) -> dict:
        parsed = parse_request(service, body, kind)
        caller = caller_of(service, request)
        if not in_flight.acquire(blocking=False):
            raise APIError(503, f"{MAX_IN_FLIGHT} generations are already running or queued; try again shortly",
                           kind="server_error", code="overloaded", headers={"Retry-After": "5"})
        try:
            generation = service.generate(caller, parsed.prompt, parsed.n, parsed.temperature, parsed.top_p,
                                          parsed.max_tokens, parsed.seed, parsed.ranker, blind=False,
                                          with_rm=parsed.reward_model)  # the RM's own passes only when asked for
        finally:
            in_flight.release()
        return completion_body(service, generation, parsed, kind)

    async def handle(request: Request, kind: str) -> Response:
        try:
            body = await read_json(request, body_limit(service))
            content = await run_in_threadpool(complete, request, body, kind)  # sampling blocks: not on the event loop
            return Response(json.dumps(content, ensure_ascii=False, allow_nan=False), media_type="application/json")
        except APIError as error:
            return error.response()
        except RateLimited as error:
            return APIError(429, str(error), kind="rate_limit_error", code="rate_limit_exceeded",
                            headers={"Retry-After": str(max(1, math.ceil(error.retry_after)))}).response()
        except Forbidden as error:
            return APIError(403, str(error), kind="permission_error").response()
        except ValueError as error:  # the service's own checks (they name the value)
            return APIError(400, str(error)).response()
        except Exception:
            logger.exception("OpenAI-compatible %s request failed", kind)
            return APIError(500, "internal server error; the server log has the details", kind="server_error").response()

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await handle(request, "chat")

    @router.post("/completions")
    async def completions(request: Request) -> Response:
        return await handle(request, "text")

    @router.get("/models")
    async def models() -> Response:
        if service.base is None:
            return APIError(503, "the server has not loaded a base model yet", kind="server_error").response()
        return Response(json.dumps({"object": "list", "data": [_model_card(service, created)]}), media_type="application/json")

    @router.get("/models/{model_id:path}")
    async def model(model_id: str) -> Response:
        if service.base is None or model_id != service.base.fingerprint.model_id:
            return APIError(404, f"the model {_show(model_id)} does not exist here (GET /v1/models)", param="model",
                            code="model_not_found").response()
        return Response(json.dumps(_model_card(service, created)), media_type="application/json")

    @router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
    async def unknown(request: Request, path: str) -> Response:
        route = "/v1/" + path
        if route in routes:  # the path exists; the method does not
            return APIError(405, f"{request.method} {route} is not allowed; use {routes[route]}",
                            headers={"Allow": routes[route]}).response()
        return APIError(404, f"unknown route {request.method} {route[:100]!r}; this server has POST /v1/chat/completions, "
                        "POST /v1/completions and GET /v1/models", code="unknown_url").response()

    return router


def create_app(service: RankerService) -> FastAPI:
    """The standalone server: these routes and the JSON label routes (`labeling.http_api`), no UI."""
    api = FastAPI(title="Language Ranker", docs_url=None, redoc_url=None, openapi_url=None)
    api.include_router(openai_router(service))
    api.include_router(label_router(service))
    return api


def main(argv: list[str] | None = None) -> None:
    """`python -m labeling.openai_api [--host 127.0.0.1] [--port 8000] [--model NAME]`: serve the API only."""
    import argparse

    import uvicorn

    from labeling.service import ServiceConfig
    from ranker.capture.base_model import load_base_model

    parser = argparse.ArgumentParser(description="Serve the OpenAI-compatible Language Ranker API (no UI).")
    parser.add_argument("--model", help="hub id, local folder or .gguf file (default: $LANGUAGE_RANKER_MODEL, else the embedded model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # the app's service, from the same environment (labeling.service docstring)
        service = RankerService(ServiceConfig.from_env(ROOT, server_name=args.host))
        service.start(load_base_model(args.model))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    # uvicorn stops gracefully on SIGTERM, then raises it again: exit through `finally` (the last Hub push).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="info")
    finally:
        service.close()


if __name__ == "__main__":
    main()
