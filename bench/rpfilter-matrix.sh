#!/usr/bin/env bash
# Which reverse-path filter settings let decrypted mesh traffic in (docs/dataplane.md "Reverse-path filtering").
# Two network namespaces joined by a veth pair ("underlay"), wireguard-go on each with the role's layout built by
# hand (fwmark 0x20, table 180 default through the link, rule fwmark 0x40/0x60 at 32500, the marking table), a
# "pod network" on a veth pair, host-gw routes. A pings B from its pod address, its node address (through the mesh)
# and its ULA, three each; B's TcpExtIPReversePathFilter counter is read per row.
# Root, wireguard-go, wg, nft, nstat. Usage: bench/rpfilter-matrix.sh [OUTPUT] (default: stdout only).
set -euo pipefail
umask 077
dir=""
out="${1:-/dev/null}"
cleanup() {
    for n in rpfa rpfb; do
        for pid in $(ip netns pids "$n" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
        ip netns del "$n" 2>/dev/null || true
    done
    [[ -z "$dir" ]] || rm -rf "$dir"
}
trap cleanup EXIT
cleanup; dir="$(mktemp -d)"
ip netns add rpfa; ip netns add rpfb
ip link add rpf-ua netns rpfa type veth peer name rpf-ub netns rpfb
for X in a b; do
    wg genkey >"$dir/$X.key"; wg pubkey <"$dir/$X.key" >"$dir/$X.pub"
done
for X in a b; do
    n=rpf$X; i=1; o=2; O=b
    if [[ $X == b ]]; then i=2; o=1; O=a; fi
    ip -n $n link set lo up; ip -n $n link set rpf-u$X name eth0
    ip -n $n addr add 192.0.2.$i/24 dev eth0; ip -n $n link set eth0 up
    ip -n $n link add pod0 type veth peer name pod0p
    ip -n $n addr add 10.200.$i.1/24 dev pod0; ip -n $n link set pod0 up; ip -n $n link set pod0p up
    ip -n $n route add 10.200.$o.0/24 via 192.0.2.$o   # host-gw route, as a CNI installs it
    # wireguard-go's control sockets are in /var/run/wireguard, shared by the namespaces: one name each
    ip netns exec $n wireguard-go ks$X >/dev/null 2>&1
    ip netns exec $n wg set ks$X private-key "$dir/$X.key" listen-port 51820 fwmark 0x20 \
        peer "$(cat "$dir/$O.pub")" endpoint 192.0.2.$o:51820 allowed-ips fd00::$o/128,192.0.2.$o/32,10.200.$o.0/24
    ip -n $n addr add fd00::$i/64 dev ks$X; ip -n $n link set ks$X mtu 1420 up
    ip -n $n route add default dev ks$X table 180
    ip -n $n rule add fwmark 0x40/0x60 table 180 priority 32500
    ip netns exec $n nft -f - <<NFT
table inet kubespan {
  set t4 { type ipv4_addr; flags interval; elements = { 192.0.2.$o/32, 10.200.$o.0/24 } }
  chain pre { type filter hook prerouting priority mangle; meta mark & 0x60 == 0x20 accept; ip daddr @t4 meta mark set meta mark | 0x40 accept; }
  chain out { type route hook output priority mangle; meta mark & 0x60 == 0x20 accept; oifname "lo" accept; ip daddr @t4 meta mark set meta mark | 0x40 accept; }
}
NFT
done
B="ip netns exec rpfb"
sc() { $B sysctl -qw "$@"; }
loss() { { ip netns exec rpfa ping -c3 -i0.2 -W1 "$@" || true; } | grep -o '[0-9]*% packet loss' | cut -d' ' -f1; }
row() {
    $B nstat -n >/dev/null
    local p n u r
    p=$(loss -I 10.200.1.1 10.200.2.1); n=$(loss 192.0.2.2); u=$(loss fd00::2)
    r=$($B nstat -z TcpExtIPReversePathFilter | awk '/IPReversePathFilter/ {print $2}')
    printf '| %s | all=%s link=%s default=%s link.src_valid_mark=%s | %s | %s | %s | +%s |\n' "$1" \
        "$($B sysctl -n net.ipv4.conf.all.rp_filter)" "$($B sysctl -n net.ipv4.conf.ksb.rp_filter)" \
        "$($B sysctl -n net.ipv4.conf.default.rp_filter)" "$($B sysctl -n net.ipv4.conf.ksb.src_valid_mark)" "$p" "$n" "$u" "${r:-0}"
}
{
echo "# bench/rpfilter-matrix.sh, $(date -u +%FT%TZ), Linux $(uname -r), commit $(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "| row | B's values | pod->pod loss | node->node loss (mesh) | ULA loss | B's reverse-path drops |"
echo "| --- | --- | --- | --- | --- | --- |"
row "defaults of a new namespace"
sc net.ipv4.conf.all.rp_filter=1; row "all strict"
sc net.ipv4.conf.ksb.src_valid_mark=1; row "all strict, src_valid_mark on the link"
sc net.ipv4.conf.ksb.src_valid_mark=0 net.ipv4.conf.all.src_valid_mark=1; row "all strict, all.src_valid_mark=1"
sc net.ipv4.conf.all.src_valid_mark=0 net.ipv4.conf.ksb.rp_filter=2; row "all strict, link loose"
sc net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.ksb.rp_filter=0; row "all loose"
sc net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.ksb.rp_filter=1; row "link strict (copied from default=1)"
sc net.ipv4.conf.ksb.rp_filter=2; row "link loose (RHEL's default=2)"
sc net.ipv4.conf.default.rp_filter=1 net.ipv4.conf.eth0.rp_filter=1 net.ipv4.conf.pod0.rp_filter=1 net.ipv4.conf.lo.rp_filter=1 \
   net.ipv4.conf.pod0p.rp_filter=1 net.ipv4.conf.ksb.rp_filter=0; row "the role's choice for all=1: all=0, link 0, the others 1"
sc net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.ksb.rp_filter=2; $B ip addr add 169.254.77.2/32 dev ksb
row "all strict, link loose with an IPv4 address"
} | tee "$out"
