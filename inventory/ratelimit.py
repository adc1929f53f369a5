"""Client-side pacing within DigitalOcean's per-token budgets.

DigitalOcean counts each request against a sliding minute (250) and a sliding
hour (5,000). One RateLimiter per token keeps the same two windows, learns from
the rate-limit headers what other programs spend of that token, and pauses
every request after a 429, so a sync slows down instead of being refused.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from inventory.errors import DeadlineExceeded

logger = logging.getLogger(__name__)

MINUTE_S = 60.0
HOUR_S = 3600.0
MIN_WAIT_S = 0.1  # the shortest pause after a 429, before time_scale
FIRST_BACKOFF_S = 1.0  # after a 429 that names no usable time; doubles
MAX_BACKOFF_S = 60.0
RTT_SAMPLES = 64  # recent round trips, to size the room kept for others
IN_FLIGHT_MAX_S = 300.0  # unanswered this long, a request has surely failed
SCOUT_PATIENCE = 10  # round trips the others wait for a scout's answer
FIRST_YIELD = 0.25  # of each budget left to others after a first 429; doubles


@dataclass(frozen=True)
class Budget:
    """Requests allowed per sliding minute and hour; None means no limit.

    `time_scale` shrinks both windows alike, as the simulator's option does.
    """

    per_minute: int | None = 250
    per_hour: int | None = 5000
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("per_minute", "per_hour"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Budget.{name} must be 1 or more, or None.")
        if not self.time_scale > 0:
            raise ValueError("Budget.time_scale must be greater than 0.")

    @property
    def minute_s(self) -> float:
        return MINUTE_S / self.time_scale

    @property
    def hour_s(self) -> float:
        return HOUR_S / self.time_scale

    def duration_s(self, requests: int, used_hour: int = 0) -> float:
        """Least seconds from the first of `requests` to the last.

        Both windows slide, so each full minute's budget costs a minute and each
        full hour's budget an hour. `used_hour` requests already in the hour
        are taken as made just now: they leave the window an hour from now.
        """
        if requests <= 0:
            return 0.0
        if self.per_hour is None or (used_hour <= 0 and self._cycles_by_the_hour()):
            return self._cycled_s(requests)
        return self._greedy_s(requests, self.per_hour, max(used_hour, 0))

    def _cycles_by_the_hour(self) -> bool:
        """Whether a paced run repeats the same pattern every hour."""
        if self.per_minute is None or self.per_hour is None:
            return True
        return math.ceil(self.per_hour / self.per_minute) * MINUTE_S <= HOUR_S

    def _cycled_s(self, requests: int) -> float:
        hours, rest = 0, requests
        if self.per_hour is not None:
            hours, rest = divmod(requests - 1, self.per_hour)
            rest += 1
        minutes = 0 if self.per_minute is None else (rest - 1) // self.per_minute
        return hours * self.hour_s + minutes * self.minute_s

    def _greedy_s(self, requests: int, per_hour: int, used_hour: int) -> float:
        """Send each request at the first moment both windows allow it."""
        sent: list[float] = []
        for i in range(requests):
            at = 0.0
            if self.per_minute is not None and i >= self.per_minute:
                at = sent[i - self.per_minute] + self.minute_s
            earlier = used_hour + i - per_hour  # the request an hour's budget back
            if earlier >= 0:
                made = sent[earlier - used_hour] if earlier >= used_hour else 0.0
                at = max(at, made + self.hour_s)
            sent.append(at)
        return sent[-1]


@dataclass(frozen=True)
class Headers:
    """The rate-limit headers of one response, read case-insensitively."""

    limit: int | None
    remaining: int | None
    reset_at: float | None
    retry_after_s: float | None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> Headers:
        lowered = {key.lower(): value for key, value in headers.items()}
        remaining = _int(lowered.get("ratelimit-remaining"))
        return cls(
            limit=_int(lowered.get("ratelimit-limit")),
            remaining=None if remaining is None else max(remaining, 0),
            reset_at=_float(lowered.get("ratelimit-reset")),
            retry_after_s=_float(lowered.get("retry-after")),
        )

    @classmethod
    def empty(cls) -> Headers:
        """A response that carried none of them."""
        return cls(None, None, None, None)


class RateLimiter:
    """Enforces a Budget for every request made with one token.

    `acquire()` before sending, `observe()` with each answer's headers, and
    `on_429()` instead when refused. A wait that would end after the deadline
    raises DeadlineExceeded instead of sleeping.

    The server counts a request somewhere between its sending and its answer,
    so ours enter the windows when answered (in flight, they fill every
    window), and others' when an answer reveals them. Others' requests whose
    time cannot be told count in the hour only, until `ratelimit-reset` or a
    later answer says they left. While others spend the token, some room is
    kept for them, and after a silence one request goes first to see what
    they took meanwhile.
    """

    def __init__(
        self,
        budget: Budget,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        in_flight_max_s: float = IN_FLIGHT_MAX_S,
    ) -> None:
        self.budget = budget
        self._in_flight_max_s = in_flight_max_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._sent = _Timeline()  # ours once answered, others' once seen
        self._earliest = _Timeline()  # the same, when the server may have counted
        self._foreign = _Timeline()  # others' alone, to keep room for them
        self._foreign_log: deque[tuple[float, float]] = deque()  # when, earliest
        self._in_flight: dict[int, float] = {}  # sequence -> when let go
        self._answered = asyncio.Event()
        self._untimed = 0  # others' in the hour, times unknown
        self._untimed_until = -math.inf
        self._reset_at: float | None = None  # on our clock
        self._probe = False  # a reset passed: one request may go without room
        self._resume = False  # a retry-after passed: one request may go too
        self._hour_limit = budget.per_hour
        self._rtts: deque[float] = deque(maxlen=RTT_SAMPLES)
        self._observed_at = -math.inf
        self._counted_after = -math.inf  # others' new ones came after this
        self._foreign_rate = 0.0  # others' requests a second, lately
        self._others_seen_at = -math.inf  # when an answer last showed new ones
        self._others_known_at = -math.inf  # or showed any at all
        self._yield_share = 0.0  # of each budget, left to others after a 429
        self._yielded_at = -math.inf
        self._sequence = 0
        self._scout = 0  # the first request after a silence, while others spend
        self._paused_until = -math.inf
        self._deadline: float | None = None
        self._lock = asyncio.Lock()
        self.waited_s = 0.0
        self.rate_limited = 0
        self.last_remaining: int | None = None

    def set_deadline(self, deadline: float | None) -> None:
        """A time on this limiter's clock after which no wait may end."""
        self._deadline = deadline

    @property
    def used_hour(self) -> int:
        """Requests counted in the current hour window, ours and others'."""
        now = self._clock()
        self._expire(now)
        return self._inside(now - self.budget.hour_s) + self._untimed

    async def acquire(self) -> int:
        """Wait until a request fits both windows; return its sequence number."""
        async with self._lock:
            while True:
                now = self._clock()
                wait = self._wait_s(now)
                if wait <= 0:
                    return self._let_go(now)
                if math.isfinite(wait):
                    self._check_deadline(now, wait)
                self._log_wait(wait)
                try:
                    await self._nap(wait)
                finally:  # a run stopped mid-wait waited too
                    self.waited_s += max(self._clock() - now, 0.0)

    def observe(self, headers: Headers, sequence: int) -> None:
        """Learn from a response what the server counted against the token."""
        now = self._clock()
        sent_at = self._land(now, sequence)
        if headers.remaining is None:
            return
        self.last_remaining = headers.remaining
        self._learn_limits(headers, now)
        self._expire(now)
        if headers.remaining == 0:
            self._learn_spent(headers, now if sent_at is None else sent_at, now)
        else:
            self._learn_foreign(headers, sequence, now)
        self._observed_at = now
        self._counted_after = now if sent_at is None else sent_at
        self._foreign_rate = self._measure_foreign_rate(now)

    def on_429(
        self, headers: Headers, attempt: int, sequence: int | None = None
    ) -> float:
        """Pause every request after a 429; return how long this one waits.

        `retry-after` comes only with the minute's 429s, and a minute bounds
        it. Without it the hour is spent: wait until `ratelimit-reset`, within
        an hour; a reset missing or past (seen on real 429s) backs off instead.
        The refused request is `sequence`; unnamed, the oldest in flight.
        """
        self.rate_limited += 1
        now = self._clock()
        if now >= self._paused_until:
            # The first 429 of a burst: those answered while its pause holds
            # were sent before it and are the same event, not new neighbours.
            self._yield_more(now)
        self._land(now, sequence if sequence is not None else self._oldest_in_flight())
        self._learn_limits(headers, now)
        until_reset = self._until_reset(headers)
        if headers.retry_after_s is not None:
            minute_s = self.budget.minute_s
            wait = _clamp(headers.retry_after_s, self._min_wait_s(), minute_s)
            self._fill_minute(now, wait)
            self._resume = True  # the slot retry-after promises is ours
        elif until_reset is not None:
            wait = until_reset
            self._fill_hour(now)
        else:
            wait = self._backoff_s(attempt)
        self._pause(now, wait, "HTTP 429")
        self._observed_at = now
        return wait

    # Waiting.

    def _wait_s(self, now: float) -> float:
        self._expire(now)
        waits = [self._paused_until - now]
        per_minute, minute_s = self.budget.per_minute, self.budget.minute_s
        if per_minute is not None:
            allowed = per_minute - self._reserve(now, minute_s, per_minute)
            waits.append(self._window_wait(now, minute_s, allowed))
        if self._hour_limit is not None:
            hour_s, limit = self.budget.hour_s, self._hour_limit
            waits.append(
                self._hour_wait(now, limit - self._reserve(now, hour_s, limit))
            )
        wait = max(waits)
        scout_s = self._scout_wait_s(now)
        if scout_s > 0:
            return max(wait, scout_s)
        return wait if math.isinf(wait) else min(wait, self.budget.hour_s)

    def _scout_wait_s(self, now: float) -> float:
        """How long the scout's answer may still be awaited; a lost one is not."""
        sent_at = self._in_flight.get(self._scout)
        if sent_at is None:
            return 0.0
        patience_s = SCOUT_PATIENCE * max(self._rtts, default=0.0)
        return sent_at + max(patience_s, self._min_wait_s()) - now

    def _window_wait(
        self, now: float, span: float, allowed: int, untimed: int = 0
    ) -> float:
        """Seconds until fewer than `allowed` requests are in the last `span`.

        inf when that needs requests to leave whose time is unknown: ours in
        flight, or others' `untimed` ones.
        """
        start = now - span
        timed = self._sent.count_after(start)
        leaving = timed + len(self._in_flight) + untimed - max(allowed, 1) + 1
        if leaving <= 0:
            return 0.0
        if leaving > timed:
            return math.inf
        return self._sent.nth_after(start, leaving) + span - now

    def _hour_wait(self, now: float, allowed: int) -> float:
        """The hour's wait; others' untimed requests leave at a reset at last."""
        wait = self._window_wait(now, self.budget.hour_s, allowed, self._untimed)
        if wait <= 0 or self._untimed == 0:
            return wait
        wait = min(wait, self._untimed_until - now)
        if self._reset_at is not None and self._reset_at > now:
            wait = min(wait, self._reset_at - now)  # an answer then says more
        return max(wait, self._min_wait_s())

    def _reserve(self, now: float, span: float, limit: int) -> int:
        """Room kept in a window for others spending the token alongside us.

        At their recent pace they fill a window with more than we have seen,
        and what they made since our last answer shows only in the next one.
        One more keeps a slot for the one racing ours, and after a 429 a share
        of the budget is left to them. At most half of what they leave is
        kept, so a greedy neighbour slows us, not stops us.
        """
        rate = self._foreign_rate
        yielded = math.ceil(self._yielded_share(now) * limit)
        probing = self._probe and not self._others_active(now)
        if self._resume or probing or (rate == 0.0 and not yielded):
            return 0
        theirs = self._foreign.count_after(now - span)
        if span >= self.budget.hour_s:
            theirs += self._untimed
            rate = min(rate, theirs / span)  # a minute's burst is not their hour
        unseen_s = now - self._observed_at + max(self._rtts, default=0.0)
        expected = max(rate * span - theirs, rate * min(unseen_s, span))
        wanted = max(math.ceil(expected) + 1, yielded)
        return min(wanted, max(limit - theirs, 0) // 2)

    def _yield_more(self, now: float) -> None:
        """After a 429, leave others a larger share; it halves every quiet hour."""
        share = self._yielded_share(now)
        self._yield_share = min(max(2 * share, FIRST_YIELD), 0.5)
        self._yielded_at = now

    def _yielded_share(self, now: float) -> float:
        quiet_hours = (now - self._yielded_at) / self.budget.hour_s
        return self._yield_share * math.pow(0.5, quiet_hours)

    def _others_active(self, now: float) -> bool:
        """Whether others' requests showed up in our answers this past hour."""
        return now - self._others_seen_at < self.budget.hour_s

    def _measure_foreign_rate(self, now: float) -> float:
        """Others' requests a second: over the hour, or the last minute if faster.

        A program that keeps spending replaces its requests as they leave the
        hour, so its count there shows its pace even when no increase does.
        One whose requests only predate ours may have stopped: it counts not.
        """
        if not self._others_active(now):
            return 0.0
        minute_s, hour_s = self.budget.minute_s, self.budget.hour_s
        in_hour = self._foreign.count_after(now - hour_s) + self._untimed
        in_minute = self._foreign.count_after(now - minute_s)
        return max(in_hour / hour_s, in_minute / minute_s)

    async def _nap(self, wait: float) -> None:
        """Sleep `wait`, or less when an answer to a request in flight comes.

        An infinite wait is one for ours in flight to be answered, which takes
        no longer than until the oldest of them ages out.
        """
        if math.isinf(wait):
            ends = self._aged_out_at() if self._in_flight else math.inf
            wait = _clamp(ends - self._clock(), self._min_wait_s(), self.budget.hour_s)
        if not self._in_flight:
            await self._sleep(wait)
            return
        self._answered.clear()
        napping = asyncio.ensure_future(self._sleep(wait))
        answered = asyncio.ensure_future(self._answered.wait())
        try:
            await asyncio.wait((napping, answered), return_when=asyncio.FIRST_COMPLETED)
        finally:
            napping.cancel()
            answered.cancel()

    def _let_go(self, now: float) -> int:
        """Send a request; after a silence, as a scout the others wait behind.

        While we heard nothing, others spending the token may have taken what
        freed up: only an answer tells, and one refusal is better than many.
        """
        self._sequence += 1
        self._in_flight[self._sequence] = now
        round_trip_s = max(self._rtts, default=0.0)
        silent = now - self._observed_at > 2 * round_trip_s
        others = now - self._others_known_at < self.budget.hour_s
        if self._probe or self._resume or (others and silent):
            self._scout = self._sequence
        self._probe = self._resume = False
        return self._sequence

    def _check_deadline(self, now: float, wait: float) -> None:
        if self._deadline is None or now + wait <= self._deadline:
            return
        raise DeadlineExceeded(
            f"The rate budget returns in {wait:.0f} s, after this run's deadline "
            f"(in {max(self._deadline - now, 0.0):.0f} s); the run stops here "
            "and keeps what it stored."
        )

    def _log_wait(self, wait: float) -> None:
        if math.isinf(wait):
            logger.debug("Rate budget spent; the next request waits for an answer")
            return
        level = logging.INFO if wait > self.budget.minute_s else logging.DEBUG
        logger.log(level, "Rate budget spent; the next request waits %.1f s", wait)

    @property
    def effective_budget(self) -> Budget:
        """The budget as the server has shown it: its hourly limit if lower."""
        if self._hour_limit == self.budget.per_hour:
            return self.budget
        return dataclasses.replace(self.budget, per_hour=self._hour_limit)

    # Learning from answers.

    def _learn_limits(self, headers: Headers, now: float) -> None:
        """Believe the server's hourly limit when it is the lower one."""
        configured = self.budget.per_hour
        if headers.limit is not None and headers.limit > 0 and configured:
            self._hour_limit = min(configured, headers.limit)
        if headers.reset_at is not None:
            self._reset_at = now + headers.reset_at - self._wall_clock()

    def _learn_foreign(self, headers: Headers, sequence: int, now: float) -> None:
        """Count as others' what the server counted beyond our own requests.

        Ours still in flight that were sent after this one are taken as not
        yet counted, those sent before as counted. Where the server counts
        fewer than the requests it surely still holds (those it counted within
        the hour even at the earliest it could have), the excess is others'
        that were guessed wrong: untimed ones first, then the latest timed.
        """
        limit = headers.limit or self.budget.per_hour
        if limit is None or headers.remaining is None:
            return
        used = limit - headers.remaining
        hour_s = self.budget.hour_s
        answered = self._sent.count_after(now - hour_s) + self._untimed
        later = sum(1 for other in self._in_flight if other > sequence)
        beyond = used - answered - len(self._in_flight) + later
        if beyond > 0:
            self._add_foreign(beyond, now)
            return
        held = self._earliest.count_after(now - hour_s) + self._untimed
        if held > used:
            self._drop_foreign(held - used)

    def _add_foreign(self, count: int, now: float) -> None:
        """Place others' new requests in time, as far as the gap since allows.

        They were made since the previous answer; spread evenly over a gap
        longer than a minute, only the last minute's share weighs on it.
        """
        gap = now - self._observed_at
        minute_s = self.budget.minute_s
        timed = count if gap <= minute_s else int(count * minute_s / gap)
        for _ in range(timed):
            self._add_other(now, self._counted_after)
        if count > timed:
            self._untimed += count - timed
            self._untimed_until = now + self.budget.hour_s
        if count > 0:
            self._others_known_at = now
        if count > 0 and gap < math.inf:
            self._others_seen_at = now  # new since an answer of ours: at work
        elif count > 0:
            # Spent before our first answer: maybe still at it. Watch a minute.
            active_until = now + self.budget.minute_s - self.budget.hour_s
            self._others_seen_at = max(self._others_seen_at, active_until)

    def _add_other(self, moment: float, earliest: float) -> None:
        """One of others' requests, counted between `earliest` and `moment`."""
        self._count(moment, earliest)
        self._foreign.insert(moment)
        self._foreign_log.append((moment, earliest))

    def _drop_foreign(self, count: int) -> None:
        """Forget others' requests the server no longer counts: untimed first."""
        untimed = min(count, self._untimed)
        self._untimed -= untimed
        for _ in range(min(count - untimed, len(self._foreign_log))):
            moment, earliest = self._foreign_log.pop()
            self._sent.remove(moment)
            self._earliest.remove(earliest)
            self._foreign.remove(moment)

    def _learn_spent(self, headers: Headers, sent_at: float, now: float) -> None:
        """`ratelimit-remaining: 0`: a window is full, maybe with others' requests.

        When the windows hold enough to explain it, they already wait.
        Otherwise it is the minute when `retry-after` says so or much of the
        hour was left, and the hour when little was.
        """
        if self._explains_spent(sent_at):
            return
        if headers.retry_after_s is None and self._hour_nearly_spent(sent_at):
            self._fill_hour(now)
            logger.warning(
                "Another client spent this token's hourly budget; requests wait "
                "until DigitalOcean reports it back"
            )
        elif self.budget.per_minute is not None:
            self._fill_minute(now, headers.retry_after_s)
            logger.warning(
                "Another client spent this token's budget for the minute; "
                "requests wait until it slides back"
            )

    def _explains_spent(self, sent_at: float) -> bool:
        """Whether a window the server counted a request in holds its budget.

        Ours are in the window from when they were answered, which is no
        earlier than the server counted them, so counting from `sent_at` on
        takes in every one the server's window held.
        """
        per_minute, hour_limit = self.budget.per_minute, self._hour_limit
        if per_minute is not None:
            if self._inside(sent_at - self.budget.minute_s) >= per_minute:
                return True
        if hour_limit is None:
            return False
        return self._inside(sent_at - self.budget.hour_s) + self._untimed >= hour_limit

    def _hour_nearly_spent(self, sent_at: float) -> bool:
        """Whether less of the hour was left than a minute's budget."""
        if self._hour_limit is None:
            return False
        in_hour = self._inside(sent_at - self.budget.hour_s) + self._untimed
        return in_hour >= self._hour_limit - (self.budget.per_minute or 0)

    def _fill_minute(self, now: float, frees_in_s: float | None = None) -> None:
        """Take the minute as full, what we cannot account for spent just now.

        `frees_in_s` (a `retry-after`) says when the server's oldest leaves:
        if none of ours leaves by then, that oldest is one of the others'.
        """
        if self.budget.per_minute is None:
            return
        minute_s = self.budget.minute_s
        missing = self.budget.per_minute - self._inside(now - minute_s)
        if missing <= 0:
            return
        if frees_in_s is not None and frees_in_s < minute_s:
            oldest = self._sent.nth_after(now - minute_s, 1)
            if oldest + minute_s > now + frees_in_s:
                leaves_at = now + frees_in_s - minute_s
                self._add_other(leaves_at, leaves_at)
                missing -= 1
        for _ in range(missing):
            self._add_other(now, now - minute_s)
        self._others_seen_at = self._others_known_at = now

    def _fill_hour(self, now: float) -> None:
        """Take the hour as full, the unexplained part leaving at the resets."""
        if self._hour_limit is None:
            return
        inside = self._inside(now - self.budget.hour_s) + self._untimed
        if inside < self._hour_limit:
            self._untimed += self._hour_limit - inside
            self._untimed_until = now + self.budget.hour_s
            self._others_known_at = now

    # Time.

    def _count(self, moment: float, earliest: float | None = None) -> None:
        """Put a request in our windows at `moment`; the server's, from `earliest`.

        `moment` is the latest the server may have counted it, so our windows
        hold it no shorter than the server's; `earliest` the earliest.
        """
        self._sent.insert(moment)
        self._earliest.insert(moment if earliest is None else earliest)

    def _land(self, now: float, sequence: int | None) -> float | None:
        """A request was answered: out of flight, into the windows; when it went."""
        sent_at = self._in_flight.pop(sequence, None) if sequence else None
        if sent_at is not None:
            self._count(now, sent_at)
            self._rtts.append(now - sent_at)
        if sequence == self._scout:
            self._scout = 0
        self._answered.set()
        return sent_at

    def _oldest_in_flight(self) -> int | None:
        return next(iter(self._in_flight), None)

    def _inside(self, start: float) -> int:
        """Requests in a window from `start` to now: answered, and in flight."""
        return self._sent.count_after(start) + len(self._in_flight)

    def _expire(self, now: float) -> None:
        """Forget what left the hour; an untimed request leaves at each reset."""
        hour_s = self.budget.hour_s
        for timeline in (self._sent, self._earliest, self._foreign):
            timeline.prune(now - hour_s)
        while self._foreign_log and self._foreign_log[0][0] <= now - hour_s:
            self._foreign_log.popleft()
        self._age_out(now)
        if self._untimed and now >= self._untimed_until:
            self._untimed = 0
        if self._untimed and self._reset_at is not None and now >= self._reset_at:
            if self._sent.nth_after(-math.inf, 1) + hour_s > self._reset_at:
                self._untimed -= 1  # the oldest counted was theirs, not ours
                self._probe = True  # one request now, and its answer says more
            self._reset_at = None

    def _age_out(self, now: float) -> None:
        """Take a request unanswered for too long as failed, and counted then.

        No answer comes for a failed request. The server counted it, if at
        all, before the client gave up on it, which `in_flight_max_s` bounds
        (real seconds: a request's timeout does not shrink with time_scale).
        """
        while self._in_flight and self._aged_out_at() <= now:
            sent_at = self._in_flight.pop(next(iter(self._in_flight)))
            self._count(now, sent_at)

    def _aged_out_at(self) -> float:
        return self._in_flight[next(iter(self._in_flight))] + self._in_flight_max_s

    def _until_reset(self, headers: Headers) -> float | None:
        """Seconds until the reset the server names, at most an hour; None if past."""
        if headers.reset_at is None:
            return None
        until = headers.reset_at - self._wall_clock()
        if until <= 0:
            return None
        return _clamp(until, self._min_wait_s(), self.budget.hour_s)

    def _backoff_s(self, attempt: int) -> float:
        exponent = min(max(attempt - 1, 0), 16)
        backoff_s = min(FIRST_BACKOFF_S * 2.0**exponent, MAX_BACKOFF_S)
        return backoff_s / self.budget.time_scale

    def _pause(self, now: float, wait: float, reason: str) -> None:
        until = now + wait
        if until > self._paused_until:
            # Said once per pause: the rest of a burst of 429s only extends it.
            level = logging.WARNING if now >= self._paused_until else logging.DEBUG
            self._paused_until = until
            logger.log(
                level,
                "Rate budget spent (%s); every request waits %.1f s, then the "
                "run carries on",
                reason,
                wait,
            )

    def _min_wait_s(self) -> float:
        return MIN_WAIT_S / self.budget.time_scale


class _Timeline:
    """Sorted moments, dropped from the old end as windows slide past them."""

    def __init__(self) -> None:
        self._moments: list[float] = []
        self._head = 0

    def insert(self, moment: float) -> None:
        """Add a moment in order; most come last, so this is mostly an append."""
        if not self._moments or moment >= self._moments[-1]:
            self._moments.append(moment)
        else:
            bisect.insort(self._moments, moment, lo=self._head)

    def remove(self, moment: float) -> None:
        index = bisect.bisect_left(self._moments, moment, lo=self._head)
        if index < len(self._moments) and self._moments[index] == moment:
            del self._moments[index]

    def prune(self, cutoff: float) -> None:
        """Drop moments at or before `cutoff`, as the server's windows do."""
        self._head = bisect.bisect_right(self._moments, cutoff, lo=self._head)
        if self._head > 1024 and self._head * 2 > len(self._moments):
            del self._moments[: self._head]
            self._head = 0

    def count_after(self, start: float) -> int:
        return len(self._moments) - bisect.bisect_right(
            self._moments, start, lo=self._head
        )

    def nth_after(self, start: float, n: int) -> float:
        """The n-th oldest moment after `start` (1-based); inf if fewer."""
        index = bisect.bisect_right(self._moments, start, lo=self._head) + n - 1
        return self._moments[index] if index < len(self._moments) else math.inf


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(value, high))


def _int(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None
