"""Clocks map the cluster's wall-clock timestamps onto their own time (a replay runs faster)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from gridwise.clock import ManualClock, ReplayClock, SystemClock, parse_utc

T0 = datetime(2022, 6, 1, tzinfo=UTC)


def test_a_pod_timestamp_lands_where_the_replay_was_then() -> None:
    anchor = time.time() - 10.0  # the replay started 10 wall seconds ago at T0, 600x
    clock = ReplayClock(T0, speed=600.0, anchor=anchor)
    assert clock.at_wall(anchor) == T0
    assert clock.at_wall(anchor + 2.5) == T0 + timedelta(minutes=25)
    assert clock.now() - clock.at_wall(time.time()) < timedelta(seconds=60)  # 0.1 wall s at 600x


def test_live_and_manual_clocks_read_timestamps_as_they_are() -> None:
    when = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    assert SystemClock().at_wall(when.timestamp()) == when
    assert ManualClock(T0).at_wall(when.timestamp()) == when
    with pytest.raises(ValueError, match="timezone-aware"):
        ReplayClock(datetime(2022, 6, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-06-01T00:00:00Z", T0),
        ("2022-06-01T02:00:00+02:00", T0),
        ("2022-06-01T00:00", T0),  # naive: every source here speaks UTC
    ],
)
def test_parse_utc_gives_aware_utc(text: str, expected: datetime) -> None:
    parsed = parse_utc(text)
    assert parsed == expected and parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["", "yesterday", "2022-13-01T00:00Z", " 2022-06-01T00:00Z"])
def test_parse_utc_refuses_what_is_not_a_time(text: str) -> None:
    with pytest.raises(ValueError):
        parse_utc(text)
