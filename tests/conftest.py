"""Shared pytest fixtures: real embedded services on free loopback ports.

``broker``        session-wide Tansu broker; yields its bootstrap string.
``fresh_broker``  a broker of its own for one test (empty topics); yields its bootstrap string.
``influxdb``      session-wide EmbeddedInfluxDB (influxd 1.x + v2-write front); yields the object.
``free_port``     a callable returning a TCP port that is free on 127.0.0.1 right now.

Every test runs with ``SRV6PM_COLLECTOR_STATE_DIR`` set to a directory of its own
(autouse ``collector_state_dir``), so that no collector a test starts, in process or as a
child, keeps its state in the machine's default directory.

Every service is stopped (and its temporary directory removed) when its scope ends.

A test marked ``srv6`` makes SRv6 routes (seg6 encap, seg6local), itself or through the lab: on a kernel
built without them (:func:`srv6pm.srv6.missing`) it is skipped, with the kernel's reason, instead of failing
on every route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from srv6pm.lab.emulators.broker import EmbeddedBroker
from srv6pm.lab.emulators.influxdb import EmbeddedInfluxDB
from srv6pm.ports import free_port


find_free_port = free_port  # tests import it under this name


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test marked ``srv6`` where the kernel cannot make SRv6 routes (see the module docstring)."""
    if item.get_closest_marker("srv6") is not None:
        from srv6pm import srv6
        reason = srv6.missing()
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture(autouse=True)
def collector_state_dir(tmp_path_factory, monkeypatch):
    """A state directory of this test's own for every collector it starts (see the module docstring)."""
    path = tmp_path_factory.mktemp("collector-state")
    monkeypatch.setenv("SRV6PM_COLLECTOR_STATE_DIR", str(path))
    return path


@pytest.fixture
def free_port() -> Callable[[], int]:
    return find_free_port


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    with EmbeddedBroker(port=find_free_port()) as running:
        yield running.bootstrap


@pytest.fixture
def fresh_broker() -> Iterator[str]:
    with EmbeddedBroker(port=find_free_port()) as running:
        yield running.bootstrap


@pytest.fixture(scope="session")
def influxdb() -> Iterator[EmbeddedInfluxDB]:
    with EmbeddedInfluxDB(port=find_free_port()) as running:
        yield running
