#!/usr/bin/env bash
# shellcheck disable=SC2015,SC2001  # "A && ok || bad": ok() only prints, it cannot fail
# tests/reliability/hardening.sh NODE PEER...: the agent's systemd sandbox is applied and the agent still works.
#
# On NODE (a converged node of a container cluster whose systemd can set up mount namespaces, i.e. started
# with CAP_SYS_ADMIN as tests/reliability/cluster.sh does):
#   1. `systemctl start kubespan-agent.service` succeeds;
#   2. the running agent has only CAP_NET_ADMIN, no_new_privs, a seccomp filter, / read-only and the
#      state directory writable (read from /proc/<pid> while a tick runs);
#   3. self-repair under the sandbox: wireguard-go killed (SIGKILL), its unit stopped, the interface deleted, then one
#      tick (`systemctl start`, which restarts kubespan-wireguard-go.service over systemd's private socket):
#      the tick succeeds, the interface is back with the same public key, every PEER answers a ping;
#   4. `systemd-analyze security` exposure of the unit before this hardening (HEAD~ template as shipped before,
#      read from git) and now.
# Prints "hardening: ..." lines; exit status 1 on any failure. Needs tests/testbed/env.sh sourced.
set -Euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
node="$1"
shift
peers=("$@")
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
x() { podman exec "$node" "$@"; }

x systemctl stop kubespan-agent.timer
x sh -c 'while systemctl is-active -q kubespan-agent.service; do sleep 0.2; done'

# 1 + 2: a tick, inspected while it runs
x systemctl start --no-block kubespan-agent.service
# shellcheck disable=SC2016  # expanded on the node
sandbox="$(x sh -c 'for i in $(seq 100); do pid=$(systemctl show -p MainPID --value kubespan-agent.service); [ "$pid" != 0 ] && break; sleep 0.1; done
    grep -E "^(CapBnd|CapEff|NoNewPrivs|Seccomp):" /proc/$pid/status | tr -s "\t" " "
    awk "\$5==\"/\" {print \"root \" \$6} \$5==\"/var/lib/kubespan\" {print \"state \" \$6}" /proc/$pid/mountinfo')"
echo "$sandbox" | sed 's/^/     /'
grep -q '^CapBnd: 0000000000001000$' <<<"$sandbox" && ok "the agent's capability bounding set is CAP_NET_ADMIN only" || bad "capability bounding set"
grep -q '^NoNewPrivs: 1$' <<<"$sandbox" && ok "no_new_privs is set" || bad "no_new_privs"
grep -q '^Seccomp: 2$' <<<"$sandbox" && ok "a seccomp system call filter is active" || bad "seccomp"
grep -q '^root ro' <<<"$sandbox" && ok "/ is read-only for the agent" || bad "/ is not read-only (no mount namespace: container without CAP_SYS_ADMIN?)"
grep -q '^state rw' <<<"$sandbox" && ok "/var/lib/kubespan is writable for the agent" || bad "state directory not writable"
x sh -c 'while systemctl is-active -q kubespan-agent.service; do sleep 0.2; done'
[[ "$(x systemctl show -p Result --value kubespan-agent.service)" == success ]] && ok "systemctl start kubespan-agent.service: tick succeeded" \
    || { bad "tick failed"; x journalctl -u kubespan-agent -n 20 --no-pager; }

# 3: self-repair under the sandbox
pub="$(x wg show kubespan public-key)"
x pkill -KILL -x wireguard-go || true
x ip link del kubespan 2>/dev/null || true
# systemd restarts a killed wireguard-go by itself (Restart=on-failure): stop the unit, so that only the
# agent's `systemctl restart kubespan-wireguard-go.service` (over D-Bus, from inside the sandbox) brings it back
x systemctl stop kubespan-wireguard-go.service
sleep 0.5
since="$(x date '+%Y-%m-%d %H:%M:%S')"
start=$(date +%s.%N)
x systemctl start kubespan-agent.service && ok "tick after wireguard-go was killed and the interface deleted: succeeded" || bad "repair tick failed"
[[ "$(x wg show kubespan public-key 2>/dev/null)" == "$pub" ]] && ok "interface back with the same public key" || bad "interface or key not restored"
x journalctl -u kubespan-agent --since "$since" --no-pager -o cat | grep -q 'repaired: create userspace WireGuard interface' \
    && ok "the journal shows the repair (wireguard-go restarted through systemctl from inside the sandbox)" || bad "no repair in the journal"
[[ "$(x systemctl is-active kubespan-wireguard-go.service)" == active ]] && ok "kubespan-wireguard-go.service is active again" \
    || bad "kubespan-wireguard-go.service was not restarted"
if x journalctl -u kubespan-agent --since "$since" --no-pager -o cat | grep -Eiq 'denied|Traceback|Read-only file system|Operation not permitted'; then
    bad "the journal shows a sandbox denial:"
    x journalctl -u kubespan-agent --since "$since" --no-pager -o cat | grep -Ei 'denied|Traceback|Read-only|not permitted' | head -5
else
    ok "no permission error, read-only file system error or traceback in the agent's journal"
fi
for peer in "${peers[@]}"; do
    ula="$(podman exec "$peer" ip -6 -o addr show dev kubespan scope global | awk '{print $4}' | cut -d/ -f1 | grep -E '^f[cd]' | head -1)"
    if x ping -6 -q -c 2 -W 3 -I kubespan "$ula" >/dev/null 2>&1 || x ping -6 -q -c 3 -W 3 -I kubespan "$ula" >/dev/null 2>&1; then
        ok "$node -> $peer ($ula) answers through the repaired mesh"
    else
        bad "$node -> $peer ($ula) does not answer"
    fi
done
echo "hardening: repair tick took $(python3 -c "import time; print('%.1f' % (time.time() - $start))") s (a whole tick, including its peer watch)"
x systemctl start kubespan-agent.timer

# 4: exposure score, before and after
before_unit="$(git -C "$REPO_ROOT" log --format=%H -n 1 -S 'CapabilityBoundingSet' -- roles/kubespan/templates/kubespan-agent.service.j2)"
if [[ -n "$before_unit" ]]; then
    git -C "$REPO_ROOT" show "$before_unit~1:roles/kubespan/templates/kubespan-agent.service.j2"
else  # a clone without history: the unit as it was before the sandbox (the template is gone, see agentfiles.py)
    printf '[Unit]\nDescription=KubeSpan node agent\n\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/kubespan agent --metrics-file {{ kubespan_agent_metrics_file }}\n'
fi | sed -n '/^\[Unit\]/,$p' | sed 's#{{ kubespan_agent_metrics_file }}#/var/lib/kubespan/metrics.prom#' |
    podman exec -i "$node" sh -c 'mkdir -p /root/unhardened && cat >/root/unhardened/kubespan-agent.service'
score_before="$(x systemd-analyze security --offline=yes /root/unhardened/kubespan-agent.service 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: //p')"
score_after="$(x systemd-analyze security kubespan-agent.service 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: //p')"
echo "hardening: systemd-analyze security kubespan-agent.service: before ${score_before:-?}, after ${score_after:-?}"
x systemd-analyze security kubespan-agent.service 2>/dev/null | grep '^✗' | sed 's/^/     /'
[[ -n "$score_after" ]] && awk -v s="${score_after%% *}" 'BEGIN {exit !(s < 3.0)}' && ok "exposure below 3.0" || bad "exposure ${score_after:-unknown}"
exit "$fail"
