# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Glue shared by the modules: turn the known error types into clean ``fail_json`` messages."""

from __future__ import annotations

import functools
import gc

from .statefile import StateFileError
from .wgtypes import WireGuardError

# Errors whose message is written for the user; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ValueError, StateFileError, WireGuardError, RuntimeError, OSError)


def expected_errors():
    from .engine import ReconcileError
    from .netlink import NetlinkError
    from .nft import NftError
    return EXPECTED_ERRORS + (ReconcileError, NetlinkError, NftError)


def run_guarded(module, work):
    """Run ``work()`` and return its result dict; known errors become ``module.fail_json(msg=...)``."""
    try:
        return work()
    except expected_errors() as exc:
        module.fail_json(msg=str(exc))


def collector_off(function):
    """Run ``function`` with the cyclic garbage collector off, then restore its previous state. For the planners
    (peer set, device plan): they make a few small objects per peer and no reference cycles, and on thousands of
    peers the collector would walk every live object of the process several times to free nothing (what it would
    have found, it finds later)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()
    return wrapper
