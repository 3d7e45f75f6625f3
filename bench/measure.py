"""Watching processes (peak RSS, CPU seconds) and summarising latencies."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psutil

Marks = dict[str, dict[int, float]]


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port, if this host runs it and we may see it."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for c in connections:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return int(c.pid)
    return None


@dataclass
class _Watched:
    """A group of process trees: their CPU seconds by pid and peak RSS by root."""

    roots: list[int]
    cpu: dict[int, float]
    peak_rss: dict[int, int]


class Sampler:
    """Samples process trees in a thread, so that short-lived children are counted too."""

    # A PostgreSQL backend lives as long as its connection; sampling every `interval_s` keeps
    # its last CPU time after it exits, so a phase's CPU is the sum over every pid seen.

    def __init__(self, interval_s: float = 0.2) -> None:
        self._interval_s = interval_s
        self._groups: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def watch(self, group: str, roots: Iterable[int]) -> None:
        """Watch these process trees as `group`, replacing what it watched before."""
        with self._lock:
            self._groups[group] = _Watched(list(roots), {}, {})
        self.sample()

    def mark(self) -> Marks:
        """Sample now; the CPU seconds seen so far, by group and pid."""
        self.sample()
        with self._lock:
            return {name: dict(w.cpu) for name, w in self._groups.items()}

    def peak_rss(self, group: str) -> dict[int, int]:
        """The largest resident set of each root's tree so far, in bytes."""
        with self._lock:
            w = self._groups.get(group)
            return dict(w.peak_rss) if w else {}

    def sample(self) -> None:
        """Read every watched tree's CPU times and memory once."""
        with self._lock:
            for w in self._groups.values():
                for root in w.roots:
                    rss = 0
                    for p in _tree(root):
                        try:
                            times = p.cpu_times()
                            w.cpu[p.pid] = times.user + times.system
                            rss += p.memory_info().rss
                        except (psutil.NoSuchProcess, psutil.AccessDenied):
                            continue
                    w.peak_rss[root] = max(w.peak_rss.get(root, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.sample()


def _tree(root: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(root)
        return [parent, *parent.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def cpu_between(before: Marks, after: Marks, group: str) -> float | None:
    """CPU seconds a group spent between two marks; None when it was not watched."""
    if group not in after:
        return None
    start = before.get(group, {})
    return sum(t - start.get(pid, 0.0) for pid, t in after[group].items())


def cpu_shares(
    before: Marks, after: Marks, wall_s: float, groups: Iterable[str]
) -> dict[str, float | None]:
    """Each group's CPU seconds between two marks as a share of all cores x the wall time."""
    cores = psutil.cpu_count() or 1
    shares: dict[str, float | None] = {}
    for group in groups:
        spent = cpu_between(before, after, group)
        shares[group] = None if spent is None else spent / (cores * wall_s)
    return shares


@dataclass(frozen=True)
class Window:
    """The throughput phase as the outcomes' timestamps tell it."""

    throughput: float
    seconds: float
    from_settled: bool = False


def window(stamps_ms: Iterable[int], per_outcome: float, settled_s: float | None = None) -> Window:
    """Inputs per second from the first outcome (or the group settling, if later) to the last."""
    # Each outcome in the window stands for `per_outcome` inputs; when the window starts at the
    # first outcome, that is simply all the inputs.
    stamps = sorted(stamps_ms)
    if not stamps:
        return Window(math.nan, math.nan)
    start, settled = stamps[0], False
    # Only a group of several members rebalances once outcomes flow (the last joiner takes
    # partitions from the first); half a second keeps polling lag from trimming the window.
    if settled_s is not None and stamps[0] + 500 < settled_s * 1000 < stamps[-1]:
        start, settled = int(settled_s * 1000), True
    counted = sum(1 for t in stamps if t >= start)
    seconds = max((stamps[-1] - start) / 1000, 0.001)
    return Window(counted * per_outcome / seconds, seconds, settled)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; infinite values (never arrived) sort last."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]
