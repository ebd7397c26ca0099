"""The topology graph in ArangoDB (python-arango): the storage primitives of :class:`GraphStore`.

Everything the graph means is in :mod:`srv6pm.collector.graph`; this module
only maps its primitives onto python-arango calls (the batch ones onto one
bulk request each: ``get_many``, ``insert_many``) and one AQL query, and
turns every driver or connection failure into
:class:`~srv6pm.collector.graph.GraphStoreError` naming the URL.

Settings (flags override the environment; the password only from the
environment or a file, never a default):

=====================  ============================  ======================
flag                   environment                   default
=====================  ============================  ======================
--arango-url           SRV6PM_ARANGO_URL             http://127.0.0.1:8529
--arango-database      SRV6PM_ARANGO_DATABASE        srv6pm
--arango-user          SRV6PM_ARANGO_USER            root
(secret)               SRV6PM_ARANGO_PASSWORD        (required; _FILE with an
                       or SRV6PM_ARANGO_PASSWORD_FILE  empty file: no password)
--arango-cafile        SRV6PM_ARANGO_CAFILE          (system CAs, https only)
=====================  ============================  ======================
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from arango import ArangoClient
from arango.exceptions import ArangoError, ArangoServerError
from arango.http import DefaultHTTPClient
from arango.result import Result

from srv6pm.config import ConfigError, given, given_file, secret, setting
from srv6pm.inputs import url as check_url
from srv6pm.quote import quote

from .graph import EDGE_DEFINITIONS, GRAPH, LINKS, NODES, NO_DELAY_WEIGHT, PATHS, GraphStore, GraphStoreError

__all__ = ["ArangoGraph", "ArangoSettings"]

_DB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_DATABASE_NOT_FOUND = 1228  # ERROR_ARANGO_DATABASE_NOT_FOUND
_DUPLICATE_NAME = 1207  # ERROR_ARANGO_DUPLICATE_NAME
_GRAPH_DUPLICATE = 1925  # ERROR_GRAPH_DUPLICATE

# Over the ``paths`` edge collection only (not GRAPH 'srv6pm'): ``links`` carry no delay_us.
_SHORTEST_PATH = f"""
FOR v, e IN OUTBOUND SHORTEST_PATH @src TO @dst {PATHS}
  OPTIONS {{weightAttribute: 'delay_us', defaultWeight: {int(NO_DELAY_WEIGHT)}}}
  FILTER e != null
  RETURN UNSET(e, '_id', '_rev')
