#!/usr/bin/env bash
# tests/vm/run.sh: kernel WireGuard end to end on two QEMU guests (issue 20).
#
# Two guests (TCG: this machine has no KVM) boot Debian 12's own kernel and systemd from the disk image of
# tests/vm/build-image.sh (one qcow2 overlay per guest, so a reboot keeps its disk). Each has a virtio NIC on
# a restricted user-mode netdev (ssh from the controller through hostfwd; nothing else in or out) and one on
# a UDP socket netdev joining the two guests (the mesh underlay, 10.77.0.1N/24 and fd77::1N/64; stateless,
# so a restarted guest rejoins it). Ansible reaches them through an ordinary SSH inventory.
#
# Steps (each check prints PASS or FAIL; exit 0 only when every check passed):
#   1. boot both; playbooks/site.yml with the implementation left on auto; kernel WireGuard chosen (ip -d
#      link says wireguard, no wireguard-go process); ULA pings both ways; a second run changed=0;
#      --check --diff changed=0.
#   2. the agent: timer active; `ip link del kubespan` on vm1 while it pings vm2 (underlay IPv4, IPv6 and
#      ULA): the agent restores the mesh (time measured) and a capture of vm1's underlay sees 0 cleartext
#      packets to vm2; the positive control (marked pings sent in the clear on purpose) is seen by the same
#      filter.
#   3. reboot vm2 as a full QEMU restart from its disk, with a test service pinging vm1 from boot on: same
#      key, node ID and ULA; mesh back without a playbook run (time measured); a capture on vm1's underlay
#      sees 0 cleartext packets from vm2 from boot until the mesh is up, then sees vm2's marked pings.
#   4. kubespan_enabled: false removes the link, rules, table 180, the fail-closed routes and the nft table;
#      the identity files are kept unchanged.
# Measured times go to $KUBESPAN_TEST_MEASUREMENTS (one line each) when set. No timed assertions: the
# waits have generous limits and only fail a check when the thing never happens.
#
# Environment: VMTEST_SMP / VMTEST_MEM (per guest, default 2 / 1536), VMTEST_PORT_BASE (default 22200:
# ssh on +1/+2, underlay UDP on +11/+12, all on 127.0.0.1), VMTEST_KEEP=1 leaves the guests running,
# VMTEST_REUSE=1 uses guests so left (while working on this script: the checks start from their state),
# VMTEST_LOCK (default /tmp/kubespan-vm.lock: one run at a time, the ports are fixed).
# shellcheck disable=SC2317  # functions run through check() and the EXIT trap
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
START=$(date +%s.%N)
SMP=${VMTEST_SMP:-2}
MEM=${VMTEST_MEM:-1536}
PORT_BASE=${VMTEST_PORT_BASE:-22200}
RUN=$REPO/build/vm/run
MEAS=${KUBESPAN_TEST_MEASUREMENTS:-}

