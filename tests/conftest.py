# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""pytest set-up shared by tests/unit, tests/integration and tests/reliability.

The controller's affiliates cache goes to a temporary directory: KUBESPAN_CACHE_DIR, which the role's default
of ``kubespan_controller_cache_dir`` prefers to ``$HOME/.cache/kubespan-mesh``, is set for the whole session, and
so for every ansible-playbook a test starts (tests/integration/test_controller.py checks that the role honours it).

Guard: an audit hook (sys.addaudithook) records every open for writing, mkdir, rename and replace in this process
under the real ``~/.cache/kubespan-mesh``; the session fails if there was any. It watches this process only:
other processes writing there (another checkout's molecule run, say) do not make it fail.
"""

import os
import shutil
import sys
import tempfile

import pytest

REAL_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "kubespan-mesh")


class CacheGuard:
    def __init__(self, roots):
        self.roots = list(roots)
        self.writes = []

    def _under(self, path):
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False
        try:
            full = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        return any(full == root or full.startswith(root + os.sep) for root in self.roots)

    def __call__(self, event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
            if writing and self._under(path):
                self.writes.append((event, os.fsdecode(path)))
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.chmod"):
            for path in args[:2] if event in ("os.rename", "os.replace") else args[:1]:
                if self._under(path):
                    self.writes.append((event, os.fsdecode(path)))


GUARD = CacheGuard([REAL_CACHE])


def pytest_configure(config):
    tmp = tempfile.mkdtemp(prefix="kubespan-test-cache.")
    config.kubespan_cache_dir = (tmp, os.environ.get("KUBESPAN_CACHE_DIR"))
    os.environ["KUBESPAN_CACHE_DIR"] = tmp
    if not getattr(sys, "kubespan_cache_guard", None):  # one hook per interpreter (they cannot be removed)
        sys.addaudithook(GUARD)
        sys.kubespan_cache_guard = GUARD


@pytest.fixture
def cache_guard():
    """The session's guard (for its positive control: tests/integration/test_cache_guard.py)."""
    return GUARD


def pytest_sessionfinish(session, exitstatus):
    if GUARD.writes:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the tests wrote under the real %s (%s): a test must keep the cache in its temporary directory" % (
            REAL_CACHE, "; ".join("%s %s" % w for w in GUARD.writes[:5]))
        if reporter is not None:
            reporter.write_line("ERROR: " + message, red=True)
        session.exitstatus = 1
    tmp, previous = getattr(session.config, "kubespan_cache_dir", (None, None))
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
        if previous is None:
            os.environ.pop("KUBESPAN_CACHE_DIR", None)
        else:
            os.environ["KUBESPAN_CACHE_DIR"] = previous
