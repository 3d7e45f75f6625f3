"""Scenario sizes: small in the default run, the full sizes with PACKAGES_FAULT_SCALE=full."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

FULL = os.environ.get("PACKAGES_FAULT_SCALE") == "full"
RESULTS = Path(__file__).resolve().parents[2] / ".cache" / "faults" / "results.jsonl"


def size(default: int, full: int) -> int:
    """The size of a scenario in this run."""
    return full if FULL else default


@dataclass
class Outcome:
    """What a scenario measured, for the README's table."""

    scenario: str
    size: str
    result: str
    started: float

    def record(self) -> None:
        """Append to .cache/faults/results.jsonl (the full-size command prints them)."""
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        line = {
            "scenario": self.scenario,
            "size": self.size,
            "result": self.result,
            "seconds": round(time.monotonic() - self.started, 1),
            "scale": "full" if FULL else "default",
            "at": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        }
        with RESULTS.open("a") as out:
            out.write(json.dumps(line) + "\n")
