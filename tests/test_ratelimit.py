"""The rate limiter: both sliding windows, the headers, 429s and deadlines.

Every case runs on a fake clock whose sleeps advance it, so an hour's wait
takes no time and the waits themselves can be compared exactly.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from inventory.errors import DeadlineExceeded
from inventory.ratelimit import Budget, Headers, RateLimiter

from conftest import EXAMPLES

EPOCH = 1_700_000_000.0


class FakeClock:
    """Monotonic and wall time together; `sleep` moves both and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limiter(
    clock: FakeClock, per_minute: int | None = 10, per_hour: int | None = 100
) -> RateLimiter:
    return RateLimiter(
        Budget(per_minute, per_hour),
        clock=clock,
        wall_clock=clock.wall,
        sleep=clock.sleep,
    )


def answer(
    clock: FakeClock,
    remaining: int | None,
    *,
    limit: int = 100,
    reset_in_s: float = 3600.0,
    retry_after_s: float | None = None,
) -> Headers:
    """The headers DigitalOcean would send, the reset `reset_in_s` from now."""
    return Headers(
        limit=limit,
        remaining=remaining,
        reset_at=clock.wall() + reset_in_s,
        retry_after_s=retry_after_s,
    )


async def send(
    rate: RateLimiter, count: int, headers: Headers | None = None
) -> list[int]:
    """Send `count` requests one by one, each answered with `headers`."""
    sequences = []
    for _ in range(count):
        sequences.append(await rate.acquire())
        rate.observe(headers or Headers.empty(), sequences[-1])
    return sequences


# Budget.duration_s: the least time the windows allow.


@pytest.mark.parametrize(
    ("requests", "expected_s"),
    [
        (0, 0.0),
        (1, 0.0),
        (250, 0.0),
        (251, 60.0),
        (5000, 19 * 60.0),
        (5001, 3600.0),
        (6030, 3600.0 + 4 * 60.0),
        (10001, 7200.0),
    ],
)
def test_duration_counts_a_minute_per_minute_budget_and_an_hour_per_hour_budget(
    requests: int, expected_s: float
) -> None:
    assert Budget().duration_s(requests) == expected_s


def test_duration_shrinks_with_the_time_scale() -> None:
    assert Budget(time_scale=10).duration_s(2010) == 48.0
    assert Budget(time_scale=60).duration_s(6030) == 64.0


@pytest.mark.parametrize(
    ("per_minute", "per_hour"), [(250, 5000), (10, 25), (7, 100), (3, 3)]
)
def test_the_hourly_cycle_matches_sending_each_request_as_soon_as_allowed(
    per_minute: int, per_hour: int
) -> None:
    budget = Budget(per_minute, per_hour)
    for requests in (1, per_minute, per_hour, per_hour + 1, 3 * per_hour + 7):
        assert budget.duration_s(requests) == budget._greedy_s(requests, per_hour, 0)


def test_an_hour_budget_the_minute_never_reaches_costs_nothing_more() -> None:
    # 10 a minute is 600 an hour: the hour's 1,000 never bind.
    assert Budget(10, 1000).duration_s(1001) == 100 * 60.0


def test_requests_already_in_the_hour_are_taken_as_just_made() -> None:
    assert Budget(250, 5000).duration_s(250, used_hour=4900) == 3600.0
    assert Budget(250, 5000).duration_s(100, used_hour=4900) == 0.0


def test_without_budgets_nothing_waits() -> None:
    assert Budget(None, None).duration_s(10**6) == 0.0


def test_a_budget_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="per_minute must be 1 or more"):
        Budget(per_minute=0)


# Headers.


