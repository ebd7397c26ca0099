import os

import pytest

from srv6pm.exporter.config import ConfigError, Override, parse

GOOD = """
node: r1
netns: r1
period: 2
flows:
  - {name: f1, role: ingress, src: "fd01:1::2/128", dst: "fd01:4::101"}
"""


def test_dataplane_from_file_or_override():
    assert parse(GOOD).dataplane == "ebpf"
    assert parse(GOOD + "dataplane: nftables\n").dataplane == "nftables"
    assert parse(GOOD + "dataplane: nftables\n", dataplane=Override("ebpf", "--dataplane")).dataplane == "ebpf"
    with pytest.raises(ConfigError, match="SRV6PM_DATAPLANE: must be one of ebpf, nftables, got 'xdp'"):
        parse(GOOD, dataplane=Override("xdp", "SRV6PM_DATAPLANE"))
    with pytest.raises(ConfigError, match="dataplane: must be one of"):  # the file is checked even when overridden
        parse(GOOD + "dataplane: tc\n", dataplane=Override("ebpf", "--dataplane"))


def test_buffer_size_and_directory_from_file_or_override():
    c = parse(GOOD)
    assert (c.buffer_size, c.buffer_path()) == (256 * 2**20, None)  # no state file: a temporary directory
    c = parse(GOOD + "state_file: /var/lib/srv6pm/r1.json\nbuffer_size: 64KiB\n")
    assert (c.buffer_size, c.buffer_path()) == (65536, "/var/lib/srv6pm/r1.json.buffer")
    c = parse(GOOD + "buffer_size: 1000000\nbuffer_dir: /data/buffer\n",
              buffer_size=Override("1.5GiB", "--buffer-size"), buffer_dir=Override("/spool", "SRV6PM_BUFFER_DIR"))
    assert (c.buffer_size, c.buffer_path()) == (int(1.5 * 2**30), "/spool")
    with pytest.raises(ConfigError, match=r"^--buffer-size: must be a size of at least 64KiB .* got '10 TB'$"):
        parse(GOOD, buffer_size=Override("10 TB", "--buffer-size"))
    with pytest.raises(ConfigError, match="buffer_size: must be a size of at least 64KiB"):  # checked when overridden
        parse(GOOD + "buffer_size: 1KiB\n", buffer_size=Override("1MiB", "--buffer-size"))
    with pytest.raises(ConfigError, match="buffer_dir: must be a directory path"):
        parse(GOOD + "buffer_dir: 5\n")


def test_flow_ids_of_the_ebpf_data_plane():
    c = parse(GOOD.replace("role: ingress,", "role: ingress, flowmon_id: 7,")
              + '  - {name: f1, role: transit, src: "fd01:1::2/128", dst: "fd01:4::101", flowmon_id: 7, position: 1}\n')
    (ingress, transit) = c.objects()
    assert (ingress.flowmon_id, ingress.position, transit.flowmon_id, transit.position) == (7, 0, 7, 1)


def test_parse_normalises_prefixes():
    c = parse(GOOD)
    assert c.node == "r1" and c.netns == "r1" and c.dscp == (11, 15)
    assert c.flows[0].destination_prefix == "fd01:4::101/128"  # a bare address is a /128, as in the API
    assert [f.flow for f in c.flows] == ["f1"]


