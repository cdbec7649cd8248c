# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Crash-safe state files: write to a temporary file, fsync, rename, fsync the directory.

A reader therefore sees either the previous complete file or the new complete file. Also a minimal
reader and writer for the flat ``key: value`` YAML documents Talos uses for its identity files, so the
node side needs no YAML library.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import tempfile
import time
from typing import Dict

from ..base.errors import KubeSpanError
from . import layout

STATE_DIR_MODE = 0o700
STATE_FILE_MODE = 0o600


LOCK_FILE = layout.LOCK


class StateFileError(KubeSpanError):
    """A state file is unreadable or corrupt; the message names the file."""


class LockBusy(StateFileError):
    """Another reconcile (a playbook run or an agent tick) holds the node's lock."""


@contextlib.contextmanager
def state_lock(state_dir: str, timeout: float = 60.0):
    """Hold the node's exclusive reconcile lock (flock on <state_dir>/.lock).

    The playbook's modules and the node agent both take it, so they never change the node at the same
    time. Waits up to ``timeout`` seconds (0: do not wait) and raises LockBusy naming the lock file.
    The kernel releases a flock when its holder dies, so a crash never leaves a stale lock.
    """
    path = os.path.join(state_dir, LOCK_FILE)
    if not os.path.isdir(state_dir):
        yield None  # nothing on this node yet (and check mode must not create the directory)
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, STATE_FILE_MODE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise StateFileError("cannot lock %s: %s" % (path, exc.strerror or exc))
                if time.monotonic() >= deadline:
                    raise LockBusy("%s is held by another kubespan reconcile (a playbook run or the node agent) for more than %.0f s"
                                   % (path, timeout))
                time.sleep(0.05)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def ensure_dir(path: str, mode: int = STATE_DIR_MODE) -> bool:
    """Create ``path`` with ``mode`` (and tighten an existing one). Returns True if anything changed."""
    changed = False
    if not os.path.isdir(path):
        os.makedirs(path, mode)
        changed = True
    st = os.stat(path)
    if (st.st_mode & 0o7777) != mode:
        os.chmod(path, mode)
        changed = True
    return changed


STALE_TEMP_AGE = 600.0  # seconds: a temporary file this old belongs to a writer that was killed


def fsync_dir(directory: str) -> None:
    """Make renames and unlinks in ``directory`` durable."""
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _remove_stale_temps(directory: str, prefix: str) -> None:
    """Remove temporary files of ``prefix`` that killed writers left behind (they may hold a key copy)."""
    now = time.time()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp"):
            full = os.path.join(directory, name)
            try:
                if now - os.lstat(full).st_mtime > STALE_TEMP_AGE:
                    os.unlink(full)
            except OSError:
                pass


def atomic_write(path: str, data: bytes, mode: int = STATE_FILE_MODE) -> None:
    """Atomically replace ``path`` with ``data`` (mode ``mode``), durable across power loss."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = "." + os.path.basename(path) + "."
    fd, tmp = -1, None
    try:
        _remove_stale_temps(directory, prefix)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
        tmp = None
        fsync_dir(directory)
    except OSError as exc:
        raise StateFileError("cannot write %s: %s (the previous version, if any, is unchanged)" % (path, exc.strerror or exc))
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z, not $: "$" also matches before a final newline
_SAFE_PLAIN_RE = re.compile(r"^[A-Za-z0-9+/=_.:\-]+\Z")


def dump_flat_yaml(values: Dict[str, str]) -> bytes:
    """Serialize a flat mapping of strings; values are double-quoted unless plainly safe."""
    lines = []
    for key, value in values.items():
        if not _KEY_RE.match(key):
            raise ValueError("invalid key %r" % key)
        value = "" if value is None else str(value)
        if _SAFE_PLAIN_RE.match(value) and value[0] not in "-:" and value not in ("null", "true", "false", "~"):
            lines.append("%s: %s" % (key, value))
        else:
            lines.append("%s: %s" % (key, json.dumps(value)))
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_flat_yaml(text: str, path: str = "<string>") -> Dict[str, str]:
    """Parse the flat ``key: value`` YAML subset written by :func:`dump_flat_yaml` (and by Talos).

    Errors name the file, the line number and the key, never a value: these files hold private keys and secrets."""
    result = {}
    lines = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or line == "---":
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or not _KEY_RE.match(key):
            # the line is never quoted: it may be a key or secret line (privateKey=..., a spliced secret)
            raise StateFileError("%s line %d: expected 'key: value' (line hidden, %d characters)" % (path, lineno, len(raw)))
        value = value.strip()
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                raise StateFileError("%s line %d: bad double-quoted string" % (path, lineno))
        elif value.startswith("'"):
            if len(value) < 2 or not value.endswith("'"):
                raise StateFileError("%s line %d: bad single-quoted string" % (path, lineno))
            value = value[1:-1].replace("''", "'")
        elif value in ("", "~", "null"):
            value = ""
        if key in result:
            # the key is not named either: a spliced secret can look like a key
            raise StateFileError("%s line %d: duplicate key (first set on line %d)" % (path, lineno, lines[key]))
        result[key] = value
        lines[key] = lineno
    return result


def read_text(path: str):
    """Return the file's text, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError("cannot read %s: %s" % (path, exc.strerror or exc))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise StateFileError("%s is not UTF-8 text: the file is corrupt; restore it from backup or remove it" % path)


def read_json(path: str):
    text = read_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StateFileError("%s is not valid JSON (%s): the file is corrupt" % (path, exc))


def write_json(path: str, value) -> None:
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8"))
