"""`ModelLane`: the one lane through which every use of the shared base model passes.

User generations, the bootstrap's sampling and the reward model's forward passes all run
inside `with lane:`. Why one lane: the capture hooks sit on the shared model and sampling
seeds torch's global RNG, so two concurrent users of the model can get each other's
features or random draws; and on a small CPU two forward passes at once only thrash.

The lane is first come, first served (a ticket queue, not a bare lock, whose wake-up order is
unspecified), so a long bootstrap that takes the lane once per batch of prompts lets waiting
user requests in between its batches instead of starving them.
"""

from __future__ import annotations

import threading
import time


class ModelLane:
    """A FIFO mutex with counters; re-entrant for the thread that holds it."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._owner: int | None = None
        self._depth = 0
        self.uses = 0  # times the lane was entered (outermost only)
        self.waited_s = 0.0  # total time callers waited for it
        self.max_waiting = 0  # most callers queued at once

    def __enter__(self) -> "ModelLane":
        me = threading.get_ident()
        with self._condition:
            if self._owner == me:
                self._depth += 1
                return self
            ticket = self._next_ticket
            self._next_ticket += 1
            self.max_waiting = max(self.max_waiting, self._next_ticket - self._serving - 1)
            start = time.perf_counter()
            while ticket != self._serving:
                self._condition.wait()
            self.waited_s += time.perf_counter() - start
            self._owner, self._depth = me, 1
            self.uses += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._condition:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._serving += 1
                self._condition.notify_all()

    @property
    def busy(self) -> bool:
        return self._owner is not None

    def waiting(self) -> int:
        """Callers queued behind the holder."""
        with self._condition:
            return max(0, self._next_ticket - self._serving - (1 if self._owner is not None else 0))
