# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Glue shared by the modules: turn the expected errors into clean ``fail_json`` messages."""

from __future__ import annotations

from ..base.errors import KubeSpanError

# Errors whose message is written for the user: the project's own (errors.KubeSpanError) and the host's
# (OSError: a file or a command that is not there; ValueError and RuntimeError from the standard library's
# parsers and pyroute2); anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (KubeSpanError, ValueError, RuntimeError, OSError)


def run_guarded(module, work):
    """Run ``work()`` and return its result dict; expected errors become ``module.fail_json(msg=...)``."""
    try:
        return work()
    except EXPECTED_ERRORS as exc:
        module.fail_json(msg=str(exc))
