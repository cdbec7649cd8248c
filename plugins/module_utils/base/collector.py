# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The planners' switch for Python's cyclic garbage collector. Pure: imports nothing of the project."""

from __future__ import annotations

import functools
import gc


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
