# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""pytest set-up shared by tests/unit, tests/integration and tests/reliability.

The controller's affiliates cache goes to a temporary directory: KUBESPAN_CACHE_DIR, which the role's default
of ``kubespan_controller_cache_dir`` prefers to ``$HOME/.cache/kubespan-mesh``, is set for the whole session (and
so for every ansible-playbook a test starts). The session fails if anything under the real
``~/.cache/kubespan-mesh`` was created or changed while it ran.
"""

import os
import shutil
import tempfile

REAL_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "kubespan-mesh")


def cache_snapshot(root=REAL_CACHE):
    """{path: (mtime_ns, size)} of every file under ``root``, and whether it exists: what a write changes."""
    files = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            files[path] = (st.st_mtime_ns, st.st_size)
    return os.path.isdir(root), files


def pytest_configure(config):
    tmp = tempfile.mkdtemp(prefix="kubespan-test-cache.")
    config.kubespan_cache_guard = (tmp, os.environ.get("KUBESPAN_CACHE_DIR"), cache_snapshot())
    os.environ["KUBESPAN_CACHE_DIR"] = tmp


def pytest_sessionfinish(session, exitstatus):
    guard = getattr(session.config, "kubespan_cache_guard", None)
    if guard is None:
        return
    tmp, previous, before = guard
    if cache_snapshot() != before:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the tests wrote under the real %s: a test must keep the cache in its temporary directory" % REAL_CACHE
        if reporter is not None:
            reporter.write_line("ERROR: " + message, red=True)
        session.exitstatus = 1
    shutil.rmtree(tmp, ignore_errors=True)
    if previous is None:
        os.environ.pop("KUBESPAN_CACHE_DIR", None)
    else:
        os.environ["KUBESPAN_CACHE_DIR"] = previous
