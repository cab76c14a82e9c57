"""Turns: the embedded HTTP server's request threads do their CPU work one at a time, in order.

Under the GIL only one thread runs Python at a time anyway, but *which* one
is left to the GIL, and it is not fair: a thread that releases it for a
quick system call usually takes it straight back, and the others wait for
the switch interval, again and again. With 32 busy connections on one core
(bench/shim) a request's own 0.3 ms of work then took 10-20 ms to get done
for one request in ten, and p99 latency was twice gevent's, whose event loop
serves ready connections first come, first served.

So each request takes a *turn* (:class:`Turns`) before the server reads it
and gives it back once the response is sent: turns are handed over in
arrival order, one holder at a time, so requests run to completion in
order, as on an event loop. Two things keep a turn from holding up the
others when the holder waits instead of computing:

* code that may block -- servicer handlers, guards, the fallback Flask app --
  runs *outside* the turn: the WSGI app calls the context manager it finds
  under :data:`OUTSIDE_TURN_ENVIRON_KEY` in the environ around it, and takes
  a new turn afterwards, at the head of the line (it waited once already). Only apps that say they
  do this (:func:`yields_turns`: ``rpckit.http.Shim``) are served with turns.
  Stepping out and back costs two hand-overs (two thread switches), more
  than a typical handler, so calls that have been quick lately
  (:class:`QuickCalls`: under :data:`QUICK_CALL_S`) stay inside;
* a lease: once a holder has kept the turn ``lease_s``, the next in line
  gets a turn too (the holder goes on without one), so a slow client or an
  unexpected wait delays the line at most that long.

The line itself is bounded in time, not in length: a request that has waited
``max_wait_s`` for its turn leaves the line. Turns order requests that would
otherwise fight for the GIL; they must not become a queue of their own. Under
overload (bench/overload's seed profile through the shim at 3x) an unbounded
line grew to ~250 ms, in front of admission control: every request reached
admission with its route's timeout nearly spent, most were served too late to
count, 80-90% of the handlers' CPU was wasted and goodput fell to 3-56 req/s.

What a request that leaves the line does depends on the line (CoDel's idea:
a queue that does not drain within an interval is a standing one):

* after a short stall (a slow holder, a collection, a busy neighbour) it goes on
  without a turn: it can still be served in time, and refusing it would refuse
  a call the server could serve;
* once requests have been leaving the line for ``standing_s``, with no gap that
  long between two of them, the server's front end itself is short of CPU.
  A request leaving the line is then *refused* (503 with
  ``Retry-After``, before it is parsed), not let loose: every request that goes
  on without a turn is one more thread fighting for the GIL, so letting them
  all loose slows every request in the process (bench/overload at 3x: requests
  waited 60-150 ms for the GIL to leave the line, admission's predictions
  erred short, and runs swung between 100 and 25 req/s). Refusals stop once no
  request has had to leave the line for ``standing_s``. A request coming back
  from outside its turn with its answer is never refused. While the line stands
  with someone in it, a newcomer would leave it refused too: the server's front
  door asks :meth:`Turns.turning_away` and answers such a request before any
  request thread picks it up.

Threads here wait on their own lock, handed over explicitly: no thread wakes
to find the turn taken.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

__all__ = [
    "MAX_LINE_WAIT_S",
    "OUTSIDE_TURN_ENVIRON_KEY",
    "QUICK_CALL_S",
    "RECEIVED_AT_ENVIRON_KEY",
    "REFUSED",
    "STANDING_LINE_S",
    "OutsideTurn",
    "QuickCalls",
    "TurnHold",
    "Turns",
    "yields_turns",
]

#: WSGI environ key of a context manager factory: code run inside it runs without
#: the request's turn (present only when the server serves the app with turns).
OUTSIDE_TURN_ENVIRON_KEY = "rpckit.outside_turn"

#: WSGI environ key of the ``time.monotonic()`` at which the HTTP server saw the
#: request coming (its connection turned readable, or connected): the start of
#: the client's wait, before any time spent in the server's own queues. A route's
#: timeout counts from here, so a request that waited unseen for a thread or a
#: turn is not given more time than its client has left.
RECEIVED_AT_ENVIRON_KEY = "rpckit.received_at"


#: What the environ holds under that key: ``with outside(): ...``.
OutsideTurn = Callable[[], contextlib.AbstractContextManager[Any]]

#: A call whose recent run time (wall clock) is below this stays inside the turn.
#: Stepping out and back costs ~20-40 us of thread switches on one core
#: (bench/shim), as much as a quick handler; a call that waits instead of
#: computing is soon over this and runs outside from then on, and the lease
#: bounds what its slow calls cost until then.
QUICK_CALL_S = 0.001

#: How long a request waits in line for a turn before it leaves the line. bench/shim's
#: 32 closed-loop connections on one core wait up to ~20 ms in line and are served in
#: time: at 5 ms the line counted as standing there and refused thousands of them 503.
#: Under overload the line grew to ~250 ms, the seed profile's whole route timeout.
MAX_LINE_WAIT_S = 0.05

#: How long requests must have been leaving the line (no gap this long between two) before
#: the next ones are refused instead of let loose; also the gap that ends it (CoDel's interval).
STANDING_LINE_S = 0.1

#: What :meth:`Turns.acquire` returns to a request refused from a standing line.
REFUSED: Final = object()

#: Weight of the newest sample in a call's run-time average.
_QUICK_ALPHA = 0.2


def yields_turns(app: object) -> bool:
    """Whether a WSGI app runs code that may block outside its turn (``app.yields_turns``)."""
    return getattr(app, "yields_turns", False) is True


class _Waiter:
    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()  # released by the hand-over


class Turns:
    """Turns handed out in arrival order, one holder at a time, with a lease and a bounded
    wait in line (module docstring)."""

    def __init__(
        self,
        *,
        lease_s: float,
        max_wait_s: float = MAX_LINE_WAIT_S,
        standing_s: float = STANDING_LINE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("lease_s", lease_s), ("max_wait_s", max_wait_s)):
            if not value > 0:
                raise ValueError(f"Turns {name} must be > 0, got {value!r}")
        if not standing_s >= 0:
            raise ValueError(f"Turns standing_s must be >= 0, got {standing_s!r}")
        self.lease_s = lease_s
        self.max_wait_s = max_wait_s
        self.standing_s = standing_s
        self._clock = clock
        self._mutex = threading.Lock()
        self._holder: object | None = None  # the current holder's token
        self._since = 0.0  # when it got the turn
        self._line: collections.deque[_Waiter] = collections.deque()
        # Since when requests have been leaving the line without a gap of standing_s, and
        # when the last one did.
        self._stalled_since = -math.inf
        self._last_left = -math.inf
        self.expired = 0  # leases that ran out (holders that kept the turn too long)
        self.gave_up = 0  # requests that left the line after a stall and went on without a turn
        self.refused = 0  # requests that left a standing line and were refused

    def acquire(self, *, first: bool = False) -> object | None:
        """Wait for a turn; returns the token to :meth:`release` it with; None if the
        wait reached ``max_wait_s`` after a stall (go on without a turn; releasing None
        does nothing); :data:`REFUSED` if it did in a standing line (module docstring).

        ``first``: go to the head of the line, for a request coming back from
        outside its turn (it had waited its turn already; never refused).
        """
        with self._mutex:
            now = self._clock()
            if self._holder is None:
                token = object()
                self._holder, self._since = token, now
                return token
            give_up_at = now + self.max_wait_s
            waiter = _Waiter()
            if first:
                self._line.appendleft(waiter)
            else:
                self._line.append(waiter)
        try:
            while True:
                with self._mutex:
                    if self._holder is waiter:
                        return waiter
                    now = self._clock()
                    lease_left = self._since + self.lease_s - now
                    if lease_left <= 0:  # the holder outstayed its lease: the line moves on
                        self.expired += 1
                        self._hand_over()
                        if self._holder is waiter:
                            return waiter
                        lease_left = self.lease_s
                    if now >= give_up_at:
                        return self._left_line(waiter, now, first=first)
                    wait_s = min(lease_left, give_up_at - now)
                if waiter.lock.acquire(timeout=wait_s):
                    return waiter  # handed over (only a hand-over releases this lock)
        except BaseException:  # interrupted while waiting: leave the line, pass the turn on
            with self._mutex:
                if self._holder is waiter:
                    self._hand_over()
                elif waiter in self._line:  # (not if handed a turn whose lease then ran out)
                    self._line.remove(waiter)
            raise

    def release(self, token: object | None) -> None:
        """Give the turn back (or nothing, if its lease ran out and it was handed on, or if
        ``token`` is None: no turn was had)."""
        if token is None:
            return
        with self._mutex:
            if self._holder is token:
                self._hand_over()

    def turning_away(self) -> bool:
        """Would a request arriving now be refused from the line (module docstring)?

        True while the line stands -- requests have been leaving it for ``standing_s``
        with no gap that long, the last within ``standing_s`` -- and someone is waiting in
        it: a newcomer would queue behind them and leave refused. The server's front
        door asks before handing a new request to a thread, so such a request is
        answered at once instead of after its wait (an empty line turns nobody away: a
        newcomer would get a turn at once). Read without the mutex: a stale answer
        misjudges one request.
        """
        now = self._clock()
        return (
            bool(self._line)
            and now - self._last_left <= self.standing_s
            and now - self._stalled_since >= self.standing_s
        )

    def _left_line(self, waiter: _Waiter, now: float, *, first: bool) -> object | None:
        """``waiter`` waited ``max_wait_s``: it leaves the line and goes on without a turn,
        or is refused if the line has stood for ``standing_s`` (mutex held)."""
        if waiter.lock.acquire(blocking=False):
            # It was handed the turn, and that lease ran out before this thread woke:
            # it goes on, as any holder past its lease does.
            return waiter
        self._line.remove(waiter)
        if now - self._last_left > self.standing_s:
            self._stalled_since = now  # a new stall: nobody had to leave for a while
        self._last_left = now
        if not first and now - self._stalled_since >= self.standing_s:
            self.refused += 1
            return REFUSED
        self.gave_up += 1
        return None

    def _hand_over(self) -> None:
        """The next in line holds the turn now (mutex held)."""
        if self._line:
            waiter = self._line.popleft()
            self._holder, self._since = waiter, self._clock()
            waiter.lock.release()
        else:
            self._holder = None

    def hold(self) -> TurnHold:
        """Take a turn for one request (see :class:`TurnHold`)."""
        return TurnHold(self)


class TurnHold:
    """One request's turn: taken now, given back by :meth:`release`; :meth:`outside` steps out.

    ``refused``: the line stood and this request is to be answered 503 at once, unread
    (it holds no turn).
    """

    __slots__ = ("_token", "_turns", "refused")

    def __init__(self, turns: Turns) -> None:
        self._turns = turns
        token = turns.acquire()
        self.refused = token is REFUSED
        self._token: object | None = None if self.refused else token

    def release(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            self._turns.release(token)

    @contextlib.contextmanager
    def outside(self) -> Iterator[None]:
        """Run the body without the turn (it may block); then wait for a turn at the head
        of the line (this request had waited its turn once already)."""
        token, self._token = self._token, None
        if token is None:  # no turn held (nested, or it went without one): nothing to give back
            yield
            return
        self._turns.release(token)
        try:
            yield
        finally:
            self._token = self._turns.acquire(first=True)


class QuickCalls:
    """Recent run time per kind of call, to run quick ones inside the turn (module docstring).

    ``with quick.run(key, outside):`` runs its body inside the turn when calls
    of ``key`` have been quick (an average under ``quick_s``), else within
    ``outside()``; without ``outside`` (no turns) it only measures. A key
    not seen yet runs outside. Averages are per instance, updated without a
    lock (a lost sample under a race only delays the average a little).
    """

    def __init__(
        self,
        *,
        quick_s: float = QUICK_CALL_S,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quick_s = quick_s
        self._max_keys = max_keys
        self._clock = clock
        self._average: dict[str, float] = {}

    def is_quick(self, key: str) -> bool:
        average = self._average.get(key)
        return average is not None and average < self._quick_s

    def record(self, key: str, seconds: float) -> None:
        if key not in self._average and len(self._average) >= self._max_keys:
            return  # bounded memory: further kinds of call stay unknown (run outside)
        average = self._average.get(key)
        self._average[key] = (
            seconds if average is None else average + _QUICK_ALPHA * (seconds - average)
        )

    @contextlib.contextmanager
    def run(self, key: str, outside: OutsideTurn | None) -> Iterator[None]:
        started = self._clock()
        step_out = outside is not None and not self.is_quick(key)
        with outside() if step_out and outside is not None else contextlib.nullcontext():
            try:
                yield
            finally:
                self.record(key, self._clock() - started)  # before a new turn is taken