now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }
log() { echo "[vm-test $(since "$START")s] $*" >&2; }
die() { log "ERROR: $*"; exit 2; }
npass=0 nfail=0
pass() { npass=$((npass + 1)); echo "PASS $*"; }
fail() { nfail=$((nfail + 1)); echo "FAIL $*"; }
check() { # check NAME COMMAND...: PASS when the command succeeds
    local name=$1; shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
measure() { # measure TEXT: print it and append it to the measurements file
    log "measured: $*"
    [[ -z "$MEAS" ]] || printf 'vm: %s\n' "$*" >>"$MEAS"
}

[ "$(id -u)" = 0 ] || die "run as root"
cd "$REPO"
# The ports are fixed: one run at a time on this machine (other worktrees wait).
exec 8>"${VMTEST_LOCK:-/tmp/kubespan-vm.lock}"
flock -w 3600 8 || die "another tests/vm/run.sh still holds /tmp/kubespan-vm.lock after an hour"
[[ -f tests/testbed/env.sh ]] || bash scripts/setup.sh
# shellcheck source=/dev/null
. tests/testbed/env.sh
for cmd in qemu-system-x86_64 qemu-img mmdebstrap ssh ansible-playbook; do
    command -v "$cmd" >/dev/null || die "$cmd not found (scripts/setup.sh installs it)"
done

IMG=$(bash "$HERE/build-image.sh") || die "the image build failed"
log "image $IMG"

# --- guests ------------------------------------------------------------------------------------------
stop_guest() { # stop_guest N: power off hard (the pid file names QEMU)
    local pid
    pid=$(cat "$RUN/vm$1.pid" 2>/dev/null || true)
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null
    rm -f "$RUN/vm$1.pid"
    ssh -F "$RUN/ssh_config" -O exit "vm$1" >/dev/null 2>&1 || true
    rm -f "$RUN/cm-vm$1"
}
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if [[ "${VMTEST_KEEP:-0}" == 1 ]]; then log "VMTEST_KEEP=1: guests left running (pid files in $RUN)"; return; fi
    stop_guest 1 || true
    stop_guest 2 || true
}
trap cleanup EXIT
alive() { kill -0 "$(cat "$RUN/vm$1.pid" 2>/dev/null || echo none)" 2>/dev/null; }
reuse=0
if [[ "${VMTEST_REUSE:-0}" == 1 ]] && alive 1 && alive 2; then
    reuse=1 # guests left by VMTEST_KEEP=1, state as that run left them (for working on this script)
else
    # An interrupted earlier run: stop its guests (pid files), then start afresh.
    if [[ -d "$RUN" ]]; then stop_guest 1 || true; stop_guest 2 || true; fi
    rm -rf "$RUN"
fi
mkdir -p "$RUN"
if ((!reuse)); then
    # This run's own links to the image (a rebuild may remove the cache entry while the guests use it).
    for f in base.qcow2 vmlinuz initrd.img id_ed25519; do ln "$IMG/$f" "$RUN/$f" 2>/dev/null || cp "$IMG/$f" "$RUN/$f"; done
fi

cat >"$RUN/ssh_config" <<CFG
Host vm1 vm2
    HostName 127.0.0.1
    User root
    IdentityFile $RUN/id_ed25519
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
    ConnectTimeout 60
    ControlMaster auto
    ControlPath $RUN/cm-%n
    ControlPersist 600
Host vm1
    Port $((PORT_BASE + 1))
Host vm2
    Port $((PORT_BASE + 2))
CFG
g() { local n=$1; shift; ssh -F "$RUN/ssh_config" "$n" "$@"; } # g vmN COMMAND: run in guest N

start_guest() { # start_guest N: boot guest N from its overlay (made on first boot)
    local n=$1 other=$(( $1 == 1 ? 2 : 1 ))
    if [[ -f "$RUN/vm$n.qcow2" ]]; then
        qemu-img rebase -u -f qcow2 -b "$RUN/base.qcow2" -F qcow2 "$RUN/vm$n.qcow2" # no-op unless VMTEST_REUSE
    else
        qemu-img create -q -f qcow2 -b "$RUN/base.qcow2" -F qcow2 "$RUN/vm$n.qcow2"
    fi
    qemu-system-x86_64 -accel tcg -machine q35 -cpu max -smp "$SMP" -m "$MEM" 8>&- 9>&- \
        -nodefaults -display none -monitor none -daemonize -pidfile "$RUN/vm$n.pid" \
        -serial "file:$RUN/vm$n.serial.$(date +%s)" \
        -kernel "$RUN/vmlinuz" -initrd "$RUN/initrd.img" \
        -append "console=ttyS0 root=LABEL=kroot rw quiet net.ifnames=0 systemd.hostname=vm$n" \
        -drive "file=$RUN/vm$n.qcow2,if=virtio,format=qcow2,cache=unsafe" \
        -netdev "user,id=u,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:$((PORT_BASE + n))-:22" \
        -device "virtio-net-pci,netdev=u,mac=52:54:00:12:34:0$n" \
        -netdev "socket,id=m,udp=127.0.0.1:$((PORT_BASE + 10 + other)),localaddr=127.0.0.1:$((PORT_BASE + 10 + n))" \
        -device "virtio-net-pci,netdev=m,mac=52:54:00:77:00:1$n"
}
wait_ssh() { # wait_ssh N LIMIT: until guest N answers over ssh and systemd has finished booting
    local n=$1 limit=$2 t0
    t0=$(now)
    while ! g "vm$n" 'systemctl is-system-running --wait >/dev/null 2>&1; true' 2>/dev/null; do
        [[ $(since "$t0" | cut -d. -f1) -lt $limit ]] || return 1
        sleep 2
    done
}