def test_headers_are_read_whatever_their_casing() -> None:
    headers = Headers.parse(
        {
            "RateLimit-Limit": "5000",
            "ratelimit-REMAINING": "4999",
            "rateLimit-reset": "1402425459",
            "Retry-After": "29",
        }
    )
    assert headers == Headers(5000, 4999, 1402425459.0, 29.0)


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (
            "spec-description-ratelimit-headers-sample.json",
            Headers(1200, 1193, 1402425459.0, None),
        ),
        (
            "spec-description-ratelimit-headers-burst-limit-sample.json",
            Headers(5000, 0, 1402425459.0, 29.0),
        ),
    ],
)
def test_the_documented_samples_parse(sample: str, expected: Headers) -> None:
    assert Headers.parse(json.loads((EXAMPLES / sample).read_text())) == expected


def test_missing_or_garbled_headers_read_as_unknown() -> None:
    assert Headers.parse({}) == Headers.empty()
    garbled = {
        "ratelimit-limit": "many",
        "ratelimit-remaining": "",
        "ratelimit-reset": "nan",
        "retry-after": "Wed, 21 Oct 2015 07:28:00 GMT",
    }
    assert Headers.parse(garbled) == Headers.empty()


def test_a_negative_remaining_reads_as_none_left() -> None:
    assert Headers.parse({"ratelimit-remaining": "-3"}).remaining == 0


# Pacing with our own requests alone.


async def test_a_full_minute_waits_for_its_oldest_request_to_leave(
    clock: FakeClock,
) -> None:
    rate = limiter(clock)
    await send(rate, 10)
    assert clock.sleeps == []

    clock.now += 15.0
    await rate.acquire()
    assert clock.sleeps == [45.0]
    assert rate.waited_s == 45.0


async def test_a_wait_cut_short_by_a_stop_counts_as_waited(clock: FakeClock) -> None:
    """A run stopped while the budget holds it back waited that long too: its
    `rate_wait_s` said 0.0 (found by a new-user trial)."""

    async def stopped_midway(seconds: float) -> None:
        clock.now += 10.0
        await asyncio.Event().wait()  # until the stop

    rate = RateLimiter(
        Budget(10, 100), clock=clock, wall_clock=clock.wall, sleep=stopped_midway
    )
    await send(rate, 10)
    waiting = asyncio.create_task(rate.acquire())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert rate.waited_s == 10.0


async def test_a_full_hour_waits_for_its_oldest_request_to_leave(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=None, per_hour=3)
    await send(rate, 3)
    await rate.acquire()
    assert clock.sleeps == [3600.0]


async def test_a_run_larger_than_the_hour_paces_itself_across_it(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=10, per_hour=25)
    started = clock.now
    await send(rate, 60)
    assert clock.now - started == Budget(10, 25).duration_s(60) == 7200.0


async def test_sequence_numbers_count_up(clock: FakeClock) -> None:
    assert await send(limiter(clock), 3) == [1, 2, 3]


async def test_answers_without_headers_leave_the_windows_alone(
    clock: FakeClock,
) -> None:
    rate = limiter(clock)
    for _ in range(10):
        rate.observe(Headers.empty(), await rate.acquire())
    await rate.acquire()
    assert clock.sleeps == [60.0]
    assert rate.last_remaining is None


async def test_a_wait_past_the_deadline_stops_the_run_at_once(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=None, per_hour=3)
    rate.set_deadline(clock.now + 600)
    await send(rate, 3)
    with pytest.raises(
        DeadlineExceeded,
        match=r"returns in 3600 s, after this run's deadline \(in 600 s\)",
    ):
        await rate.acquire()
    assert clock.sleeps == []


# Requests in flight.


async def test_a_request_in_flight_fills_the_window_until_its_answer() -> None:
    """The server may count it as late as its answer: it leaves a minute after."""
    rate = RateLimiter(Budget(per_minute=1, per_hour=None, time_scale=600))
    rate.set_deadline(time.monotonic() + 5.0)  # not to be taken as a long wait
    first = await rate.acquire()
    second = asyncio.create_task(rate.acquire())
    await asyncio.sleep(0.05)
    assert not second.done()

    answered_at = time.monotonic()
    rate.observe(Headers.empty(), first)
    assert await asyncio.wait_for(second, timeout=5.0) == 2
    assert time.monotonic() - answered_at >= 0.1


