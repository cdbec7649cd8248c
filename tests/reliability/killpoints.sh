#!/usr/bin/env bash
# tests/reliability/killpoints.sh: a playbook killed at every task boundary, then re-run, converges to
# the same mesh with the same identities.
#
# Needs a cluster from cluster.sh (rel_create) on which site.yml has NEVER run (fresh nodes). Run k = 1, 2, ...: site.yml is started and SIGKILLed (its whole
# process group, the podman exec clients too) when task k starts: at the boundary for odd k, and a random
# 0.3-3 s into the task (modules running on the nodes) for even k. The loop ends with the first run that
# completes without reaching task k. The identities recorded after the first run that got past identity
# creation must be those at the end; a final plain run must report changed=0 on every host (idempotent,
# nothing left half-done), and every pair of nodes must answer through the mesh.
set -Euo pipefail
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
. "$_here/../testbed/env.sh"
# shellcheck source=/dev/null
. "$_here/../testbed/lib.sh"
# shellcheck source=/dev/null
. "$_here/cluster.sh"
rel_attach
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
log="$REL_DIR/killpoints.log"
: >"$log"
export ANSIBLE_CALLBACK_PLUGINS="$REPO_ROOT/tests/reliability/callback_plugins" ANSIBLE_CALLBACKS_ENABLED=rel_killer
export REL_KILL_LOG="$REL_DIR/killpoints.tasks"
: >"$REL_KILL_LOG"

identities() {  # "node pubkey nodeid" per node, or nothing for nodes without a complete identity
    local n
    for n in "${REL_NODES[@]}"; do
        podman exec "$n" sh -c 'k=$(sed -n "s/^publicKey: *//p" /var/lib/kubespan/kubespan-identity.yaml 2>/dev/null)
            i=$(sed -n "s/^nodeId: *//p" /var/lib/kubespan/node-identity.yaml 2>/dev/null)
            [ -n "$k" ] && [ -n "$i" ] && echo "$(hostname) $k $i"' || true
    done
}

first_ids=""
k=1
kills=0
start=$SECONDS
while :; do
    delay=0
    ((k % 2 == 0)) && delay="$(python3 -c 'import random; print(round(random.uniform(0.3, 3), 2))')"
    # setsid: the playbook gets its own process group, which the callback kills
    REL_KILL_AT=$k REL_KILL_DELAY=$delay setsid ansible-playbook -i "$REL_DIR/inventory.yml" -f 10 "$REPO_ROOT/playbooks/site.yml" >>"$log" 2>&1
    rc=$?
    if ((rc == 137 || rc == -9)) || tail -n 1 "$REL_KILL_LOG" | grep -q "^$k	"; then
        kills=$((kills + 1))
        echo "kill $k (+${delay} s): $(tail -n 1 "$REL_KILL_LOG" | cut -f2-)"
    else
        echo "run $k completed without reaching task $k (rc $rc): every task boundary was hit"
        break
    fi
    ids="$(identities)"
    if [[ -z "$first_ids" && "$(wc -l <<<"$ids")" -eq "${#REL_NODES[@]}" && -n "$ids" ]]; then
        first_ids="$ids"
        echo "identities complete on every node after kill $k"
    elif [[ -n "$first_ids" && "$ids" != "$first_ids" ]]; then
        echo "FAIL identities changed after kill $k:"; diff <(echo "$first_ids") <(echo "$ids"); exit 1
    fi
    k=$((k + 1))
    ((k > 200)) && { echo "FAIL more than 200 task starts?"; exit 1; }
done
ids="$(identities)"
[[ "$ids" == "$first_ids" ]] || { echo "FAIL identities at the end differ from those first created"; diff <(echo "$first_ids") <(echo "$ids"); exit 1; }
final="$(ansible-playbook -i "$REL_DIR/inventory.yml" -f 10 "$REPO_ROOT/playbooks/site.yml" 2>&1)"
echo "$final" >>"$log"
if ! grep -E '^rel-node[0-9]+ +:' <<<"$final" | grep -vq 'changed=0 .*failed=0'; then
    echo "ok   a further run changed nothing on any host (nothing left half-applied)"
else
    echo "FAIL the run after the last kill still changed something:"; grep -E '^rel-node[0-9]+ +:' <<<"$final"; exit 1
fi
if rel_wait_all_pairs 120 >/dev/null; then
    echo "ok   every pair answers through the mesh"
else
    echo "FAIL mesh"; rel_all_pairs; exit 1
fi
echo "killpoints: $kills kills ($(( (kills + 1) / 2 )) at task boundaries, $((kills / 2)) inside a task), identities unchanged, converged; $((SECONDS - start)) s"
