#!/usr/bin/env bash
# tests/gates.sh: the quality gates of kubespan.mesh, from the repository root or anywhere.
#
#   ruff        ruff check (ruff.toml: py38 target for the node-side code, line length 160)
#   lint        ansible-lint, production profile, offline (.ansible-lint): roles/, playbooks/,
#               molecule/, galaxy.yml, meta/
#   sanity      ansible-test sanity --python 3.11 (every test that applies; shellcheck is
#               apt-installed when missing), in a copy of the tree
#   units       ansible-test units --python 3.11, in the same copy (tests/unit/requirements.txt)
#   build       ansible-galaxy collection build + install of the tarball into a temporary
#               collections path, then ansible-doc of the modules and the role from there
#   promtool    promtool (Debian's prometheus package): check rules and test rules on
#               extensions/prometheus/kubespan-alerts.yml (tests/prometheus/*.test.yml), and
#               check metrics on the agent's real metrics text (tests/prometheus/render_sample.py)
#
# Every gate runs (a failure does not stop the later ones) with a banner and its duration; the
# exit status is non-zero if any gate failed. Run `scripts/setup.sh` once before (it makes .venv and
# tests/testbed/env.sh); everything else this script needs it makes itself:
#   - ansible-test wants the collection at .../ansible_collections/kubespan/mesh: the working tree
#     (tracked and untracked files that .gitignore does not exclude) is copied into a temporary
#     directory; a symlink is not enough for ansible-test units.
#   - ansible-test bootstraps pip in its virtual environments with get-pip.py from
#     ci-files.testing.ansible.com, which is not reachable here: a stand-in saved as
#     ~/.ansible/test/cache/get_pip_<version>.py seeds pip with ensurepip and then installs the
#     requested pip version from PyPI.
#
# Usage: tests/gates.sh [GATE...]     (default: all gates, in the order above)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

ALL_GATES=(ruff lint sanity units build promtool)
PYTHON_VERSION=3.11
# The collection tarball holds sources and docs only: anything bigger means build_ignore missed something (a
# virtualenv or a build directory is many MB). 768 KiB: the sources and tests alone were 553 KB on 2026-12-05.
MAX_TARBALL_BYTES=$((768 * 1024))

if [[ ! -f tests/testbed/env.sh || ! -x .venv/bin/ansible-test ]]; then
    echo "tests/gates.sh: run scripts/setup.sh first (it makes .venv and tests/testbed/env.sh)" >&2
    exit 1
fi
# shellcheck source=/dev/null
. tests/testbed/env.sh   # the venv on PATH, ANSIBLE_COLLECTIONS_PATH with this checkout
if [[ ! -t 1 ]]; then
    export NO_COLOR=1 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kubespan-gates.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
COPY="$WORK/ansible_collections/kubespan/mesh"

# --- helpers -------------------------------------------------------------------------------------

# The get-pip.py stand-in for ansible-test (see the header). ansible-test runs it as
#   python quiet_pip.py [pip install options...] pip==<version> [--no-setuptools] [--no-wheel]
# inside a fresh virtual environment without pip.
ensure_get_pip_stand_in() {
    local version cache
    version="$(sed -n "s/^ *pip='\([0-9.]*\)',\$/\1/p" \
        "$(python -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py")"
    if [[ -z "$version" ]]; then
        echo "cannot find the pip version ansible-test bootstraps (ansible_test/_internal/python_requirements.py)" >&2
        return 1
    fi
    cache="$HOME/.ansible/test/cache/get_pip_${version//./_}.py"
    # Keep a real get-pip.py if someone saved one; (re)write our own stand-in otherwise.
    if [[ -f "$cache" ]] && ! grep -q 'kubespan.mesh get-pip stand-in' "$cache"; then
        return 0
    fi
    mkdir -p "$(dirname "$cache")"
    cat >"$cache.tmp" <<'EOF'
"""kubespan.mesh get-pip stand-in (written by tests/gates.sh).

ansible-test downloads get-pip.py from ci-files.testing.ansible.com, which the test machines cannot
reach. This seeds pip from the interpreter's own ensurepip, then lets that pip install what get-pip.py
was asked for (a pinned pip) from the package index.
"""
import subprocess
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")
args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call(pip + ["install"] + args)
# ensurepip of Python < 3.12 also brings setuptools, which get-pip.py --no-setuptools would not.
if "--no-setuptools" in sys.argv[1:]:
    subprocess.check_call(pip + ["uninstall", "-y", "setuptools"])
EOF
    if cmp -s "$cache.tmp" "$cache"; then
        rm -f "$cache.tmp"
    else
        mv -f "$cache.tmp" "$cache"
        echo "wrote the get-pip stand-in $cache"
    fi
}

# Copy the working tree to $COPY: the files git tracks or would track (untracked work in progress
# included, .gitignore'd files such as .venv/, build/ and generated files left out).
make_copy() {
    [[ -d "$COPY" ]] && return 0
    mkdir -p "$COPY"
    if git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        local path
        git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' path; do
                # Skip tracked files deleted in the work tree.
                if [[ -e "$REPO_ROOT/$path" ]]; then printf '%s\0' "$path"; fi
            done |
            tar -C "$REPO_ROOT" --null -T - -cf - |
            tar -C "$COPY" -xf -
    else
        tar -C "$REPO_ROOT" -cf - \
            --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./tests/output \
            --exclude=./.cache --exclude=./.ruff_cache --exclude=./.pytest_cache --exclude=./.hypothesis \
            --exclude=__pycache__ --exclude='*.pyc' --exclude='./*.tar.gz' . |
            tar -C "$COPY" -xf -
    fi
}

# --- gates ---------------------------------------------------------------------------------------

gate_ruff() {
    ruff --version
    ruff check
}

gate_lint() {
    ansible-lint --version
    # No path arguments: the whole project as .ansible-lint scopes it (roles/, playbooks/,
    # molecule/, galaxy.yml, meta/; not .venv/ or build/).
    ansible-lint
}

gate_sanity() {
    # Without shellcheck, ansible-test skips its shellcheck test with only a warning: install it so
    # the gate checks the same on every machine.
    if ! command -v shellcheck >/dev/null; then
        echo "installing shellcheck (Debian package) for the shellcheck sanity test"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null; }
    fi
    ensure_get_pip_stand_in
    make_copy
    cd "$COPY"
    ansible-test sanity --venv --python "$PYTHON_VERSION" --color no
}

