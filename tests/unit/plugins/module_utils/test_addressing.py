"""ULA prefix and node address derivation, against Talos's vectors."""

import ipaddress

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core import addressing as a

CLUSTER = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="


def test_ula_prefix_talos_vector():
    assert str(a.ula_prefix(CLUSTER, a.PURPOSE_KUBESPAN)) == "fd7f:175a:b97c:5602::/64"


@pytest.mark.parametrize("purpose,expected", [
    (a.PURPOSE_BOOTSTRAP, "fd7f:175a:b97c:5601::/64"),
    (a.PURPOSE_SIDEROLINK, "fd7f:175a:b97c:5603::/64"),
    (a.PURPOSE_VIRTUAL_SIDEROLINK, "fd7f:175a:b97c:5604::/64"),
])
def test_ula_prefix_other_purposes(purpose, expected):
    assert str(a.ula_prefix(CLUSTER, purpose)) == expected


def test_ula_prefix_manager_test_cluster():
    assert str(a.ula_prefix("v16UCWpO2iOm82n6F8dGCJ41ZXXBvDrjRDs2su7C_zs=")) == "fd8a:4396:731e:e702::/64"


@pytest.mark.parametrize("mac,expected", [
    ("2e:1a:b6:53:81:69", "fd7f:175a:b97c:5602:2c1a:b6ff:fe53:8169"),
    ("ea:71:1b:b2:cc:ee", "fd7f:175a:b97c:5602:e871:1bff:feb2:ccee"),
    ("EA:71:1B:B2:CC:EE", "fd7f:175a:b97c:5602:e871:1bff:feb2:ccee"),
])
def test_eui64_vectors(mac, expected):
    assert str(a.eui64_address(a.ula_prefix(CLUSTER), mac)) == expected


@pytest.mark.parametrize("bad", ["", "2e:1a:b6:53:81", "zz:1a:b6:53:81:69", "2e-1a-b6-53-81-69", None])
def test_eui64_rejects_bad_mac(bad):
    with pytest.raises(ValueError, match="MAC"):
        a.eui64_address(a.ula_prefix(CLUSTER), bad)


def test_empty_cluster_id_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="gen_secrets"):
        a.ula_prefix("")


def test_node_id_fallback_is_stable_local_and_in_prefix():
    prefix = a.ula_prefix(CLUSTER)
    one = a.node_id_address(prefix, "abc123")
    assert one == a.node_id_address(prefix, "abc123")
    assert one != a.node_id_address(prefix, "abc124")
    assert one in prefix
    assert one.packed[8] & 0x02 == 0  # locally generated interface ID: U/L bit clear


def test_first_physical_link_skips_virtual_links_and_sorts_by_name():
    links = [
        ("lo", 772, None, "00:00:00:00:00:00"),
        ("veth0", 1, "veth", "aa:aa:aa:aa:aa:aa"),
        ("br0", 1, "bridge", "bb:bb:bb:bb:bb:bb"),
        ("eth1", 1, None, "2E:1A:B6:53:81:70"),
        ("eth0", 1, None, "2e:1a:b6:53:81:69"),
        ("wg0", 65534, "wireguard", None),
    ]
    assert a.first_physical_link(links) == ("eth0", "2e:1a:b6:53:81:69")
    assert a.first_physical_link(links[:3]) is None


def test_node_address_sources():
    phys = ("eth0", "2e:1a:b6:53:81:69")
    addr, subnet, src = a.node_address(CLUSTER, "nid", phys)
    assert (str(addr), str(subnet), src) == ("fd7f:175a:b97c:5602:2c1a:b6ff:fe53:8169", "fd7f:175a:b97c:5602::/64", "mac:eth0")
    addr, _subnet, src = a.node_address(CLUSTER, "nid", None)
    assert src == "node-id" and addr == a.node_id_address(ipaddress.IPv6Network("fd7f:175a:b97c:5602::/64"), "nid")
    assert a.node_address(CLUSTER, "nid", phys, "node-id")[2] == "node-id"
    with pytest.raises(ValueError, match="no physical Ethernet"):
        a.node_address(CLUSTER, "nid", None, "mac")
    with pytest.raises(ValueError, match="auto, mac or node-id"):
        a.node_address(CLUSTER, "nid", None, "eui")
