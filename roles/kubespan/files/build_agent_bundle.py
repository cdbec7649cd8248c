"""Write the node agent's zipapp, built from the collection's module_utils, into a cache directory.

Used by the discovery_service role and bench/ (the kubespan role sends the bundle inside the mesh
module's arguments, through the kubespan.mesh.agent_bundle lookup). The build itself is
plugins/module_utils/host/bundle.py, found below the source directory and loaded by path. Prints the bundle's path.
usage: build_agent_bundle.py <module_utils dir> <cache dir>
"""

import glob
import importlib.util
import os
import sys


def main():
    src, cache = sys.argv[1], sys.argv[2]
    found = sorted(glob.glob(os.path.join(src, "bundle.py")) + glob.glob(os.path.join(src, "*", "bundle.py")))
    if len(found) != 1:
        sys.exit("build_agent_bundle.py: expected one bundle.py in %s or one of its subpackages, found %d" % (src, len(found)))
    spec = importlib.util.spec_from_file_location("kubespan_bundle", found[0])
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    data, digest = bundle.build_from_dir(src)
    os.makedirs(cache, mode=0o700, exist_ok=True)
    path = os.path.join(cache, "kubespan-agent-%s.pyz" % digest[:16])
    if not os.path.exists(path):
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.rename(tmp, path)
    print(path)


if __name__ == "__main__":
    main()
