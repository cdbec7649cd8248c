# -*- coding: utf-8 -*-
"""Rendezvous files shared by the two nodes of a kernel-test phase (node.py, engine_node.py).

Each node writes <me>.<name> atomically and waits for <peer>.<name>; <peer>.failed aborts the wait.
"""

from __future__ import annotations

import os
import time


class Abort(Exception):
    """The peer failed, or did not answer in time."""


class Rendezvous:
    def __init__(self, directory: str, me: str, peer: str):
        self.dir, self.me, self.peer = directory, me, peer

    def put(self, name: str, text: str = "") -> None:
        tmp = os.path.join(self.dir, ".%s.%s.tmp" % (self.me, name))
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.dir, "%s.%s" % (self.me, name)))

    def wait_for(self, name: str, timeout: float = 120.0) -> str:
        """Wait for the peer's file <peer>.<name> and return its text; Abort if the peer failed or timed out."""
        path = os.path.join(self.dir, "%s.%s" % (self.peer, name))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(path):
                with open(path) as f:
                    return f.read()
            if os.path.exists(os.path.join(self.dir, "%s.failed" % self.peer)):
                raise Abort("peer %s failed before %s" % (self.peer, name))
            time.sleep(0.05)
        raise Abort("timed out waiting for %s of %s" % (name, self.peer))

    def barrier(self, name: str) -> None:
        self.put(name)
        self.wait_for(name)
