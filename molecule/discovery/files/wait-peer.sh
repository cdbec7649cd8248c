#!/usr/bin/env bash
# wait-peer.sh LABEL up|absent TIMEOUT NODE...: poll `kubespan get peerstatuses` on every NODE (podman exec)
# until the peer LABEL is up on all of them (or absent from all of them); print the seconds it took.
# Exit 1 on timeout, printing what each node shows.
set -u
label=$1 want=$2 timeout=$3
shift 3
podman=${MOLECULE_PODMAN_EXECUTABLE:-podman}
start=$(date +%s.%N)
while :; do
    done_all=1
    for node in "$@"; do
        json=$("$podman" exec "$node" kubespan get peerstatuses -o records 2>/dev/null || echo '[]')
        state=$(printf '%s' "$json" | python3 -c 'import json,sys; l=sys.argv[1]; print(next((r["state"] for r in json.load(sys.stdin) if r["label"]==l), "absent"))' "$label")
        if [[ $want == up && $state != up ]] || [[ $want == absent && $state != absent ]]; then
            done_all=0
            break
        fi
    done
    now=$(date +%s.%N)
    elapsed=$(python3 -c "print(round($now - $start, 1))")
    if ((done_all)); then
        echo "$label $want on $* after $elapsed s"
        exit 0
    fi
    if python3 -c "import sys; sys.exit(0 if $now - $start > $timeout else 1)"; then
        echo "timeout after $elapsed s waiting for $label $want" >&2
        for node in "$@"; do
            echo "== $node" >&2
            "$podman" exec "$node" kubespan get peerstatuses >&2 || true
            "$podman" exec "$node" journalctl -u kubespan-agent -n 30 --no-pager >&2 || true
        done
        exit 1
    fi
    sleep 2
done
