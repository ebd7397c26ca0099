"""Connection settings shared by every component: Kafka and InfluxDB.

Each setting comes from a command-line flag, else from an environment
variable, else from a default. Secrets (passwords, tokens) come only from the
environment or from files, never from flags (which show in ``ps``) and never
from defaults in code. Every component resolves its settings this way with
:func:`given` / :func:`setting` (flag, environment, default), :func:`secret`
and :func:`readable` (below the table).

==========================  ===================================  =======================
flag                        environment                          default
==========================  ===================================  =======================
--kafka                     SRV6PM_KAFKA_BOOTSTRAP               127.0.0.1:9092
--kafka-security-protocol   SRV6PM_KAFKA_SECURITY_PROTOCOL       PLAINTEXT (or SSL if a
                                                                 CA file is given)
--kafka-cafile              SRV6PM_KAFKA_CAFILE                  (system CAs)
--kafka-certfile            SRV6PM_KAFKA_CERTFILE                (no client cert)
--kafka-keyfile             SRV6PM_KAFKA_KEYFILE
--kafka-sasl-mechanism      SRV6PM_KAFKA_SASL_MECHANISM          (no SASL)
--kafka-username            SRV6PM_KAFKA_USERNAME
(secret)                    SRV6PM_KAFKA_PASSWORD or _FILE
--influx-url                SRV6PM_INFLUX_URL                    http://127.0.0.1:8086
--influx-org                SRV6PM_INFLUX_ORG                    srv6pm
--influx-bucket             SRV6PM_INFLUX_BUCKET                 srv6pm
(secret)                    SRV6PM_INFLUX_TOKEN or _FILE         (none: InfluxDB 1.x
                                                                 without auth)
--influx-cafile             SRV6PM_INFLUX_CAFILE                 (system CAs)
==========================  ===================================  =======================
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Mapping

from srv6pm.errors import InputError
from srv6pm.quote import quote

__all__ = ["ConfigError", "Given", "InfluxSettings", "KafkaSettings", "given", "given_file", "readable", "secret",
           "setting"]

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class ConfigError(InputError, ValueError):
    """A setting is missing or invalid; ``str()`` names it."""


@dataclass(frozen=True)
class Given:
    """A setting as given: its ``value`` and where it came from (``source``: ``--flag`` or ``SRV6PM_VAR``)."""

    value: Any
    source: str


def given(args: argparse.Namespace | None, attr: str, var: str | None = None,
          env: Mapping[str, str] | None = None) -> Given | None:
    """Flag, then environment: the flag of ``args`` whose dest is ``attr``, else ``$var``; None when neither is given.

    A flag counts as given unless it is None or ""; it keeps the type its
    parser gave it, and its source is ``--attr-with-dashes``. A variable counts
    as set unless it is empty or blank; its value is the text as set.
    ``env`` defaults to ``os.environ``.
    """
    value = getattr(args, attr, None) if args is not None else None
    if value is not None and value != "":
        return Given(value, "--" + attr.replace("_", "-"))
    env = os.environ if env is None else env
    text = env.get(var) if var else None
    return Given(text, var) if var and text and text.strip() else None


def setting(args: argparse.Namespace | None, attr: str, var: str | None = None, default: Any = None,
            env: Mapping[str, str] | None = None) -> Any:
    """Flag, then environment, then ``default``: the value :func:`given` finds, else ``default``."""
    found = given(args, attr, var, env)
    return default if found is None else found.value


def secret(env: Mapping[str, str] | None, name: str) -> str | None:
    """The secret in ``$name``, or in the file named by ``$name_FILE`` (trailing newline stripped).

    ``env`` None is ``os.environ``.
    """
    env = os.environ if env is None else env
    value = env.get(name)
    path = env.get(f"{name}_FILE")
    if value and path:
        raise ConfigError(f"set either {name} or {name}_FILE, not both")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{name}_FILE={path}: not UTF-8 text") from None
    return value or None


def readable(path: str | None, what: str) -> str | None:
    """``path`` when it is None or a file this process can read; else ConfigError naming ``what``
    (exists, is a file, can be read: :func:`srv6pm.inputs.readable_file`)."""
    from srv6pm.inputs import readable_file
    return readable_file(path, what) if path else path


def given_file(args: argparse.Namespace | None, attr: str, var: str,
               env: Mapping[str, str] | None = None) -> str | None:
    """The file named by flag ``attr``, else ``$var``, checked as :func:`readable`, the error naming its source."""
    found = given(args, attr, var, env)
    return None if found is None else readable(found.value, found.source)


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the Kafka cluster."""

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never print the password
        return f"KafkaSettings(bootstrap={self.bootstrap!r}, security_protocol={self.security_protocol!r})"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("Kafka (flags override SRV6PM_KAFKA_* environment variables)")
        g.add_argument("--kafka", metavar="HOST:PORT[,…]", help="bootstrap servers (default 127.0.0.1:9092)")
        g.add_argument("--kafka-security-protocol", choices=_PROTOCOLS,
                       help="default PLAINTEXT, or SSL when a CA file is given")
        g.add_argument("--kafka-cafile", metavar="FILE", help="CA bundle to verify the brokers (TLS)")
        g.add_argument("--kafka-certfile", metavar="FILE", help="client certificate (mutual TLS)")
        g.add_argument("--kafka-keyfile", metavar="FILE", help="client private key (mutual TLS)")
        g.add_argument("--kafka-sasl-mechanism", choices=_MECHANISMS,
                       help="SASL mechanism; password from SRV6PM_KAFKA_PASSWORD or SRV6PM_KAFKA_PASSWORD_FILE")
        g.add_argument("--kafka-username", metavar="NAME", help="SASL user name")

    @classmethod
    def from_args(cls, args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> "KafkaSettings":
        env = os.environ if env is None else env
        pick = partial(setting, args, env=env)

        cafile = given_file(args, "kafka_cafile", "SRV6PM_KAFKA_CAFILE", env)
        found = given(args, "kafka_security_protocol", "SRV6PM_KAFKA_SECURITY_PROTOCOL", env)
        protocol = found.value if found is not None else ("SSL" if cafile else "PLAINTEXT")
        if protocol not in _PROTOCOLS:
            raise ConfigError(f"{found.source if found else 'Kafka security protocol'} {quote(protocol)}: not one of "
                              f"{', '.join(_PROTOCOLS)}")
        found_mechanism = given(args, "kafka_sasl_mechanism", "SRV6PM_KAFKA_SASL_MECHANISM", env)
        mechanism = found_mechanism.value if found_mechanism is not None else None
        if found_mechanism is not None and mechanism not in _MECHANISMS:
            raise ConfigError(f"{found_mechanism.source} {quote(mechanism)}: not one of {', '.join(_MECHANISMS)}")
        from srv6pm.inputs import host_ports
        bootstrap = given(args, "kafka", "SRV6PM_KAFKA_BOOTSTRAP", env)
        if bootstrap is not None:
            host_ports(bootstrap.value, bootstrap.source, default_port=9092)  # kafka-python's default port
        settings = cls(
            bootstrap=cls.bootstrap if bootstrap is None else bootstrap.value,
            security_protocol=protocol,
            cafile=cafile,
            certfile=given_file(args, "kafka_certfile", "SRV6PM_KAFKA_CERTFILE", env),
            keyfile=given_file(args, "kafka_keyfile", "SRV6PM_KAFKA_KEYFILE", env),
            sasl_mechanism=mechanism,
            username=pick("kafka_username", "SRV6PM_KAFKA_USERNAME"),
            password=secret(env, "SRV6PM_KAFKA_PASSWORD"),
        )
        if protocol.startswith("SASL") and not (mechanism and settings.username and settings.password):
            raise ConfigError(f"Kafka {protocol} needs --kafka-sasl-mechanism, --kafka-username and "
                              "SRV6PM_KAFKA_PASSWORD (or SRV6PM_KAFKA_PASSWORD_FILE)")
        if bool(settings.certfile) != bool(settings.keyfile):
            raise ConfigError("Kafka mutual TLS needs both --kafka-certfile and --kafka-keyfile")
        if not protocol.startswith("SASL") and (mechanism or settings.username or settings.password):
            raise ConfigError(f"Kafka SASL settings (--kafka-sasl-mechanism, --kafka-username, SRV6PM_KAFKA_PASSWORD) "
                              f"are used only with --kafka-security-protocol SASL_SSL or SASL_PLAINTEXT, not {protocol}")
        if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and (cafile or settings.certfile):
            raise ConfigError(f"Kafka TLS files (--kafka-cafile, --kafka-certfile, --kafka-keyfile) are used only with "
                              f"--kafka-security-protocol SSL or SASL_SSL, not {protocol}")
        return settings

    def client_options(self) -> dict:
        """Keyword arguments for kafka-python's clients."""
        opts: dict = {"bootstrap_servers": self.bootstrap.split(","), "security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            opts.update(ssl_check_hostname=True, ssl_cafile=self.cafile,
                        ssl_certfile=self.certfile, ssl_keyfile=self.keyfile)
        if self.security_protocol.startswith("SASL"):
            opts.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                        sasl_plain_password=self.password)
        return opts


