# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The one base of every expected error of kubespan.mesh. Pure: imports nothing of the project.

Every error the project raises on purpose (bad input, a refused claim, a host that cannot be changed)
derives from ``KubeSpanError``; its message is written for the user: it names the field, file or variable
and the fix, never a secret. The modules (common.run_guarded) and the node's CLI (cli.main) catch it in one
place each; anything else is a bug and keeps its traceback. Error classes that callers also catch as
``ValueError`` keep that as a second base.
"""

from __future__ import annotations


class KubeSpanError(Exception):
    """An expected error of kubespan.mesh: its message is for the user."""
