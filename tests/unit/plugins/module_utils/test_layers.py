# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The layer order of plugins/module_utils, declared once here and enforced (docs/architecture.md, "Layers").

A file may import files of its own layer and of lower layers, never of a higher one; the files form no
import cycle; no file imports another file's private (``_name``) names, by ``from .x import _y`` or by
``x._y``; an import inside a function is either of the standard library or a third-party package (lazy for
start-up cost, each listed in THIRD_PARTY_LAZY with its reason) or of a project file listed in LAZY with its
reason. Every file of module_utils is placed in exactly one layer, so a new file must be placed to pass.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Set, Tuple

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE_UTILS = os.path.join(HERE, "..", "..", "..", "..", "plugins", "module_utils")

# Low to high. The one declaration of the layer order.
LAYERS: List[Tuple[str, Set[str]]] = [
    ("base", {"errors", "collector"}),
    ("core", {"settings", "wgtypes", "keys", "addressing", "ipset", "endpoints", "peerspec", "peers", "plan", "peerstatus",
              "dataplane", "firewall", "relay", "rpfilter", "observed", "settingscheck", "cluster", "settle", "discovery_wire",
              "discovery_crypto", "discovery_affiliates", "listing"}),
    ("host", {"statefile", "rtnl", "netlink", "nft", "hostfw", "systemd", "wg_kernel", "wg_uapi", "identity",
              "requirements", "bundle"}),
    ("discovery", {"discovery_server", "discovery_grpc", "discovery_agent", "discovery_cli", "discovery_watchfile"}),
    ("reconcile", {"engine"}),
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
    ("cli", "listing"): CLI_LAZY,
    ("cli", "peerstatus"): CLI_LAZY,
    ("cli", "statefile"): CLI_LAZY,
    ("discovery_cli", "discovery_grpc"): "the gRPC server only when the service starts (not for --help or a config error)",
    ("agent", "discovery_agent"): "a tick imports the discovery client only when discovery is on (tick start-up cost)",
    ("cli", "discovery_agent"): "only `kubespan get affiliates` reads the discovery memory",
    ("cli", "discovery_cli"): "only the `discovery` sub-command runs the service",
    ("cli", "discovery_watch"): "only the `watch` sub-command (kubespan-watch.service) runs the resident watcher",
    ("cli", "failclosed"): "only the boot unit runs `failclosed`: it must start fast under emulated CPUs",
    ("discovery_agent", "discovery_grpc"): "the gRPC transport (HTTP/2, sockets, threads) only when a service is called",
    ("discovery_agent", "discovery_crypto"): "the `cryptography` package only when affiliates are sealed or opened",
    ("discovery_agent", "discovery_affiliates"): "the affiliate codec only when a service answered",
    ("discovery_agent", "peers"): "the peer-set defaults only when affiliates are merged",
    ("engine", "discovery_agent"): "runs and ticks without discovery never import the discovery client",
    ("engine", "wg_kernel"): "pyroute2's generic netlink only on hosts that use kernel WireGuard",
    ("engine", "wg_uapi"): "the UAPI client only on hosts that use wireguard-go",
    ("engine", "peerstatus"): "the status machine only when the agent's statuses are read",
    ("engine", "relay"): "the relay plan only when the agent's statuses are read",
    ("engine", "dataplane"): "the data-plane plan only when the data plane is reconciled",
    ("engine", "peerspec"): "the routed set only when the data plane is reconciled",
    ("engine", "firewall"): "host firewall planning only when the firewall is reconciled",
    ("engine", "hostfw"): "ufw/firewalld adapters only when the firewall is reconciled",
    ("engine", "nft"): "the nft adapter only when the firewall is reconciled",
    ("engine", "settingscheck"): "the settings rules only when settings are validated",
    ("failclosed", "peerspec"): "the routed set only when a desired state exists",
    ("failclosed", "nft"): "the nft adapter only when there is something to restore",
    ("wg_uapi", "keys"): "PyNaCl only when a public key must be derived from a UAPI dump",
}


def _files() -> Dict[str, ast.Module]:
    out = {}
    for name in sorted(os.listdir(MODULE_UTILS)):
        if name.endswith(".py") and name != "__init__.py":
            with open(os.path.join(MODULE_UTILS, name), encoding="utf-8") as handle:
                out[name[:-3]] = ast.parse(handle.read(), name)
    return out