async def test_a_request_never_answered_is_taken_as_counted_when_it_ages_out(
    clock: FakeClock,
) -> None:
    rate = RateLimiter(
        Budget(per_minute=1, per_hour=None),
        clock=clock,
        wall_clock=clock.wall,
        sleep=clock.sleep,
        in_flight_max_s=120.0,
    )
    await rate.acquire()  # its connection drops: no answer ever comes
    await rate.acquire()
    assert clock.sleeps == [120.0, 60.0]


# Learning what others spend of the token.


async def test_after_a_silence_the_first_request_scouts_alone_while_others_spend(
    clock: FakeClock,
) -> None:
    """What freed up while we heard nothing may be theirs: one answer first."""
    rate = limiter(clock, per_minute=100, per_hour=1000)
    rate.observe(answer(clock, remaining=999, limit=1000), await rate.acquire())
    rate.observe(answer(clock, remaining=990, limit=1000), await rate.acquire())
    clock.now += 600.0

    scout = await rate.acquire()
    second = await rate.acquire()
    assert clock.sleeps == pytest.approx([0.1])  # as long as its answer may take
    rate.observe(answer(clock, remaining=985, limit=1000), scout)
    rate.observe(answer(clock, remaining=984, limit=1000), second)
    await send(rate, 3)
    assert clock.sleeps == pytest.approx([0.1])


async def test_without_others_there_are_no_scouts(clock: FakeClock) -> None:
    rate = limiter(clock, per_minute=100, per_hour=1000)
    rate.observe(answer(clock, remaining=999, limit=1000), await rate.acquire())
    clock.now += 600.0
    await rate.acquire()
    await rate.acquire()
    assert clock.sleeps == []


async def test_others_spending_before_we_start_weigh_on_the_hour_only(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=10, per_hour=100)
    rate.observe(answer(clock, remaining=39), await rate.acquire())
    assert rate.used_hour == 61

    await send(rate, 7)
    assert clock.sleeps == []  # 60 of theirs did not fill the minute
    await rate.acquire()  # two slots are kept while they might be at it
    assert clock.sleeps == [60.0]


async def test_others_spending_alongside_us_weigh_on_the_minute_too(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=10, per_hour=100)
    rate.observe(answer(clock, remaining=99), await rate.acquire())
    clock.now += 1.0
    # Ours make 2; the server counts 6: four are someone else's, just now.
    rate.observe(answer(clock, remaining=94), await rate.acquire())
    assert rate.used_hour == 6

    await send(rate, 3)  # 9 in the minute, and one slot kept for the others
    assert clock.sleeps == []
    await rate.acquire()
    # A minute later, at their pace they may have made four more unseen: our
    # first request leaves at 1060, and the room for theirs at 1061.
    assert clock.sleeps == [59.0, 1.0]


async def test_others_requests_leaving_the_hour_give_their_room_back(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=None, per_hour=100)
    rate.observe(answer(clock, remaining=10), await rate.acquire())
    assert rate.used_hour == 90
    rate.observe(answer(clock, remaining=60), await rate.acquire())
    assert rate.used_hour == 40


async def test_ours_leaving_the_servers_hour_first_do_not_pass_for_theirs_leaving(
    clock: FakeClock,
) -> None:
    """Ours enter our hour when answered, up to a round trip after the server's."""
    rate = limiter(clock, per_minute=None, per_hour=100)
    first = await rate.acquire()
    clock.now += 2.0
    rate.observe(answer(clock, remaining=89), first)  # 10 of theirs, untimed

    clock.now = 1002.0 + 3600.0 - 0.5  # the server's hour has let ours go
    rate.observe(answer(clock, remaining=89), await rate.acquire())
    assert rate.used_hour == 12


