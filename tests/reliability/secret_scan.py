# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Secret hygiene scan of a running cluster: the private keys and the cluster secret, everywhere.

    secret_scan.py --inventory INV --secrets-file SECRETS [--playbook playbooks/site.yml] NODE...

For every node (a podman container of INV) it reads the private key on the node and then proves it
appears nowhere else:

* in the output of ``ansible-playbook -vvvv --diff`` of the playbook, of ``--check --diff``, and of
  kubespan.mesh.status and the peer_status_info module at -vvvv (run here, with a jsonfile fact cache);
* in that fact cache, and in the controller's build/, ~/.ansible, ~/.cache/kubespan-mesh and /tmp;
* on the node: journald, and every file outside /proc, /sys, /dev except kubespan-identity.yaml;
* in every ``kubespan get RESOURCE -o table|json|yaml``; and it does appear with
  ``kubespan get identities --include-private-key`` (the positive control: the scan can see the key).

It searches the base64 form, the same without padding, and the hex form (wireguard-go's UAPI).
It checks /var/lib/kubespan is 0700 root and its files 0600 root (the metrics file is 0644 and public),
and that the cluster secret is only in the controller's secrets file, the nodes' state.json and the
device's preshared keys. Exit status 1 with a list of findings; it never prints a secret.
"""

import argparse
import base64
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FINDINGS = []
CHECKS = []


def say(ok, what):
    CHECKS.append(what)
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FINDINGS.append(what)


def sh(node, command, stdin=None, check=True):
    res = subprocess.run(["podman", "exec", "-i", node, "sh", "-c", command], input=stdin, capture_output=True,
                         check=False)
    if check and res.returncode != 0:
        raise RuntimeError("%s: %s failed: %s" % (node, command, res.stderr.decode(errors="replace")[-300:]))
    return res.stdout


def needles(b64):
    raw = base64.b64decode(b64)
    return [b64.encode(), b64.rstrip("=").encode(), raw.hex().encode(), raw.hex().upper().encode()]


def scan_bytes(data, secrets):
    """Names of the secrets whose any form occurs in data."""
    return sorted({name for name, forms in secrets.items() for f in forms if f in data})


def scan_tree(root, secrets, allowed=(), skip=()):
    """(path, secret names) of files under root holding a secret; no symlinks followed, sockets skipped."""
    hits = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path in allowed or os.path.islink(path):
                continue
            try:
                if not os.path.isfile(path) or os.path.getsize(path) > 200 * 1024 * 1024:
                    continue
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            found = scan_bytes(data, secrets)
            if found:
                hits.append((path, found))
    return hits


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--inventory", required=True)
    ap.add_argument("--secrets-file", required=True, help="the controller's file with kubespan_cluster_secret")
    ap.add_argument("--playbook", default=os.path.join(REPO, "playbooks", "site.yml"))
    ap.add_argument("nodes", nargs="+")
    args = ap.parse_args()

    keys = {}
    for node in args.nodes:
        text = sh(node, "sed -n 's/^privateKey: *//p' /var/lib/kubespan/kubespan-identity.yaml").decode().strip().strip('"')
        base64.b64decode(text, validate=True)
        keys["private key of %s" % node] = needles(text)
    secret = None
    with open(args.secrets_file) as handle:
        for line in handle:
            if line.startswith("kubespan_cluster_secret:"):
                secret = line.split(":", 1)[1].strip().strip("'\"")
    say(bool(secret), "the cluster secret was read from %s" % args.secrets_file)
    cluster = {"cluster secret": needles(secret)}
    everything = dict(keys, **cluster)

    # 1. Ansible output at -vvvv, with a fact cache, diff and check mode
    work = tempfile.mkdtemp(prefix="kubespan-secret-scan-")
    os.chmod(work, 0o700)
    env = dict(os.environ, ANSIBLE_CACHE_PLUGIN="jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=os.path.join(work, "facts"),
               ANSIBLE_CACHE_PLUGIN_TIMEOUT="86400", ANSIBLE_FORKS="10", ANSIBLE_LOG_PATH=os.path.join(work, "ansible.log"),
               ANSIBLE_KEEP_REMOTE_FILES="0")
    runs = [("site.yml -vvvv --diff", ["ansible-playbook", "-i", args.inventory, args.playbook, "-vvvv", "--diff"]),
            ("site.yml --check --diff -vvvv", ["ansible-playbook", "-i", args.inventory, args.playbook, "--check", "--diff", "-vvvv"]),
            ("status.yml -vvvv", ["ansible-playbook", "-i", args.inventory, os.path.join(REPO, "playbooks", "status.yml"), "-vvvv"]),
            ("peer_status_info -vvvv", ["ansible", "-i", args.inventory, "kubespan", "-m", "kubespan.mesh.peer_status_info", "-vvvv"]),
            ("identity module -vvvv", ["ansible", "-i", args.inventory, "kubespan", "-m", "kubespan.mesh.identity", "-a",
                                       "cluster_id=x", "--check", "-vvvv"])]
    total = 0
    for label, argv in runs:
        start = time.monotonic()
        res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO, check=False)
        total += len(res.stdout)
        if label.startswith("site.yml -vvvv"):
            say(res.returncode == 0, "%s succeeded (%.0f s, %d bytes of output)" % (label, time.monotonic() - start, len(res.stdout)))
        found = scan_bytes(res.stdout, everything)
        say(not found, "%s output (%d bytes) holds no private key or cluster secret%s" % (label, len(res.stdout),
                                                                                          ": FOUND " + ", ".join(found) if found else ""))
    hits = scan_tree(work, everything)
    say(not hits, "fact cache and ANSIBLE_LOG_PATH (%s) hold no secret%s" % (work, ": %s" % hits if hits else ""))
    cached = os.listdir(os.path.join(work, "facts")) if os.path.isdir(os.path.join(work, "facts")) else []
    say(len(cached) >= len(args.nodes), "the fact cache was written (%d hosts), so the check above looked at something" % len(cached))
    subprocess.run(["rm", "-rf", work], check=False)

    # 2. The controller's file system
    home = os.path.expanduser("~")
    allowed = {os.path.abspath(args.secrets_file)}
    for root in (os.path.join(REPO, "build"), os.path.join(home, ".ansible"), os.path.join(home, ".cache", "kubespan-mesh"), "/tmp"):
        if not os.path.isdir(root):
            continue
        hits = scan_tree(root, everything, allowed=allowed, skip={os.path.join(REPO, "build", "collections")})
        say(not hits, "controller %s holds no private key or cluster secret outside %s%s" % (
            root, args.secrets_file, ": " + "; ".join("%s (%s)" % (p, ", ".join(s)) for p, s in hits[:5]) if hits else ""))

    # 3. On the nodes
    for node in args.nodes:
        mine = {k: v for k, v in keys.items() if k.endswith(node)}
        journal = sh(node, "journalctl --no-pager -o cat")
        found = scan_bytes(journal, everything)
        say(not found, "%s: journald (%d bytes) holds no secret%s" % (node, len(journal), ": FOUND " + ", ".join(found) if found else ""))
        files = sh(node, "grep -rlF -f /dev/stdin / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null; true",
                   stdin=b"\n".join(f for forms in mine.values() for f in forms) + b"\n").decode().split()
        say(files == ["/var/lib/kubespan/kubespan-identity.yaml"],
            "%s: its private key is in /var/lib/kubespan/kubespan-identity.yaml and in no other file (found in: %s)" % (node, files))
        files = sh(node, "grep -rlF -f /dev/stdin / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null; true",
                   stdin=b"\n".join(cluster["cluster secret"]) + b"\n").decode().split()
        say(files == ["/var/lib/kubespan/state.json"],
            "%s: the cluster secret is in /var/lib/kubespan/state.json (the agent's preshared key) and no other file (found in: %s)"
            % (node, files))
        for resource in ("peerstatuses", "peerspecs", "identities", "endpoints"):
            for fmt in ("table", "json", "yaml"):
                out = sh(node, "kubespan get %s -o %s" % (resource, fmt))
                found = scan_bytes(out, everything)
                say(not found, "%s: kubespan get %s -o %s shows no secret%s" % (node, resource, fmt, ": FOUND " + ", ".join(found) if found else ""))
        out = sh(node, "kubespan get identities -o yaml --include-private-key")
        say(scan_bytes(out, mine) == sorted(mine), "%s: kubespan get identities --include-private-key does show the key "
            "(positive control: the scan finds the key where it is)" % node)
        modes = sh(node, "stat -c '%n %a %U %G' /var/lib/kubespan /var/lib/kubespan/* /var/lib/kubespan/.[!.]*").decode().split("\n")
        for line in filter(None, modes):
            path, mode, user, group = line.rsplit(" ", 3)
            want = "700" if path == "/var/lib/kubespan" else ("644" if path.endswith("metrics.prom") else "600")
            say((mode, user, group) == (want, "root", "root"), "%s: %s is %s %s:%s (want %s root:root)" % (node, path, mode, user, group, want))
        psk = sh(node, "wg show kubespan preshared-keys").decode().split()
        say(psk and all(p == secret for p in psk[1::2]), "%s: every WireGuard peer's preshared key is the cluster secret "
            "(where it must be)" % node)

    print("secret scan: %d checks, %d findings, %d bytes of Ansible output searched" % (len(CHECKS), len(FINDINGS), total))
    return 1 if FINDINGS else 0


if __name__ == "__main__":
    sys.exit(main())
