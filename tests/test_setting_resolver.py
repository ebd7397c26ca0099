"""One resolver for every setting: flag, then environment, then default (srv6pm.config.given / setting)."""

import argparse

from srv6pm.config import Given, given, setting


def _args(**values):
    return argparse.Namespace(**values)


def test_the_flag_wins_over_the_environment_and_keeps_its_type():
    env = {"SRV6PM_HEALTH_INTERVAL": "5"}
    assert given(_args(health_interval=2.5), "health_interval", "SRV6PM_HEALTH_INTERVAL", env) == \
        Given(2.5, "--health-interval")
    assert given(_args(metrics_port=0), "metrics_port", "SRV6PM_METRICS_PORT", {"SRV6PM_METRICS_PORT": "9"}) == \
        Given(0, "--metrics-port")  # 0 is a value (off), not "not given"


def test_then_the_environment_as_text_then_the_default():
    env = {"SRV6PM_NODE": "r1"}
    assert given(_args(node=None), "node", "SRV6PM_NODE", env) == Given("r1", "SRV6PM_NODE")
    assert given(_args(node=""), "node", "SRV6PM_NODE", env) == Given("r1", "SRV6PM_NODE")  # empty flag: not given
    assert given(None, "node", "SRV6PM_NODE", env) == Given("r1", "SRV6PM_NODE")  # no command line at all
    assert setting(_args(node=None), "node", "SRV6PM_NODE", "dflt", env={}) == "dflt"


def test_an_empty_or_blank_variable_is_not_set():
    for text in ("", "  ", "\n"):
        assert given(_args(node=None), "node", "SRV6PM_NODE", {"SRV6PM_NODE": text}) is None
        assert setting(_args(node=None), "node", "SRV6PM_NODE", 7, env={"SRV6PM_NODE": text}) == 7


def test_a_flag_without_variable():
    assert given(_args(period=None), "period", None, {"period": "1"}) is None
    assert given(_args(period=2.0), "period") == Given(2.0, "--period")


def test_the_environment_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("SRV6PM_X_TEST", "from env")
    assert setting(_args(x=None), "x", "SRV6PM_X_TEST") == "from env"
    monkeypatch.delenv("SRV6PM_X_TEST")
    assert setting(_args(x=None), "x", "SRV6PM_X_TEST", "d") == "d"