async def test_a_lower_limit_from_the_server_is_believed(clock: FakeClock) -> None:
    rate = limiter(clock, per_minute=None, per_hour=100)
    rate.observe(answer(clock, remaining=1, limit=2), await rate.acquire())
    await rate.acquire()
    with pytest.raises(DeadlineExceeded):
        rate.set_deadline(clock.now + 10)
        await rate.acquire()


async def test_plans_use_the_lower_limit_the_server_reported(clock: FakeClock) -> None:
    """A budget configured above the server's: plans and overrun warnings
    follow what the server enforces."""
    rate = limiter(clock, per_minute=250, per_hour=1_000_000)
    assert rate.effective_budget.per_hour == 1_000_000
    rate.observe(answer(clock, remaining=4999, limit=5000), await rate.acquire())

    assert rate.effective_budget == Budget(per_minute=250, per_hour=5000)
    assert rate.effective_budget.duration_s(6000) >= 3600


async def test_remaining_zero_from_our_own_minute_adds_no_wait(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=10, per_hour=100)
    for left in range(99, 89, -1):
        remaining = 0 if left == 90 else left
        rate.observe(answer(clock, remaining=remaining), await rate.acquire())
    await rate.acquire()
    assert clock.sleeps == [60.0]


async def test_remaining_zero_we_cannot_explain_takes_the_minute_as_spent(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=10, per_hour=100)
    rate.observe(answer(clock, remaining=99), await rate.acquire())
    clock.now += 5.0
    rate.observe(answer(clock, remaining=0), await rate.acquire())
    await rate.acquire()
    # The eight others', taken as made at 1005, leave at 1065; until then one
    # slot is also kept for more of theirs, so our first leaving is not enough.
    assert clock.sleeps == [60.0]


async def test_remaining_zero_near_the_hours_end_waits_for_the_reset(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=10, per_hour=100)
    rate.observe(answer(clock, remaining=5), await rate.acquire())
    clock.now += 1.0
    rate.observe(answer(clock, remaining=0, reset_in_s=300), await rate.acquire())
    await rate.acquire()
    assert clock.sleeps == [300.0]


# 429s: as the client does, a refused request is reported to on_429 alone.


async def test_retry_after_is_honoured_by_every_request(clock: FakeClock) -> None:
    rate = limiter(clock)
    refused = answer(clock, remaining=0, retry_after_s=29)
    await rate.acquire()
    assert rate.on_429(refused, attempt=1) == 29.0
    await rate.acquire()
    assert clock.sleeps == [29.0]
    assert rate.rate_limited == 1


async def test_retry_after_longer_than_a_minute_waits_a_minute(
    clock: FakeClock,
) -> None:
    rate = limiter(clock)
    assert rate.on_429(Headers(None, None, None, 3600.0), attempt=1) == 60.0


async def test_a_429_without_retry_after_waits_until_the_reset(
    clock: FakeClock,
) -> None:
    rate = limiter(clock)
    refused = answer(clock, remaining=0, reset_in_s=120)
    await rate.acquire()
    assert rate.on_429(refused, attempt=1) == 120.0
    await rate.acquire()
    assert clock.sleeps == [120.0]


