#!/usr/bin/env bash
# Runs as PID 1 in the QEMU guest (host's / read-only over 9p + tmpfs overlay, Debian kernel).
# Two network namespaces joined by a veth pair; in each, node.py configures kernel WireGuard through
# the collection's wg_kernel module. Prints PASS/FAIL lines and a final KTEST-RESULT marker.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 WG_COLOR_MODE=never PYTHONDONTWRITEBYTECODE=1
REPO=${ktest_repo:?ktest_repo= missing on the kernel command line}
MODDIR=${ktest_moddir:?}
PY=${ktest_python:-/usr/bin/python3}
# ktest_* come from the kernel command line (init passes them on as environment variables)
# shellcheck disable=SC2154
HERE=$(dirname "$ktest_script")

finish() {
    echo "KTEST-RESULT: $1"
    sleep 0.5
    echo o >/proc/sysrq-trigger
    sleep 30
}
trap 'finish FAIL' EXIT
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "[guest $(up)s] $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
ln -sf /proc/self/fd /dev/fd
echo 1 >/proc/sys/kernel/sysrq
say "guest script running on $(uname -r)"

# modules of the guest kernel come from the unpacked package (same path as on the host)
ln -sfn "$MODDIR" "/lib/modules/$(uname -r)"
if modprobe wireguard && [ -d /sys/module/wireguard ]; then
    echo "PASS guest: modprobe wireguard"
else
    echo "FAIL guest: modprobe wireguard"
    exit 1
fi
say "wireguard loaded"

# netns_pair X Y V4NET [V6NET]: namespaces X and Y joined by veth-X/veth-Y, addresses .1 and .2 of
# V4NET (a /24 prefix like 192.168.77) and, if given, ::1 and ::2 of V6NET (nodad: no DAD delay)
netns_pair() {
    local x=$1 y=$2 v4=$3 v6=${4:-} n=1 ns
    ip netns add "$x" && ip netns add "$y" || return 1
    ip link add "veth-$x" netns "$x" type veth peer name "veth-$y" netns "$y" || return 1
    for ns in "$x" "$y"; do
        ip -n "$ns" addr add "$v4.$n/24" dev "veth-$ns" || return 1
        if [ -n "$v6" ]; then ip -n "$ns" addr add "$v6::$n/64" dev "veth-$ns" nodad || return 1; fi
        ip -n "$ns" link set lo up && ip -n "$ns" link set "veth-$ns" up || return 1
        n=$((n + 1))
    done
}

# underlay: netns a and b, IPv4 and IPv6
netns_pair a b 192.168.77 fd77 || exit 1
say "network namespaces ready"

# the node agent imports module_utils as the package kubespan_mesh
mkdir -p /run/ktest/py
ln -s "$REPO/plugins/module_utils" /run/ktest/py/kubespan_mesh
export PYTHONPATH=/run/ktest/py KTEST_DIR=/run/ktest

ip netns exec a "$PY" "$HERE/node.py" a 2>&1 &
pid_a=$!
ip netns exec b "$PY" "$HERE/node.py" b 2>&1 &
pid_b=$!
wait $pid_a; rc_a=$?
wait $pid_b; rc_b=$?
say "nodes finished: a rc=$rc_a b rc=$rc_b"
if ! { [ "$rc_a" = 0 ] && [ "$rc_b" = 0 ] && [ -f /run/ktest/a.ok ] && [ -f /run/ktest/b.ok ]; }; then
    exit 1
fi

# engine phase: the module's and the agent's own reconcile (engine.py) on the kernel data path,
# in two more namespaces c and d
netns_pair c d 192.168.78 || exit 1
ip netns exec c "$PY" "$HERE/engine_node.py" c 2>&1 &
pid_c=$!
ip netns exec d "$PY" "$HERE/engine_node.py" d 2>&1 &
pid_d=$!
wait $pid_c; rc_c=$?
wait $pid_d; rc_d=$?
say "engine nodes finished: c rc=$rc_c d rc=$rc_d"
if [ "$rc_c" = 0 ] && [ "$rc_d" = 0 ] && [ -f /run/ktest/c.ok ] && [ -f /run/ktest/d.ok ]; then
    trap - EXIT
    finish PASS
fi
exit 1
