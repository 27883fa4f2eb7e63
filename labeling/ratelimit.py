"""Sliding-window rate limits per key (an annotator or a client address), for labels and generations.

A `Rate` is "at most `count` events in any `seconds` window", written "20/60" in the
environment. `RateLimiter.hit(key)` records one event or raises `RateLimited` (a ValueError
whose message says how long to wait), so a refused event is never counted. Memory is bounded:
at most `count` timestamps per key and `max_keys` keys (the least recently used key is dropped
first, which can only make the limit more lenient for a key unseen for a long time).

Variables (`RateLimits.from_env`), defaults in brackets:
    LANGUAGE_RANKER_RATE_LABELS_PER_ANNOTATOR       [30/60]
    LANGUAGE_RANKER_RATE_LABELS_PER_CLIENT          [120/60]
    LANGUAGE_RANKER_RATE_GENERATIONS_PER_ANNOTATOR  [10/60]
    LANGUAGE_RANKER_RATE_GENERATIONS_PER_CLIENT     [30/60]
"0/1" (or any count 0) turns a limit off.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, fields


class RateLimited(ValueError):
    """Refused: too many events for one key. `retry_after` is in seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Rate:
    """At most `count` events per `seconds`; count 0 means no limit."""

    count: int
    seconds: float

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise ValueError(f"rate count must be an int >= 0, got {self.count!r}")
        if not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"rate window must be > 0 seconds, got {self.seconds!r}")

    @classmethod
    def parse(cls, text: str) -> "Rate":
        """"20/60" -> 20 events per 60 s."""
        count, slash, seconds = str(text).partition("/")
        try:
            return cls(int(count), float(seconds))
        except ValueError:
            raise ValueError(f"a rate is written COUNT/SECONDS, e.g. 20/60; got {text!r}") from None

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds:g}s" if self.count else "unlimited"


class RateLimiter:
    """Thread-safe sliding-window limiter; `what` names the events in messages ("labels")."""

    def __init__(self, rate: Rate, what: str, max_keys: int = 100_000, clock=time.monotonic):
        self.rate, self.what, self.max_keys, self.clock = rate, what, max_keys, clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str, who: str = "you") -> None:
        """Count one event for `key`, or raise RateLimited without counting it."""
        if not self.rate.count:
            return
        now = self.clock()
        with self._lock:
            events = self._events.get(key)
            if events is None:
                events = self._events[key] = deque()
                if len(self._events) > self.max_keys:
                    self._events.popitem(last=False)
            self._events.move_to_end(key)
            while events and events[0] <= now - self.rate.seconds:
                events.popleft()
            if len(events) >= self.rate.count:
                wait = events[0] + self.rate.seconds - now
                raise RateLimited(f"Slow down: {who} sent {self.rate.count} {self.what} in the last "
                                  f"{self.rate.seconds:g} s, the limit; try again in {math.ceil(wait)} s", wait)
            events.append(now)


@dataclass(frozen=True)
class RateLimits:
    """The four limits the service applies (see the module docstring)."""

    labels_per_annotator: Rate = Rate(30, 60)
    labels_per_client: Rate = Rate(120, 60)
    generations_per_annotator: Rate = Rate(10, 60)
    generations_per_client: Rate = Rate(30, 60)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RateLimits":
        environ = os.environ if environ is None else environ
        values = {}
        for spec in fields(cls):
            name = f"LANGUAGE_RANKER_RATE_{spec.name.upper()}"
            if name in environ:
                try:
                    values[spec.name] = Rate.parse(environ[name])
                except ValueError as error:
                    raise ValueError(f"{name}: {error}") from None
        return cls(**values)

    @classmethod
    def unlimited(cls) -> "RateLimits":
        off = Rate(0, 1)
        return cls(off, off, off, off)