@pytest.mark.parametrize("reset_in_s", [-30.0, -86400.0, 0.0])
async def test_a_reset_in_the_past_backs_off_instead_of_spinning(
    clock: FakeClock, reset_in_s: float
) -> None:
    rate = limiter(clock)
    refused = answer(clock, remaining=0, reset_in_s=reset_in_s)
    waits = [rate.on_429(refused, attempt) for attempt in range(1, 10)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


async def test_a_429_without_headers_backs_off(clock: FakeClock) -> None:
    rate = limiter(clock)
    await rate.acquire()
    assert rate.on_429(Headers.empty(), attempt=1) == 1.0
    await rate.acquire()
    assert clock.sleeps == [1.0]


async def test_a_refused_request_counts_from_its_429_not_from_ageing_out(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=None, per_hour=1)
    await rate.acquire()
    rate.on_429(Headers.empty(), attempt=1)
    await rate.acquire()
    assert clock.sleeps == [3600.0]


async def test_a_reset_hours_away_is_held_to_an_hour(clock: FakeClock) -> None:
    rate = limiter(clock)
    refused = answer(clock, remaining=0, reset_in_s=5 * 3600)
    assert rate.on_429(refused, attempt=1) == 3600.0


async def test_a_reset_an_hour_away_with_a_short_deadline_stops_the_run(
    clock: FakeClock,
) -> None:
    rate = limiter(clock)
    rate.set_deadline(clock.now + 30)
    refused = answer(clock, remaining=0, reset_in_s=3600)
    await rate.acquire()
    rate.on_429(refused, attempt=1)
    with pytest.raises(DeadlineExceeded, match="keeps what it stored"):
        await rate.acquire()
    assert clock.sleeps == []


async def test_after_the_reset_others_requests_are_taken_to_leave_one_by_one(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=None, per_hour=100)
    refused = answer(clock, remaining=0, reset_in_s=120)
    await rate.acquire()
    rate.on_429(refused, attempt=1)
    await rate.acquire()  # one of theirs left at the reset: room for one
    assert clock.sleeps == [120.0]
    rate.observe(answer(clock, remaining=30, reset_in_s=60), 2)
    await send(rate, 10)  # and a share of what is left stays theirs
    assert clock.sleeps == [120.0]


async def test_after_a_429_a_quarter_of_each_budget_is_left_to_others(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=None, per_hour=100)
    await rate.acquire()
    rate.on_429(Headers.empty(), attempt=1)
    await send(rate, 74)  # 75 with the refused one
    assert clock.sleeps == [1.0]
    await rate.acquire()
    assert clock.sleeps == [1.0, 3599.0]


async def test_a_burst_of_429s_at_once_leaves_others_the_first_share_only(
    clock: FakeClock,
) -> None:
    """Seven requests in flight refused together are one 429, not seven: the
    share left to others must not double seven times, to a half."""
    rate = limiter(clock, per_minute=None, per_hour=100)
    for _ in range(7):
        await rate.acquire()
    for sequence in range(1, 8):
        rate.on_429(Headers.empty(), attempt=1, sequence=sequence)
    await send(rate, 68)  # 75 with the seven refused
    assert clock.sleeps == [1.0]
    await rate.acquire()
    assert clock.sleeps == [1.0, 3599.0]


async def test_a_burst_of_429s_is_one_warning(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    rate = limiter(clock)
    for _ in range(7):
        await rate.acquire()
    for sequence in range(1, 8):
        clock.now += 0.001  # answered a moment apart, as a burst is
        rate.on_429(Headers(None, 0, None, 2.0), attempt=1, sequence=sequence)

    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.getMessage().split(";")[0] for r in warned] == [
        "Rate budget spent (HTTP 429)"
    ]


async def test_a_429_after_the_pause_is_a_new_one_and_leaves_them_more(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=None, per_hour=100)
    await rate.acquire()
    rate.on_429(Headers.empty(), attempt=1, sequence=1)
    await rate.acquire()  # after the 1 s pause
    rate.on_429(Headers.empty(), attempt=1, sequence=2)
    await send(rate, 48)  # half is theirs now: 50 with the two refused
    await rate.acquire()
    assert clock.sleeps[-1] > 3000


async def test_the_share_left_to_others_halves_every_quiet_hour(
    clock: FakeClock,
) -> None:
    rate = limiter(clock, per_minute=None, per_hour=100)
    await rate.acquire()
    rate.on_429(Headers.empty(), attempt=1)
    clock.now += 7200.0
    await send(rate, 93)  # a sixteenth, rounded up, is left to them
    assert clock.sleeps == []
    await rate.acquire()
    assert clock.sleeps == [3600.0]
