"""Openings in the host's own input chains: only drop-policy chains, only our commented rules."""

from ansible_collections.kubespan.mesh.plugins.module_utils.core.firewall import COMMENT, input_drop_chains, plan_openings


def chain(family, table, name, hook="input", policy="drop"):
    return {"chain": {"family": family, "table": table, "name": name, "handle": 1, "type": "filter", "hook": hook, "prio": 0, "policy": policy}}


def rule(family, table, chain_name, handle, comment=None):
    r = {"family": family, "table": table, "chain": chain_name, "handle": handle, "expr": [{"accept": None}]}
    if comment:
        r["comment"] = comment
    return {"rule": r}


DEBIAN_STRICT = {"nftables": [
    {"metainfo": {"version": "1.0.6"}},
    {"table": {"family": "inet", "name": "filter", "handle": 1}},
    chain("inet", "filter", "input"),
    chain("inet", "filter", "forward", hook="forward"),
    chain("inet", "filter", "output", hook="output", policy="accept"),
    rule("inet", "filter", "input", 5),
    chain("inet", "kubespan", "mine"),  # our own table is never touched
    chain("ip", "legacy", "INPUT", policy="accept"),
]}


def test_finds_only_input_chains_with_drop_policy():
    assert input_drop_chains(DEBIAN_STRICT, "kubespan") == [("inet", "filter", "input")]


def test_opens_port_and_trusts_interface_once():
    commands, changes = plan_openings(DEBIAN_STRICT, 51820, "kubespan", "kubespan")
    inserted = [c["insert"]["rule"] for c in commands]
    assert [(r["chain"], r["comment"]) for r in inserted] == [
        ("input", "%s: trust kubespan" % COMMENT), ("input", "%s: wireguard udp 51820" % COMMENT)]
    udp = [r for r in inserted if "udp" in r["comment"]][0]
    assert udp["expr"][0]["match"]["right"] == 51820 and udp["expr"][0]["match"]["left"]["payload"]["field"] == "dport"
    assert len(changes) == 2
    applied = {"nftables": DEBIAN_STRICT["nftables"] + [rule("inet", "filter", "input", 10 + i, r["comment"]) for i, r in enumerate(inserted)]}
    assert plan_openings(applied, 51820, "kubespan", "kubespan") == ([], [])


def test_port_change_replaces_only_our_rule_and_disable_removes_ours_only():
    applied = {"nftables": DEBIAN_STRICT["nftables"] + [
        rule("inet", "filter", "input", 11, "%s: wireguard udp 51820" % COMMENT),
        rule("inet", "filter", "input", 12, "%s: trust kubespan" % COMMENT),
        rule("inet", "filter", "input", 13, "someone else's rule"),
    ]}
    commands, _changes = plan_openings(applied, 51821, "kubespan", "kubespan")
    assert {"delete": {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 11}}} in commands
    assert sum(1 for c in commands if "insert" in c) == 1
    commands, changes = plan_openings(applied, 51820, "kubespan", "kubespan", enabled=False)
    assert sorted(c["delete"]["rule"]["handle"] for c in commands) == [11, 12] and len(changes) == 2


def test_no_drop_policy_means_nothing_to_do():
    open_host = {"nftables": [chain("inet", "filter", "input", policy="accept")]}
    assert plan_openings(open_host, 51820, "kubespan", "kubespan") == ([], [])
