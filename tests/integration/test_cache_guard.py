# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Positive control of tests/conftest.py's guard against writes under the real ~/.cache/kubespan-mesh."""

import os
import tempfile


def test_the_guard_sees_a_write_and_the_session_cache_is_temporary(cache_guard, tmp_path):
    watched = str(tmp_path / "watched")
    cache_guard.roots.append(watched)
    before = len(cache_guard.writes)
    try:
        # what the affiliates cache writer does: makedirs, mkstemp, write, rename; then a read, which is no write
        os.makedirs(watched, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=watched)
        os.write(fd, b"[]\n")
        os.close(fd)
        os.rename(tmp, os.path.join(watched, "affiliates.json"))
        seen = cache_guard.writes[before:]
        with open(os.path.join(watched, "affiliates.json")) as handle:
            handle.read()
        after_read = cache_guard.writes[before:]
    finally:
        cache_guard.roots.remove(watched)
        del cache_guard.writes[before:]
    assert after_read == seen
    assert {event for event, _path in seen} >= {"os.mkdir", "open", "os.rename"}, seen
    assert all(path.startswith(watched) for _event, path in seen)
    assert os.environ["KUBESPAN_CACHE_DIR"].startswith(tempfile.gettempdir())
