"""Who is calling: the annotator id, the client address, and whether the caller may run admin actions.

Annotator ids come from the request, never from a free-text argument anyone could set:
- `hf:<username>`: logged in with Hugging Face OAuth on a Space (`gr.LoginButton`), or with
  Gradio's own `auth=` login (`request.username`);
- `anon:<16 hex>`: anonymous. In the browser the id is a random token kept in the browser's
  local storage (`gr.BrowserState`), so it survives page reloads; an API client without one
  gets an id derived from its session (`session_hash`), stable for that client object;
- `local:<name>`: only in local mode (`AccessConfig.local_mode`), a script may name its
  annotator with the `annotator` argument.

Admin actions (retrain now, rollback, bootstrap) are allowed for the user names listed in
`LANGUAGE_RANKER_ADMINS` (comma-separated Hugging Face user names), for a caller that presents
`LANGUAGE_RANKER_ADMIN_TOKEN` (compared in constant time), and in local mode for callers from
a loopback address. Everyone else gets `Forbidden`.

Local mode (`LANGUAGE_RANKER_LOCAL_MODE=1`/`0`) is on by default only when the app is not on a
Space (`SPACE_ID` unset) and serves on a loopback address; a Space is never in local mode
unless told so. The client address for rate limits is the TCP peer, or on a Space (behind
its proxy) the first `X-Forwarded-For` hop (`LANGUAGE_RANKER_TRUST_PROXY` overrides).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

ANON_TOKEN = re.compile(r"^[0-9a-f]{32}$")
LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class Forbidden(ValueError):
    """The caller may not do this (an admin action by a non-admin)."""


@dataclass(frozen=True)
class AccessConfig:
    """Roles and identity rules (see the module docstring)."""

    admins: frozenset[str] = frozenset()  # Hugging Face user names
    admin_token: str | None = field(default=None, repr=False)
    local_mode: bool = False
    trust_proxy: bool = False  # take the client address from X-Forwarded-For

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, server_name: str = "127.0.0.1") -> "AccessConfig":
        environ = os.environ if environ is None else environ
        on_space = bool(environ.get("SPACE_ID"))
        admins = frozenset(name.strip() for name in environ.get("LANGUAGE_RANKER_ADMINS", "").split(",") if name.strip())
        token = environ.get("LANGUAGE_RANKER_ADMIN_TOKEN", "").strip() or None
        if token is not None and len(token) < 16:
            raise ValueError("LANGUAGE_RANKER_ADMIN_TOKEN must be at least 16 characters long")
        local = _flag(environ, "LANGUAGE_RANKER_LOCAL_MODE", default=not on_space and _is_loopback(server_name))
        proxy = _flag(environ, "LANGUAGE_RANKER_TRUST_PROXY", default=on_space)
        return cls(admins=admins, admin_token=token, local_mode=local, trust_proxy=proxy)


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1 or 0, got {environ[name]!r}")


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Caller:
    """One request's identity, as the service sees it."""

    annotator: str  # "hf:NAME", "anon:HEX" or "local:NAME"
    client: str  # the client address, for per-client rate limits
    is_admin: bool
    username: str | None = None  # the Hugging Face user name when logged in

    def require_admin(self, action: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"{action} is for admins only (LANGUAGE_RANKER_ADMINS, or the admin token); "
                            f"you are {self.annotator}")


def _anonymous_id(secret: str) -> str:
    return "anon:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def client_address(request, trust_proxy: bool) -> str:
    """The caller's address: the TCP peer, or the first X-Forwarded-For hop behind a trusted proxy."""
    headers = getattr(request, "headers", None) or {}
    if trust_proxy:
        forwarded = headers.get("x-forwarded-for", "") if hasattr(headers, "get") else ""
        first = forwarded.split(",")[0].strip()
        if first:
            return first[:64]
    peer = getattr(request, "client", None)
    return str(getattr(peer, "host", None) or "unknown")[:64]


def identify(
    config: AccessConfig,
    request=None,
    oauth_username: str | None = None,
    browser_token: str | None = None,
    annotator: str | None = None,
    admin_token: str | None = None,
) -> Caller:
    """The Caller of one request (see the module docstring for the rules).

    request: a `gr.Request` (or anything with `username`, `session_hash`, `client`, `headers`),
    None for in-process calls (scripts and tests), which act as a local client.
    oauth_username: `gr.OAuthProfile.username` when logged in on a Space.
    browser_token: the 32-hex random token the browser keeps in `gr.BrowserState`.
    annotator: honoured only in local mode; ValueError when malformed.
    """
    client = client_address(request, config.trust_proxy) if request is not None else "in-process"
    username = oauth_username or (getattr(request, "username", None) if request is not None else None)
    if isinstance(username, str) and username.strip():
        username = username.strip()[:96]
        who = f"hf:{username}"
    elif config.local_mode and annotator not in (None, ""):
        if not isinstance(annotator, str) or not LOCAL_NAME.match(annotator.strip()):
            raise ValueError(f"annotator must be 1-64 letters, digits, '_', '.', '@' or '-', got {annotator!r}")
        username, who = None, f"local:{annotator.strip()}"
    elif isinstance(browser_token, str) and ANON_TOKEN.match(browser_token):
        username, who = None, _anonymous_id("browser:" + browser_token)
    else:
        session = getattr(request, "session_hash", None) if request is not None else None
        username, who = None, _anonymous_id(f"session:{session or client}")
    token_ok = bool(config.admin_token and isinstance(admin_token, str)
                    and hmac.compare_digest(admin_token.encode(), config.admin_token.encode()))
    local_admin = config.local_mode and (request is None or _is_loopback(client))
    is_admin = token_ok or local_admin or (username is not None and username in config.admins)
    return Caller(annotator=who, client=client, is_admin=is_admin, username=username)
