# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Action plugin of kubespan.mesh.affiliates_cache: writes on the controller, in the worker process.

No module is run (a local module run costs a Python start-up and a module payload: about 0.5 s per task);
the documentation is in plugins/modules/affiliates_cache.py.

Every entry is validated as the mesh module validates a peer (peers.validate_affiliate: a 32-byte public key,
a base62 node ID, a KubeSpan address in the ULA space fd00::/8, endpoints, networks) before it is written, so
a bad ``kubespan_affiliate`` (of a host outside ``--limit``, say) never enters the cache (nor do bad
``observed_endpoints``, module_utils/core/observed.py); ``read_cache`` (the
``kubespan.mesh.cached_affiliates`` filter) names and ignores a bad entry an older version wrote, and the next
write leaves it out.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.kubespan.mesh.plugins.module_utils.core.observed import MAX_OBSERVED, endpoint_refusal
from ansible_collections.kubespan.mesh.plugins.module_utils.core.peers import validate_affiliate

ULA = ipaddress.IPv6Network("fd00::/8")  # every cluster's KubeSpan subnet is inside it
MAX_CACHE_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 20000


def entry_problem(entry):
    """None when ``entry`` may be cached, else what is wrong with it (names the host and the field)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry.get("name"):
        return "an entry that is not an affiliate mapping with a name"
    try:
        validate_affiliate(entry, ULA)
    except (ValueError, TypeError) as exc:
        return str(exc)
    observed = entry.get("observed_endpoints")
    if observed is not None and (not isinstance(observed, list) or len(observed) > MAX_OBSERVED
                                 or any(endpoint_refusal(ep, ULA) is not None for ep in observed)):
        return "observed_endpoints is not a list of at most %d usable ip:port endpoints" % MAX_OBSERVED
    return None


def valid_entries(entries, where, warnings):
    """The entries that may be cached, in order (first of a name wins); a warning naming ``where`` for each other."""
    good, seen = [], set()
    for index, entry in enumerate(entries):
        problem = entry_problem(entry)
        if problem is None and entry["name"] in seen:
            problem = "host %s is listed twice" % entry["name"]
        if problem is not None:
            host = entry.get("name") if isinstance(entry, dict) and isinstance(entry.get("name"), str) else "#%d" % index
            warnings.append("%s: entry of host %s ignored (%s); the next run writes the cache without it" % (where, host, problem))
            continue
        seen.add(entry["name"])
        good.append(entry)
    return good


def read_cache(path, warnings):
    """The valid affiliates of the cache file ``path`` ([] when it does not exist); ``warnings`` gets one message
    naming the file (and the host) per problem. Never raises for a bad file: the cache is only a shortcut."""
    path = os.path.expanduser(path)
    where = "affiliates cache %s" % path
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CACHE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        warnings.append("%s is unreadable (%s): ignored" % (where, exc.strerror or exc))
        return []
    if len(data) > MAX_CACHE_BYTES:
        warnings.append("%s is larger than %d bytes: ignored; the next run rewrites it" % (where, MAX_CACHE_BYTES))
        return []
    try:
        entries = json.loads(data.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        warnings.append("%s is not valid JSON (%s): ignored; the next run rewrites it" % (where, str(exc)[:120]))
        return []
    if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
        warnings.append("%s is not a list of at most %d affiliates: ignored; the next run rewrites it" % (where, MAX_ENTRIES))
        return []
    return valid_entries(entries, where, warnings)


def write_cache(path, affiliates, warnings=None):
    """Atomically replace ``path`` (0600, directory 0700) with the valid ``affiliates`` sorted by name; True if it
    changed. An invalid entry is left out with a message in ``warnings``, naming the host and the field."""
    if not isinstance(affiliates, list):
        raise AnsibleActionFail("affiliates: a list of affiliate dicts with a name is required")
    warnings = [] if warnings is None else warnings
    good = valid_entries(affiliates, "affiliates cache %s" % path, warnings)
    data = (json.dumps(sorted(good, key=lambda a: a["name"]), indent=2, sort_keys=True) + "\n").encode()
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
        warnings = []
        if self._task.check_mode:
            if isinstance(args.get("affiliates"), list):
                valid_entries(args["affiliates"], "affiliates cache %s" % path, warnings)
            result.update(changed=False, written=False, path=path)
        else:
            written = write_cache(path, args.get("affiliates"), warnings)
            # the controller's cache, not a change on a managed node: never reported as changed
            result.update(changed=False, written=written, path=path)
        if warnings:
            result["warnings"] = warnings
        return result
