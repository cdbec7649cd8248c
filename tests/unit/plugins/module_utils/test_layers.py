# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The layer order of plugins/module_utils, declared once here and enforced (docs/architecture.md, "Layers").

Each layer is a subpackage of module_utils of the same name (plugins/module_utils/<layer>/<file>.py, with an
empty ``__init__.py``); LAYERS places every file, and a file must sit in the folder of its layer (none flat,
no other folder). scripts/dev/layers-move.py reads LAYERS to move files there and rewrite their references.
A file may import files of its own layer and of lower layers, never of a higher one; the files form no
import cycle; no file imports another file's private (``_name``) names, by ``from ..x.y import _z`` or by
``y._z``; an import inside a function is either of the standard library or a third-party package (lazy for
start-up cost) or of a project file listed in LAZY with its reason. Every file of module_utils is placed in
exactly one layer, so a new file must be placed to pass.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Optional, Set, Tuple

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE_UTILS = os.path.join(HERE, "..", "..", "..", "..", "plugins", "module_utils")

# Low to high. The one declaration of the layer order.
LAYERS: List[Tuple[str, Set[str]]] = [
    ("base", {"errors", "collector"}),
    ("core", {"settings", "wgtypes", "keys", "addressing", "ipset", "endpoints", "peerspec", "peers", "plan", "peerstatus",
              "dataplane", "firewall", "relay", "rpfilter", "observed", "settingscheck", "cluster", "settle", "discovery_wire",
              "discovery_crypto", "discovery_affiliates", "discovery_settings", "listing", "meshplan"}),
    ("host", {"layout", "ports", "statefile", "rtnl", "netlink", "nft", "hostfw", "systemd", "wg_kernel", "wg_uapi", "identity",
              "requirements", "bundle"}),
    ("discovery", {"discovery_server", "discovery_grpc", "discovery_agent", "discovery_cli", "discovery_watchfile"}),
    ("reconcile", {"nodestate", "engine"}),
    ("agent", {"agentfiles", "failclosed", "agent", "discovery_watch", "cli"}),
    ("modules", {"common", "meshrun"}),
]

# The boot unit's ``kubespan failclosed`` imports failclosed alone (emulated CPUs took minutes for the agent's
# imports): every other command of the CLI imports what it needs inside main().
CLI_LAZY = "the CLI imports only the standard library at start: `kubespan failclosed` runs at boot before the network"

# Imports of project files inside functions, each deliberate: (importer, imported) -> the reason.
LAZY: Dict[Tuple[str, str], str] = {
    ("cli", "agent"): CLI_LAZY,
    ("cli", "engine"): CLI_LAZY,
    ("cli", "identity"): CLI_LAZY,
    ("cli", "layout"): CLI_LAZY,
    ("cli", "listing"): CLI_LAZY,
    ("cli", "peerstatus"): CLI_LAZY,
    ("cli", "statefile"): CLI_LAZY,
    ("discovery_cli", "discovery_grpc"): "the gRPC server only when the service starts (not for --help or a config error)",
    ("agent", "discovery_agent"): "a tick imports the discovery client only when discovery is on (tick start-up cost)",
    ("cli", "discovery_agent"): "only `kubespan get affiliates` reads the discovery memory",
    ("cli", "discovery_watch"): "only the `watch` sub-command (kubespan-watch.service) runs the resident watcher",
    ("cli", "discovery_cli"): "only the `discovery` sub-command runs the service",
    ("cli", "failclosed"): "only the boot unit runs `failclosed`: it must start fast under emulated CPUs",
    ("discovery_agent", "discovery_grpc"): "the gRPC transport (HTTP/2, sockets, threads) only when a service is called",
    ("discovery_agent", "discovery_crypto"): "the `cryptography` package only when affiliates are sealed or opened",
    ("discovery_agent", "discovery_affiliates"): "the affiliate codec only when a service answered",
    ("discovery_agent", "peers"): "the peer-set defaults only when affiliates are merged",
    ("engine", "discovery_agent"): "runs and ticks without discovery never import the discovery client",
    ("engine", "wg_kernel"): "pyroute2's generic netlink only on hosts that use kernel WireGuard",
    ("engine", "wg_uapi"): "the UAPI client only on hosts that use wireguard-go",
    ("engine", "dataplane"): "the data-plane plan only when the data plane is reconciled",
    ("engine", "meshplan"): "the link, device and data-plane planners only when the mesh is reconciled (not for `kubespan get`)",
    ("engine", "firewall"): "host firewall planning only when the firewall is reconciled",
    ("engine", "hostfw"): "ufw/firewalld adapters only when the firewall is reconciled",
    ("engine", "nft"): "the nft adapter only when the firewall is reconciled",
    ("engine", "settingscheck"): "the settings rules only when settings are validated",
    ("failclosed", "peerspec"): "the routed set only when a desired state exists",
    ("failclosed", "nft"): "the nft adapter only when there is something to restore",
    ("wg_uapi", "keys"): "PyNaCl only when a public key must be derived from a UAPI dump",
}


