# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The node agent's code as one deterministic zipapp built from the collection's module_utils.

Standard library only and no imports of the other module_utils, so the controller can load this file by
path (the ``kubespan.mesh.agent_bundle`` lookup, ``roles/kubespan/files/build_agent_bundle.py``) without
the collection being importable. The archive is byte-for-byte the same for the same sources (sorted
entries, fixed timestamps and modes), so a node compares digests and rewrites its copy only on change.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from typing import Iterable, List, Tuple

PACKAGE = "kubespan_mesh"
MAIN = b"import sys\nfrom kubespan_mesh.agent.cli import main\nsys.exit(main(sys.argv[1:]))\n"
_STAMP = (2020, 1, 1, 0, 0, 0)


def source_files(src_dir: str) -> List[Tuple[str, bytes]]:
    """The ``*.py`` files of ``src_dir`` and of its subpackages (the layers) as (archive name, bytes), sorted,
    with the package and entry point."""
    found = []
    for dirpath, dirnames, filenames in os.walk(src_dir):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = os.path.relpath(dirpath, src_dir)
        for name in filenames:
            if name.endswith(".py") and not (rel == "." and name == "__init__.py"):
                found.append(("/".join([PACKAGE] + ([] if rel == "." else rel.split(os.sep)) + [name]), os.path.join(dirpath, name)))
    files = [(PACKAGE + "/__init__.py", b"")]
    for arcname, path in sorted(found):
        with open(path, "rb") as handle:
            files.append((arcname, handle.read()))
    files.append(("__main__.py", MAIN))
    return files


def digest(files: Iterable[Tuple[str, bytes]]) -> str:
    """SHA-256 over names and contents: names the bundle in the controller's cache."""
    h = hashlib.sha256()
    for name, data in files:
        h.update(name.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


def build(files: Iterable[Tuple[str, bytes]]) -> bytes:
    """The zipapp's bytes; the same files always give the same bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=_STAMP)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return out.getvalue()


def build_from_dir(src_dir: str) -> Tuple[bytes, str]:
    """(zipapp bytes, source digest) of the module_utils directory ``src_dir``."""
    files = source_files(src_dir)
    return build(files), digest(files)
