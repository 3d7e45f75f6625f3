"""Print the README's fault table: the newest result of each scenario at one scale.

python -m tests.faults.table [--scale full|default]
"""

from __future__ import annotations

import argparse
import json

from tests.faults.scale import RESULTS


def table(scale: str) -> str:
    """A markdown table of the newest recorded result per scenario at ``scale``."""
    newest: dict[str, dict[str, object]] = {}
    for line in RESULTS.read_text().splitlines() if RESULTS.exists() else []:
        row = json.loads(line)
        if row["scale"] == scale:
            newest[row["scenario"]] = row
    rows = sorted(newest.values(), key=lambda r: int(str(r["scenario"]).split()[0]))
    out = ["| scenario | size | result | seconds | run at (UTC) |", "|---|---|---|---:|---|"]
    cells = ("scenario", "size", "result", "seconds", "at")
    out += ["| " + " | ".join(str(r[c]) for c in cells) + " |" for r in rows]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["full", "default"], default="full")
    print(table(parser.parse_args().scale))


if __name__ == "__main__":
    main()
