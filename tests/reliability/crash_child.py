# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Child process of crash_safety.py: runs one real writer of the project after a "go" on stdin.

    crash_child.py identity-create DIR CLUSTER_ID     engine.ensure_identity on an empty directory
    crash_child.py identity-readdress DIR CLUSTER_ID  engine.ensure_identity with another cluster ID:
                                                      the key file is rewritten with a new address
    crash_child.py state DIR SEQ                      statefile.write_json(DIR/state.json, state_payload(SEQ))
    crash_child.py state-loop DIR SEQ                 write_json SEQ, SEQ+1, ... until killed

Everything is imported before "ready" is printed, so a tracer attached after that sees only the
writer's own system calls. The child prints nothing after "go" (stdout writes would be kill points too).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _project  # noqa: E402,F401  # pylint: disable=unused-import,wrong-import-position

from ansible_collections.kubespan.mesh.plugins.module_utils.host import identity as _identity  # noqa: E402,F401
from ansible_collections.kubespan.mesh.plugins.module_utils.host import statefile  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.host.netlink import Netlink  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile import engine  # noqa: E402


def state_payload(seq: int) -> dict:
    """A state document of about 40 KB whose whole content follows from ``seq`` (so a torn file is detectable)."""
    peers = [{"name": "node%d" % i, "public_key": "%043d=" % (seq * 1000 + i), "address": "fd00::%x" % (seq + i),
              "endpoints": ["192.0.2.%d:51820" % (i % 250)], "allowed_ips": ["10.%d.%d.0/24" % (seq % 250, i % 250)]}
             for i in range(150)]
    return {"version": 1, "seq": seq, "cluster_secret": "x" * 44, "peers": peers}


def state_bytes(seq: int) -> bytes:
    return (json.dumps(state_payload(seq), indent=2, sort_keys=True) + "\n").encode("utf-8")


def main(argv):
    mode, directory, arg = argv[1], argv[2], argv[3]
    with Netlink() as nl:  # warm up pyroute2 (imports, first socket) before the tracer attaches
        nl.links()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "go":
        return 3
    if mode in ("identity-create", "identity-readdress"):
        engine.ensure_identity(directory, arg)
    elif mode == "state":
        statefile.write_json(os.path.join(directory, "state.json"), state_payload(int(arg)))
    elif mode == "state-loop":
        seq = int(arg)
        while True:
            statefile.write_json(os.path.join(directory, "state.json"), state_payload(seq))
            seq += 1
    else:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
