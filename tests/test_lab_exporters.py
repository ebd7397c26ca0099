"""The lab's exporter configurations (no root: nothing is started)."""

from __future__ import annotations

import json

from srv6pm.exporter.config import parse
from srv6pm.lab import scenario
from srv6pm.lab.runner import Lab

SCENARIO = """
period: 1
nodes: [r1, r2, r3, r4]
links: [[r1, r2], {ends: [r2, r3], delay_ms: 20}, [r3, r4]]
flows: []
stamp:
  - {name: s1, from: r1, to: r4, via: [r2, r3], return_via: [r3, r2], rate: 10}
"""


def test_the_reflector_is_ebpf_except_next_to_a_delayed_link(tmp_path):
    lab = Lab(scenario.parse(SCENARIO, source="test"), workdir=tmp_path)
    backends = {}
    for node in ("r1", "r2", "r3", "r4"):
        # loaded the way `srv6pm exporter run` loads the file the lab writes
        config = parse(json.dumps(lab.exporter_config(node)), f"exporter-{node}.json")
        assert (config.node, config.netns, config.reflector) == (node, node, None)
        backends[node] = config.reflector_backend
    # r2 and r3 add the 20 ms at postrouting, which replies sent by the eBPF reflector never pass
    assert backends == {"r1": "ebpf", "r2": "socket", "r3": "socket", "r4": "ebpf"}
