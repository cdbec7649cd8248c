# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Make the checkout importable as ansible_collections.kubespan.mesh (as tests/unit/conftest.py does).

Imported by the reliability scripts and the crash harness's child processes, which run the project's
real writers (identity, state files) outside pytest.
"""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def setup_path():
    try:
        import ansible_collections.kubespan.mesh  # noqa: F401  # pylint: disable=unused-import
        return
    except ImportError:
        pass
    base = os.path.join(REPO_ROOT, "build", "unit-path")
    link = os.path.join(base, "ansible_collections", "kubespan", "mesh")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        try:
            os.symlink(REPO_ROOT, link)
        except FileExistsError:
            pass
    sys.path.insert(0, base)
    for name in [m for m in sys.modules if m == "ansible_collections" or m.startswith("ansible_collections.")]:
        del sys.modules[name]


setup_path()
