"""Plain JSON routes beside the Gradio app, for scripts that label in bulk: `POST /api/label`, `POST /api/undo`.

Same service call, same checks, same identity rules as Gradio's `/label` (`labeling.service`),
without Gradio's per-event machinery, which on 2 cores costs 15-25 ms of CPU per label
(`bench/reliability.py` measures both). Mounted by `app.py` on the app's own FastAPI server.

    POST /api/label  {"request_id": "...", "choice": "3", "client_key": "k-1"[, "annotator": "me"]}
         -> 200 {"label_id": "..."}
    POST /api/undo   {} -> 200 {"label_id": "..." | null}

Identity: the Hugging Face login of the session cookie when the Space has OAuth on; else the
header `X-Annotator-Token` (32 hex characters the client chose at random, as the browser does),
giving `anon:<id>`; else the client address. `annotator` only in local mode.
Errors: 400 bad input, 403 refused, 413 body too large, 429 rate limited (with Retry-After),
each as {"error": message}.
"""

from __future__ import annotations

import json
import math

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from labeling.identity import Forbidden
from labeling.ratelimit import RateLimited

MAX_BODY_BYTES = 4096


def oauth_username(request: Request) -> str | None:
    """The signed-in Hugging Face user, when a session middleware (Gradio's OAuth) is installed."""
    if "session" not in request.scope:
        return None
    info = request.session.get("oauth_info") or {}
    username = (info.get("userinfo") or {}).get("preferred_username")
    return username if isinstance(username, str) else None


def _error(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _body(request: Request) -> dict:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise OverflowError(f"the request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"the body must be a JSON object: {error}") from None
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a JSON object, got {type(body).__name__}")
    return body


def label_router(service) -> APIRouter:
    """The routes, bound to one `RankerService`."""
    router = APIRouter(prefix="/api")

    async def call(request: Request, action) -> JSONResponse:
        try:
            body = await _body(request)
            annotator = body.get("annotator")
            if annotator not in (None, "") and not service.config.access.local_mode:
                raise Forbidden("the annotator field is accepted only in local mode; "
                                "send X-Annotator-Token, or sign in, to have an id of your own")
            caller = service.identify(request, oauth_username(request), request.headers.get("x-annotator-token"),
                                      annotator or None)
            return JSONResponse(action(caller, body))
        except OverflowError as error:
            return _error(413, str(error))
        except RateLimited as error:
            return _error(429, str(error), **{"Retry-After": str(math.ceil(error.retry_after))})
        except Forbidden as error:
            return _error(403, str(error))
        except ValueError as error:
            return _error(400, str(error))

    @router.post("/label")
    async def label(request: Request) -> JSONResponse:
        def action(caller, body):
            unknown = set(body) - {"request_id", "choice", "client_key", "annotator"}
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}; send request_id, choice, client_key[, annotator]")
            return {"label_id": service.label(caller, body.get("request_id"), body.get("choice"), body.get("client_key") or None)}
        return await call(request, action)

    @router.post("/undo")
    async def undo(request: Request) -> JSONResponse:
        return await call(request, lambda caller, body: {"label_id": service.undo(caller)})

    return router
