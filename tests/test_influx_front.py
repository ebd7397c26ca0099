"""The InfluxDB v2-write front against a real influxd 1.x, written to with influxdb-client."""

from __future__ import annotations

import gzip
import http.client
import json
import uuid
from urllib.parse import urlencode, urlsplit

import pytest
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from srv6pm.lab.emulators.influx_front import InfluxFront, bucket_to_database

pytestmark = pytest.mark.services

T0 = 1_764_000_000_123_456_789  # ns since epoch, with sub-microsecond digits


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(influxdb):
    with InfluxDBClient(url=influxdb.url, token="not-checked", org="srv6pm", timeout=10_000) as c:
        yield c


def influxql(url: str, query: str, database: str = "srv6pm") -> list[dict]:
    """Run InfluxQL through the front's /query; return the first result's series."""
    status, body = request(url, "GET", "/query?" + urlencode({"db": database, "q": query, "epoch": "ns"}))
    assert status == 200, body
    result = json.loads(body)["results"][0]
    assert "error" not in result, result
    return result.get("series", [])


def rows(url: str, query: str, database: str = "srv6pm") -> list[dict]:
    series = influxql(url, query, database)
    if not series:
        return []
    (only,) = series
    return [dict(zip(only["columns"], values)) for values in only["values"]]


def request(url: str, method: str, target: str, body: bytes | None = None, headers: dict | None = None):
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_written_points_read_back_exactly(influxdb, client):
    measurement = unique("exact")
    points = [
        Point(measurement).tag("flow", "f1").field("lost_packets", 1).field("loss_ratio", 0.1)
        .field("complete", True).time(T0, WritePrecision.NS),
        Point(measurement).tag("flow", "f1").field("lost_packets", 2**62 + 1).field("loss_ratio", 1e-9)
        .field("complete", False).time(T0 + 1, WritePrecision.NS),
    ]
    client.write_api(write_options=SYNCHRONOUS).write("srv6pm", record=points, write_precision=WritePrecision.NS)

    got = rows(influxdb.url, f'SELECT lost_packets, loss_ratio, complete, flow FROM "{measurement}"')
    assert got == [
        {"time": T0, "lost_packets": 1, "loss_ratio": 0.1, "complete": True, "flow": "f1"},
        {"time": T0 + 1, "lost_packets": 2**62 + 1, "loss_ratio": 1e-9, "complete": False, "flow": "f1"},
    ]
    # The integer field is stored as an integer, not as a float.
    (fields,) = influxql(influxdb.url, f'SHOW FIELD KEYS FROM "{measurement}"')
    assert sorted(fields["values"]) == [["complete", "boolean"], ["loss_ratio", "float"], ["lost_packets", "integer"]]


def test_writing_the_same_point_twice_stores_one_point(influxdb, client):
    measurement = unique("idem")
    write = client.write_api(write_options=SYNCHRONOUS)
    point = Point(measurement).tag("flow", "f2").field("tx_packets", 500).time(T0, WritePrecision.NS)
    write.write("srv6pm", record=point)
    write.write("srv6pm", record=point)

    assert rows(influxdb.url, f'SELECT tx_packets FROM "{measurement}"') == [{"time": T0, "tx_packets": 500}]


def test_malformed_line_protocol_is_rejected_with_400(influxdb, client):
    measurement = unique("bad")
    with pytest.raises(ApiException) as caught:
        client.write_api(write_options=SYNCHRONOUS).write("srv6pm", record=f"{measurement},flow=f1 value=")
    assert caught.value.status == 400
    body = json.loads(caught.value.body)
    assert body["code"] == "invalid"
    assert "unable to parse" in body["message"]
    assert rows(influxdb.url, f'SELECT * FROM "{measurement}"') == []


def test_unknown_database_is_404(client):
    with pytest.raises(ApiException) as caught:
        client.write_api(write_options=SYNCHRONOUS).write(unique("nodb"), record="m value=1i")
    assert caught.value.status == 404
    assert json.loads(caught.value.body)["code"] == "not found"


def test_bucket_with_retention_policy(influxdb, client):
    measurement = unique("rp")
    client.write_api(write_options=SYNCHRONOUS).write(
        "srv6pm/autogen", record=f"{measurement},flow=f3 lost_packets=7i {T0}"
    )
    assert rows(influxdb.url, f'SELECT lost_packets FROM "srv6pm"."autogen"."{measurement}"') == [
        {"time": T0, "lost_packets": 7}
    ]


def test_unknown_retention_policy_is_an_error(client):
    with pytest.raises(ApiException) as caught:
        client.write_api(write_options=SYNCHRONOUS).write("srv6pm/nope", record="m value=1i")
    assert caught.value.status == 500  # what InfluxDB 1.x answers
    assert "retention policy not found" in json.loads(caught.value.body)["message"]


@pytest.mark.parametrize(
    ("precision", "timestamp", "stored"),
    [("s", 1_764_000_000, 1_764_000_000 * 10**9), ("ms", 1_764_000_000_123, 1_764_000_000_123 * 10**6),
     ("us", 1_764_000_000_123_456, 1_764_000_000_123_456 * 1000), ("ns", T0, T0)],
)
def test_precision_is_translated(influxdb, precision, timestamp, stored):
    measurement = unique("prec")
    target = "/api/v2/write?" + urlencode({"org": "x", "bucket": "srv6pm", "precision": precision})
    status, body = request(influxdb.url, "POST", target, f"{measurement} v=1i {timestamp}".encode())
    assert status == 204, body
    assert rows(influxdb.url, f'SELECT v FROM "{measurement}"') == [{"time": stored, "v": 1}]


