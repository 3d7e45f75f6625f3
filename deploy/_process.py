"""Process plumbing shared by the local Kafka and PostgreSQL starters."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

logger = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
_LOWEST_PORT = 20000  # clear of the well-known ports databases and brokers default to
_BANNER = "\n===== "
# Log levels of Kafka and PostgreSQL, and Java exception headlines (the lines naming the cause).
_ERROR_LINE = re.compile(r"\b(ERROR|FATAL|PANIC)\b|^(Caused by: )?[\w.$]+(Exception|Error)(:|$)")


class Started:
    """A local server used as a context manager: started on entry, stopped on exit."""

    def start(self) -> None:
        """Start the server (each server says how)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server (each server says how)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()


class InfraError(RuntimeError):
    """Local infrastructure could not be prepared, started or stopped."""


def _ephemeral_range() -> tuple[int, int]:
    """Return the kernel's range for outgoing connections' local ports."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on, below the ephemeral range.

    A port from the ephemeral range could be taken by some client's outgoing connection while
    a server is down for a restart; below it, only another listener can take it.
    """
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    if low > _LOWEST_PORT + 1000:
        for _ in range(100):
            port = rng.randrange(_LOWEST_PORT, low)
            if port_is_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Tell whether a TCP port on 127.0.0.1 can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The servers set SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    """Tell whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def pick_port(requested: int | None, remembered: int | None) -> int:
    """Use the requested port, else the one used last time if still free, else a free one."""
    if requested is not None:
        return requested
    if remembered is not None and port_is_free(remembered):
        return remembered
    return free_port()


def read_state(path: Path) -> dict[str, object]:
    """Read a small JSON state file; an absent or unreadable one is empty."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(path: Path, state: dict[str, object]) -> None:
    """Write a small JSON state file atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(path)


def state_int(state: dict[str, object], key: str) -> int | None:
    """Return an int entry of a state mapping, or None."""
    value = state.get(key)
    return value if isinstance(value, int) else None


def log_tail(path: Path, lines: int = 20) -> str:
    """Return the current run's error lines and last lines of a log, for exception messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    # The log is appended to across restarts: only the part after the last banner matters.
    current = text.rsplit(_BANNER, 1)[-1].splitlines()
    errors = [line for line in current if _ERROR_LINE.search(line)][-12:]
    parts = ["errors:", *errors, "last lines:"] if errors else []
    return "\n".join([*parts, *current[-lines:]])


def pid_alive(pid: int) -> bool:
    """Tell whether a process with this pid exists (zombies of our own children count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc tells it apart where there is one.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def pid_runs(pid: int, needle: str) -> bool:
    """Tell whether pid is alive and its command line mentions needle (guards against pid reuse)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc: trust the pid file
    return needle.encode() in cmdline


def process_identity(pid: int) -> str | None:
    """Return "pid:start-time" of a live process (a pid alone may be reused), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return f"{pid}:?" if pid_alive(pid) else None
    # Fields after the parenthesised command name: state is field 3, start time field 22.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None  # killed, not yet reaped
    return f"{pid}:{fields[19]}"


def wait_gone(is_alive: Callable[[], bool], timeout: float) -> bool:
    """Poll until is_alive() turns false; return whether it did within timeout."""
    deadline = time.monotonic() + timeout
    while is_alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Send sig to the process group led by pid (each server runs in its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def stop_group(
    pid: int,
    first: signal.Signals,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    first_to_group: bool = True,
) -> None:
    """Send `first` to pid (or its whole group), wait up to timeout, then SIGKILL the group."""

    def alive() -> bool:
        if proc is not None:
            return proc.poll() is None  # reaps our own child
        return pid_alive(pid)

    if not alive():
        return
    if first_to_group:
        _signal_group(pid, first)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, first)
    if wait_gone(alive, timeout):
        return
    logger.warning("process %d ignored %s for %.0f s; killing it", pid, first.name, timeout)
    _signal_group(pid, signal.SIGKILL)
    if not wait_gone(alive, 10):
        raise InfraError(f"process {pid} survived SIGKILL")


def open_log(path: Path, banner: str) -> int:
    """Open a log file for appending, write a banner line and return its descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"{_BANNER}{stamp} {banner} =====\n".encode())
    return fd