def _files() -> Tuple[Dict[str, ast.Module], Dict[str, str]]:
    """(file stem -> its parsed source, file stem -> the folder it sits in below module_utils, "" when flat)."""
    files: Dict[str, ast.Module] = {}
    where: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(MODULE_UTILS):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        folder = os.path.relpath(dirpath, MODULE_UTILS)
        for name in sorted(filenames):
            if name.endswith(".py") and name != "__init__.py":
                with open(os.path.join(dirpath, name), encoding="utf-8") as handle:
                    files[name[:-3]] = ast.parse(handle.read(), name)
                where[name[:-3]] = "" if folder == "." else folder
    return files, where


def _layer_of() -> Dict[str, int]:
    out: Dict[str, int] = {}
    for index, (_name, members) in enumerate(LAYERS):
        for member in members:
            assert member not in out, "%s is placed in two layers" % member
            out[member] = index
    return out


def resolve(folder: str, node: ast.ImportFrom, where: Dict[str, str]) -> Tuple[Optional[str], List[str]]:
    """The file a relative import names (None when it names a folder) and the files it imports by name
    (``from ..core import peers``), read from ``folder``, the importer's folder below module_utils."""
    base = [p for p in folder.split("/") if p]
    if node.level - 1 > len(base):
        return "?", []
    parts = base[:len(base) - (node.level - 1)] + (node.module.split(".") if node.module else [])
    if len(parts) == 2 and where.get(parts[1]) == parts[0]:
        return parts[1], []
    if len(parts) == 1 and where.get(parts[0]) == "":
        return parts[0], []
    if len(parts) <= 1:
        found = [a.name for a in node.names if where.get(a.name) == (parts[0] if parts else "")]
        if found or not parts or parts[0] in {name for name, _m in LAYERS}:
            return None, found
    return "?" + ".".join(parts), []


def project_imports(tree: ast.Module, folder: str, where: Dict[str, str]) -> List[Tuple[str, List[str], bool, int]]:
    """(imported file, imported names, inside a function, line) of every relative import of a project file;
    the file is "?<dotted>" when the import names no file of module_utils."""
    inside: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            imported, by_name = resolve(folder, node, where)
            if imported is not None:
                out.append((imported, [a.name for a in node.names], id(node) in inside, node.lineno))
            for name in by_name:
                out.append((name, [], id(node) in inside, node.lineno))
    return out


