"""What a user sees when a client library fails: the product's one-line error, library log lines only with -v.

The processor is run as a process against a closed Kafka port (127.0.0.1:1), which it refuses at
start in one line (srv6pm.reach), and against a real broker that goes away while it runs, when
kafka-python logs every refused connection attempt at error level.
"""

import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCESSOR = [sys.executable, "-m", "srv6pm", "processor", "run", "--kafka", "127.0.0.1:1",
             "--influx-url", "http://127.0.0.1:1", "--metrics-port", "0"]


def test_without_v_a_closed_broker_port_is_one_product_line_and_no_library_lines():
    out = subprocess.run(PROCESSOR, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("srv6pm: error: "), out.stderr[:2000]
    assert "127.0.0.1:1" in lines[0]
    assert "component=kafka" not in out.stderr


def _stderr_for(proc: subprocess.Popen, seconds: float) -> str:
    """What ``proc`` wrote on stderr in its first ``seconds`` (it keeps running)."""
    text, deadline = "", time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and select.select([proc.stderr], [], [], left)[0]:
        chunk = proc.stderr.readline()
        if not chunk:
            break
        text += chunk
    return text


def test_with_v_the_library_lines_appear(influxdb):
    from srv6pm.lab.emulators.broker import EmbeddedBroker
    from srv6pm.ports import free_port
    with EmbeddedBroker(port=free_port()) as broker:
        proc = subprocess.Popen([*PROCESSOR[:-6], "--kafka", broker.bootstrap, "--influx-url", influxdb.url,
                                 "--metrics-port", "0", "-v"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _stderr_for(proc, 5)  # it runs, on the live broker
    try:  # the broker is gone: the client library retries and says so
        seen = _stderr_for(proc, 5)
        assert "component=kafka" in seen and "ECONNREFUSED" in seen, seen[:2000]
        # (how it stops while the broker is away is the stopping and fault tests' business)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()



def test_kafka_pythons_close_race_is_left_out_below_vvv_and_its_other_errors_are_not(capsys):
    """kafka-python 3 logs a traceback when a client closes while its IO loop is inside the task it cancels
    (seen at shutdown during a rebalance callback); srv6pm.logs leaves that one record out unless -vvv."""
    import logging

    from srv6pm import logs

    selector = logging.getLogger("kafka.net.selector")

    def emit(exc: Exception, msg: str = "Error closing coroutine for cancelled task") -> None:
        try:
            raise exc
        except Exception:
            selector.exception(msg)

    try:
        logs.setup(verbosity=1)
        emit(ValueError("generator already executing"))
        assert "Error closing coroutine" not in capsys.readouterr().err
        emit(RuntimeError("something else"))
        assert "something else" in capsys.readouterr().err
        transport = logging.getLogger("kafka.net.transport")
        try:  # the socket closed by the closing thread while the loop reads it
            None.recv(4096)  # type: ignore[attr-defined]
        except AttributeError:
            transport.exception("%s: Error receiving network data closing socket", "<conn>")
        assert "Error receiving network data" not in capsys.readouterr().err
        try:
            raise AttributeError("'Foo' object has no attribute 'recv'")
        except AttributeError:
            transport.exception("%s: Error receiving network data closing socket", "<conn>")
        assert "Error receiving network data" in capsys.readouterr().err

        def broken_pipe() -> None:  # the connection ended under a send: kafka-python logs it with its traceback
            try:
                raise BrokenPipeError(32, "Broken pipe")
            except BrokenPipeError as e:
                transport.exception("%s: Error sending request data: %s", "<conn>", e)
        broken_pipe()
        err = capsys.readouterr().err
        assert "<conn>: Error sending request data: [Errno 32] Broken pipe" in err and "Traceback" not in err
        logs.setup(verbosity=3)
        emit(ValueError("generator already executing"))
        assert "generator already executing" in capsys.readouterr().err
        broken_pipe()
        assert "Traceback" in capsys.readouterr().err
    finally:
        logs.setup(verbosity=0)
