"""dataplane._address_operand with its cache gives what the uncached parse gives, on first and repeated calls."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core import dataplane

_addr = st.one_of(st.sampled_from(["10.0.0.1", "10.0.0.0", "10.0.1.255", "fd00::1", "fd00::", "2001:db8::ff", "bad", ""]),
                  st.integers(0, 2 ** 32), st.none())
_len = st.one_of(st.integers(-1, 130), st.booleans(), st.sampled_from(["24", None]))
_element = st.one_of(
    st.sampled_from(["10.0.0.1", "10.0.0.0/24", "10.0.0.0/8", "fd00::/64", "fd00::1", "x", "10.0.0.1/33"]),
    st.builds(lambda a, n: {"prefix": {"addr": a, "len": n}}, _addr, _len),
    st.builds(lambda bounds: {"range": bounds}, st.lists(_addr, min_size=0, max_size=3)),
    st.builds(lambda a, b: {"range": (a, b)}, _addr, _addr),
    st.just({"prefix": "10.0.0.0/8"}), st.just({"other": 1}), st.integers(), st.none())
_value = st.one_of(_element, st.builds(lambda e: {"set": e}, st.lists(_element, max_size=6)), st.just({"set": "10.0.0.1"}))


def _expected(value):
    elements = value["set"] if isinstance(value, dict) and "set" in value else [value]
    return dataplane._address_operand_parse(elements)


@settings(max_examples=400, deadline=None)
@given(st.lists(_value, min_size=1, max_size=4))
def test_cached_operand_same_as_parse(values):
    dataplane._OPERAND_CACHE.clear()
    for _round in range(2):
        for value in values:
            want = _expected(value)
            got = dataplane._address_operand(value)
            assert got == want
            if got:
                got.append("mutated")  # a caller's change never reaches the cache
                assert dataplane._address_operand(value) == want


def test_same_set_in_two_documents_parsed_once_and_equal():
    doc = {"set": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, {"range": ["10.0.1.1", "10.0.1.9"]}, "10.0.2.1"]}
    dataplane._OPERAND_CACHE.clear()
    first = dataplane._address_operand(doc)
    assert len(dataplane._OPERAND_CACHE) == 1
    assert dataplane._address_operand({"set": list(doc["set"])}) == first == _expected(doc)
    assert len(dataplane._OPERAND_CACHE) == 1
