# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Action plugin of kubespan.mesh.affiliates_cache: writes on the controller, in the worker process.

No module is run (a local module run costs a Python start-up and a module payload: about 0.5 s per task);
the documentation is in plugins/modules/affiliates_cache.py.
"""

from __future__ import annotations

import json
import os
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


def write_cache(path, affiliates):
    """Atomically replace ``path`` (0600, directory 0700) with ``affiliates`` sorted by name; True if it changed."""
    if not isinstance(affiliates, list) or not all(isinstance(a, dict) and isinstance(a.get("name"), str) for a in affiliates):
        raise AnsibleActionFail("affiliates: a list of affiliate dicts with a name is required")
    data = (json.dumps(sorted(affiliates, key=lambda a: a["name"]), indent=2, sort_keys=True) + "\n").encode()
    try:
        with open(path, "rb") as handle:
            if handle.read() == data:
                return False
    except OSError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".affiliates.", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as exc:
        raise AnsibleActionFail("cannot write the affiliates cache %s: %s (set kubespan_controller_cache_dir to a writable "
                                "directory)" % (path, exc.strerror or exc))
    return True


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("path", "affiliates"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        path = args.get("path")
        if not isinstance(path, str) or not os.path.isabs(os.path.expanduser(path)):
            raise AnsibleActionFail("path %r: an absolute path on the controller is required" % (path,))
        path = os.path.expanduser(path)
        if self._task.check_mode:
            result.update(changed=False, written=False, path=path)
            return result
        written = write_cache(path, args.get("affiliates"))
        # the controller's cache, not a change on a managed node: never reported as changed
        result.update(changed=False, written=written, path=path)
        return result