def test_invalid_precision_and_bucket(influxdb):
    status, body = request(influxdb.url, "POST", "/api/v2/write?bucket=srv6pm&precision=h", b"m v=1i")
    assert status == 400 and json.loads(body)["code"] == "invalid"
    status, body = request(influxdb.url, "POST", "/api/v2/write?bucket=/autogen", b"m v=1i")
    assert status == 404 and "empty database" in json.loads(body)["message"]
    status, body = request(influxdb.url, "POST", "/api/v2/write?org=o", b"m v=1i")
    assert status == 404


def test_gzip_body_passes_through(influxdb):
    measurement = unique("gzip")
    with InfluxDBClient(url=influxdb.url, token="x", org="srv6pm", enable_gzip=True) as gz:
        gz.write_api(write_options=SYNCHRONOUS).write("srv6pm", record=f"{measurement} v=3i {T0}")
    assert rows(influxdb.url, f'SELECT v FROM "{measurement}"') == [{"time": T0, "v": 3}]


def test_chunked_request_body(influxdb):
    measurement = unique("chunked")
    parts = urlsplit(influxdb.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    lines = [f"{measurement} v={i}i {T0 + i}\n".encode() for i in range(100)]
    connection.request("POST", "/api/v2/write?bucket=srv6pm", body=iter(lines), encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 204, response.read()
    connection.close()
    assert len(rows(influxdb.url, f'SELECT v FROM "{measurement}"')) == 100


def test_body_over_the_limit_is_413_and_nothing_is_written(influxdb):
    measurement = unique("big")
    with InfluxFront(influxdb.engine_url, port=0, max_body_bytes=1000) as small:
        body = "".join(f"{measurement} v={i}i {T0 + i}\n" for i in range(5000)).encode()
        assert len(body) > 100_000  # more than socket buffers hold: the front must drain, not reset
        status, answer = request(small.url, "POST", "/api/v2/write?bucket=srv6pm", body)
        assert status == 413 and json.loads(answer)["code"] == "request too large"

        # Chunked: found too large while streaming; the engine must not commit a prefix.
        parts = urlsplit(small.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        chunks = [body[i:i + 4096] for i in range(0, len(body), 4096)]
        connection.request("POST", "/api/v2/write?bucket=srv6pm", body=iter(chunks), encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413
        connection.close()
    assert rows(influxdb.url, f'SELECT v FROM "{measurement}"') == []


def test_flux_query_api_is_not_implemented(client):
    with pytest.raises(ApiException) as caught:
        client.query_api().query('from(bucket: "srv6pm") |> range(start: -1h)')
    assert caught.value.status == 501
    assert "only translates" in json.loads(caught.value.body)["message"]


@pytest.mark.filterwarnings("ignore:This method is deprecated:DeprecationWarning")  # health(): the /health route
def test_ping_health_and_query_pass_through(influxdb, client):
    assert client.ping() is True
    assert client.version().startswith("1.")
    health = client.health()
    assert health.status == "pass" and health.name == "influxdb"

    status, _ = request(influxdb.url, "HEAD", "/ping")
    assert status == 204
    # POST /query with a form body, as 1.x clients send it.
    status, body = request(
        influxdb.url, "POST", "/query",
        urlencode({"q": "SHOW DATABASES"}).encode(), {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200 and ["srv6pm"] in json.loads(body)["results"][0]["series"][0]["values"]
    # InfluxQL errors keep the 1.x shape and status.
    status, body = request(influxdb.url, "GET", "/query?" + urlencode({"q": "SELEKT 1"}))
    assert status == 400 and "error" in json.loads(body)


def test_health_fails_when_engine_is_down(free_port):
    with InfluxFront(f"http://127.0.0.1:{free_port()}", port=0) as orphan:
        status, body = request(orphan.url, "GET", "/health")
        assert status == 503 and json.loads(body)["status"] == "fail"
        status, body = request(orphan.url, "POST", "/api/v2/write?bucket=srv6pm", b"m v=1i")
        assert status == 503 and json.loads(body)["code"] == "unavailable"


def test_keep_alive_connection_serves_several_requests(influxdb):
    parts = urlsplit(influxdb.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        for _ in range(3):
            connection.request("POST", "/api/v2/write?bucket=srv6pm", body=f"{unique('ka')} v=1i".encode())
            response = connection.getresponse()
            response.read()
            assert response.status == 204
            connection.request("GET", "/api/v2/buckets")  # 501 answered on the same connection
            response = connection.getresponse()
            response.read()
            assert response.status == 501
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [("db", ("db", "")), ("db/rp", ("db", "rp")), ("db/", ("db", "")), ("db/r/p", ("db", "r/p"))],
)
def test_bucket_mapping(bucket, expected):
    assert bucket_to_database(bucket) == expected


@pytest.mark.parametrize("bucket", ["", "/rp"])
def test_bucket_mapping_rejects(bucket):
    with pytest.raises(ValueError):
        bucket_to_database(bucket)


def test_raw_gzip_passes_and_unknown_encodings_are_refused(influxdb):
    measurement = unique("gz2")
    body = gzip.compress(f"{measurement} v=9i {T0}".encode())
    status, answer = request(
        influxdb.url, "POST", "/api/v2/write?bucket=srv6pm", body, {"Content-Encoding": "gzip"}
    )
    assert status == 204, answer
    assert rows(influxdb.url, f'SELECT v FROM "{measurement}"') == [{"time": T0, "v": 9}]
    status, answer = request(influxdb.url, "POST", "/api/v2/write?bucket=srv6pm", body, {"Content-Encoding": "br"})
    assert status == 415