def module_aliases(tree: ast.Module, folder: str, where: Dict[str, str]) -> Dict[str, str]:
    """Local names bound to project files (``from ..core import peers as p``)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            _imported, by_name = resolve(folder, node, where)
            for alias in node.names:
                if alias.name in by_name:
                    out[alias.asname or alias.name] = alias.name
    return out


def check(files: Dict[str, ast.Module], where: Dict[str, str]) -> List[str]:
    """Every violation of the rules above, as lines naming the file and line."""
    layer = _layer_of()
    order = {name: index for index, (name, _m) in enumerate(LAYERS)}
    names = set(files)
    problems = ["%s.py is in no layer: place it in LAYERS (tests/unit/plugins/module_utils/test_layers.py)" % n
                for n in sorted(names - set(layer))]
    problems += ["LAYERS names %s, which is not a file of module_utils" % n for n in sorted(set(layer) - names)]
    problems += ["%s.py sits in %s/ but LAYERS places it in %s/: run scripts/dev/layers-move.py" % (
        n, where[n] or "module_utils", LAYERS[layer[n]][0]) for n in sorted(names & set(layer)) if where[n] != LAYERS[layer[n]][0]]
    graph: Dict[str, Set[str]] = {n: set() for n in names}
    for importer, tree in files.items():
        for imported, imported_names, lazy, line in project_imports(tree, where[importer], where):
            if imported.startswith("?"):
                problems.append("%s.py:%d imports %s, which is not a file of module_utils" % (importer, line, imported[1:] or "."))
                continue
            graph[importer].add(imported)
            mine, theirs = order.get(where[importer]), order.get(where[imported])
            if mine is not None and theirs is not None and theirs > mine:
                problems.append("%s.py:%d: layer %s imports %s of the higher layer %s" % (
                    importer, line, where[importer], imported, where[imported]))
            for private in (n for n in imported_names if n.startswith("_") and not n.startswith("__")):
                problems.append("%s.py:%d imports the private name %s of %s.py" % (importer, line, private, imported))
            if lazy and (importer, imported) not in LAZY:
                problems.append("%s.py:%d imports %s inside a function with no reason in LAZY" % (importer, line, imported))
        aliases = module_aliases(tree, where[importer], where)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                problems.append("%s.py:%d uses the private name %s of %s.py" % (importer, node.lineno, node.attr, aliases[node.value.id]))
    used = {(a, b) for a, bs in graph.items() for b in bs}
    problems += ["LAZY lists %s -> %s, which imports nothing of it any more" % pair for pair in sorted(set(LAZY) - used)]
    problems += ["import cycle among %s" % ", ".join(component) for component in cycles(graph)]
    return problems


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one file (Tarjan): the files of each cycle, sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_module_utils_keeps_its_layers_and_has_no_cycles_or_private_imports():
    problems = check(*_files())
    assert problems == [], "\n".join(problems)


def test_each_layer_is_a_subpackage_and_nothing_else_is():
    folders = sorted(d for d in os.listdir(MODULE_UTILS) if os.path.isdir(os.path.join(MODULE_UTILS, d)) and d != "__pycache__")
    assert folders == sorted(name for name, _m in LAYERS)
    for folder in folders:
        with open(os.path.join(MODULE_UTILS, folder, "__init__.py"), encoding="utf-8") as handle:
            assert handle.read() == "", "%s/__init__.py is empty (ansible-test sanity empty-init)" % folder


@pytest.mark.parametrize("importer, source, expected", [
    ("statefile", "from ..reconcile.engine import load_state\n", "layer host imports engine of the higher layer reconcile"),
    ("statefile", "from ..reconcile import engine\n", "layer host imports engine of the higher layer reconcile"),
    ("peers", "def f():\n    from ..host.netlink import Netlink\n", "layer core imports netlink of the higher layer host"),
    ("engine", "from ..core.peers import _validate\n", "imports the private name _validate of peers.py"),
    ("engine", "from ..core import peers\nx = peers._validate\n", "uses the private name _validate of peers.py"),
    ("agent", "def f():\n    from ..core.relay import move_allowed_ips\n", "imports relay inside a function with no reason in LAZY"),
    ("engine", "from .peers import build_peer_set\n", "imports reconcile.peers, which is not a file of module_utils"),
    ("errors", "from .collector import collector_off\n", None),  # the same layer: allowed
    ("errors+collector", "from .collector import collector_off\n+from .errors import KubeSpanError\n",
     "import cycle among collector, errors"),
])
def test_the_check_fails_on_a_deliberate_violation(importer, source, expected):
    files, where = _files()
    for name, text in zip(importer.split("+"), source.split("+")):
        files[name] = ast.parse(ast.unparse(files[name]) + "\n" + text)
    problems = check(files, where)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_every_file_is_placed_and_a_new_one_must_be():
    files, where = _files()
    files["newthing"], where["newthing"] = ast.parse("x = 1\n"), "core"
    assert "newthing.py is in no layer" in "\n".join(check(files, where))


def test_a_file_must_sit_in_the_folder_of_its_layer():
    files, where = _files()
    where["peers"] = "host"
    assert "peers.py sits in host/ but LAYERS places it in core/" in "\n".join(check(files, where))
    where["peers"] = ""
    assert "peers.py sits in module_utils/ but LAYERS places it in core/" in "\n".join(check(files, where))


def test_every_error_class_derives_from_the_one_base():
    import importlib

    from ansible_collections.kubespan.mesh.plugins.module_utils.base.errors import KubeSpanError
    found = []
    files, where = _files()
    for name, tree in files.items():
        module = importlib.import_module("ansible_collections.kubespan.mesh.plugins.module_utils.%s.%s" % (where[name], name))
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                cls = getattr(module, node.name)
                if isinstance(cls, type) and issubclass(cls, BaseException):
                    found.append(node.name)
                    assert issubclass(cls, KubeSpanError), "%s.%s does not derive from errors.KubeSpanError" % (name, node.name)
    assert len(found) >= 19, found  # the project's error classes (a new one derives too)
