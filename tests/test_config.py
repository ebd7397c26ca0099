import argparse

import pytest

from srv6pm.config import ConfigError, InfluxSettings, KafkaSettings


def parse(*argv):
    parser = argparse.ArgumentParser()
    KafkaSettings.add_arguments(parser)
    InfluxSettings.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_are_the_lab_addresses_without_secrets():
    k = KafkaSettings.from_args(parse(), env={})
    assert k.client_options() == {"bootstrap_servers": ["127.0.0.1:9092"], "security_protocol": "PLAINTEXT"}
    i = InfluxSettings.from_args(parse(), env={})
    assert (i.url, i.org, i.bucket, i.token) == ("http://127.0.0.1:8086", "srv6pm", "srv6pm", None)


def test_flags_override_environment():
    env = {"SRV6PM_KAFKA_BOOTSTRAP": "a:1,b:2", "SRV6PM_INFLUX_BUCKET": "x"}
    assert KafkaSettings.from_args(parse(), env=env).client_options()["bootstrap_servers"] == ["a:1", "b:2"]
    assert KafkaSettings.from_args(parse("--kafka", "c:3"), env=env).bootstrap == "c:3"
    assert InfluxSettings.from_args(parse(), env=env).bucket == "x"


def test_tls_options_reach_the_client(tmp_path):
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for f in (ca, cert, key):
        f.write_text("x")
    k = KafkaSettings.from_args(parse("--kafka-cafile", str(ca), "--kafka-certfile", str(cert),
                                      "--kafka-keyfile", str(key)), env={})
    opts = k.client_options()
    assert opts["security_protocol"] == "SSL" and opts["ssl_cafile"] == str(ca)
    assert opts["ssl_certfile"] == str(cert) and opts["ssl_keyfile"] == str(key) and opts["ssl_check_hostname"]


def test_mutual_tls_needs_both_files(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="both"):
        KafkaSettings.from_args(parse("--kafka-certfile", str(cert)), env={})


def test_unreadable_ca_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--kafka-cafile .*: no such file"):
        KafkaSettings.from_args(parse("--kafka-cafile", str(tmp_path / "none")), env={})


def test_sasl_password_only_from_environment_or_file_and_never_printed(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    k = KafkaSettings.from_args(parse("--kafka-security-protocol", "SASL_PLAINTEXT", "--kafka-sasl-mechanism",
                                      "SCRAM-SHA-256", "--kafka-username", "u"),
                                env={"SRV6PM_KAFKA_PASSWORD_FILE": str(secret)})
    assert k.client_options()["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in repr(k)
    with pytest.raises(ConfigError, match="SRV6PM_KAFKA_PASSWORD"):
        KafkaSettings.from_args(parse("--kafka-security-protocol", "SASL_SSL"), env={})
    with pytest.raises(ConfigError, match="not both"):
        KafkaSettings.from_args(parse(), env={"SRV6PM_KAFKA_PASSWORD": "a", "SRV6PM_KAFKA_PASSWORD_FILE": str(secret)})


def test_influx_token_from_file_and_url_checked(tmp_path):
    token = tmp_path / "token"
    token.write_text("tok\n")
    i = InfluxSettings.from_args(parse(), env={"SRV6PM_INFLUX_TOKEN_FILE": str(token)})
    assert i.token == "tok" and "tok" not in repr(i)
    with pytest.raises(ConfigError, match="http"):
        InfluxSettings.from_args(parse("--influx-url", "influx:8086"), env={})
