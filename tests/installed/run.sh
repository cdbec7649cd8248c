#!/usr/bin/env bash
# tests/installed/run.sh: the collection as a user gets it. Builds the release tarball (make release),
# installs it into an empty temporary collections path and runs the playbooks by their FQCNs from a
# directory outside the checkout, against two systemd containers:
#
#   kubespan.mesh.gen_secrets   cluster ID and secret, then ansible-vault encrypt (as README.md says)
#   kubespan.mesh.site          forms the mesh (vault password file); a second run must change nothing,
#                               and neither may a run with --check --diff
#   kubespan.mesh.status        every node sees its peer up (retried while the first handshakes complete)
#
# plus a ping through the mesh between the nodes' KubeSpan addresses and ansible-doc of every module and
# the role from the installed copy.
#
# Nothing of the checkout is on the collections path: ANSIBLE_COLLECTIONS_PATH is only the temporary
# path, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false keeps the venv's site-packages out, and the only other
# collection installed there is containers.podman (the podman connection plugin), copied from the venv.
# The script checks that ansible-galaxy finds kubespan.mesh in the temporary path only.
#
# Test bed: containers inst-node1, inst-node2 on the internal network kubespan-inst (10.89.100.0/24,
# 2001:db8:100::/64), removed by the EXIT trap (and before the run, if an interrupted run left them).
# Needs scripts/setup.sh (run here when tests/testbed/env.sh is missing) and the node image, built (or
# reused when unchanged) by tests/testbed/build-image.sh, or with --debian trixie by
# tests/testbed/build-image-trixie.sh (Debian 13 nodes).
#
# Usage: tests/installed/run.sh [--debian bookworm|trixie]    (exit status 0 when every step passed)
set -Eeuo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
debian=bookworm
if [[ "${1:-}" == "--debian" && -n "${2:-}" ]]; then
    debian="$2"
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--debian bookworm|trixie]" >&2
    exit 2
fi
case "$debian" in
    bookworm) build_image="$REPO_ROOT/tests/testbed/build-image.sh" ;;
    trixie) build_image="$REPO_ROOT/tests/testbed/build-image-trixie.sh" ;;
    *) echo "unknown Debian release '$debian' (bookworm or trixie)" >&2; exit 2 ;;
esac
NODE_IMAGE="localhost/kubespan-node:$debian"
NODES=(inst-node1 inst-node2)
NETWORK=kubespan-inst
NET_V4=10.89.100.0/24
NET_V6=2001:db8:100::/64

banner() { printf '\n=== [installed] %s\n' "$*"; }
fail() {
    echo "tests/installed/run.sh: $*" >&2
    exit 1
}

[[ -f "$REPO_ROOT/tests/testbed/env.sh" ]] || bash "$REPO_ROOT/scripts/setup.sh"
# shellcheck source=/dev/null
. "$REPO_ROOT/tests/testbed/env.sh"   # CONTAINERS_CONF and the venv on PATH (its collections path is replaced below)
# shellcheck source=tests/testbed/lib.sh
. "$REPO_ROOT/tests/testbed/lib.sh"
# shellcheck disable=SC2034  # read by testbed_run_node (lib.sh)
TESTBED_IMAGE="$NODE_IMAGE"
if [[ ! -t 1 ]]; then
    export NO_COLOR=1 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kubespan-installed.XXXXXX")"
cleanup() {
    testbed_remove_containers "${NODES[@]}" || true
    testbed_remove_networks "$NETWORK" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
run_start=$SECONDS

banner "make release"
version="$(sed -n 's/^version: *//p' "$REPO_ROOT/galaxy.yml")"
make -C "$REPO_ROOT" --no-print-directory release
tarball="$REPO_ROOT/build/release/kubespan-mesh-$version.tar.gz"
[[ -f "$tarball" ]] || fail "make release did not produce $tarball"

banner "install into the empty collections path $WORK/collections"
COLLECTIONS="$WORK/collections"
mkdir -p "$COLLECTIONS/ansible_collections/containers"
# Only this path; the venv's bundled collections and the checkout's build/collections are not searched.
export ANSIBLE_COLLECTIONS_PATH="$COLLECTIONS"
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
unset ANSIBLE_CONFIG ANSIBLE_ROLES_PATH ANSIBLE_PLAYBOOK_DIR
ansible-galaxy collection install --offline -p "$COLLECTIONS" "$tarball"
# The podman connection plugin (containers.podman) from the venv's "ansible" package: Galaxy is not reachable.
podman_src="$(python -c 'import ansible_collections.containers.podman as m; print(list(m.__path__)[0])')"
cp -a "$podman_src" "$COLLECTIONS/ansible_collections/containers/podman"

PROJECT="$WORK/project"   # the user's project directory: no checkout above it
mkdir -p "$PROJECT/group_vars/kubespan"
cd "$PROJECT"
case "$PWD/" in "$REPO_ROOT/"*) fail "the project directory $PWD is inside the checkout" ;; esac
# Where does Ansible find kubespan.mesh? Exactly once, in the temporary path.
found="$(ansible-galaxy collection list kubespan.mesh 2>/dev/null | sed -n 's/^# //p')"
echo "kubespan.mesh found in: $found"
[[ "$found" == "$COLLECTIONS/ansible_collections" ]] || fail "kubespan.mesh must be found only in $COLLECTIONS (found: $found)"
installed_version="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["collection_info"]["version"])' \
    "$COLLECTIONS/ansible_collections/kubespan/mesh/MANIFEST.json")"
[[ "$installed_version" == "$version" ]] || fail "installed version $installed_version, galaxy.yml says $version"

banner "ansible-doc from the installed copy"
for name in cluster_secrets identity mesh peer_status_info; do
    json="$(ansible-doc --json -t module "kubespan.mesh.$name")"
    python - "$name" "$json" <<'EOF'
