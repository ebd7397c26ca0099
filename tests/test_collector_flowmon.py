"""FlowMonID allocation: unique, stable across restarts (the state file), reused only after a flow is gone,
never-used ids first, a clear error when they run out or the file is unusable (never a silent reset)."""

from __future__ import annotations

import json

import pytest

from srv6pm.collector import flowmon
from srv6pm.collector.flowmon import Allocator, FlowMonError
from srv6pm.southbound.validate import FLOWMON_ID_MAX


@pytest.fixture
def path(tmp_path):
    return flowmon.state_path(tmp_path / "state")


def test_ids_are_unique_in_range_and_the_file_is_versioned_json(path):
    ids = Allocator(path).allocate(["f1", "f2", "f3"])
    assert ids == {"f1": 1, "f2": 2, "f3": 3}
    assert json.loads(path.read_text()) == {"v": 1, "next": 4, "flows": {"f1": 1, "f2": 2, "f3": 3}, "released": []}
    assert [p.name for p in path.parent.iterdir()] == [flowmon.STATE_FILE]  # no temporary file left


def test_a_flow_keeps_its_id_across_reloads_and_restarts(path):
    first = Allocator(path)
    assert first.allocate(["a", "b"]) == {"a": 1, "b": 2}
    assert first.allocate(["b", "a", "c"]) == {"b": 2, "a": 1, "c": 3}  # a reload adds c
    restarted = Allocator(path)
    assert restarted.ids == {"a": 1, "b": 2, "c": 3}
    assert restarted.allocate(["c", "b", "a"]) == {"c": 3, "b": 2, "a": 1}


def test_an_id_is_not_reused_while_never_used_ones_remain(path):
    allocator = Allocator(path)
    allocator.allocate(["a", "b", "c"])
    assert allocator.allocate(["a", "c"]) == {"a": 1, "c": 3}  # b is gone: 2 is freed
    assert allocator.allocate(["a", "c", "d"]) == {"a": 1, "c": 3, "d": 4}  # but not handed out yet
    assert allocator.allocate(["a", "c", "d", "b"])["b"] == 5  # b back is a new flow: a new id
    assert Allocator(path).allocate(["a", "c", "d", "b", "e"])["e"] == 6  # released survives a restart too


def test_freed_ids_are_recycled_longest_freed_first_only_when_the_space_is_exhausted(path):
    allocator = Allocator(path, max_id=4)
    allocator.allocate(["a", "b", "c", "d"])
    allocator.allocate(["a", "b", "c"])  # d (4) freed first
    allocator.allocate(["a", "c"])  # then b (2)
    assert Allocator(path, max_id=4).allocate(["a", "c", "x"])["x"] == 4
    assert Allocator(path, max_id=4).allocate(["a", "c", "x", "y"])["y"] == 2


def test_exhaustion_is_an_error_and_changes_nothing(path):
    allocator = Allocator(path, max_id=2)
    allocator.allocate(["a", "b"])
    before = path.read_text()
    with pytest.raises(FlowMonError, match=r"no free FlowMonID for flow 'c': all 2 are in use \(3 flows"):
        allocator.allocate(["a", "b", "c"])
    assert path.read_text() == before and allocator.ids == {"a": 1, "b": 2}
    # Removing one in the same change makes room: reuse after the flow is gone.
    assert allocator.allocate(["a", "c"]) == {"a": 1, "c": 2}


def test_the_full_space_is_20_bits():
    assert Allocator(None).max_id == FLOWMON_ID_MAX == 1048575
    with pytest.raises(ValueError):
        Allocator(None, max_id=FLOWMON_ID_MAX + 1)


def test_check_asks_without_writing(path):
    allocator = Allocator(path)
    assert allocator.allocate(["a"], save=False) == {"a": 1}
    assert not path.exists() and allocator.ids == {}
    allocator.allocate(["a"])
    assert allocator.allocate(["b"], save=False) == {"b": 2}
    assert allocator.ids == {"a": 1} and json.loads(path.read_text())["flows"] == {"a": 1}


