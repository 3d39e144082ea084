"""A real PgBouncer (Debian's ``pgbouncer`` package) in front of the test PostgreSQL server.

Not a test module: the pooler tests and ``bench/pooler.py`` import it. ``PgBouncer.start``
writes an ini file that sends every database to the upstream server's socket, listens on a free
loopback port with ``auth_type = trust`` and runs PgBouncer in the foreground. As root it runs
as the upstream server's own system user (PgBouncer refuses to run as root, and that user can
reach the server's private socket directory); otherwise as us.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

#: Where to get it when it is missing (the tests that need it skip, saying this).
INSTALL_HINT = "PgBouncer is not installed (Debian: apt-get install pgbouncer)"


def pgbouncer_binary() -> str | None:
    """The ``pgbouncer`` executable, or None."""
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _upstream(url: str) -> dict[str, str]:
    """host, port, user, password and dbname of a ``postgresql://`` URL (socket dir as host)."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return {
        "host": query.get("host") or parts.hostname or "127.0.0.1",
        "port": query.get("port") or str(parts.port or 5432),
        "user": parts.username or "postgres",
        "password": parts.password or "",
        "dbname": parts.path.lstrip("/") or "postgres",
    }


@dataclass
class PgBouncer:
    """One PgBouncer process; ``url`` is its address for ``database.url``."""

    upstream_url: str = field(repr=False)
    pool_mode: str = "transaction"
    default_pool_size: int = 4
    port: int = 0
    directory: Path = Path()
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{_upstream(self.upstream_url)['dbname']}"

    @property
    def log(self) -> str:
        """What PgBouncer logged so far."""
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> PgBouncer:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        up = _upstream(self.upstream_url)
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="discord_actor-pgbouncer-"))
        user = None
        if os.geteuid() == 0:
            host = Path(up["host"])
            user = host.owner() if host.is_dir() else "nobody"
        target = " ".join(f"{k}={v}" for k, v in up.items() if k != "dbname" and v)
        (self.directory / "userlist.txt").write_text('"postgres" ""\n')
        (self.directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = {target}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'userlist.txt'}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.default_pool_size}\n"
            "max_client_conn = 500\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            "admin_users = postgres\n"
        )
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chmod(self.directory, 0o700)
            for path in (self.directory, *self.directory.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        command = [binary, *(["-u", user] if user else []), str(self.directory / "pgbouncer.ini")]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr
                err = stderr.read().decode(errors="replace") if stderr is not None else ""
                raise RuntimeError(f"pgbouncer exited {self.process.returncode}: {err}{self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on port {self.port} within 10 s: {self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
