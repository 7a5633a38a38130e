"""The aggregator's reading plan: a window's pieces cover it exactly once, raw rows kept small."""

import random
from datetime import datetime, timedelta, timezone

import pytest

from lectr.jobs.windows import HOUR, LEVELS, bucket_ceil, bucket_floor, pieces

_START = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _coverage(parts, at: datetime) -> int:
    return sum(sign for _, _, start, end, sign in parts if start <= at < end)


@pytest.mark.parametrize("seed", range(40))
def test_pieces_cover_the_window_exactly_once(seed):
    rng = random.Random(seed)
    lo = _START + timedelta(seconds=rng.randrange(30 * 86400))
    hi = lo + rng.choice([timedelta(hours=24), timedelta(days=7), timedelta(days=30),
                          timedelta(seconds=rng.randrange(1, 3 * 86400))])
    present = hi + rng.choice([timedelta(0), timedelta(minutes=5), timedelta(days=2)])
    levels = rng.choice([LEVELS, LEVELS[1:], LEVELS[2:]])
    parts = pieces(lo, hi, levels, present)
    for _ in range(400):
        at = lo - timedelta(hours=2) + timedelta(seconds=rng.randrange(int((hi - lo).total_seconds()) + 4 * 3600))
        assert _coverage(parts, at) == (1 if lo <= at < hi else 0), (lo, hi, at)
    for at in (lo, hi - timedelta(microseconds=1), hi, lo - timedelta(microseconds=1)):
        assert _coverage(parts, at) == (1 if lo <= at < hi else 0)
    for table, _, start, end, sign in parts:
        if table is not None:  # whole units of a level, read as they are
            assert sign == 1 and start < end
        elif end <= bucket_floor(present, HOUR) - HOUR:  # raw rows of a past hour: at most half of it
            assert end - start <= HOUR / 2 and bucket_floor(start, HOUR) == bucket_floor(end - timedelta(microseconds=1), HOUR)


def test_the_present_hour_and_the_hour_before_are_read_raw():
    now = datetime(2026, 11, 30, 13, 50, tzinfo=timezone.utc)
    parts = pieces(now - timedelta(hours=1, minutes=40), now, LEVELS, now)
    assert [(t, s, e, sign) for t, _, s, e, sign in parts] == [
        (None, now - timedelta(hours=1, minutes=40), datetime(2026, 11, 30, 13, tzinfo=timezone.utc), 1),
        (None, datetime(2026, 11, 30, 13, tzinfo=timezone.utc), now, 1)]


def test_most_of_a_past_hour_is_its_rollups_less_the_rest():
    lo = datetime(2026, 11, 2, 10, 12, tzinfo=timezone.utc)
    parts = pieces(lo, bucket_ceil(lo, HOUR), LEVELS, lo + timedelta(days=1))
    hour = datetime(2026, 11, 2, 10, tzinfo=timezone.utc)
    assert [(t, s, e, sign) for t, _, s, e, sign in parts] == [
        ("request_rollups", hour, hour + HOUR, 1), (None, hour, lo, -1)]