def test_in_memory_allocator_writes_nothing(tmp_path):
    allocator = Allocator(None)
    assert allocator.allocate(["a", "b"]) == {"a": 1, "b": 2}
    assert allocator.allocate(["b"]) == {"b": 2}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, words", [
    ("{not json", "is not JSON"),
    ("[]", "is not a version 1 document"),
    ('{"v": 2, "next": 1, "flows": {}, "released": []}', "is not a version 1 document"),
    ('{"v": 1, "next": 1, "flows": {}}', "exactly the keys v, next, flows and released"),
    ('{"v": 1, "next": 0, "flows": {}, "released": []}', "has next 0, not in 1..1048576"),
    ('{"v": 1, "next": "2", "flows": {}, "released": []}', "has next '2'"),
    ('{"v": 1, "next": 3, "flows": [], "released": []}', "flows as an object"),
    ('{"v": 1, "next": 3, "flows": {"a": 3}, "released": []}', "gives flow 'a' the id 3, not in 1..2"),
    ('{"v": 1, "next": 3, "flows": {"a": true}, "released": []}', "gives flow 'a' the id True"),
    ('{"v": 1, "next": 3, "flows": {"a": 1, "b": 1}, "released": []}', "gives id 1 to both flow 'a' and flow 'b'"),
    ('{"v": 1, "next": 3, "flows": {"a": 1}, "released": [1]}', "gives id 1 to both flow 'a' and released"),
])
def test_a_corrupt_state_file_is_one_clear_line_not_a_reset(path, content, words):
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(FlowMonError) as err:
        Allocator(path)
    message = str(err.value)
    assert message.startswith(f"{path}: FlowMonID state file ") and words in message, message
    assert "\n" not in message and "removing it gives every flow a new FlowMonID" in message
    assert path.read_text() == content  # left as it was


def test_an_unreadable_state_file_is_an_error(path):
    path.mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(FlowMonError, match="FlowMonID state file cannot be read: Is a directory"):
        Allocator(path)


def test_a_failed_write_is_an_error_and_keeps_the_old_allocation(tmp_path):
    state_dir = tmp_path / "state"
    allocator = Allocator(flowmon.state_path(state_dir))
    allocator.allocate(["a"])
    (state_dir / flowmon.STATE_FILE).unlink()
    state_dir.rmdir()
    state_dir.write_text("a file, not a directory")
    with pytest.raises(FlowMonError, match=r"cannot write the FlowMonID state file: (Not a directory|File exists)"):
        allocator.allocate(["a", "b"])
    assert allocator.ids == {"a": 1}
    state_dir.unlink()
    assert allocator.allocate(["a", "b"]) == {"a": 1, "b": 2}


@pytest.mark.parametrize("dataplane", ["nftables", "ebpf"])
def test_assign_gives_every_data_plane_s_flows_their_ids_and_keeps_them_when_it_changes(path, dataplane):
    """Issue 8 point 1: the collector allocates the FlowMonID whatever the data plane; a flow keeps it across a
    restart, and across a reload that switches the data plane, and only a gone flow's id is reused."""
    import copy

    import yaml

    from srv6pm.collector import config
    from test_collector_config import GOOD

    def parsed(dp, drop=()):
        doc = {**copy.deepcopy(GOOD), "dataplane": dp}
        doc["flows"] = [f for f in doc["flows"] if f["name"] not in drop]
        return config.parse(yaml.safe_dump(doc), source="c.yaml")

    assert dict(flowmon.assign(parsed(dataplane), Allocator(path)).flowmon_ids) == {"f1": 1, "f2": 2}
    assert json.loads(path.read_text())["flows"] == {"f1": 1, "f2": 2}  # saved before it is used
    other = "ebpf" if dataplane == "nftables" else "nftables"
    restarted = Allocator(path)
    assert dict(flowmon.assign(parsed(other), restarted).flowmon_ids) == {"f1": 1, "f2": 2}
    assert dict(flowmon.assign(parsed(dataplane, drop={"f1"}), restarted).flowmon_ids) == {"f2": 2}
    assert flowmon.assign(parsed(dataplane), restarted, save=False).flowmon_ids == {"f2": 2, "f1": 3}
    assert restarted.ids == {"f2": 2}  # check (save=False) changed nothing
