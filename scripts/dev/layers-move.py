# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Arrange plugins/module_utils into one subpackage per layer and rewrite every reference (issue 14, item 1).

Usage (from anywhere; standard library only; needs git, and ruff for the import order when present):

    python3 scripts/dev/layers-move.py            # move and rewrite, in the working tree (git mv)
    python3 scripts/dev/layers-move.py --check    # change nothing; exit 1 and list what would change

The file -> layer map is read from ONE place: ``LAYERS`` in tests/unit/plugins/module_utils/test_layers.py
(a list of (layer, {file stem, ...}), low to high). Each layer is a subpackage of the same name:
plugins/module_utils/<layer>/<file>.py, each with an empty ``__init__.py``. The script is idempotent: a
second run changes nothing; on a tree where files were added flat (or LAYERS moved a file to another layer)
it moves just those and rewrites their references. A file of module_utils that LAYERS does not place, a
name LAYERS places twice, or a reference it cannot rewrite safely stops the script before it changes
anything (exit 2), naming the file and line.

What it rewrites (resolving each reference against the layout as it was before this run):
- relative imports inside module_utils: ``from .x import a`` -> ``from ..core.x import a`` (the same
  package stays ``from .x``); ``from . import x, y`` is split per package; imports inside functions too;
- ``ansible_collections.kubespan.mesh.plugins.module_utils.x`` and ``kubespan_mesh.x`` (the agent bundle's
  package) anywhere, dotted: imports, ``mock.patch("...module_utils.x.y")`` and monkeypatch strings, the
  zipapp's ``__main__`` and the agent's wrapper (``kubespan_mesh.cli``), ``python3 -c`` lines in shell,
  Jinja templates and molecule files; bare ``module_utils.x`` (importlib names) but never
  ``ansible.module_utils.x``;