gate_units() {
    ensure_get_pip_stand_in
    make_copy
    cd "$COPY"
    ansible-test units --venv --requirements --python "$PYTHON_VERSION" --color no
}

gate_build() {
    local dist="$WORK/dist" installed="$WORK/installed" tarball size
    mkdir -p "$dist" "$installed"
    ansible-galaxy collection build --output-path "$dist" "$REPO_ROOT"
    tarball="$(ls "$dist"/kubespan-mesh-*.tar.gz)"
    size=$(stat -c %s "$tarball")
    echo "tarball: $(basename "$tarball"), $size bytes, $(tar -tzf "$tarball" | wc -l) entries"
    if ((size > MAX_TARBALL_BYTES)); then
        echo "the tarball is larger than $MAX_TARBALL_BYTES bytes: check build_ignore in galaxy.yml; biggest entries:" >&2
        tar -tvzf "$tarball" | sort -k3 -n -r | head -n 10 >&2
        return 1
    fi
    if tar -tzf "$tarball" | grep -E '^(\./)?(\.venv|\.git|build|tests/output|\.cache|\.ci|\.ruff_cache|\.pytest_cache|\.hypothesis)/|__pycache__|\.pyc$'; then
        echo "the tarball holds files that build_ignore should keep out (above)" >&2
        return 1
    fi
    # Only the temporary path: the checkout (build/collections) must not count as "already installed".
    ANSIBLE_COLLECTIONS_PATH="$installed" ansible-galaxy collection install --offline -p "$installed" "$tarball"
    [[ -f "$installed/ansible_collections/kubespan/mesh/MANIFEST.json" ]]
    # Only the installed copy: no checkout on the collections path, and not run from inside one.
    local doc
    for doc in "module kubespan.mesh.identity" "module kubespan.mesh.mesh" "module kubespan.mesh.cluster_secrets" \
        "module kubespan.mesh.peer_status_info" "filter kubespan.mesh.settings_errors" \
        "role kubespan.mesh.kubespan" "role kubespan.mesh.discovery_service"; do
        local type=${doc%% *} name=${doc#* } text
        text="$(cd "$WORK" && ANSIBLE_COLLECTIONS_PATH="$installed" ansible-doc -t "$type" "$name")"
        if [[ -z "$text" ]]; then
            echo "ansible-doc -t $type $name rendered nothing" >&2
            return 1
        fi
        # no pipe into head: with pipefail, printf's SIGPIPE (rc 141) once the text outgrows the pipe
        sed -n '1,3p' <<<"$text"
        echo "  ... ansible-doc -t $type $name: $(wc -l <<<"$text") lines"
    done
}

gate_promtool() {
    if ! command -v promtool >/dev/null; then
        echo "promtool is missing: run scripts/setup.sh (it installs Debian's prometheus package)" >&2
        return 1
    fi
    promtool --version 2>&1 | sed -n 1p
    promtool check rules extensions/prometheus/kubespan-alerts.yml
    # rule_files in the test file are relative to it
    (cd tests/prometheus && promtool test rules kubespan-alerts.test.yml)
    local metrics="$WORK/metrics.prom"
    python tests/prometheus/render_sample.py >"$metrics"
    echo "agent metrics: $(grep -c '^# TYPE' "$metrics") families, $(grep -vc '^#' "$metrics") samples"
    # promtool check metrics exits non-zero on a lint problem (names, units, _total, HELP/TYPE)
    promtool check metrics <"$metrics"
}

# --- main ----------------------------------------------------------------------------------------

gates=("$@")
((${#gates[@]})) || gates=("${ALL_GATES[@]}")
for g in "${gates[@]}"; do
    if [[ " ${ALL_GATES[*]} " != *" $g "* ]]; then
        echo "unknown gate '$g' (gates: ${ALL_GATES[*]})" >&2
        exit 2
    fi
done

passed=() failed=()
run_start=$SECONDS
for g in "${gates[@]}"; do
    printf '\n==================== gate %s\n' "$g"
    start=$SECONDS
    set +e
    (
        set -euo pipefail
        "gate_$g"
    )
    rc=$?
    set -e
    took=$((SECONDS - start))
    if ((rc == 0)); then
        passed+=("$g (${took}s)")
        printf -- '-------------------- gate %s: PASSED in %d s\n' "$g" "$took"
    else
        failed+=("$g (${took}s, rc $rc)")
        printf -- '-------------------- gate %s: FAILED (rc %d) in %d s\n' "$g" "$rc" "$took"
    fi
done

printf '\n==================== gates summary (%d s)\n' "$((SECONDS - run_start))"
for s in "${passed[@]}"; do printf '  passed   %s\n' "$s"; done
for s in "${failed[@]}"; do printf '  FAILED   %s\n' "$s"; done
((${#failed[@]} == 0))
