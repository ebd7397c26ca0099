import pytest

from srv6pm.exporter.config import ConfigError, parse

GOOD = """
node: r1
netns: r1
period: 2
flows:
  - {name: f1, role: ingress, src: "fd01:1::2/128", dst: "fd01:4::101"}
"""


def test_parse_normalises_prefixes():
    c = parse(GOOD)
    assert c.node == "r1" and c.netns == "r1" and c.dscp == (11, 15)
    assert c.flows[0].dst == "fd01:4::101/128"
    assert [f.name for f in c.flows_of("ingress")] == ["f1"]


@pytest.mark.parametrize("change, message", [
    (("period: 2", "period: 0.1"), "period"),
    (("role: ingress", "role: transit"), "flows[0].role"),
    (('src: "fd01:1::2/128"', 'src: "10.0.0.1/32"'), "flows[0].src: not an IPv6 prefix"),
    (("netns: r1", "netns: '../etc'"), "netns"),
    (("node: r1", "nodes: r1"), "nodes: unknown field"),
])
def test_errors_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(GOOD.replace(*change), "x.yaml")


def test_dscp_pair_must_differ():
    with pytest.raises(ConfigError, match="dscp"):
        parse(GOOD + "dscp: [11, 11]\n")


def test_two_flows_with_the_same_match_are_refused():
    text = GOOD + '  - {name: f2, role: ingress, src: "fd01:1::2/128", dst: "fd01:4::101/128"}\n'
    with pytest.raises(ConfigError, match=r"flows\[1\]: same ingress src/dst as flow 'f1'"):
        parse(text)