- ``from <either prefix> import x, y as z`` (split into one line per package, comments kept);
- paths ``module_utils/x.py`` (``plugins/module_utils/x.py`` in docs, comments, READMEs);
- archive names ``kubespan_mesh/x.py`` (the bundle's tests);
- the tests that take plugins/module_utils (or the tree above it) from a module's ``__file__``: one level
  deeper (DEEPER, exact one-shot edits);
  then ``ruff check --select I --fix`` on the changed Python files (import order), when ruff is found.
Not rewritten: bench/results/ (recorded measurements), docs/benchmarks.md (generated from them by
``bench/report.py write``, which would undo a rename of recorded module names) and this script. tests/unit/plugins/module_utils/
stays flat (the tests are named after the files, not the layers).

Hand fixes the move needs, all layout-independent, in the commits after "mechanical: layers-move.py" on
branch h/move (run this script, then cherry-pick them; a re-run then needs none; checked: a fresh run on
main differs from h/move in exactly these files):
1. plugins/module_utils/host/bundle.py ``source_files``: walk the subpackages (every ``*.py`` below the
   source directory, ``__init__.py`` files included, sorted by archive name); plugins/lookup/agent_bundle.py
   ``_sources_key`` walks them too.
2. roles/kubespan/files/build_agent_bundle.py: find ``bundle.py`` in the source directory or one of its
   subpackages (it loads it by path).
3. tests/unit/plugins/module_utils/test_failclosed.py: the boot path's list of imported files leaves out
   packages (the ``agent`` package is not the agent module).
4. tests/unit/plugins/module_utils/test_layers.py: files are read from the subpackages; a file must sit in
   the folder of its layer (and none flat); relative imports of any level are resolved to files; the
   deliberate-violation cases use ``..<layer>.x`` imports. LAYERS and LAZY keep their form (file stems).
5. docs/architecture.md, "Layers": the tree of subpackages.
6. bench/report.py: runs recorded before the layers name the import row ``kubespan_mesh.cli``; then
   docs/benchmarks.md regenerated with ``bench/report.py write``.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Set, Tuple

FULL_PREFIX = "ansible_collections.kubespan.mesh.plugins.module_utils"
BUNDLE_PREFIX = "kubespan_mesh"
LAYERS_FILE = os.path.join("tests", "unit", "plugins", "module_utils", "test_layers.py")
MU = os.path.join("plugins", "module_utils")
SKIP_PREFIXES = ("bench/results/", "docs/benchmarks.md", "scripts/dev/layers-move.py")


class Stop(Exception):
    """A reason to change nothing."""


def read_layers(root: str) -> List[Tuple[str, Set[str]]]:
    path = os.path.join(root, LAYERS_FILE)
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "LAYERS":
            layers = ast.literal_eval(node.value)
            return [(str(name), set(members)) for name, members in layers]
    raise Stop("%s has no LAYERS assignment" % LAYERS_FILE)


class Layout:
    """Where every file of module_utils is now (``cur``) and where LAYERS puts it (``tgt``); "" is flat."""

    def __init__(self, root: str, layers: List[Tuple[str, Set[str]]]):
        self.packages = [name for name, _m in layers]
        self.tgt: Dict[str, str] = {}
        for name, members in layers:
            for member in sorted(members):
                if member in self.tgt:
                    raise Stop("LAYERS places %s in two layers (%s and %s)" % (member, self.tgt[member], name))
                self.tgt[member] = name
        self.cur: Dict[str, str] = {}
        base = os.path.join(root, MU)
        problems = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            rel = os.path.relpath(dirpath, base)
            pkg = "" if rel == "." else rel.replace(os.sep, ".")
            if "." in pkg:
                problems.append("%s/%s: module_utils has one level of subpackages, not more" % (MU, rel))
            for filename in sorted(filenames):
                if not filename.endswith(".py") or filename == "__init__.py":
                    continue
                stem = filename[:-3]
                if stem in self.cur:
                    problems.append("%s.py is in module_utils twice (%s and %s)" % (stem, self.cur[stem] or ".", pkg or "."))
                self.cur[stem] = pkg
        problems += ["%s is in no layer: place it in LAYERS (%s)" % (os.path.join(MU, self.cur[s], s + ".py"), LAYERS_FILE)
                     for s in sorted(set(self.cur) - set(self.tgt))]
        problems += ["LAYERS places %s, which is not a file of module_utils" % s for s in sorted(set(self.tgt) - set(self.cur))]
        if problems:
            raise Stop("\n".join(problems))

    def is_module(self, name: str) -> bool:
        return name in self.cur

    def resolve(self, parts: Sequence[str], names: Optional[List[str]]) -> Tuple[str, object]:
        """A reference below module_utils, as parts after the prefix, read in the current layout:
        ("module", (stem, number of parts used)) or ("package", None) when ``names`` are files, or ("", None)."""
        parts = list(parts)
        if len(parts) >= 2 and parts[0] in self.packages and self.cur.get(parts[1]) == parts[0]:
            return "module", (parts[1], 2)
        if parts and names is not None and all(self.cur.get(n) == parts[0] for n in names) and parts[0] in self.packages \
                and len(parts) == 1:
            return "package", None
        if len(parts) == 1 and parts[0] in self.packages and self.cur.get(parts[0]) == parts[0]:
            return "package", None  # agent/agent.py in place: a bare ``.agent`` is the package
        if parts and self.is_module(parts[0]):
            return "module", (parts[0], 1)
        if len(parts) >= 2 and parts[0] in self.packages and self.is_module(parts[1]):
            return "module", (parts[1], 2)  # a stale package: the file moved since
        if not parts or (len(parts) == 1 and parts[0] in self.packages):
            return "package", None
        return "", None


def split_names(text: str) -> Optional[List[Tuple[str, str]]]:
    """``a, b as c`` -> [("a", "a"), ("b", "b as c")]; None when not a simple one-line list."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        m = re.fullmatch(r"([A-Za-z_]\w*)(\s+as\s+[A-Za-z_]\w*)?", item)
        if not m:
            return None
        out.append((m.group(1), item))
    return out or None


ABS_IMPORT = re.compile(r"^(\s*)from\s+(%s|%s)((?:\.\w+)*)\s+import\s+(.*?)(\s*#.*)?$"
                        % (re.escape(FULL_PREFIX), re.escape(BUNDLE_PREFIX)))
DOTTED = re.compile(r"(?<![\w.])((?:ansible_collections\.kubespan\.mesh\.plugins\.)?module_utils|kubespan_mesh)"
                    r"((?:\.[A-Za-z_]\w*){1,2})")
PATH = re.compile(r"(?<![\w])module_utils/((?:\w+/)?)(\w+)\.py\b")
ARCHIVE = re.compile(r"(?<![\w])kubespan_mesh/((?:\w+/)?)(\w+)\.py\b")

# One-shot edits of the flat -> subpackage step that no pattern above can see: a directory taken from a
# module's __file__ is now one level deeper. (file, exact old text, new text); applied only where the old
# text is present, so a re-run does nothing.
DEEPER = [
    ("tests/unit/plugins/module_utils/test_agentfiles.py", "\nSRC = os.path.dirname(agentfiles.__file__)\n",
     "\nSRC = os.path.dirname(os.path.dirname(agentfiles.__file__))  # plugins/module_utils, above the layers\n"),
    ("tests/unit/plugins/module_utils/test_unit_security.py", "bundle.build_from_dir(os.path.dirname(agentfiles.__file__))",
     "bundle.build_from_dir(os.path.dirname(os.path.dirname(agentfiles.__file__)))"),
    ("tests/unit/plugins/module_utils/test_failclosed.py", "os.path.dirname(cli.__file__), *[\"..\"] * 5)",
     "os.path.dirname(cli.__file__), *[\"..\"] * 6)"),
    ("tests/unit/plugins/module_utils/test_rtnl.py", "os.path.dirname(rtnl.__file__), *[\"..\"] * 5)",
     "os.path.dirname(rtnl.__file__), *[\"..\"] * 6)"),
    ("tests/unit/plugins/module_utils/test_rtnl.py", "rtnl.py is 6 levels below)", "rtnl.py is 7 levels below)"),
]


def package_lines(layout: Layout, indent: str, prefix: str, names: List[Tuple[str, str]], comment: str,
                  where: str, own: Optional[str] = None) -> List[str]:
    """One ``from <prefix>.<package> import ...`` line per package of the named files, in first-seen order."""
    groups: Dict[str, List[str]] = {}
    for stem, item in names:
        if stem not in layout.tgt:
            raise Stop("%s: imports %s from the module_utils package, which is not a file of it" % (where, stem))
        groups.setdefault(layout.tgt[stem], []).append(item)
    lines = []
    for pkg, items in groups.items():
        source = "." if own == pkg else ("%s.%s" % (prefix, pkg) if prefix else "..%s" % pkg)
        lines.append("%sfrom %s import %s%s" % (indent, source, ", ".join(items), comment))
    return lines


def rewrite_text(layout: Layout, text: str, where: str) -> str:
    """Absolute and bundle-package imports, dotted names and paths, in any text file."""
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        m = ABS_IMPORT.match(line)
        if m:
            indent, prefix, rest, names_text, comment = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5) or ""
            parts = [p for p in rest.split(".") if p]
            names = split_names(names_text)
            kind, info = layout.resolve(parts, [n for n, _i in names] if names else None)
            here = "%s:%d" % (where, number)
            if kind == "module":
                stem, used = info
                tail = "".join("." + p for p in parts[used:])
                out.append("%sfrom %s.%s.%s%s import %s%s" % (indent, prefix, layout.tgt[stem], stem, tail, names_text, comment))
                continue
            if kind == "package":
                if names is None:
                    raise Stop("%s: a multi-line import of files of module_utils: write it on one line" % here)
                out.extend(package_lines(layout, indent, prefix, names, comment, here))
                continue
            raise Stop("%s: cannot read this import of module_utils" % here)
        line = DOTTED.sub(lambda d: dotted(layout, d), line)
        line = PATH.sub(lambda p: path(layout, p), line)
        line = ARCHIVE.sub(lambda p: path(layout, p, "kubespan_mesh"), line)
        out.append(line)
    return "\n".join(out)


def dotted(layout: Layout, m: re.Match[str]) -> str:
    prefix, rest = m.group(1), m.group(2)
    parts = rest[1:].split(".")
    kind, info = layout.resolve(parts, None)
    if kind != "module":
        return m.group(0)
    stem, used = info
    return "%s.%s.%s%s" % (prefix, layout.tgt[stem], stem, "".join("." + p for p in parts[used:]))


def path(layout: Layout, m: re.Match[str], top: str = "module_utils") -> str:
    stem = m.group(2)
    if stem not in layout.tgt:
        return m.group(0)
    return "%s/%s/%s.py" % (top, layout.tgt[stem], stem)


def rewrite_relative(layout: Layout, stem: str, text: str) -> str:
    """The relative imports of module_utils/<cur>/<stem>.py, for its new place <tgt>/<stem>.py."""
    where = os.path.join(MU, layout.cur[stem], stem + ".py")
    tree = ast.parse(text, where)
    lines = text.split("\n")
    old_pkg = [p for p in layout.cur[stem].split(".") if p]
    new_pkg = layout.tgt[stem]
    edits: Dict[int, List[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        here = "%s:%d" % (where, node.lineno)
        if node.level - 1 > len(old_pkg):
            raise Stop("%s: a relative import above module_utils" % here)
        base = old_pkg[:len(old_pkg) - (node.level - 1)]
        parts = base + (node.module.split(".") if node.module else [])
        names = [a.name for a in node.names]
        kind, info = layout.resolve(parts, names)
        index = node.lineno - 1
        line = lines[index]
        m = re.match(r"^(\s*)from\s+\.+[\w.]*\s+import\s+", line)
        if not m:
            raise Stop("%s: cannot read this relative import" % here)
        if kind == "module":
            stem2, used = info
            pkg = layout.tgt[stem2]
            tail = "".join("." + p for p in parts[used:])
            source = (".%s" % stem2) if pkg == new_pkg else ("..%s.%s" % (pkg, stem2))
            edits[index] = [m.group(1) + "from %s%s import " % (source, tail) + line[m.end():]]
        elif kind == "package":
            if node.end_lineno != node.lineno:
                raise Stop("%s: a multi-line `from . import` of files: write it on one line" % here)
            rest = line[m.end():]
            cm = re.match(r"^(.*?)(\s*#.*)?$", rest)
            items = split_names(cm.group(1))
            if items is None:
                raise Stop("%s: cannot read the names of this import" % here)
            edits[index] = package_lines(layout, m.group(1), "", items, cm.group(2) or "", here, own=new_pkg)
        else:
            raise Stop("%s: imports %s, which is not a file of module_utils" % (here, ".".join(parts) or "."))
    out = []
    for index, line in enumerate(lines):
        out.extend(edits.get(index, [line]))
    return "\n".join(out)


def git(root: str, *args: str) -> str:
    return subprocess.run(["git", "-C", root] + list(args), check=True, stdout=subprocess.PIPE,
                          text=True).stdout


def text_files(root: str) -> List[str]:
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    out = []
    for rel in sorted(set(p for p in listed if p)):
        if rel.startswith(SKIP_PREFIXES) or not os.path.isfile(os.path.join(root, rel)) \
                or os.path.islink(os.path.join(root, rel)):
            continue
        out.append(rel)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when something would change")
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    args = parser.parse_args(argv)
    root = args.root
    try:
        layout = Layout(root, read_layers(root))
        new_text: Dict[str, str] = {}
        for rel in text_files(root):
            try:
                with open(os.path.join(root, rel), encoding="utf-8") as handle:
                    text = handle.read()
            except (UnicodeDecodeError, OSError):
                continue
            updated = rewrite_text(layout, text, rel)
            for target, before, after in DEEPER:
                if rel == target:
                    updated = updated.replace(before, after)
            parts = rel.split("/")
            if rel.startswith(MU + "/") and rel.endswith(".py") and parts[-1] != "__init__.py":
                updated = rewrite_relative(layout, parts[-1][:-3], updated)
            if updated != text:
                new_text[rel] = updated
    except Stop as stop:
        print("layers-move: nothing changed:\n" + str(stop), file=sys.stderr)
        return 2
    moves = [(s, layout.cur[s], layout.tgt[s]) for s in sorted(layout.cur) if layout.cur[s] != layout.tgt[s]]
    inits = [os.path.join(MU, p, "__init__.py") for p in layout.packages
             if not os.path.exists(os.path.join(root, MU, p, "__init__.py"))]
    if args.check:
        for rel in sorted(new_text):
            print("would rewrite %s" % rel)
        for stem, old, new in moves:
            print("would move %s -> %s" % (os.path.join(MU, old, stem + ".py"), os.path.join(MU, new, stem + ".py")))
        for rel in inits:
            print("would create %s" % rel)
        return 1 if new_text or moves or inits else 0
    for rel, text in sorted(new_text.items()):
        with open(os.path.join(root, rel), "w", encoding="utf-8") as handle:
            handle.write(text)
    for rel in inits:
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        open(os.path.join(root, rel), "w").close()
        git(root, "add", rel)
    changed = [rel for rel in new_text if rel.endswith(".py")]
    for stem, old, new in moves:
        src, dst = os.path.join(MU, old, stem + ".py"), os.path.join(MU, new, stem + ".py")
        if git(root, "ls-files", src).strip():
            git(root, "mv", src, dst)
        else:
            os.rename(os.path.join(root, src), os.path.join(root, dst))
            git(root, "add", dst)
        changed = [dst if c == src else c for c in changed]
        print("moved %s -> %s" % (src, dst))
    for pkg in sorted(set(os.listdir(os.path.join(root, MU))) - set(layout.packages)):  # a layer LAYERS dropped
        left = os.path.join(root, MU, pkg)
        if os.path.isdir(left) and not [f for f in os.listdir(left) if f not in ("__init__.py", "__pycache__")]:
            git(root, "rm", "-q", "--ignore-unmatch", os.path.join(MU, pkg, "__init__.py"))
            shutil.rmtree(left, ignore_errors=True)
    for rel in sorted(new_text):
        print("rewrote %s" % rel)
    ruff = shutil.which("ruff") or os.path.join(root, ".venv", "bin", "ruff")
    if changed and os.path.exists(ruff):
        subprocess.run([ruff, "check", "-q", "--select", "I", "--fix"] + sorted(changed), cwd=root, check=False)
    elif changed:
        print("layers-move: ruff not found: run `ruff check --select I --fix` on the changed files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