if ((reuse)); then
    log "VMTEST_REUSE=1: using the running guests"
else
    log "booting vm1 and vm2 (TCG, -smp $SMP, -m $MEM)"
    t_boot=$(now)
    start_guest 1
    start_guest 2
    for n in 1 2; do
        wait_ssh "$n" 1800 || die "vm$n did not come up over ssh in 1800 s (serial log: $RUN/vm$n.serial.*)"
    done
    measure "both guests booted to a running systemd and answering ssh $(since "$t_boot") s after the QEMU start"
fi
check "kernel WireGuard module available in the guests" g vm1 'modinfo wireguard >/dev/null'

# --- inventory and playbook runs -----------------------------------------------------------------------
cat >"$RUN/inventory.yml" <<INV
kubespan:
  hosts:
    vm1: {}
    vm2: {}
  vars:
    ansible_user: root
    ansible_python_interpreter: /usr/bin/python3
    ansible_ssh_common_args: -F $RUN/ssh_config
    # Test-only values: never use them for a real cluster.
    kubespan_cluster_id: "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="
    kubespan_cluster_secret: "TPbGXrYlvuXgAl8dERpwjlA5tnEMoihPDPxlovcLtVg="
    # Announce only the mesh underlay: every guest's user-mode NIC has the same address 10.0.2.15.
    kubespan_filters_endpoints: [10.77.0.0/24, "fd77::/64"]
INV
export ANSIBLE_PIPELINING=1 ANSIBLE_HOST_KEY_CHECKING=0 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
export ANSIBLE_CALLBACK_RESULT_FORMAT=yaml ANSIBLE_SSH_CONTROL_PATH_DIR="$RUN"
play() { # play LOGNAME ARGS...: run playbooks/site.yml, output in $RUN/LOGNAME.log (and shown), time printed
    local name=$1 t0 rc; shift
    t0=$(now)
    set +e
    ansible-playbook -i "$RUN/inventory.yml" playbooks/site.yml "$@" >"$RUN/$name.log" 2>&1
    rc=$?
    set -e
    sed -n '/PLAY RECAP/,$p' "$RUN/$name.log"
    measure "site.yml ($name) took $(since "$t0") s"
    ((rc == 0)) || { log "ansible-playbook failed (rc $rc), its log:"; cat "$RUN/$name.log"; }
    return "$rc"
}
recap_unchanged() { # recap_unchanged LOGNAME: both hosts in the recap with changed=0 failed=0 (else the changed tasks shown)
    [[ $(grep -cE '^vm[12] +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0' "$RUN/$1.log") == 2 ]] && return 0
    log "what changed in $1 (from $RUN/$1.log):"
    grep -nE -B1 -A40 '^changed: ' "$RUN/$1.log" | head -n 200 >&2
    return 1
}

check "site.yml run 1 (implementation auto)" play run1
for n in 1 2; do
    check "vm$n: kubespan is a kernel WireGuard link" bash -c "ssh -F '$RUN/ssh_config' vm$n ip -d link show kubespan | grep -qw wireguard"
    check "vm$n: no wireguard-go process" bash -c "! ssh -F '$RUN/ssh_config' vm$n pgrep -x wireguard-go"
done
ula() { g "vm$1" ip -6 -o addr show dev kubespan scope global | awk '{ sub("/.*", "", $4); print $4; exit }'; }
ULA1=$(ula 1 || true); ULA2=$(ula 2 || true)
log "ULAs: vm1 $ULA1, vm2 $ULA2"
if [[ -z "$ULA1" || -z "$ULA2" ]]; then
    fail "both guests have a ULA on kubespan: the later steps need them"
    log "FAIL ($nfail of $((npass + nfail)) checks failed; stopped)"
    exit 1
