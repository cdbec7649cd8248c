#!/usr/bin/env bash
# tests/installed/docs-lint.sh: the documentation gate (make docs-lint; nox -s docs).
#
#   1. antsibull-changelog lint: the changelog fragments and changelogs/changelog.yaml;
#   2. antsibull-docs lint-collection-docs --plugin-docs: the DOCUMENTATION/EXAMPLES/RETURN of every module
#      and plugin and the role's argument spec (schema, markup, references to options and return values),
#      the way the Ansible docsite would render them;
#   3. ansible-doc --json of every module: documentation, examples and return values present, and
#      attributes check_mode and diff_mode declared;
#   4. relative links in README.md, docs/*.md and roles/*/README.md point to files that exist;
#   5. every role variable of defaults/main.yml and meta/argument_specs.yml is in the role's README, and
#      the two agree on the defaults (templated defaults excepted);
#   6. docs that drifted from the code (tests/installed/docs_drift.py): paths in backticks exist, the
#      `kubespan` commands and resources named exist in the CLI, playbooks and molecule scenarios named
#      exist, no stale promise such as "being added".
#
# The collection is copied (the files git would commit) into <tmp>/ansible_collections/kubespan/mesh and
# only that path is searched (ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false: the venv's bundled collections
# are not loaded, which also keeps the lint at a few seconds).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
if [[ -z "${VIRTUAL_ENV:-}" && -x .venv/bin/ansible ]]; then
    export PATH="$REPO_ROOT/.venv/bin:$PATH"
fi
for tool in antsibull-docs antsibull-changelog ansible-doc; do
    command -v "$tool" >/dev/null || { echo "docs-lint: $tool is missing (pip install -r requirements-dev.txt)" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kubespan-docs.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
COPY="$WORK/ansible_collections/kubespan/mesh"
mkdir -p "$COPY"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' path; do
        if [[ -e "$path" ]]; then printf '%s\0' "$path"; fi
    done |
    tar --null -T - -cf - | tar -C "$COPY" -xf -
export ANSIBLE_COLLECTIONS_PATH="$WORK" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
failed=0

echo "--- antsibull-changelog lint"
antsibull-changelog lint || failed=1

echo "--- antsibull-docs lint-collection-docs --plugin-docs"
(cd "$WORK" && antsibull-docs lint-collection-docs --plugin-docs --validate-collection-refs all \
    --disallow-unknown-collection-refs "$COPY") || failed=1

echo "--- ansible-doc of every module"
modules=()
for f in "$COPY"/plugins/modules/*.py; do
    modules+=("kubespan.mesh.$(basename "$f" .py)")
done
(cd "$WORK" && ansible-doc --json -t module "${modules[@]}") >"$WORK/modules.json"
python3 - "$WORK/modules.json" <<'EOF' || failed=1
import json, sys
docs = json.load(open(sys.argv[1]))
bad = 0
for name, doc in sorted(docs.items()):
    missing = [part for part in ("doc", "examples", "return") if not doc.get(part)]
    attrs = (doc.get("doc") or {}).get("attributes") or {}
    missing += ["attributes." + a for a in ("check_mode", "diff_mode") if "support" not in attrs.get(a, {})]
    if missing:
        bad = 1
        print("%s: missing %s" % (name, ", ".join(missing)))
    else:
        print("%s: ok (check_mode %s, diff_mode %s)" % (name, attrs["check_mode"]["support"], attrs["diff_mode"]["support"]))
sys.exit(bad)
EOF

echo "--- relative links in the Markdown documentation"
python3 - "$REPO_ROOT" <<'EOF' || failed=1
import os, re, sys
root = sys.argv[1]
files = ["README.md"] + ["docs/" + f for f in sorted(os.listdir(os.path.join(root, "docs"))) if f.endswith(".md")]
files += ["roles/%s/README.md" % r for r in sorted(os.listdir(os.path.join(root, "roles")))
          if os.path.exists(os.path.join(root, "roles", r, "README.md"))]
link = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
bad = 0
for rel in files:
    text = open(os.path.join(root, rel), encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks are not links
    for target in link.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = os.path.normpath(os.path.join(root, os.path.dirname(rel), target.split("#")[0]))
        if not os.path.exists(path):
            bad = 1
            print("%s: broken link %s" % (rel, target))
print("checked %d files" % len(files))
sys.exit(bad)
EOF

echo "--- role variables: defaults, argument specs and README agree"
python3 - "$REPO_ROOT" <<'EOF' || failed=1
import os, re, sys
import yaml
root = sys.argv[1]
bad = 0
for role in sorted(os.listdir(os.path.join(root, "roles"))):
    base = os.path.join(root, "roles", role)
    def load(rel):
        path = os.path.join(base, rel)
        return (yaml.safe_load(open(path)) or {}) if os.path.exists(path) else {}
    defaults = load("defaults/main.yml")
    specs = {}
    for entry in (load("meta/argument_specs.yml").get("argument_specs") or {}).values():
        specs.update(entry.get("options") or {})
    readme_path = os.path.join(base, "README.md")
    readme = open(readme_path).read() if os.path.exists(readme_path) else ""
    documented = set(re.findall(r"`([a-z][a-z0-9_]+)`", readme))
    for name in sorted(set(defaults) - set(specs)):
        bad = 1
        print("roles/%s: %s has a default but no argument spec" % (role, name))
    for name in sorted((set(defaults) | set(specs)) - documented):
        bad = 1
        print("roles/%s: %s is not in README.md" % (role, name))
    for name, spec in sorted(specs.items()):
        if name in defaults and "default" in spec and spec["default"] != defaults[name] and "{{" not in str(defaults[name]):
            bad = 1
            print("roles/%s: %s defaults differ: argument spec %r, defaults/main.yml %r" % (role, name, spec["default"], defaults[name]))
    print("roles/%s: %d variables checked" % (role, len(set(defaults) | set(specs))))
sys.exit(bad)
EOF

echo "--- docs drift: named paths, commands, playbooks and scenarios exist"
python3 tests/installed/docs_drift.py "$COPY" || failed=1

if ((failed)); then
    echo "docs-lint: FAILED" >&2
    exit 1
fi
echo "docs-lint: passed"
