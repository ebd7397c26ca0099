"""What decoding one record of each topic costs: srv6pm.decode's typed decoders against the reference and json.loads.

For every topic (counters, stamp, loss, delay, alarms, events), N records as srv6pm writes them are
decoded three ways, and the CPU time per record is printed with the ratios:

* ``typed``: :func:`srv6pm.decode.decode` (msgspec, validated exactly as the schema; what every reader uses);
* ``reference``: :mod:`srv6pm.records`' decoder of the topic (json.loads, then jsonschema);
* ``json.loads``: the bytes parsed and nothing checked (what the ledger, the lab's reader and the
  collector's results consumer did before they used the typed decoders; the baseline).

    python bench/decode.py [--records 20000]
"""

from __future__ import annotations

import argparse
import json
import time

from srv6pm import decode, records
from srv6pm.records import Alarm, CounterRecord, DelayResult, Event, LossResult, Segment, StampSample

START = "2025-11-24T16:00:00Z"


def samples(n: int) -> dict[str, list[bytes]]:
    """``n`` records of each topic, as srv6pm's components write them."""
    return {
        records.COUNTERS: [CounterRecord("r1", f"f{i}", "ingress", 100 + 2 * i, 1.0, 0, 1000 + i, 10**5,
                                         read_ns=10**18 + i).to_json() for i in range(n)],
        records.STAMP: [StampSample(f"s{i % 100}", i, 1.0, 10**18 + i, 10**18 + i + 50, 10**18 + i + 60,
                                    10**18 + i + 120, False, "r1", "r4").to_json() for i in range(n)],
        records.LOSS: [LossResult(f"f{i}", 100 + i, START, 1.0, "r1", "r4", 1000, 990, 10**5, 99000, 10, 0.01, True,
                                  flowmon_id=1 + i % 1000, segments=(Segment("r1", "r2", 1000, 995, 5, True),
                                                                     Segment("r2", "r4", 995, 990, 5, True))
                                  ).to_json() for i in range(n)],
        records.DELAY: [DelayResult(f"s{i}", 100 + i, START, 1.0, "forward", "r1", "r4", 10, 1, 5.0, 6.0, 9.5, 6.0,
                                    9.0, 0.5, lost_forward=1, lost_backward=0).to_json() for i in range(n)],
        records.ALARMS: [Alarm("liveness", f"s{i}", None, 100 + i, START, 1.0, 3, 3, i % 2 == 0, time_ns=10**18 + i,
                               last_reply_ns=10**18, sender="r1", reflector="r4").to_json() for i in range(n)],
        records.EVENTS: [Event("applied", START, 3, f"r{i % 50}", "policy f1", None, "b-1").to_json()
                         for i in range(n)],
    }


REFERENCE = {records.COUNTERS: records.decode_counters, records.STAMP: records.decode_stamp,
             records.LOSS: records.decode_loss, records.DELAY: records.decode_delay,
             records.ALARMS: records.decode_alarm, records.EVENTS: records.decode_event}


def cpu_us(fn, values: list[bytes]) -> float:
    """CPU µs per record of ``fn`` over ``values`` (the best of three runs: the machine is shared)."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for value in values:
            fn(value)
        best = min(best, time.process_time() - started)
    return best / len(values) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per topic (default 20000)")
    args = parser.parse_args()
    print(f"{'topic':<18} {'json.loads':>11} {'typed':>9} {'reference':>10}   typed/json.loads  reference/typed"
          "   (CPU µs a record)")
    for topic, values in samples(args.records).items():
        assert all(decode.fast(topic, v) is not None for v in values[:100]), f"{topic}: not on the typed path"
        plain = cpu_us(json.loads, values)
        typed = cpu_us(lambda v, topic=topic: decode.decode(topic, v), values)
        reference = cpu_us(REFERENCE[topic], values[: max(1, len(values) // 10)])  # slow: a tenth is enough
        print(f"{topic:<18} {plain:>11.2f} {typed:>9.2f} {reference:>10.1f}   {typed / plain:>16.2f}"
              f"  {reference / typed:>15.1f}")


if __name__ == "__main__":
    main()
