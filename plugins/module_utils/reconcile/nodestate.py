# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The node's state files, loaded once per module run or agent tick: :class:`NodeState`.

A run or a tick makes one ``NodeState(state_dir)`` and asks it for the parsed files (desired state, identity, the
agent's peer statuses) instead of reading them where each is used. Each file is read lazily, on first use, and
parsed once; a corrupt file behaves exactly as when it was read directly (engine.load_state's StateFileError, the
statuses' fresh start with a problem to log, load_identity's error).

Concurrency. The agent's tick runs while a playbook run may rewrite state.json under the node lock (and a run may
start while a tick holds it); the code used to re-read the file after taking the lock for that reason. NodeState
keeps that safety without the re-reads: with every parsed file it keeps the file's stamp (inode, mtime in ns, ctime
in ns, size) taken just before the read, and each later access stats the file again (a few microseconds) and parses
it again only when the stamp differs. Every writer of these files replaces them atomically (statefile.atomic_write:
a new inode renamed into place), so a change on disk always changes the stamp; a change between the stat and the
read only costs one more read later, never a stale value. So a value handed out under the lock is the file's
current content under the lock, as a re-read there gave.

Writes. ``write_state``/``write_statuses`` write through at once (atomically, 0600, as before) and record the new
stamp, so the writer does not read its own write back: the desired state is written under the lock when a change is
decided (a concurrent run must see it), and the statuses once mid-tick when the routed or relayed set changes (a
playbook run reads them to build the same routed set: docs/architecture.md). ``set_statuses`` only records the
tick's statuses; :meth:`commit` writes each file recorded that way once, at the end. The values handed out are
shared: a caller that changes one writes it back with ``write_state``/``write_statuses``.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Tuple

from ..core.peerstatus import PeerStatus, statuses_from_json, statuses_to_json
from ..core.peerstatus import up_peers as status_up_peers
from ..core.relay import via_map
from ..core.wgtypes import count_exceeds
from ..host import layout
from ..host.identity import Identity, load_identity
from ..host.statefile import StateFileError, read_json, read_text, write_json

STATE_FILE = layout.STATE
STATE_VERSION = 1
Stamp = Optional[Tuple[int, int, int, int]]


def state_path(state_dir: str) -> str:
    return os.path.join(state_dir, STATE_FILE)


def load_state(state_dir: str) -> Optional[dict]:
    import json
    text = read_text(state_path(state_dir))
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateFileError("%s is not valid JSON (%s): the file is corrupt" % (state_path(state_dir), exc))
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            version = "of type %s" % type(version).__name__  # never a value but a number
        raise StateFileError("%s has an unknown format (version %s): re-run the playbook to rewrite it" % (state_path(state_dir), version))
    _check_state_shape(data, state_path(state_dir), text)
    return data


# key of the desired state -> the types it may have (None: the key may be null); a hand-edited or corrupt file
# gets an error naming the file and the key instead of an AttributeError in the agent's tick
_STATE_SHAPES = (("settings", (dict,)), ("discovery", (dict, type(None))), ("peers", (list,)), ("members", (list, type(None))),
                 ("inventory_peers", (list, type(None))), ("local_affiliate", (dict, type(None))), ("cluster_id", (str,)),
                 ("address", (str, type(None))), ("subnet", (str, type(None))))


def _check_state_shape(data: dict, path: str, text: str) -> None:
    """StateFileError naming ``path`` and the key when the desired state has a key of the wrong type, a peer that is
    not a mapping with a public key, or a cluster secret (the peers' preshared key) that is not base64 of 32 bytes
    or that (any 8 characters of it) also appears elsewhere in the file ``text``, where a message could quote it.
    No message contains a value."""
    import base64
    import binascii
    fix = "re-run the kubespan.mesh playbook to rewrite it"
    for key in ("cluster_id", "cluster_secret"):  # a run always writes both (a missing one may be a corrupt key name)
        if key not in data:
            raise StateFileError("%s has no %s: %s" % (path, key, fix))
    for key, types in _STATE_SHAPES:
        if key in data and not isinstance(data[key], types):
            raise StateFileError("%s: %s must be %s, got %s: %s" % (path, key, " or ".join(
                {dict: "a mapping", list: "a list", str: "a string", type(None): "null"}[t] for t in types),
                type(data[key]).__name__, fix))
    for index, peer in enumerate(data.get("peers") or []):
        if not isinstance(peer, dict) or not isinstance(peer.get("public_key"), str) or not isinstance(peer.get("name", ""), str):
            raise StateFileError("%s: peers[%d] is not a peer mapping with a public_key: %s" % (path, index, fix))
    if "cluster_secret" in data:
        secret = data["cluster_secret"]
        try:
            size = len(base64.b64decode(secret, validate=True)) if isinstance(secret, str) else None
        except (binascii.Error, ValueError):
            size = None
        if size != 32:
            raise StateFileError("%s: cluster_secret (the peers' preshared key) is %s, 32 bytes of base64 needed (value "
                                 "hidden): %s" % (path, "not base64" if size is None else "%d bytes" % size, fix))
        if count_exceeds(text, secret):
            raise StateFileError("%s: part of cluster_secret also appears in another field (value hidden): the file is "
                                 "corrupt; %s" % (path, fix))