def _layer_of() -> Dict[str, int]:
    out: Dict[str, int] = {}
    for index, (_name, members) in enumerate(LAYERS):
        for member in members:
            assert member not in out, "%s is placed in two layers" % member
            out[member] = index
    return out


def project_imports(tree: ast.Module, names: Set[str]) -> List[Tuple[str, List[str], bool, int]]:
    """(imported file, imported names, inside a function, line) of every relative import of a project file."""
    inside: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:  # from . import x, y
                for alias in node.names:
                    if alias.name in names:
                        out.append((alias.name, [], id(node) in inside, node.lineno))
            else:
                out.append((node.module.split(".")[0], [a.name for a in node.names], id(node) in inside, node.lineno))
    return out


def module_aliases(tree: ast.Module, names: Set[str]) -> Dict[str, str]:
    """Local names bound to project files (``from . import x as y``)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
            for alias in node.names:
                if alias.name in names:
                    out[alias.asname or alias.name] = alias.name
    return out


def check(files: Dict[str, ast.Module]) -> List[str]:
    """Every violation of the rules above, as lines naming the file and line."""
    layer = _layer_of()
    names = set(files)
    problems = ["%s.py is in no layer: place it in LAYERS (tests/unit/plugins/module_utils/test_layers.py)" % n
                for n in sorted(names - set(layer))]
    problems += ["LAYERS names %s, which is not a file of module_utils" % n for n in sorted(set(layer) - names)]
    graph: Dict[str, Set[str]] = {n: set() for n in names}
    for importer, tree in files.items():
        for imported, imported_names, lazy, line in project_imports(tree, names):
            if imported not in names:
                problems.append("%s.py:%d imports .%s, which is not a file of module_utils" % (importer, line, imported))
                continue
            graph[importer].add(imported)
            if importer in layer and imported in layer and layer[imported] > layer[importer]:
                problems.append("%s.py:%d: layer %s imports %s of the higher layer %s" % (
                    importer, line, LAYERS[layer[importer]][0], imported, LAYERS[layer[imported]][0]))
            for private in (n for n in imported_names if n.startswith("_") and not n.startswith("__")):
                problems.append("%s.py:%d imports the private name %s of %s.py" % (importer, line, private, imported))
            if lazy and (importer, imported) not in LAZY:
                problems.append("%s.py:%d imports .%s inside a function with no reason in LAZY" % (importer, line, imported))
        aliases = module_aliases(tree, names)
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
    problems = check(_files())
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("importer, source, expected", [
    ("statefile", "from .engine import load_state\n", "layer host imports engine of the higher layer reconcile"),
    ("peers", "def f():\n    from .netlink import Netlink\n", "layer core imports netlink of the higher layer host"),
    ("engine", "from .peers import _validate\n", "imports the private name _validate of peers.py"),
    ("engine", "from . import peers\nx = peers._validate\n", "uses the private name _validate of peers.py"),
    ("agent", "def f():\n    from .relay import move_allowed_ips\n", "imports .relay inside a function with no reason in LAZY"),
    ("errors", "from .collector import collector_off\n", None),  # the same layer: allowed
    ("errors+collector", "from .collector import collector_off\n+from .errors import KubeSpanError\n",
     "import cycle among collector, errors"),
])
def test_the_check_fails_on_a_deliberate_violation(importer, source, expected):
    files = _files()
    for name, text in zip(importer.split("+"), source.split("+")):
        files[name] = ast.parse(ast.unparse(files[name]) + "\n" + text)
    problems = check(files)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_every_file_is_placed_and_a_new_one_must_be():
    files = _files()
    files["newthing"] = ast.parse("x = 1\n")
    assert "newthing.py is in no layer" in "\n".join(check(files))


def test_every_error_class_derives_from_the_one_base():
    import importlib

    from ansible_collections.kubespan.mesh.plugins.module_utils.errors import KubeSpanError
    found = []
    for name, tree in _files().items():
        module = importlib.import_module("ansible_collections.kubespan.mesh.plugins.module_utils." + name)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                cls = getattr(module, node.name)
                if isinstance(cls, type) and issubclass(cls, BaseException):
                    found.append(node.name)
                    assert issubclass(cls, KubeSpanError), "%s.%s does not derive from errors.KubeSpanError" % (name, node.name)
    assert len(found) >= 19, found  # the project's error classes (a new one derives too)