fi
mesh_ping() { g "vm$1" ping -6 -n -c 1 -W 2 -I kubespan "$2" >/dev/null; }
wait_mesh() { # wait_mesh N ULA LIMIT: until guest N pings ULA through kubespan
    local t0; t0=$(now)
    until mesh_ping "$1" "$2" 2>/dev/null; do
        [[ $(since "$t0" | cut -d. -f1) -lt $3 ]] || return 1
        sleep 0.5
    done
}
check "vm1 pings vm2's ULA through kubespan" wait_mesh 1 "$ULA2" 60
check "vm2 pings vm1's ULA through kubespan" wait_mesh 2 "$ULA1" 60
check "vm1 -> vm2 ULA: 3 of 3 answered" bash -c "ssh -F '$RUN/ssh_config' vm1 ping -6 -n -c 3 -i 0.3 -I kubespan $ULA2 | grep -q ' 3 received'"
check "vm2 -> vm1 ULA: 3 of 3 answered" bash -c "ssh -F '$RUN/ssh_config' vm2 ping -6 -n -c 3 -i 0.3 -I kubespan $ULA1 | grep -q ' 3 received'"
check "site.yml run 2: changed=0" play run2 -v --diff  # -v --diff: a change is shown with the module's changes
check "site.yml run 2: recap changed=0 on both" recap_unchanged run2
check "site.yml --check --diff: runs" play check --check --diff
check "site.yml --check --diff: recap changed=0 on both" recap_unchanged check

# The boot-time fail-closed command on an emulated CPU: `kubespan failclosed` in a fresh network namespace of vm1
# (nothing in place there: it adds every piece), against the imports of its former path (the agent's modules and
# pyroute2, as `kubespan failclosed` imported them before it went through rtnl.py alone).
fc_new=$(g vm1 'TIMEFORMAT="%U+%S"; { time unshare --net sh -c "/usr/local/sbin/kubespan failclosed >/dev/null && ip rule | grep -c \"lookup 180\""; } 2>&1' || echo error)
fc_old=$(g vm1 'TIMEFORMAT="%U+%S"; { time python3 -c "import sys; sys.path.insert(0, \"/usr/lib/kubespan/kubespan-agent.pyz\"); import kubespan_mesh.agent.cli, kubespan_mesh.agent.agent, kubespan_mesh.agent.failclosed; from pyroute2 import IPRoute"; } 2>&1' || echo error)
check "vm1: kubespan failclosed in a fresh network namespace adds the rule (got: $(tr '\n' ' ' <<<"$fc_new"))" test "$(head -n1 <<<"$fc_new")" = 1
measure "kubespan failclosed in a fresh netns on vm1 (TCG): $(tail -n1 <<<"$fc_new") s CPU (user+sys); the imports of its former path (agent + pyroute2): $(tail -n1 <<<"$fc_old") s CPU; load average $(cut -d' ' -f1-3 /proc/loadavg)"

log "the runs so far: $npass passed, $nfail failed"

# --- the agent on a kernel host: link deleted, restored without a playbook run, fail closed meanwhile ------
for n in 1 2; do
    g "vm$n" 'cat >/root/capture.sh && chmod 0700 /root/capture.sh' <"$HERE/capture.sh"
    check "vm$n: kubespan-agent.timer active" g "vm$n" systemctl is-active --quiet kubespan-agent.timer