def stamp(path: str) -> Stamp:
    """(inode, mtime ns, ctime ns, size) of ``path``, None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return (-1, -1, -1, -1)  # unreadable: always read again (the read reports it)
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def load_statuses(state_dir: str) -> Tuple[Dict[str, PeerStatus], Optional[str]]:
    """Statuses of the last tick, and a problem to report when the file was corrupt (then: fresh start)."""
    path = layout.path(state_dir, layout.STATUSES)
    try:
        data = read_json(path)
        return (statuses_from_json(data) if data is not None else {}), None
    except StateFileError as exc:
        return {}, "%s; starting with fresh peer statuses" % exc
    except ValueError as exc:
        return {}, "%s is corrupt (%s); starting with fresh peer statuses" % (path, exc)


class NodeState:
    """The node's files for one run or tick; see the module docstring."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        self._cache: Dict[str, Tuple[Stamp, object]] = {}
        self._pending: Dict[str, Callable[[], None]] = {}

    def _get(self, path: str, load: Callable[[], object]):
        now = stamp(path)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == now and now != (-1, -1, -1, -1):
            return cached[1]
        value = load()  # raises as the direct read did; an error is not cached (read again next time)
        self._cache[path] = (now, value)
        return value

    def _wrote(self, path: str, value) -> None:
        self._cache[path] = (stamp(path), value)

    # ------------------------------------------------------------------------------------ desired state

    def state(self) -> Optional[dict]:
        """engine.load_state: the desired state, None when there is none; StateFileError when corrupt."""
        return self._get(state_path(self.state_dir), lambda: load_state(self.state_dir))

    def state_or_empty(self) -> dict:
        """The desired state, {} when there is none or it is corrupt (what a run keeps of the last one)."""
        try:
            return self.state() or {}
        except StateFileError:
            return {}

    def write_state(self, state: dict) -> None:
        """Write the desired state now (atomically, 0600); the caller holds the node lock."""
        write_json(state_path(self.state_dir), state)
        self._wrote(state_path(self.state_dir), state)

    # ------------------------------------------------------------------------------------ identity

    def identity(self) -> Optional[Identity]:
        """host.identity.load_identity: None when there is none; StateFileError when corrupt."""
        kpath, _npath = layout.path(self.state_dir, layout.KUBESPAN_IDENTITY), layout.path(self.state_dir, layout.NODE_IDENTITY)
        key = kpath + "+" + layout.NODE_IDENTITY
        both = (stamp(kpath), stamp(_npath))
        cached = self._cache.get(key)
        if cached is not None and cached[0] == both:
            return cached[1]
        value = load_identity(self.state_dir)
        self._cache[key] = (both, value)
        return value

    def forget_identity(self) -> None:
        """The identity was written by someone else (engine.save_identity): read it again on next use."""
        self._cache.pop(layout.path(self.state_dir, layout.KUBESPAN_IDENTITY) + "+" + layout.NODE_IDENTITY, None)

    # ------------------------------------------------------------------------------------ statuses

    def statuses(self) -> Tuple[Dict[str, PeerStatus], Optional[str]]:
        """(the agent's last statuses, a problem when the file was corrupt: then fresh statuses)."""
        path = layout.path(self.state_dir, layout.STATUSES)
        if path in self._pending:
            return self._cache[path][1]
        return self._get(path, lambda: load_statuses(self.state_dir))

    def up_peers(self) -> List[str]:
        """Public keys of the peers the agent last saw up (engine.agent_up_peers)."""
        return status_up_peers(self.statuses()[0])

    def via(self) -> dict:
        """Peer public key -> relay public key, as the agent last decided (engine.agent_via)."""
        return via_map(self.statuses()[0])

    def write_statuses(self, statuses: Dict[str, PeerStatus]) -> None:
        """Write the statuses now (the tick's deliberate mid-tick write, under the node lock)."""
        path = layout.path(self.state_dir, layout.STATUSES)
        write_json(path, statuses_to_json(statuses))
        self._pending.pop(path, None)
        self._wrote(path, (statuses, None))

    def set_statuses(self, statuses: Dict[str, PeerStatus]) -> None:
        """Record the tick's statuses; :meth:`commit` writes them."""
        path = layout.path(self.state_dir, layout.STATUSES)
        self._cache[path] = (None, (statuses, None))
        self._pending[path] = lambda: self.write_statuses(statuses)

    def commit(self) -> None:
        """Write each file recorded with a ``set_`` method once (atomically, 0600)."""
        for path in sorted(self._pending):
            self._pending.pop(path)()
