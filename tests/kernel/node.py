# -*- coding: utf-8 -*-
"""One node of the kernel WireGuard test; runs inside network namespace ``a`` or ``b`` of the guest.

Usage: python3 node.py a|b   (PYTHONPATH holds kubespan_mesh -> plugins/module_utils, KTEST_DIR a
shared directory for the two nodes' rendezvous files). Prints "PASS <node>: ..." / "FAIL <node>: ..."
lines; exits 0 and leaves KTEST_DIR/<node>.ok only when every check passed.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import traceback

from rendezvous import Abort, Rendezvous

T0 = time.monotonic()
ME = sys.argv[1]
PEER = {"a": "b", "b": "a"}[ME]
DIR = os.environ.get("KTEST_DIR", "/run/ktest")
IFNAME = "kubespan"
PORT = 51820
NODES = {
    "a": {"v4": "192.168.77.1", "v6": "fd77::1", "ula": "fd5b:1::a"},
    "b": {"v4": "192.168.77.2", "v6": "fd77::2", "ula": "fd5b:1::b"},
}
# a reaches b over IPv4, b reaches a over IPv6: both endpoint families go through the kernel
ENDPOINT_OF_PEER = {"a": "192.168.77.2:%d" % PORT, "b": "[fd77::1]:%d" % PORT}[ME]
PEER_UNDERLAY_ENDPOINTS = {"%s:%d" % (NODES[PEER]["v4"], PORT), "[%s]:%d" % (NODES[PEER]["v6"], PORT)}
PEER_ULA = NODES[PEER]["ula"]

failures = []


def emit(line):
    """One write() per line: both nodes share the console, and the tty keeps single writes whole."""
    os.write(1, (line + "\n").encode("utf-8", "replace"))


def say(text):
    emit("  %s| [%5.1fs] %s" % (ME, time.monotonic() - T0, text))


def check(ok, what, detail=""):
    if ok:
        emit("PASS %s: %s" % (ME, what))
    else:
        failures.append(what)
        emit("FAIL %s: %s%s" % (ME, what, (" -- %s" % (detail,)) if detail != "" else ""))
    return ok


RV = Rendezvous(DIR, ME, PEER)
put, wait_for, barrier = RV.put, RV.wait_for, RV.barrier


def ping(addr, count=3):
    t = time.monotonic()
    r = subprocess.run(["ping", "-6", "-n", "-q", "-c", str(count), "-i", "0.2", "-w", "30", addr], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, check=False)
    say("ping %s: rc=%d in %.1fs: %s" % (addr, r.returncode, time.monotonic() - t, " / ".join(r.stdout.strip().splitlines()[-2:])))
    return r.returncode == 0


def main():
    from nacl.public import PrivateKey
    from nacl.utils import random as nacl_random

    from kubespan_mesh.core.wgtypes import DeviceUpdate, PeerUpdate
    from kubespan_mesh.host import wg_kernel

    say("imported wg_kernel")
    check(wg_kernel.kernel_wireguard_available(), "kernel_wireguard_available() is true")
    check(wg_kernel.create_link(IFNAME) is True, "create_link(%s) creates the link" % IFNAME)
    check(wg_kernel.create_link(IFNAME) is False, "create_link(%s) again is a no-op" % IFNAME)
    import pyroute2
    say("pyroute2 %s from %s" % (getattr(pyroute2, "__version__", "?"), os.path.dirname(pyroute2.__file__)))

    raw = bytearray(bytes(PrivateKey.generate()))
    raw[0] &= 248  # clamp as `wg genkey` does: the kernel stores (and dumps) private keys clamped
    raw[31] = (raw[31] & 127) | 64
    sk = PrivateKey(bytes(raw))
    priv = base64.b64encode(bytes(sk)).decode()
    pub = base64.b64encode(bytes(sk.public_key)).decode()
    if ME == "a":
        put("psk", base64.b64encode(nacl_random(32)).decode())
    put("pub", pub)
    peer_pub = wait_for("pub")
    psk = wait_for("psk") if ME == "b" else open(os.path.join(DIR, "a.psk")).read()

    dev = wg_kernel.KernelWireGuard(IFNAME)
    s = dev.read()
    check(s.private_key is None and s.public_key is None and s.peers == {} and s.listen_port == 0, "fresh device reads empty", s)

    dev.apply(DeviceUpdate(private_key=priv, listen_port=PORT, fwmark=0x20, peers=[
        PeerUpdate(public_key=peer_pub, preshared_key=psk, endpoint=ENDPOINT_OF_PEER, allowed_ips=[PEER_ULA + "/128"], persistent_keepalive=25),
    ]))
    s = dev.read()
    check(s.private_key == priv, "private key read back", "%s..., expected %s..." % ((s.private_key or "None")[:8], priv[:8]))
    check(s.public_key == pub, "public key derived by the kernel", (s.public_key, pub))
    check((s.listen_port, s.fwmark) == (PORT, 0x20), "listen port %d and fwmark 0x20" % PORT, (s.listen_port, s.fwmark))
    check(list(s.peers) == [peer_pub], "one peer", list(s.peers))
    p = s.peers.get(peer_pub)
    if p is None:
        raise Abort("peer missing")
    check(p.endpoint == ENDPOINT_OF_PEER, "endpoint %s read back" % ENDPOINT_OF_PEER, p.endpoint)
    check(p.allowed_ips == [PEER_ULA + "/128"], "allowed_ips read back", p.allowed_ips)
    check(p.persistent_keepalive == 25, "keepalive 25 read back", p.persistent_keepalive)
    check(p.preshared_key == psk, "preshared key read back")
    check(p.last_handshake == 0 and p.rx_bytes == 0, "no handshake yet", p)

    # both sides configured before either link goes up, so the first handshakes are not lost and retried
    # later (a retried handshake would change the handshake time that the update checks compare)
    barrier("configured")
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=IFNAME)[0]
        ipr.addr("add", index=idx, address=NODES[ME]["ula"], prefixlen=64)
        ipr.link("set", index=idx, state="up")
    say("link up with %s/64" % NODES[ME]["ula"])
    barrier("up")

    check(ping(PEER_ULA), "ping6 %s through kernel WireGuard" % PEER_ULA)
    s1 = dev.read()
    p1 = s1.peers[peer_pub]
    now = time.time()
    check(0 < p1.last_handshake and abs(now - p1.last_handshake) < 300, "handshake time set", (p1.last_handshake, now))
    check(p1.rx_bytes > 0 and p1.tx_bytes > 0, "rx/tx counters > 0", (p1.rx_bytes, p1.tx_bytes))
    check(p1.allowed_ips == [PEER_ULA + "/128"] and p1.persistent_keepalive == 25, "allowed_ips and keepalive after traffic")
    # roaming: after authenticated packets the endpoint is the peer's source address (either family here)
    check(p1.endpoint in PEER_UNDERLAY_ENDPOINTS, "endpoint after traffic is one of the peer's underlay addresses", p1.endpoint)
    barrier("pinged")

    if ME == "a":
        updates_on_a(dev, wg_kernel, DeviceUpdate, PeerUpdate, PrivateKey, peer_pub, psk, dev.read().peers[peer_pub])
    else:
        errors_on_b(wg_kernel, DeviceUpdate)
        bulk_on_b(wg_kernel, DeviceUpdate, PeerUpdate)
    barrier("done")
    dev.close()


def updates_on_a(dev, wg_kernel, DeviceUpdate, PeerUpdate, PrivateKey, peer_pub, psk, p1):
    def newkey():
        return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()

    new_ep = "[%s]:%d" % (NODES[PEER]["v6"], PORT)
    dev.apply(DeviceUpdate(peers=[PeerUpdate(public_key=peer_pub, endpoint=new_ep, update_only=True)]))
    s = dev.read()
    p = s.peers[peer_pub]
    check(p.endpoint == new_ep, "update_only endpoint change to %s" % new_ep, p.endpoint)
    check(p.last_handshake == p1.last_handshake, "peer not reset by the endpoint change (same handshake time)", (p.last_handshake, p1.last_handshake))
    check(p.rx_bytes >= p1.rx_bytes and p.allowed_ips == p1.allowed_ips and p.preshared_key == psk and p.persistent_keepalive == 25,
          "other peer fields untouched by the endpoint change", p)

    ghost = newkey()
    dev.apply(DeviceUpdate(peers=[PeerUpdate(public_key=ghost, endpoint="192.168.77.9:1", update_only=True)]))
    check(ghost not in dev.read().peers, "update_only does not create an unknown peer")

    third = newkey()
    dev.apply(DeviceUpdate(peers=[PeerUpdate(public_key=third, endpoint="192.168.77.3:51820", allowed_ips=["fd5b:1::c/128", "10.99.1.2/16"],
                                             persistent_keepalive=0)]))
    s = dev.read()
    check(sorted(s.peers) == sorted([peer_pub, third]), "second peer added", list(s.peers))
    q = s.peers.get(third)
    check(q is not None and q.allowed_ips == ["10.99.0.0/16", "fd5b:1::c/128"] and q.endpoint == "192.168.77.3:51820"
          and q.preshared_key is None and q.persistent_keepalive == 0 and q.last_handshake == 0, "second peer read back", q)
    check(s.peers[peer_pub].last_handshake == p1.last_handshake, "first peer not reset by adding a peer")

    dev.apply(DeviceUpdate(peers=[PeerUpdate(public_key=third, allowed_ips=["10.98.0.0/16"])]))
    q = dev.read().peers.get(third)
    check(q is not None and q.allowed_ips == ["10.98.0.0/16"] and q.endpoint == "192.168.77.3:51820", "allowed_ips replaced, not appended", q)

    dev.apply(DeviceUpdate(peers=[PeerUpdate(public_key=third, remove=True)]))
    s = dev.read()
    check(list(s.peers) == [peer_pub], "second peer removed", list(s.peers))
    p = s.peers[peer_pub]
    check(p.last_handshake == p1.last_handshake, "first peer not reset by removing a peer", (p.last_handshake, p1.last_handshake))
    check((s.listen_port, s.fwmark) == (PORT, 0x20), "device settings unchanged by peer updates")
    check(ping(PEER_ULA), "ping6 still works after the updates")


def errors_on_b(wg_kernel, DeviceUpdate):
    def error_of(func):
        try:
            func()
        except wg_kernel.WireGuardError as e:
            return str(e)
        except Exception as e:
            return "not a WireGuardError: %r" % (e,)
        return None

    with wg_kernel.KernelWireGuard("nosuchdev") as dev:
        msg = error_of(dev.read)
        check(msg is not None and "no WireGuard device" in msg, "read() of a missing device raises WireGuardError", msg)
    with wg_kernel.KernelWireGuard("veth-b") as dev:
        msg = error_of(lambda: dev.apply(DeviceUpdate(listen_port=1)))
        check(msg is not None and "not a WireGuard device" in msg, "apply() on a veth raises WireGuardError", msg)
    msg = error_of(lambda: wg_kernel.create_link("veth-b"))
    check(msg is not None and "'veth'" in msg, "create_link() over an existing veth raises WireGuardError", msg)


def bulk_on_b(wg_kernel, DeviceUpdate, PeerUpdate):
    """Many peers on a second (down) device: split SET messages and a multi-message dump."""
    name = "kbulk"
    check(wg_kernel.create_link(name) is True, "create_link(%s)" % name)
    keys = [base64.b64encode(i.to_bytes(4, "big") + bytes(28)).decode() for i in range(1, 101)]
    peers = [PeerUpdate(public_key=k, endpoint="[fd00:77::%x]:51820" % i, allowed_ips=["10.%d.%d.0/24" % (i // 256, i % 256), "fd00:88::%x/128" % i],
                        persistent_keepalive=i % 60) for i, k in enumerate(keys, 1)]
    big = ["fd00:99::%x/128" % i for i in range(1, 1001)]
    peers.append(PeerUpdate(public_key=keys[0], allowed_ips=big))  # same peer again: replace its list with 1500 entries
    with wg_kernel.KernelWireGuard(name, max_message_bytes=8192) as dev:
        t = time.monotonic()
        batches = wg_kernel.set_device_batches(name, DeviceUpdate(peers=peers), dev.max_message_bytes)
        dev.apply(DeviceUpdate(peers=peers))
        say("applied %d peers in %d messages in %.1fs" % (len(keys), len(batches), time.monotonic() - t))
        t = time.monotonic()
        msgs = dev._request(wg_kernel.make_message(wg_kernel.WG_CMD_GET_DEVICE, wg_kernel.get_device_attrs(name)),
                            wg_kernel.NLM_F_REQUEST | wg_kernel.NLM_F_DUMP)
        s = wg_kernel.parse_device_dump(msgs)
        say("dump: %d messages, %d peers in %.1fs" % (len(msgs), len(s.peers), time.monotonic() - t))
        check(len(batches) > 1 and len(msgs) > 1, "bulk set and dump span several messages", (len(batches), len(msgs)))
        parts = sum(1 for m in msgs for p in (m.get_attr("WGDEVICE_A_PEERS") or []) if p.get_attr("WGPEER_A_PUBLIC_KEY").decode() == keys[0])
        check(parts > 1, "the kernel continued one peer's allowed IPs in another message", parts)
        s = dev.read()
        check(sorted(s.peers) == sorted(keys), "all %d peers read back from a multi-message dump" % len(keys), len(s.peers))
        check(s.peers[keys[0]].allowed_ips == sorted(big), "%d allowed IPs of one peer merged across messages" % len(big), len(s.peers[keys[0]].allowed_ips))
        bad = [k for i, k in enumerate(keys[1:], 2) if s.peers[k].allowed_ips != sorted(["10.%d.%d.0/24" % (i // 256, i % 256), "fd00:88::%x/128" % i])
               or s.peers[k].endpoint != "[fd00:77::%x]:51820" % i or s.peers[k].persistent_keepalive != i % 60]
        check(not bad, "every bulk peer's endpoint, keepalive and allowed IPs read back", bad[:3])
        dev.apply(DeviceUpdate(peers=[PeerUpdate(public_key=k, remove=True) for k in keys]))
        check(dev.read().peers == {}, "bulk removal")
    with __import__("pyroute2").IPRoute() as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname=name)[0])


if __name__ == "__main__":
    os.makedirs(DIR, exist_ok=True)
    try:
        main()
    except Abort as e:
        check(False, "aborted: %s" % e)
    except Exception:
        check(False, "unexpected error: %s" % traceback.format_exc().strip().replace("\n", "\n    "))
    if failures:
        put("failed", "\n".join(failures))
        say("%d check(s) failed" % len(failures))
        os._exit(1)
    put("ok")
    say("all checks passed")
    os._exit(0)  # skip interpreter teardown (seconds under emulation)
