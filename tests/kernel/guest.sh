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

# underlay: netns a and b, veth, IPv4 and IPv6 (nodad: no duplicate address detection delay)
ip -batch - <<'EOF' || exit 1
netns add a
netns add b
link add veth-a netns a type veth peer name veth-b netns b
EOF
ip -n a -batch - <<'EOF' || exit 1
addr add 192.168.77.1/24 dev veth-a
addr add fd77::1/64 dev veth-a nodad
link set lo up
link set veth-a up
EOF
ip -n b -batch - <<'EOF' || exit 1
addr add 192.168.77.2/24 dev veth-b
addr add fd77::2/64 dev veth-b nodad
link set lo up
link set veth-b up
EOF
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
ip -batch - <<'EOF2' || exit 1
netns add c
netns add d
link add veth-c netns c type veth peer name veth-d netns d
EOF2
ip -n c -batch - <<'EOF2' || exit 1
addr add 192.168.78.1/24 dev veth-c
link set lo up
link set veth-c up
EOF2
ip -n d -batch - <<'EOF2' || exit 1
addr add 192.168.78.2/24 dev veth-d
link set lo up
link set veth-d up
EOF2
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