"""


@dataclass(frozen=True)
class ArangoSettings:
    """Where the topology graph is kept."""

    url: str = "http://127.0.0.1:8529"
    database: str = "srv6pm"
    user: str = "root"
    password: str | None = None
    cafile: str | None = None

    def __repr__(self) -> str:  # never print the password
        return f"ArangoSettings(url={self.url!r}, database={self.database!r}, user={self.user!r})"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("ArangoDB (flags override SRV6PM_ARANGO_* environment variables)")
        g.add_argument("--arango-url", metavar="URL",
                       help="keep the graph in ArangoDB at URL (e.g. http://127.0.0.1:8529); without it, or "
                            "SRV6PM_ARANGO_URL, the graph is kept in memory and the other --arango-* settings "
                            "are refused")
        g.add_argument("--arango-database", metavar="NAME", help="default srv6pm (created if missing)")
        g.add_argument("--arango-user", metavar="NAME",
                       help="default root; password from SRV6PM_ARANGO_PASSWORD or SRV6PM_ARANGO_PASSWORD_FILE")
        g.add_argument("--arango-cafile", metavar="FILE", help="CA bundle to verify an https URL")

    @staticmethod
    def unused(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> None:
        """ConfigError naming the first ArangoDB setting given when no URL is (the graph is then in memory:
        a setting that would be silently ignored is refused)."""
        for attr, var in (("arango_database", "SRV6PM_ARANGO_DATABASE"), ("arango_user", "SRV6PM_ARANGO_USER"),
                          ("arango_cafile", "SRV6PM_ARANGO_CAFILE"), ("", "SRV6PM_ARANGO_PASSWORD"),
                          ("", "SRV6PM_ARANGO_PASSWORD_FILE")):
            found = given(args if attr else None, attr, var, env)
            if found is not None:
                raise ConfigError(f"{found.source}: an ArangoDB setting without --arango-url (or SRV6PM_ARANGO_URL): "
                                  "the graph is kept in memory; give the URL or leave the setting out")

    @classmethod
    def from_args(cls, args: argparse.Namespace | None = None,
                  env: Mapping[str, str] | None = None) -> "ArangoSettings":
        """Resolve flags, then environment, then defaults; raise ConfigError naming a bad or missing setting."""
        pick = partial(setting, args, env=env)

        found = given(args, "arango_url", "SRV6PM_ARANGO_URL", env)
        url = cls.url if found is None else check_url(found.value, found.source)
        database = pick("arango_database", "SRV6PM_ARANGO_DATABASE") or cls.database
        if not _DB_NAME.fullmatch(database):
            raise ConfigError(f"ArangoDB database {quote(database)} is not a valid name "
                              "(a letter, then letters, digits, '_' or '-'; at most 64)")
        password = secret(env, "SRV6PM_ARANGO_PASSWORD")
        if password is None:
            raise ConfigError("ArangoDB password: set SRV6PM_ARANGO_PASSWORD or SRV6PM_ARANGO_PASSWORD_FILE "
                              "(an empty file for a server without authentication)")
        return cls(url=url, database=database, user=pick("arango_user", "SRV6PM_ARANGO_USER") or cls.user,
                   password=password,
                   cafile=given_file(args, "arango_cafile", "SRV6PM_ARANGO_CAFILE", env))


class ArangoGraph(GraphStore):
    """:class:`GraphStore` in ArangoDB database ``database`` at ``url``.

    Construction contacts the server once (raising
    :class:`~srv6pm.collector.graph.GraphStoreError` that names the URL when it
    cannot be reached or refuses the credentials); :meth:`ensure` then creates
    the database (through ``_system``, which needs the right to), the
    collections and the graph. ``retries`` are the HTTP client's retries per
    request, ``timeout_s`` its request timeout.
    """

    def __init__(self, url: str, database: str, user: str, password: str | None, *, cafile: str | None = None,
                 timeout_s: float = 10.0, retries: int = 3, clock_ns: Callable[[], int] = time.time_ns):
        super().__init__(clock_ns)
        if not isinstance(password, str):
            raise ConfigError("ArangoDB password: required (use '' for a server without authentication)")
        self.url = url
        self.database = database
        self._user = user
        self._password = password
        self._client = ArangoClient(
            hosts=url, verify_override=cafile or None,
            http_client=DefaultHTTPClient(request_timeout=timeout_s, retry_attempts=retries, backoff_factor=0.5))
        self._db = self._client.db(database, username=user, password=password)
        self._exists = self._probe()

    @classmethod
    def from_settings(cls, settings: ArangoSettings, **options) -> "ArangoGraph":
        return cls(settings.url, settings.database, settings.user, settings.password, cafile=settings.cafile,
                   **options)

    def __repr__(self) -> str:
        return f"ArangoGraph(url={self.url!r}, database={self.database!r})"

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except ArangoServerError as exc:
            if exc.http_code == 401:
                raise GraphStoreError(f"ArangoDB {self.url}: user {self._user!r}: wrong user name or password "
                                      f"({what})") from None
            raise GraphStoreError(f"ArangoDB {self.url}: {what}: {exc}") from None
        except (ArangoError, OSError) as exc:
            raise GraphStoreError(f"ArangoDB {self.url}: cannot {what}: {exc}") from None

    def _probe(self) -> bool:
        """True if the database exists; False if it does not (yet); GraphStoreError otherwise."""
        try:
            self._db.properties()
        except ArangoServerError as exc:
            if exc.error_code == _DATABASE_NOT_FOUND:
                return False
            with self._errors("connect"):
                raise
        except (ArangoError, OSError):
            with self._errors("connect"):
                raise
        return True

    def close(self) -> None:
        self._client.close()

    # -- primitives ------------------------------------------------------------------

    def _create(self) -> None:
        if not self._exists:
            system = self._client.db("_system", username=self._user, password=self._password)
            with self._errors(f"create database {self.database!r}"):
                try:
                    system.create_database(self.database)
                except ArangoServerError as exc:
                    if exc.error_code != _DUPLICATE_NAME:
                        raise
            self._exists = True
        with self._errors("create the collections and graph"):
            for name, edge in ((NODES, False), (LINKS, True), (PATHS, True)):
                if not self._db.has_collection(name):
                    try:
                        self._db.create_collection(name, edge=edge)
                    except ArangoServerError as exc:
                        if exc.error_code != _DUPLICATE_NAME:
                            raise
            if not self._db.has_graph(GRAPH):
                try:
                    self._db.create_graph(GRAPH, edge_definitions=EDGE_DEFINITIONS)
                except ArangoServerError as exc:
                    if exc.error_code not in (_DUPLICATE_NAME, _GRAPH_DUPLICATE):
                        raise

    def _get(self, collection: str, key: str) -> dict | None:
        with self._errors(f"read {collection}/{key}"):
            doc = _answer(self._db.collection(collection).get(key))
        return _plain(doc) if doc is not None else None

    def _put(self, collection: str, doc: dict) -> None:
        with self._errors(f"write {collection}/{doc['_key']}"):
            self._db.collection(collection).insert(doc, overwrite=True, overwrite_mode="replace", silent=True)

    def _get_many(self, collection: str, keys) -> dict[str, dict]:
        keys = sorted(keys)
        if not keys:
            return {}
        with self._errors(f"read {len(keys)} documents of {collection}"):
            return {d["_key"]: _plain(d) for d in _answer(self._db.collection(collection).get_many(keys))}

    def _put_many(self, collection: str, docs: list[dict]) -> None:
        if not docs:
            return
        with self._errors(f"write {len(docs)} documents of {collection}"):
            self._db.collection(collection).insert_many(docs, overwrite_mode="replace", silent=True,
                                                        raise_on_document_error=True)

    def _delete(self, collection: str, key: str) -> None:
        with self._errors(f"delete {collection}/{key}"):
            self._db.collection(collection).delete(key, ignore_missing=True, silent=True)

    def _all(self, collection: str) -> list[dict]:
        with self._errors(f"list {collection}"):
            return [_plain(d) for d in _answer(self._db.collection(collection).all())]

    def _shortest(self, src: str, dst: str) -> list[dict]:
        with self._errors("query a shortest path"):
            cursor = self._db.aql.execute(_SHORTEST_PATH, bind_vars={"src": f"{NODES}/{src}", "dst": f"{NODES}/{dst}"})
            return list(_answer(cursor))


def _answer(result: Result[Any]) -> Any:
    """The value of a python-arango call on a standard (synchronous) database.

    python-arango types every call as "value, async job, batch job or None"; this
    class only uses a standard database, which answers with the value itself.
    """
    return result


def _plain(doc: dict) -> dict:
    """The document without the server's ``_id`` and ``_rev``."""
    return {k: v for k, v in doc.items() if k not in ("_id", "_rev")}
