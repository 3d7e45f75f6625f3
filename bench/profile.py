"""A py-spy recording of a consumer during the throughput phase, summarised by function."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")
TOP = 30
_ROOT = str(Path(__file__).resolve().parents[1]) + "/"
_PROJECT_PACKAGES = ("services", "contracts", "bench")


def _py_spy() -> str:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else (shutil.which("py-spy") or "py-spy")


class Recording:
    """`py-spy record` of one process, into `<stem>.txt` (collapsed stacks) and a summary."""

    def __init__(self, pid: int, stem: Path) -> None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        self.raw = stem.with_suffix(".txt")
        self.summary = stem.with_suffix(".md")
        self._proc = subprocess.Popen(  # noqa: S603 - py-spy beside our interpreter
            [
                *(_py_spy(), "record", "--pid", str(pid), "--rate", "100", "--nonblocking"),
                *("--format", "raw", "--output", str(self.raw)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stop recording (py-spy writes on SIGINT) and write the summary."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        with contextlib.suppress(OSError):
            self.summary.write_text(summarise(self.raw.read_text()))


def _name(frame: str) -> tuple[str, str]:
    """`function (module path)` and its owner: services/<x>, a library, or Python itself."""
    # py-spy already gives paths relative to sys.path.
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), "?"
    path = m["file"].split("site-packages/")[-1].split(_ROOT)[-1]
    top = path.split("/")[0].removesuffix(".py")
    if path.startswith("services/"):
        owner = "/".join(path.split("/")[:2])
    elif top in _PROJECT_PACKAGES:
        owner = top
    elif path.startswith("<") or top in sys.stdlib_module_names:
        owner = "python (stdlib, interpreter)"
    else:
        owner = top
    return f"{m['function']} ({path})", owner


def summarise(collapsed: str) -> str:
    """Where the samples were: own time by function and by package, inclusive in our code."""
    own: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        count = int(m["count"])
        frames = [_name(f) for f in m["stack"].split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1][0]] += count
        owners[frames[-1][1]] += count
        for name in {n for n, owner in frames if owner.startswith(_PROJECT_PACKAGES)}:
            ours[name] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} samples at 100 Hz (idle time not sampled)", ""]
    lines += ["Own time by package (where the CPU was):", ""]
    lines += [f"- {n / total:6.1%} {p}" for p, n in owners.most_common(TOP)]
    lines += ["", "Own time by function:", ""]
    lines += [f"- {n / total:6.1%} {f}" for f, n in own.most_common(TOP)]
    lines += ["", "Inclusive time of the project's functions (callees included):", ""]
    lines += [f"- {n / total:6.1%} {f}" for f, n in ours.most_common(TOP)]
    return "\n".join(lines) + "\n"