@pytest.mark.parametrize("change, message", [
    (("period: 2", "period: 0.1"), "period"),
    (("role: ingress", "role: middle"), "flows[0].role"),
    (("role: ingress", "role: ingress, flowmon_id: 1048576"), "flows[0].flowmon_id: 1048576 not in 0..1048575"),
    (("role: ingress", "role: transit, position: 256"), "flows[0].position: 256 not in 0..255"),
    (("period: 2", "period: 2\ndataplane: bpf"), "dataplane: must be one of ebpf, nftables"),
    (('src: "fd01:1::2/128"', 'src: "10.0.0.1/32"'), "flows[0].src: '10.0.0.1/32' is not an IPv6 prefix"),
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


def test_flows_are_optional_and_the_grpc_section_is_read():
    c = parse("node: r1\nperiod: 2\ngrpc: {listen: '127.0.0.1:0', tls: {cert: /c.pem, key: /k.pem, client_ca: /ca.pem}}\n")
    assert c.flows == () and c.objects() == []
    assert (c.grpc.listen, c.grpc.plaintext, c.grpc.cert, c.grpc.key, c.grpc.client_ca) == (
        "127.0.0.1:0", False, "/c.pem", "/k.pem", "/ca.pem")


@pytest.mark.parametrize("grpc, message", [
    ("grpc: {port: 1}", "grpc.port: unknown field"),
    ("grpc: {plaintext: yes please}", "grpc.plaintext: must be true or false"),
    ("grpc: {tls: {cert: ''}}", "grpc.tls.cert: must be a file path"),
    ("grpc: {tls: {ca: /x}}", "grpc.tls.ca: unknown field"),
    ("grpc: [1]", "grpc: must be a mapping"),
])
def test_grpc_errors_name_the_field(grpc, message):
    with pytest.raises(ConfigError, match=message):
        parse("node: r1\nperiod: 2\n" + grpc + "\n", "x.yaml")


def test_the_files_flows_and_stamp_become_api_messages():
    from srv6pm.southbound import validate
    c = parse(GOOD + "stamp: {reflector: {bind: 'fcff:4::2'}, sessions: [{name: s1, dest: 'fcff:4::2', rate: 5, "
                     "segments: ['fcff:2::1'], reflector: r4, auth_key_file: keys/s1.key}]}\n")
    flow, reflector, session = (validate.request(m) for m in c.objects())
    assert (flow.flow, flow.role, flow.source_prefix, flow.destination_prefix) == ("f1", 1, "fd01:1::2/128",
                                                                                  "fd01:4::101/128")
    assert (reflector.bind, reflector.port) == ("fcff:4::2", 862)
    assert (session.name, list(session.segments), session.rate, session.reflector_node) == ("s1", ["fcff:2::1"], 5, "r4")
    assert session.auth_key_file == os.path.join(os.getcwd(), "keys/s1.key")


def test_a_session_s_liveness_becomes_its_api_fields():
    from srv6pm.southbound import validate
    c = parse(GOOD + "stamp: {sessions: [{name: s1, dest: 'fcff:4::2', rate: 100, liveness: {down_after: 2}}, "
                     "{name: s2, dest: 'fcff:4::2', rate: 100}]}\n")
    s1, s2 = (validate.request(m) for m in c.objects()[1:])
    assert (s1.liveness, s1.liveness_down_after, s1.liveness_up_after) == (True, 2, 3)
    assert (s2.liveness, s2.liveness_down_after, s2.liveness_up_after) == (False, 0, 0)
    with pytest.raises(ConfigError, match=r"x.yaml: stamp.sessions\[0\].liveness.up_after: 0: must be a whole|"
                                          r"stamp.sessions\[0\].liveness.up_after: must be a whole number"):
        parse(GOOD + "stamp: {sessions: [{name: s1, dest: 'fcff:4::2', rate: 1, liveness: {up_after: 0}}]}\n",
              "x.yaml")


def test_node_and_period_from_outside_the_file_win_and_make_the_file_keys_optional():
    c = parse(GOOD, node=Override("k8s-node-7", "SRV6PM_NODE"), period=Override("5", "--period"))
    assert (c.node, c.period) == ("k8s-node-7", 5.0)
    bare = "flows: []\n"
    c = parse(bare, node=Override("router-7", "--node"), period=Override(2.5, "--period"))
    assert (c.node, c.period) == ("router-7", 2.5)
    c = parse("period: 3\n", node=Override("r9", "SRV6PM_NODE"))
    assert (c.node, c.period) == ("r9", 3.0)


@pytest.mark.parametrize("text, override, message", [
    ("period: 2\n", {}, "x.yaml: node: missing (or give --node or $SRV6PM_NODE)"),
    ("node: r1\n", {}, "x.yaml: period: missing (or give --period)"),
    ("period: 2\n", {"node": Override("a b", "SRV6PM_NODE")}, "SRV6PM_NODE: 'a b' is not a valid node name"),
    ("period: 2\n", {"node": Override("", "--node")}, "--node: '' is not a valid node name"),
    ("period: 2\n", {"node": Override("x" * 65, "--node")}, "--node: 'xxx"),
    ("node: r1\n", {"period": Override("soon", "--period")}, "--period: must be a number of seconds from 0.5 "
                                                            "to 3600, got 'soon'"),
    ("node: r1\n", {"period": Override("nan", "--period")}, "--period: must be a number of seconds"),
    ("node: r1\n", {"period": Override("0.1", "--period")}, "--period: must be a number of seconds"),
    # A wrong value in the file is an error even when it is overridden.
    ("node: 'a/b'\nperiod: 2\n", {"node": Override("r1", "--node")}, "x.yaml: node: 'a/b' is not a valid node"),
    ("node: r1\nperiod: '2'\n", {"period": Override("2", "--period")}, "x.yaml: period: must be a number"),
])
def test_node_and_period_errors_name_their_origin(text, override, message):
    with pytest.raises(ConfigError) as info:
        parse(text, "x.yaml", **override)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_reflector_backend():
    c = parse(GOOD)
    assert c.reflector_backend == "ebpf" and c.reflector is None  # ebpf unless the file says otherwise
    c = parse(GOOD + "stamp: {reflector: {backend: socket}}\n")
    assert c.reflector_backend == "socket" and c.reflector is None  # only the default for the API's reflectors
    assert not [m for m in c.objects() if type(m).__name__ == "StampReflector"]
    c = parse(GOOD + "stamp: {reflector: {bind: '::', backend: socket}}\n")
    (reflector,) = [m for m in c.objects() if type(m).__name__ == "StampReflector"]
    assert (reflector.bind, reflector.backend, c.reflector_backend) == ("::", "socket", "socket")
    (reflector,) = [m for m in parse(GOOD + "stamp: {reflector: {bind: '::'}}\n").objects()
                    if type(m).__name__ == "StampReflector"]
    assert reflector.backend == ""  # the exporter's default, whatever it is when the message is applied
    with pytest.raises(ConfigError, match=r"x.yaml: stamp.reflector.backend: must be one of ebpf, socket, got 'xdp'"):
        parse(GOOD + "stamp: {reflector: {bind: '::', backend: xdp}}\n", "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml: stamp.reflector.bind: missing"):
        parse(GOOD + "stamp: {reflector: {backend: ebpf, stateful: true}}\n", "x.yaml")
