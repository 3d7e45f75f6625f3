"""The scaling drill's rule and its reading of the lag it saw."""

from __future__ import annotations

from bench.scale import Drill, Rule


def test_the_rule_wants_a_process_per_share_of_lag_within_bounds() -> None:
    rule = Rule(lag_per_process=1000, max_processes=3, cooldown_s=10)
    assert [rule.wanted(lag) for lag in (0, 1, 1000, 1001, 2500, 10**6)] == [1, 1, 1, 2, 3, 3]


def test_drain_rates_are_read_per_process_count() -> None:
    drill = Drill(
        samples=[(0, 9000, 1), (2, 8000, 1), (4, 7000, 2), (5, 5000, 2), (6, 3000, 2)],
        started_at=[0, 3],
    )
    assert drill.drain_rates() == [(1, 2, 500.0), (2, 2, 2000.0)]
