# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Node identity: WireGuard key pair and node ID, persisted in Talos's file format.

``kubespan-identity.yaml`` holds address, subnet, privateKey, publicKey; ``node-identity.yaml`` holds
nodeId. Both are written atomically with mode 0600 inside a 0700 directory. An existing identity is
never replaced: a corrupt file is an error that names the file.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Optional

from ..core.keys import generate_node_id, generate_private_key, public_key_for, valid_node_id
from ..core.wgtypes import holds_part_of, key_to_bytes, secret_pieces
from . import layout
from .statefile import StateFileError, atomic_write, dump_flat_yaml, ensure_dir, fsync_dir, parse_flat_yaml, read_text

KUBESPAN_IDENTITY_FILE = layout.KUBESPAN_IDENTITY
NODE_IDENTITY_FILE = layout.NODE_IDENTITY
# Present only while a new identity's two files are being written: a crash between them leaves a
# half identity that was never used, which the next run replaces instead of calling it corrupt.
CREATING_MARKER = layout.IDENTITY_CREATING


@dataclass
class Identity:
    private_key: str
    public_key: str
    node_id: str
    address: str = ""
    subnet: str = ""

    def __repr__(self):
        # never print the private key by accident (tracebacks, debug logs)
        return "Identity(public_key=%r, node_id=%r, address=%r, subnet=%r)" % (self.public_key, self.node_id, self.address, self.subnet)


def _line_of(text: str, key: str) -> str:
    """' line N' of the line that sets ``key`` in a flat YAML text, '' when it is not set."""
    for lineno, raw in enumerate(text.splitlines(), 1):
        if raw.strip().partition(":")[0].strip() == key:
            return " line %d" % lineno
    return " (no %s line)" % key


def identity_paths(state_dir: str):
    return os.path.join(state_dir, KUBESPAN_IDENTITY_FILE), os.path.join(state_dir, NODE_IDENTITY_FILE)


def load_identity(state_dir: str) -> Optional[Identity]:
    """Load the identity, None when neither file exists; StateFileError naming the file if corrupt."""
    kpath, npath = identity_paths(state_dir)
    ktext = read_text(kpath)
    ntext = read_text(npath)
    if ktext is None and ntext is None:
        return None
    if (ktext is None or ntext is None) and os.path.exists(os.path.join(state_dir, CREATING_MARKER)):
        return None  # the creation of this identity was interrupted before it completed: never used
    if ktext is None:
        raise StateFileError("%s is missing but %s exists: restore the key file from backup, or remove both to create a new identity" % (kpath, npath))
    if ntext is None:
        raise StateFileError("%s is missing but %s exists: restore it from backup, or remove both to create a new identity" % (npath, kpath))
    kvals = parse_flat_yaml(ktext, kpath)
    nvals = parse_flat_yaml(ntext, npath)
    # errors name the file, the field and its line, never a value (a corrupt file may hold the key anywhere)
    priv = kvals.get("privateKey", "")
    try:
        key_to_bytes(priv)
    except ValueError as exc:
        raise StateFileError("%s%s: privateKey %s: the identity file is corrupt; restore it from backup"
                             % (kpath, _line_of(ktext, "privateKey"), exc))
    pub = public_key_for(priv)
    stored_pub = kvals.get("publicKey", "")
    if stored_pub and stored_pub != pub:
        raise StateFileError("%s%s: publicKey does not belong to privateKey: the identity file is corrupt"
                             % (kpath, _line_of(ktext, "publicKey")))
    node_id = nvals.get("nodeId", "")
    if not valid_node_id(node_id) or _shares_text(node_id, priv):
        raise StateFileError("%s%s: nodeId is not a base62 node ID (value hidden): the file is corrupt"
                             % (npath, _line_of(ntext, "nodeId")))
    address, subnet = kvals.get("address", ""), kvals.get("subnet", "")
    for field_name, value, parse in (("address", address, ipaddress.IPv6Interface), ("subnet", subnet, ipaddress.IPv6Network)):
        try:
            if value:
                parse(value)
        except ValueError:
            value = None
        if value is None or _shares_text(value, priv):
            raise StateFileError("%s%s: %s is not an IPv6 %s (value hidden): the identity file is corrupt"
                                 % (kpath, _line_of(ktext, field_name), field_name, "address" if field_name == "address" else "network"))
    return Identity(priv, pub, node_id, address, subnet)


def _shares_text(value: str, secret: str) -> bool:
    """Whether ``value`` holds part of ``secret`` (base64, URL-safe or hex: wgtypes.secret_pieces): a field that is
    returned must never carry part of the private key, whatever a corrupt file put there."""
    return holds_part_of(value, secret_pieces(secret))


def save_identity(state_dir: str, ident: Identity, node_file: bool = True) -> None:
    ensure_dir(state_dir)
    kpath, npath = identity_paths(state_dir)
    marker = os.path.join(state_dir, CREATING_MARKER)
    if node_file:
        atomic_write(marker, b"")
        atomic_write(npath, dump_flat_yaml({"nodeId": ident.node_id}))
    atomic_write(kpath, dump_flat_yaml({
        "address": ident.address,
        "subnet": ident.subnet,
        "privateKey": ident.private_key,
        "publicKey": ident.public_key,
    }))
    if node_file:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            pass
        fsync_dir(state_dir)


def new_identity() -> Identity:
    priv = generate_private_key()
    return Identity(priv, public_key_for(priv), generate_node_id())