@dataclass(frozen=True)
class InfluxSettings:
    """Where results are stored (InfluxDB v2 write API: InfluxDB 1.8+, 2.x, 3.x)."""

    url: str = "http://127.0.0.1:8086"
    org: str = "srv6pm"
    bucket: str = "srv6pm"
    token: str | None = None
    cafile: str | None = None

    def __repr__(self) -> str:  # never print the token
        return f"InfluxSettings(url={self.url!r}, org={self.org!r}, bucket={self.bucket!r})"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("InfluxDB (flags override SRV6PM_INFLUX_* environment variables)")
        g.add_argument("--influx-url", metavar="URL", help="default http://127.0.0.1:8086")
        g.add_argument("--influx-org", metavar="ORG", help="organisation (default srv6pm; ignored by 1.x)")
        g.add_argument("--influx-bucket", metavar="BUCKET",
                       help="bucket, or database[/retention-policy] on 1.x (default srv6pm); "
                            "token from SRV6PM_INFLUX_TOKEN or SRV6PM_INFLUX_TOKEN_FILE")
        g.add_argument("--influx-cafile", metavar="FILE", help="CA bundle to verify an https URL")

    @classmethod
    def from_args(cls, args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> "InfluxSettings":
        env = os.environ if env is None else env
        pick = partial(setting, args, env=env)

        from srv6pm.inputs import url as check_url
        found = given(args, "influx_url", "SRV6PM_INFLUX_URL", env)
        url = cls.url if found is None else check_url(found.value, found.source)
        return cls(
            url=url,
            org=pick("influx_org", "SRV6PM_INFLUX_ORG") or cls.org,
            bucket=pick("influx_bucket", "SRV6PM_INFLUX_BUCKET") or cls.bucket,
            token=secret(env, "SRV6PM_INFLUX_TOKEN"),
            cafile=given_file(args, "influx_cafile", "SRV6PM_INFLUX_CAFILE", env),
        )