import json, sys
name = sys.argv[1]
doc = json.loads(sys.argv[2])["kubespan.mesh." + name]
missing = [part for part in ("doc", "examples", "return") if not doc.get(part)]
attrs = (doc.get("doc") or {}).get("attributes") or {}
missing += ["attributes." + a for a in ("check_mode", "diff_mode") if "support" not in attrs.get(a, {})]
if missing:
    sys.exit("ansible-doc kubespan.mesh.%s lacks: %s" % (name, ", ".join(missing)))
print("  kubespan.mesh.%s: %d options, examples, %d return values, check_mode %s, diff_mode %s" % (
    name, len(doc["doc"].get("options") or {}), len(doc["return"]),
    attrs["check_mode"]["support"], attrs["diff_mode"]["support"]))
EOF
done
ansible-doc -t role kubespan.mesh.kubespan | grep -q kubespan_cluster_id || fail "ansible-doc -t role kubespan.mesh.kubespan lacks kubespan_cluster_id"
echo "  role kubespan.mesh.kubespan: rendered"

banner "test bed: ${NODES[*]} ($NODE_IMAGE) on $NETWORK ($NET_V4, $NET_V6)"
# Each build script names its own image (KUBESPAN_NODE_IMAGE would rename the bookworm one).
env -u KUBESPAN_NODE_IMAGE -u KUBESPAN_TRIXIE_IMAGE bash "$build_image"
testbed_remove_containers "${NODES[@]}"   # an interrupted earlier run
testbed_create_network "$NETWORK" "$NET_V4" "$NET_V6"
for i in "${!NODES[@]}"; do
    testbed_run_node "${NODES[$i]}" "$NETWORK" "10.89.100.$((i + 11))" "2001:db8:100::$((i + 11))"
done
testbed_wait_systemd "${NODES[@]}"

cat >inventory.yml <<EOF
# The cluster is the group kubespan; its secrets are in group_vars/kubespan/secrets.yml (vault).
kubespan:
  hosts:
    ${NODES[0]}:
    ${NODES[1]}:
  vars:
    ansible_connection: containers.podman.podman
    ansible_python_interpreter: /usr/bin/python3
EOF
printf 'installed-test-%s\n' "$RANDOM$RANDOM" >vault-pass
chmod 0600 vault-pass
export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false

banner "ansible-playbook kubespan.mesh.gen_secrets, ansible-vault encrypt"
# An absolute path: a relative one is taken relative to the playbook, i.e. inside the installed collection.
ansible-playbook kubespan.mesh.gen_secrets -e kubespan_secrets_file="$PWD/group_vars/kubespan/secrets.yml"
ansible-vault encrypt --vault-password-file vault-pass group_vars/kubespan/secrets.yml
[[ "$(head -n 1 group_vars/kubespan/secrets.yml)" == "\$ANSIBLE_VAULT;"* ]] || fail "secrets.yml is not vault-encrypted"

banner "ansible-playbook kubespan.mesh.site"
start=$SECONDS
ansible-playbook -i inventory.yml --vault-password-file vault-pass kubespan.mesh.site
echo "converged in $((SECONDS - start)) s"

banner "ansible-playbook kubespan.mesh.site again: nothing may change"
start=$SECONDS
ansible-playbook -i inventory.yml --vault-password-file vault-pass kubespan.mesh.site | tee second-run.log
echo "second run in $((SECONDS - start)) s"
if grep -E '^[^ ]+ +: ok=[0-9]+ +changed=[1-9]' second-run.log; then
    fail "the second run of kubespan.mesh.site changed something (recap above)"
fi

banner "ansible-playbook kubespan.mesh.site --check --diff: nothing to change, nothing changed"
ansible-playbook -i inventory.yml --vault-password-file vault-pass kubespan.mesh.site --check --diff | tee check-run.log
if grep -E '^[^ ]+ +: ok=[0-9]+ +changed=[1-9]' check-run.log; then
    fail "check mode reports changes on a converged cluster (recap above)"
fi

banner "traffic through the mesh"
ula() {  # the node's KubeSpan ULA as configured on the interface
    podman exec "$1" ip -j -6 addr show dev kubespan scope global |
        python3 -c 'import json, sys
print(next(a["local"] for i in json.load(sys.stdin) for a in i["addr_info"] if a.get("local", "")[:2] in ("fc", "fd")))'
}
for src in "${NODES[@]}"; do
    for dst in "${NODES[@]}"; do
        [[ "$src" == "$dst" ]] && continue
        addr="$(ula "$dst")"
        podman exec "$src" ping -6 -q -c 3 -W 2 -I kubespan "$addr" >/dev/null ||
            fail "$src cannot ping $dst at $addr through kubespan"
        echo "  $src -> $dst ($addr): ok"
    done
done

banner "ansible-playbook kubespan.mesh.status"
# The agent's first tick and the handshakes take a few seconds after the first run: retry (bounded).
ok=0
for attempt in 1 2 3 4 5 6 7 8 9 10 11 12; do
    if ansible-playbook -i inventory.yml --vault-password-file vault-pass kubespan.mesh.status >status.log 2>&1; then
        ok=1
        break
    fi
    echo "  attempt $attempt failed: $(grep -E 'ERROR|FAILED|msg' status.log | tail -n 1)"
    sleep 5
done
cat status.log
((ok)) || fail "kubespan.mesh.status still fails after 12 attempts"

podman exec "${NODES[0]}" sh -c '. /etc/os-release; echo "nodes: $PRETTY_NAME, $(python3 --version)"'
banner "PASSED in $((SECONDS - run_start)) s (kubespan.mesh $version from $(basename "$tarball"), Debian $debian nodes)"
