"""Catch documentation that has drifted from the code (tests/installed/docs-lint.sh, section 6).

Checked in README.md, docs/*.md, roles/*/README.md and the modules' DOCUMENTATION:
  1. every repository path written in backticks (`scripts/...`, `tests/...`, `plugins/...`, ...) exists,
     from the repository root or from the document's folder (a `*` matches as a glob);
  2. every `kubespan <command>` names a subcommand of the node's `kubespan` CLI, and every
     `kubespan get <resource>` a resource it lists (the parser of plugins/module_utils/agent/cli.py is asked);
  3. every `ansible-playbook kubespan.mesh.<name>` names a playbook of playbooks/, and every molecule
     scenario named as "molecule `<name>`" or "-s <name>" exists under molecule/;
  4. no stale promise: "being added", "not handled yet", "checked by hand", "coming soon" (a feature
     that is in the code is described as it is; one that is not is not promised).

Usage: python3 tests/installed/docs_drift.py [REPO_ROOT]; exit status 1 and one line per finding.
"""

import contextlib
import glob
import importlib
import io
import os
import re
import sys

ROOTS = ("scripts", "tests", "bench", "docs", "plugins", "roles", "molecule", "playbooks", "changelogs", "meta")
STALE = ("being added", "not handled yet", "checked by hand", "coming soon")
PATH_RE = re.compile(r"`((?:%s)/[^`\s]*)`" % "|".join(ROOTS))
# A command where one is written: at the start of a (code) line, or opening a `code span` or C(...).
CLI_RE = re.compile(r"(?:^\s*(?:[$#] )?|`|C\()kubespan ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")
PLAYBOOK_RE = re.compile(r"ansible-playbook\b[^\n`]*?\bkubespan\.mesh\.([a-z_]+)")
SCENARIO_RES = (re.compile(r"molecule `([a-z0-9_-]+)`"), re.compile(r"molecule [a-z ]*-s ([a-z0-9_-]+)"),
                re.compile(r"scenarios? `([a-z0-9_-]+)`"))


def doc_files(root):
    files = ["README.md"]
    files += ["docs/" + f for f in sorted(os.listdir(os.path.join(root, "docs"))) if f.endswith(".md")]
    files += ["roles/%s/README.md" % r for r in sorted(os.listdir(os.path.join(root, "roles")))
              if os.path.exists(os.path.join(root, "roles", r, "README.md"))]
    files += ["plugins/modules/" + f for f in sorted(os.listdir(os.path.join(root, "plugins", "modules")))
              if f.endswith(".py") and f != "__init__.py"]
    return files


def cli_commands(root):
    """The subcommands and `get` resources of the real parser (argparse's own error tells unknown ones)."""
    sys.path.insert(0, os.path.join(root, "build", "collections"))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(root)))))
    try:
        from ansible_collections.kubespan.mesh.plugins.module_utils.agent import cli  # noqa: E402
    except ImportError:
        sys.path.insert(0, os.path.join(root, "plugins"))
        cli = importlib.import_module("module_utils.agent.cli")

    try:  # `kubespan get` resolves talosctl's names and aliases itself (listing.resolve), not through argparse
        from ansible_collections.kubespan.mesh.plugins.module_utils.core import listing
    except ImportError:
        listing = importlib.import_module("module_utils.core.listing")

    def accepted(argv):
        if argv[:1] == ["get"] and len(argv) > 1:
            try:
                listing.resolve(argv[1])
            except ValueError:
                return False
            return True
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                cli.main(argv + ["--help"], state_dir="/nonexistent")
            except SystemExit as exc:
                return exc.code in (0, None)
        return True

    return accepted


def findings(root):
    accepted = cli_commands(root)
    playbooks = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(root, "playbooks"))}
    scenarios = set(os.listdir(os.path.join(root, "molecule")))
    out = []
    for rel in doc_files(root):
        text = open(os.path.join(root, rel), encoding="utf-8").read()
        for lineno, line in enumerate(text.splitlines(), 1):
            where = "%s:%d" % (rel, lineno)
            for path in PATH_RE.findall(line):
                path = re.sub(r"<[^>]*>", "*", path.rstrip(".,:;)"))  # `bench/results/<section>/`: a placeholder
                if not (glob.glob(os.path.join(root, path))
                        or glob.glob(os.path.join(root, os.path.dirname(rel), path))):
                    out.append("%s: `%s` does not exist" % (where, path))
            for command, arg in CLI_RE.findall(line):
                if not accepted([command]):
                    out.append("%s: `kubespan %s` is not a command of the kubespan CLI" % (where, command))
                elif command == "get" and arg and not accepted(["get", arg]):
                    out.append("%s: `kubespan get %s` is not a resource of the kubespan CLI" % (where, arg))
            for name in PLAYBOOK_RE.findall(line):
                if name not in playbooks:
                    out.append("%s: playbook kubespan.mesh.%s is not in playbooks/" % (where, name))
            for regex in SCENARIO_RES:
                for name in regex.findall(line):
                    if name not in scenarios:
                        out.append("%s: molecule scenario %s does not exist" % (where, name))
            lowered = line.lower()
            for phrase in STALE:
                if phrase in lowered:
                    out.append("%s: stale promise %r: describe what the code does now" % (where, phrase))
    return out


def main(argv):
    root = os.path.abspath(argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
    found = findings(root)
    for line in found:
        print(line)
    print("docs drift: %d finding(s)" % len(found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
