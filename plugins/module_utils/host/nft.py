# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""nftables adapter: ``nft -j`` in and out (JSON, no text parsing); batches are applied atomically."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Optional

from ..base.errors import KubeSpanError

NFT_CANDIDATES = ("/usr/sbin/nft", "/sbin/nft")


class NftError(KubeSpanError):
    """nft failed; the message names the command's purpose and nft's own error."""


def nft_binary() -> str:
    found = shutil.which("nft") or next((p for p in NFT_CANDIDATES if shutil.which(p)), None)
    if not found:
        raise NftError("nft is not installed: install the nftables package")
    return found


def nft_available() -> bool:
    try:
        nft_binary()
        return True
    except NftError:
        return False


def list_table(table: str, family: str = "inet") -> Optional[dict]:
    """``nft -j list table`` as a dict, or None when the table does not exist."""
    proc = subprocess.run([nft_binary(), "-j", "list", "table", family, table], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr or "does not exist" in proc.stderr:
            return None
        raise NftError("cannot list table %s %s: %s" % (family, table, proc.stderr.strip()[-400:]))
    try:
        return json.loads(proc.stdout)
    except ValueError as exc:
        raise NftError("nft returned invalid JSON for table %s %s: %s" % (family, table, exc))


def apply_batch(batch: dict, what: str) -> None:
    """Apply one ``nft -j -f`` batch (all or nothing), fed through stdin (/proc/self/fd/0: /dev/stdin may not exist)."""
    proc = subprocess.run([nft_binary(), "-j", "-f", "/proc/self/fd/0"], input=json.dumps(batch), capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise NftError("nft refused to %s: %s" % (what, proc.stderr.strip()[-400:]))


def list_ruleset() -> dict:
    """``nft -j list ruleset`` as a dict."""
    proc = subprocess.run([nft_binary(), "-j", "list", "ruleset"], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise NftError("cannot list the nftables ruleset: %s" % proc.stderr.strip()[-400:])
    try:
        return json.loads(proc.stdout)
    except ValueError as exc:
        raise NftError("nft returned invalid JSON for the ruleset: %s" % exc)
