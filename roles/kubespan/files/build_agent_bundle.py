"""Bundle the collection's module_utils as one zipapp for the node agent (runs on the controller).

The archive is deterministic (sorted entries, fixed timestamps and modes), so the copy to the nodes is
idempotent and one file transfer replaces one transfer per source file. Prints the bundle's path.
usage: build_agent_bundle.py <module_utils dir> <cache dir>
"""

import hashlib
import os
import sys
import zipfile

MAIN = b"import sys\nfrom kubespan_mesh.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def main():
    src, cache = sys.argv[1], sys.argv[2]
    names = sorted(n for n in os.listdir(src) if n.endswith(".py"))
    files = [("kubespan_mesh/__init__.py", b"")]
    for name in names:
        with open(os.path.join(src, name), "rb") as handle:
            files.append(("kubespan_mesh/" + name, handle.read()))
    files.append(("__main__.py", MAIN))
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + b"\0" + data + b"\0")
    os.makedirs(cache, mode=0o700, exist_ok=True)
    path = os.path.join(cache, "kubespan-agent-%s.pyz" % digest.hexdigest()[:16])
    if not os.path.exists(path):
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files:
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
        os.rename(tmp, path)
    print(path)


if __name__ == "__main__":
    main()
