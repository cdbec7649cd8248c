# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Full disk during a state write, and stale temporary files of killed writers.

Mounts a small tmpfs, writes a state file and an identity into it, fills the file system, then:

* ``statefile.write_json`` of a larger state fails with StateFileError naming the file and saying the
  disk is full; the previous state.json is byte for byte intact; no temporary file is left;
* ``engine.ensure_identity`` on a new directory of the full disk fails naming the identity file and
  leaves no half identity: after space is freed the same call creates a complete one;
* a readdress of an existing identity on the full disk fails and keeps the old key file intact.

It also checks that a temporary file left by a killed writer (older than statefile.STALE_TEMP_AGE) is
removed by the next write of the same file, and a fresh one (a writer at work) is not.
Needs root (mount). Exit status 1 on any failure.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _project  # noqa: E402,F401  # pylint: disable=unused-import,wrong-import-position

from ansible_collections.kubespan.mesh.plugins.module_utils.host import identity, statefile  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile import engine  # noqa: E402

FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)


def fill(mount):
    """Fill the file system completely (a filler file, then tiny files until even inodes or blocks run out)."""
    fd = os.open(os.path.join(mount, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096) > 0:
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    for i in range(10000):
        try:
            with open(os.path.join(mount, "f%d" % i), "wb") as handle:
                handle.write(b"x")
        except OSError:
            break


def main():
    if os.geteuid() != 0:
        print("full_disk.py mounts a tmpfs: run it as root", file=sys.stderr)
        return 2
    mount = tempfile.mkdtemp(prefix="kubespan-fulldisk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", mount], check=True)
    try:
        state_dir = os.path.join(mount, "kubespan")
        statefile.ensure_dir(state_dir)
        path = os.path.join(state_dir, "state.json")
        old_state = {"version": 1, "peers": ["a"] * 10}
        statefile.write_json(path, old_state)
        with open(path, "rb") as handle:
            old_bytes = handle.read()
        ident, _facts, _changed = engine.ensure_identity(state_dir, "cluster-A")
        kpath = os.path.join(state_dir, identity.KUBESPAN_IDENTITY_FILE)
        with open(kpath, "rb") as handle:
            old_key_bytes = handle.read()

        fill(mount)
        print("file system full: %s" % subprocess.run(["df", "-h", mount], stdout=subprocess.PIPE, text=True, check=False).stdout.splitlines()[-1])

        # 1. state write on a full disk
        try:
            statefile.write_json(path, {"version": 1, "peers": ["b" * 100] * 2000})
            check(False, "write_json on a full disk raises StateFileError")
        except statefile.StateFileError as exc:
            msg = str(exc)
            print("     message: %s" % msg)
            check(path in msg, "the error names the file (%s)" % path)
            check("No space left on device" in msg, "the error says the disk is full")
            check("previous version" in msg, "the error says the previous version is unchanged")
        with open(path, "rb") as handle:
            check(handle.read() == old_bytes, "state.json is byte for byte the previous version")
        check(statefile.read_json(path) == old_state, "state.json still parses to the previous state")
        leftovers = [n for n in os.listdir(state_dir) if n.endswith(".tmp")]
        check(not leftovers, "no temporary file left after the failed write (%s)" % leftovers)

        # 2. identity readdress on a full disk: key file rewritten with a new address
        try:
            engine.ensure_identity(state_dir, "cluster-B")
            full_ok = False
        except statefile.StateFileError as exc:
            print("     message: %s" % exc)
            full_ok = kpath in str(exc) and "No space left" in str(exc)
        check(full_ok, "readdressing the identity on a full disk fails naming %s" % kpath)
        with open(kpath, "rb") as handle:
            check(handle.read() == old_key_bytes, "the key file is unchanged")
        check(identity.load_identity(state_dir).private_key == ident.private_key, "the identity still loads with the same key")

        # 3. identity creation on a full disk
        new_dir = os.path.join(mount, "fresh")
        try:
            engine.ensure_identity(new_dir, "cluster-A")
            created = True
        except (statefile.StateFileError, OSError) as exc:
            print("     message: %s" % exc)
            created = False
            check("No space left" in str(exc) and new_dir in str(exc), "creating an identity on a full disk fails naming the file")
        check(not created, "creating an identity on a full disk fails")
        if os.path.isdir(new_dir):
            try:
                half = identity.load_identity(new_dir)
                check(half is None, "no half identity is taken for a real one")
            except statefile.StateFileError as exc:
                check(False, "a failed creation leaves a loadable directory (%s)" % exc)
        # free space: the same calls now succeed
        os.unlink(os.path.join(mount, "filler"))
        fresh, _f, _c = engine.ensure_identity(new_dir, "cluster-A")
        check(identity.load_identity(new_dir).private_key == fresh.private_key, "after freeing space the identity is created complete")
        statefile.write_json(path, {"version": 1, "peers": ["c"]})
        check(statefile.read_json(path) == {"version": 1, "peers": ["c"]}, "after freeing space the state write succeeds")

        # 4. stale temporary files of killed writers
        stale = os.path.join(state_dir, ".state.json.killed.tmp")
        fresh_tmp = os.path.join(state_dir, ".state.json.atwork.tmp")
        for name in (stale, fresh_tmp):
            with open(name, "wb") as handle:
                handle.write(b"{")
        past = time.time() - statefile.STALE_TEMP_AGE - 5
        os.utime(stale, (past, past))
        statefile.write_json(path, {"version": 1, "peers": ["d"]})
        check(not os.path.exists(stale), "a killed writer's old temporary file is removed by the next write")
        check(os.path.exists(fresh_tmp), "a recent temporary file (a writer at work) is left alone")
    finally:
        subprocess.run(["umount", mount], check=False)
        shutil.rmtree(mount, ignore_errors=True)
    if FAILURES:
        print("full disk: %d failures" % len(FAILURES))
        return 1
    print("full disk: previous state intact, clear errors naming the file, recovery after freeing space")
    return 0


if __name__ == "__main__":
    sys.exit(main())
