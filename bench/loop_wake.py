"""The CPU cost of handing events from the decode thread to the asyncio loop.

A thread wakes an idle event loop with `call_soon_threadsafe` (a socket write the loop's selector
wakes on), the way the scheduler delivers events, with a sleep between wakes as a decode step
would leave: once per event (main's scheduler did one per token per stream) or once per batch
of events (one per step now). Reports process CPU microseconds per event, less the sleeps' own
cost. Prints one JSON line; writes nothing.

    python bench/loop_wake.py [--events 4000] [--batch 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time


def per_event_us(events: int, batch: int, gap_s: float) -> float:
    loop = asyncio.new_event_loop()
    queue: asyncio.Queue[int] = asyncio.Queue()
    ready = threading.Event()

    def put_all(items: list[int]) -> None:
        for item in items:
            queue.put_nowait(item)

    async def consume() -> None:
        ready.set()
        for _ in range(events):
            await queue.get()

    thread = threading.Thread(target=loop.run_until_complete, args=(consume(),))
    thread.start()
    ready.wait()
    start = time.process_time()
    for first in range(0, events, batch):
        loop.call_soon_threadsafe(put_all, list(range(first, first + batch)))
        time.sleep(gap_s)  # a decode step's worth of time: the loop goes idle between wakes
    thread.join()
    loop.close()
    return 1e6 * (time.process_time() - start) / events


def sleeps_us(n: int, gap_s: float) -> float:
    start = time.process_time()
    for _ in range(n):
        time.sleep(gap_s)
    return 1e6 * (time.process_time() - start) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--gap-ms", type=float, default=0.5)
    args = parser.parse_args()
    gap = args.gap_ms / 1000
    sleep = min(sleeps_us(args.events, gap) for _ in range(3))
    out = {"sleep_us": round(sleep, 1)}
    for batch in args.batch:
        raw = min(per_event_us(args.events, batch, gap) for _ in range(3))
        out[f"cpu_us_per_event_batch_{batch}"] = round(raw - sleep / batch, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
