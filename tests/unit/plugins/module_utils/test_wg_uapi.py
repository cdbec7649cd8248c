"""UAPI encoding and parsing (wireguard-go's configuration protocol)."""

import base64
import binascii

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import DeviceUpdate, PeerUpdate, WireGuardError
from ansible_collections.kubespan.mesh.plugins.module_utils.host import wg_uapi
from ansible_collections.kubespan.mesh.plugins.module_utils.host.wg_uapi import build_set_request, parse_get_response


def key(n):
    return base64.b64encode(bytes([n]) * 32).decode()


def hexkey(n):
    return binascii.hexlify(bytes([n]) * 32).decode()


def test_build_set_request_all_cases():
    req = build_set_request(DeviceUpdate(private_key=key(1), listen_port=51820, fwmark=32, peers=[
        PeerUpdate(public_key=key(2), endpoint="[2001:DB8::2]:51820", allowed_ips=["fd00::2/128"], persistent_keepalive=25, preshared_key=key(9)),
        PeerUpdate(public_key=key(3), remove=True),
        PeerUpdate(public_key=key(4), update_only=True, endpoint="10.0.0.4:51820"),
    ]))
    assert req == (
        "set=1\nprivate_key=%s\nlisten_port=51820\nfwmark=32\n"
        "public_key=%s\npreshared_key=%s\nendpoint=[2001:db8::2]:51820\npersistent_keepalive_interval=25\n"
        "replace_allowed_ips=true\nallowed_ip=fd00::2/128\n"
        "public_key=%s\nremove=true\n"
        "public_key=%s\nupdate_only=true\nendpoint=10.0.0.4:51820\n\n" % (hexkey(1), hexkey(2), hexkey(9), hexkey(3), hexkey(4)))


def test_parse_get_response():
    text = (
        "private_key=%s\nlisten_port=51820\nfwmark=32\n"
        "public_key=%s\npreshared_key=%s\nprotocol_version=1\nendpoint=10.0.0.2:51820\n"
        "last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=500000000\ntx_bytes=10\nrx_bytes=20\n"
        "persistent_keepalive_interval=25\nallowed_ip=fd00::2/128\nallowed_ip=10.244.0.0/24\n"
        "public_key=%s\npreshared_key=%s\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"
        "errno=0\n\n" % (hexkey(8), hexkey(2), hexkey(9), hexkey(3), "0" * 64))
    dev = parse_get_response(text)
    assert dev.private_key == key(8) and dev.listen_port == 51820 and dev.fwmark == 32 and dev.public_key
    p2 = dev.peers[key(2)]
    assert (p2.preshared_key, p2.endpoint, p2.last_handshake, p2.rx_bytes, p2.tx_bytes, p2.persistent_keepalive) == (
        key(9), "10.0.0.2:51820", 1700000000.5, 20, 10, 25)
    assert p2.allowed_ips == ["10.244.0.0/24", "fd00::2/128"]
    p3 = dev.peers[key(3)]
    assert p3.preshared_key is None and p3.last_handshake == 0 and p3.endpoint is None


def test_a_second_read_reuses_the_parsed_addresses_and_a_bad_one_still_fails():
    """Every sample of an agent tick reads the device: the same endpoint and allowed-IP strings are parsed once
    (memoized), the result is the same, and a malformed value raises on every read (an error is never cached)."""
    text = ("public_key=%s\nendpoint=[2001:DB8:0::7]:51820\nallowed_ip=10.245.0.0/24\nallowed_ip=fd00::7/128\n"
            "errno=0\n\n" % hexkey(7))
    wg_uapi._read_cidr.cache_clear()
    wg_uapi._read_endpoint.cache_clear()
    first = parse_get_response(text)
    second = parse_get_response(text)
    assert first == second and second.peers[key(7)].endpoint == "[2001:db8::7]:51820"
    assert wg_uapi._read_cidr.cache_info().hits == 2 and wg_uapi._read_endpoint.cache_info().hits == 1
    assert wg_uapi._read_cidr.cache_info().maxsize and wg_uapi._read_endpoint.cache_info().maxsize  # bounded
    bad = "public_key=%s\nallowed_ip=10.245.0.300/24\nerrno=0\n\n" % hexkey(7)
    for _attempt in range(2):
        with pytest.raises(WireGuardError, match="line 2, key allowed_ip"):
            parse_get_response(bad)


@pytest.mark.parametrize("text,match", [
    ("listen_port=1\n", "no errno"),
    ("errno=2\n\n", "errno 2"),
    ("garbage\nerrno=0\n", "malformed"),
    ("public_key=abcd\nerrno=0\n", "key"),
])
def test_parse_errors(text, match):
    with pytest.raises(WireGuardError, match=match):
        parse_get_response(text)


@pytest.mark.parametrize("line", [
    "%s",                        # the '=' lost: the whole line is the key hex
    "private_key=%s",            # cut on the way (odd length)
    "listen_port=%s",            # key hex in a number field
])
def test_parse_error_never_quotes_the_line(line):
    """A garbled answer may hold the private key's hex: the error names the line number and key, never text."""
    secret = "c0ffee" * 10 + "abcd"
    text = "errno=0\n" + (line % secret[:-1] if "private_key" in line else line % secret) + "\n"
    with pytest.raises(WireGuardError) as info:
        parse_get_response(text)
    message = str(info.value)
    assert "line 2" in message or "malformed key" in message
    for start in range(0, len(secret) - 8):
        assert secret[start:start + 8] not in message


def test_a_connection_reset_mid_answer_is_a_wireguard_error(tmp_path):
    # wireguard-go starting or stopping can accept and then reset the UAPI connection: the caller's retry
    # (engine.ensure_userspace_device) catches WireGuardError, not a bare ConnectionResetError
    import socket
    import threading
    import time

    from ansible_collections.kubespan.mesh.plugins.module_utils.host.wg_uapi import UapiWireGuard

    path = str(tmp_path / "kubespan.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def reset_one():
        conn, _addr = server.accept()
        time.sleep(0.3)  # the request arrives and stays unread: closing now resets the connection (AF_UNIX)
        conn.close()

    thread = threading.Thread(target=reset_one)
    thread.start()
    dev = UapiWireGuard("kubespan")
    dev.path = path
    with pytest.raises(WireGuardError, match="broke off its answer"):
        dev.read()
    thread.join()
    server.close()