done
# Cleartext means: to the peer's addresses (underlay IPv4 and IPv6, ULA), not WireGuard (UDP 51820), not
# neighbour discovery.
NOT_WG_ND="not (udp port 51820) and not (icmp6 and ip6[40] >= 133 and ip6[40] <= 137)"
filter_to() { echo "(ip or ip6) and (dst host 10.77.0.1$1 or dst host fd77::1$1 or dst host $2) and $NOT_WG_ND"; }
captured() { # captured N NAME: the packet count of a stopped capture, its first lines on stderr
    local out
    out=$(g "vm$1" /root/capture.sh stop "$2") || { echo "$out" >&2; echo error; return; }
    echo "$out" >&2
    g "vm$1" "head -5 /root/ktest-fc/$2.txt" >&2
    echo "$out" | sed -n 's/^capture .*: \([0-9]*\) packets$/\1/p'
}
# A test-only IPv6 default route on the underlay via the peer (static neighbour: the peer's neighbour
# advertisements go into the mesh): without it a ULA has no route at all once the link is gone, and the
# ULA part of the check could not fail.
test_route() { # test_route N PEER add|del
    if [[ $3 == add ]]; then
        g "vm$1" "ip -6 neigh replace fd77::1$2 lladdr 52:54:00:77:00:1$2 dev eth1 nud permanent && ip -6 route replace default via fd77::1$2 dev eth1 metric 4000"
    else
        g "vm$1" "ip -6 route del default via fd77::1$2 dev eth1 metric 4000; ip -6 neigh del fd77::1$2 dev eth1" || true
    fi
}
test_route 1 2 add
g vm1 /root/capture.sh start linkdel eth1 "'$(filter_to 2 "$ULA2")'" >&2 || fail "vm1: capture linkdel started"
g vm1 "for d in 10.77.0.12 fd77::12 $ULA2; do setsid -f ping -n -i 0.2 \$d >/root/ping-\$d.log 2>&1 </dev/null; done"
sleep 2
# Timed inside the guest: delete the link, then wait until vm2's ULA answers through kubespan again.
restore=$(g vm1 "start=\$(date +%s.%N); ip link del kubespan || exit 3
    for i in \$(seq 600); do
        ping -6 -n -c 1 -W 1 -I kubespan $ULA2 >/dev/null 2>&1 && { awk -v a=\$start -v b=\$(date +%s.%N) 'BEGIN { printf \"%.1f\", b - a }'; exit 0; }
        sleep 0.5
    done; exit 1") && restored=1 || restored=0
sleep 2
g vm1 "pkill -INT -x ping; sleep 0.5; for f in /root/ping-*.log; do echo \"\$f: \$(grep 'packets transmitted' \$f)\"; done" >&2
n=$(captured 1 linkdel)
if ((restored)); then
    pass "vm1: ip link del kubespan: the agent restored the mesh without a playbook run"
    measure "kernel WireGuard: ip link del kubespan on vm1 -> vm2's ULA answers through kubespan again after $restore s (agent timer, interval 30 s)"
else
    fail "vm1: ip link del kubespan: the agent restored the mesh without a playbook run (waited 300 s+)"
fi
check "vm1: 0 cleartext packets to vm2 on eth1 while the link was gone (got $n)" test "$n" = 0
# Positive control, same filter, same interface: pings sent in the clear on purpose (WireGuard's mark 0x20
# skips the mesh) to vm2's underlay addresses.
g vm1 /root/capture.sh start control eth1 "'$(filter_to 2 "$ULA2")'" >&2 || fail "vm1: capture control started"
g vm1 "ping -n -m 32 -c 3 -i 0.2 10.77.0.12; ping -6 -n -m 32 -c 3 -i 0.2 fd77::12" >/dev/null || true
sleep 1
n=$(captured 1 control)
check "vm1: positive control: the same filter sees the 6 marked cleartext pings (got $n)" test "$n" -ge 6 2>/dev/null
test_route 1 2 del

# --- reboot vm2: a full QEMU restart from its disk ---------------------------------------------------
ident() { # ident N: the public key, the node ID line, the ULA and a digest of the identity files (not printed)
    g "vm$1" "wg show kubespan public-key; grep -ihE '^ *node_?id:' /var/lib/kubespan/node-identity.yaml /var/lib/kubespan/kubespan-identity.yaml | head -n1; ip -6 -o addr show dev kubespan scope global | awk '{ print \$4; exit }'; cat /var/lib/kubespan/*identity.yaml | sha256sum"
}
ID_BEFORE=$(ident 2)
log "vm2 before the reboot: public key $(sed -n 1p <<<"$ID_BEFORE"), $(sed -n 2p <<<"$ID_BEFORE"), ULA $(sed -n 3p <<<"$ID_BEFORE")"
# A test service on vm2 that pings vm1 (underlay IPv4, IPv6, ULA) from early boot on, with the test-only
# IPv6 default route via vm1: anything the mesh does not carry from boot on would leave in the clear.
g vm2 "cat >/usr/local/sbin/ktest-bootping; chmod 0755 /usr/local/sbin/ktest-bootping" <<PING
#!/bin/bash
# test only (tests/vm/run.sh): ping vm1 from boot on
for d in 10.77.0.11 fd77::11 $ULA1; do (while :; do ping -n -i 0.2 \$d >/dev/null 2>&1; sleep 0.2; done) & done
until ip -6 neigh replace fd77::11 lladdr 52:54:00:77:00:11 dev eth1 nud permanent 2>/dev/null \\
    && ip -6 route replace default via fd77::11 dev eth1 metric 4000 onlink 2>/dev/null; do sleep 0.2; done
wait
PING
g vm2 "cat >/etc/systemd/system/ktest-bootping.service; systemctl daemon-reload; systemctl enable ktest-bootping.service 2>/dev/null" <<'UNIT'
[Unit]
Description=test only (tests/vm/run.sh): ping vm1 from early boot on
DefaultDependencies=no
After=local-fs.target
[Service]
ExecStart=/usr/local/sbin/ktest-bootping
[Install]
WantedBy=sysinit.target
UNIT
log "powering vm2 off (systemctl poweroff) and starting QEMU again from its disk"
pid2=$(cat "$RUN/vm2.pid")
g vm2 'systemctl poweroff' >/dev/null 2>&1 || true
for _ in $(seq 300); do kill -0 "$pid2" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$pid2" 2>/dev/null; then log "vm2 did not power off in 150 s: stopping QEMU"; fi
stop_guest 2
g vm1 /root/capture.sh start boot eth1 "'$(filter_to 1 "$ULA1")'" >&2 || fail "vm1: capture boot started"
t_reboot=$(now)
start_guest 2
t_mesh=""
for _ in $(seq 600); do
    if mesh_ping 1 "$ULA2" 2>/dev/null; then t_mesh=$(since "$t_reboot"); break; fi
    sleep 0.5
done
if [[ -n "$t_mesh" ]]; then
    pass "vm2 rebooted: the mesh is back without a playbook run"
    measure "kernel WireGuard: vm2 restarted (QEMU from its disk) -> vm1 pings vm2's ULA through kubespan $t_mesh s after the QEMU start"
else
    fail "vm2 rebooted: the mesh is back without a playbook run (waited 600 pings)"
fi
wait_ssh 2 1800 || fail "vm2 answers ssh after the reboot"
measure "kernel WireGuard: vm2 restarted -> running systemd and ssh $(since "$t_reboot") s after the QEMU start"
ID_AFTER=$(ident 2)
check "vm2 after the reboot: same public key" test "$(sed -n 1p <<<"$ID_BEFORE")" = "$(sed -n 1p <<<"$ID_AFTER")"
check "vm2 after the reboot: same node ID" test "$(sed -n 2p <<<"$ID_BEFORE")" = "$(sed -n 2p <<<"$ID_AFTER")"
check "vm2 after the reboot: same ULA" test "$(sed -n 3p <<<"$ID_BEFORE")" = "$(sed -n 3p <<<"$ID_AFTER")"
check "vm2 after the reboot: identity files unchanged" test "$(sed -n 4p <<<"$ID_BEFORE")" = "$(sed -n 4p <<<"$ID_AFTER")"
check "vm2 after the reboot: kernel WireGuard, no wireguard-go" bash -c "ssh -F '$RUN/ssh_config' vm2 'ip -d link show kubespan | grep -qw wireguard && ! pgrep -x wireguard-go'"
check "vm2 -> vm1 ULA through kubespan after the reboot" wait_mesh 2 "$ULA1" 60
# The fail-closed unit at vm2's boot: it must have succeeded (killed or failed, the boot goes on without the
# fail-closed pieces); its run time from systemd's own timestamps.
fcu=$(g vm2 systemctl show kubespan-failclosed.service -p Result -p ActiveState -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic -p CPUUsageNSec || true)
log "vm2 kubespan-failclosed.service: $(tr '\n' ' ' <<<"$fcu")"
g vm2 journalctl -b -o cat -u kubespan-failclosed.service >&2 || true
check "vm2: kubespan-failclosed.service succeeded at boot" bash -c "grep -qx 'Result=success' <<<'$fcu' && grep -qx 'ActiveState=active' <<<'$fcu'"
fcu_t=$(awk -F= '/^InactiveExitTimestampMonotonic=/ { a = $2 } /^ActiveEnterTimestampMonotonic=/ { b = $2 } /^CPUUsageNSec=/ { c = $2 }
    END { printf "%.1f s from its start to active", (b - a) / 1e6; if (c ~ /^[0-9]+$/) printf ", %.2f s CPU", c / 1e9 }' <<<"$fcu")
measure "kernel WireGuard: vm2's boot: kubespan-failclosed.service took $fcu_t (TCG, load average $(cut -d' ' -f1-3 /proc/loadavg))"
check "vm2's test service pinged from boot on" g vm2 systemctl is-active --quiet ktest-bootping.service
# Positive control in the same capture: vm2 sends marked pings in the clear; only packets before it count.
ctl=$(g vm1 date +%s.%N)
g vm2 "ping -n -m 32 -c 3 -i 0.2 10.77.0.11" >/dev/null || true
sleep 1
n=$(captured 1 boot)
read -r leaks seen < <(g vm1 "awk -v c=$ctl '{ if (\$1 < c) l++; else s++ } END { print l + 0, s + 0 }' /root/ktest-fc/boot.txt" || echo "error error")
check "vm1: 0 cleartext packets from vm2 from its boot until the mesh was up (got $leaks of $n)" test "$leaks" = 0
check "vm1: positive control in the same capture: vm2's 3 marked cleartext pings seen (got $seen)" test "$seen" -ge 3 2>/dev/null
g vm2 'systemctl disable --now ktest-bootping.service 2>/dev/null; pkill -x ping; true'
test_route 2 1 del

# --- disable ------------------------------------------------------------------------------------------
check "site.yml -e kubespan_enabled=false" play disable -e kubespan_enabled=false
for n in 1 2; do
    check "vm$n disabled: no kubespan link" bash -c "! ssh -F '$RUN/ssh_config' vm$n ip link show kubespan >/dev/null 2>&1"
    check "vm$n disabled: no policy rule to table 180" bash -c "! ssh -F '$RUN/ssh_config' vm$n 'ip rule; ip -6 rule' | grep -E 'lookup (180|kubespan)'"
    check "vm$n disabled: table 180 empty" test -z "$(g "vm$n" 'ip route show table 180 2>/dev/null; ip -6 route show table 180 2>/dev/null')"
    check "vm$n disabled: no fail-closed routes left" bash -c "! ssh -F '$RUN/ssh_config' vm$n 'ip route show table all; ip -6 route show table all' | grep -E 'metric 4278198272|dev kubespan'"
    check "vm$n disabled: no nft table kubespan" bash -c "! ssh -F '$RUN/ssh_config' vm$n nft list tables | grep -w kubespan"
    check "vm$n disabled: agent timer not active" bash -c "! ssh -F '$RUN/ssh_config' vm$n systemctl is-active --quiet kubespan-agent.timer"
done
check "vm2 disabled: identity kept (files unchanged)" test "$(sed -n 4p <<<"$ID_BEFORE")" = "$(g vm2 'cat /var/lib/kubespan/*identity.yaml | sha256sum')"
check "site.yml -e kubespan_enabled=false again: runs" play disable2 -e kubespan_enabled=false
check "site.yml -e kubespan_enabled=false again: recap changed=0 on both" recap_unchanged disable2

measure "the whole VM test took $(since "$START") s ($npass checks passed, $nfail failed)"
if ((nfail == 0 && npass > 0)); then
    log "PASS ($npass checks)"
    exit 0
fi
log "FAIL ($nfail of $((npass + nfail)) checks failed)"
exit 1
