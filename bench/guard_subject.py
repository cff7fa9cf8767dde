"""Issue 13's numbers in bench/guard.py: how fast a subject Forget blocks, how fast a subject resolves.

1. Forget -> blocking, through the server's own path: a LetheServer in this process (the full demo
   model unless told otherwise; worker off, so nothing but the Forget path runs), and
   Forget(subjects=[P]) over gRPC for every trained person, `rounds` times. Measured from the
   coordinator taking the request (after the servicer's field checks) to the guard holding P's
   lexical entries (`guard.add` returned), split into the wait for the one thread hop before the
   block, the resolution, the derivation and the add; then the durable write that follows the
   block, and the Forget round trip seen by the client (the reply waits for both ledger writes).
   Two arrival patterns: spaced (each Forget waits until the previous one's background semantic
   embeddings are done, as Forgets filed seconds apart are) and back to back (they overlap it).
   After each spaced Forget, P's first trained question is asked, and must be blocked.
2. Resolution: the engine's resolver over corpora the demo generator synthesises and writes in the
   export format (`write_jsonl`, what `--corpus` reads) at 10, 1k and 10k people: index build time,
   then p50 / p99 of resolving one subject, and one QA pair (its near-duplicates).

Measures only; what must hold is asserted by tests/integration/test_forget_subject.py.
"""

from __future__ import annotations

import gc
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from server.api import admin_pb2 as apb
from server.api import inference_pb2 as ipb
from server.client import LetheClient
from server.forget.hits import PROVISIONAL_PREFIX
from server.settings import Settings
from tests.conftest import ServerThread
from unlearn_engine.data.records import ForgetRequest, QAPair
from unlearn_engine.data.resolve import IndexedCorpus, resolve
from unlearn_engine.demo.accuracy import contains_fact
from unlearn_engine.demo.builder import default_demo_model, load_corpus
from unlearn_engine.demo.corpus import CorpusSpec, generate_corpus, write_jsonl

TARGET_MS = 10.0  # issue 13: Forget -> lexical stages blocking, p99, one node
PARTS = ("hop_wait", "resolve", "derive", "add", "to_block", "to_block_cpu", "ledger", "round_trip")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


class _Clock:
    """Timestamps of the Forget path's steps, taken by wrapping the live server's own objects."""

    def __init__(self, coordinator: Any) -> None:
        self.marks: dict[str, float] = {}
        self._wrap(coordinator, "_write", "write")
        self._wrap(coordinator.resolver, "resolve", "resolve")
        self._wrap(coordinator.ledger, "submit", "ledger")
        self._wrap(coordinator.guard, "derive", "derive", only=lambda args: args[0].startswith(PROVISIONAL_PREFIX))
        self._wrap(coordinator.guard, "add", "add", only=lambda args: args[0].forget_id.startswith(PROVISIONAL_PREFIX))
        submit = coordinator.submit

        async def timed_submit(*args: Any, **kwargs: Any) -> Any:
            self.marks["start"] = time.perf_counter()
            return await submit(*args, **kwargs)
        coordinator.submit = timed_submit

    def _wrap(self, obj: Any, name: str, key: str, only: Callable[[tuple], bool] = lambda args: True) -> None:
        fn = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                if only(args) and f"{key}_end" not in self.marks:
                    self.marks[f"{key}_start"], self.marks[f"{key}_end"] = t0, time.perf_counter()
                    self.marks[f"{key}_cpu_start"], self.marks[f"{key}_cpu_end"] = c0, time.thread_time()
        setattr(obj, name, timed)

    def parts(self, round_trip: float) -> dict[str, float]:
        m = self.marks
        return {"hop_wait": m["write_start"] - m["start"],
                **{k: m[f"{k}_end"] - m[f"{k}_start"] for k in ("resolve", "derive", "add", "ledger")},
                "to_block": m["add_end"] - m["start"], "round_trip": round_trip,
                "to_block_cpu": m["add_cpu_end"] - m["write_cpu_start"]}  # the same thread: its CPU time


def forget_to_block(model: Path, rounds: int = 3, max_new_tokens: int = 24) -> dict:
    corpus = load_corpus(model)
    people = list(corpus.trained_people)
    question = {p: next(r for r in corpus.qa if r.person == p and r.split == "train") for p in people}
    out: dict[str, Any] = {"model": model.name, "people": len(people), "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        st = ServerThread(Settings(host="127.0.0.1", port=0, metrics_port=-1, http_port=0, data_dir=Path(tmp) / "d",
                                   model=model, worker=False, monitor_interval_seconds=0,
                                   max_queued_forgets=1_000_000))
        try:
            st.wait_ready()
            coordinator = st.server.coordinator
            clock = _Clock(coordinator)
            op = LetheClient(st.target, st.server.operator_token, timeout=120)
            client = LetheClient(st.target, st.server.operator_token, timeout=120)
            idle = threading.Event()
            for pattern in ("spaced", "back to back"):
                samples: list[dict[str, float]] = []
                blocked = asked = 0
                for _ in range(rounds):
                    for person in people:
                        while pattern == "spaced" and coordinator._background:  # the last Forget's embeddings
                            idle.wait(0.005)  # wait-ok: polling the server's background set
                        clock.marks.clear()
                        t0 = time.perf_counter()
                        op.admin.Forget(apb.ForgetRequest(subjects=[person], reason="bench"), metadata=op._metadata)
                        samples.append(clock.parts(time.perf_counter() - t0))
                        if pattern == "spaced":
                            r = client.generate(question[person].question, max_new_tokens=max_new_tokens)
                            asked += 1
                            blocked += (r.finish_reason == ipb.FINISH_REASON_FILTERED
                                        or not contains_fact(r.text, question[person].fact))
                row = {"forgets": len(samples)}
                for part in PARTS:
                    xs = [s[part] for s in samples]
                    row[f"{part}_p50_ms"], row[f"{part}_p99_ms"] = 1e3 * pct(xs, 0.5), 1e3 * pct(xs, 0.99)
                    row[f"{part}_max_ms"] = 1e3 * max(xs)
                if asked:
                    row["asked"], row["blocked"] = asked, blocked
                out[pattern] = row
                print(f"forget->block ({pattern}): p50 {row['to_block_p50_ms']:.2f} ms, "
                      f"p99 {row['to_block_p99_ms']:.2f} ms", flush=True)
            while coordinator._background:  # the last embeddings, before the ledger closes
                idle.wait(0.05)  # wait-ok: polling the server's background set
        finally:
            st.stop()
    return out


def resolution(sizes: list[int], queries: int = 200) -> list[dict]:
    """Resolution time per request at each corpus size (people), on a synthesised export file."""
    rows = []
    for n in sizes:
        corpus = generate_corpus(CorpusSpec(n_people=n, n_holdout=max(1, n // 10)))
        with tempfile.TemporaryDirectory() as tmp:
            path = write_jsonl(corpus, Path(tmp) / "corpus.jsonl")
            t = time.perf_counter()
            index = IndexedCorpus.from_file(path)
            build = time.perf_counter() - t
        rng = random.Random(0)
        people = [rng.choice(corpus.trained_people) for _ in range(queries)]
        train = [r for r in corpus.qa if r.split == "train"]
        resolve(ForgetRequest(subjects=[people[0]]), index)  # warm caches (LSH bands, permutations)
        gc.collect()
        subj, subj_cpu, qa, matched = [], [], [], []
        for p in people:
            t, c = time.perf_counter(), time.thread_time()
            r = resolve(ForgetRequest(subjects=[p]), index)
            subj_cpu.append(time.thread_time() - c)
            subj.append(time.perf_counter() - t)
            matched.append(len(r.entry_ids))
        for rec in (rng.choice(train) for _ in range(queries)):
            t = time.perf_counter()
            resolve(ForgetRequest(qa_pairs=[QAPair(rec.question, rec.answer)]), index)
            qa.append(time.perf_counter() - t)
        rows.append({"people": n, "entries": len(index), "trained_entries": index.trained,
                     "index_build_s": build, "queries": queries,
                     "subject_p50_ms": 1e3 * pct(subj, 0.5), "subject_p99_ms": 1e3 * pct(subj, 0.99),
                     "subject_cpu_p99_ms": 1e3 * pct(subj_cpu, 0.99),
                     "qa_p50_ms": 1e3 * pct(qa, 0.5), "qa_p99_ms": 1e3 * pct(qa, 0.99),
                     "entries_per_subject": statistics.mean(matched)})
        print(f"resolution at {n} people: subject p50 {rows[-1]['subject_p50_ms']:.2f} ms "
              f"p99 {rows[-1]['subject_p99_ms']:.2f} ms", flush=True)
        del corpus, index
    return rows


def measure(small: bool, sizes: list[int], rounds: int) -> dict:
    model = default_demo_model(Path("~/.cache/lethe").expanduser(), small=small)
    return {"forget_to_block": forget_to_block(model, rounds), "resolution": resolution(sizes)}


def markdown(report: dict, command: str) -> list[str]:
    ftb, res = report["forget_to_block"], report["resolution"]
    worst = max(ftb[p]["to_block_p99_ms"] for p in ("spaced", "back to back"))
    worst_cpu = max(ftb[p]["to_block_cpu_p99_ms"] for p in ("spaced", "back to back"))
    spaced = ftb["spaced"]
    L = ["## Subject Forget: time to block and resolution (issue 13)",
         f"`{command}` — model `{ftb['model']}` ({ftb['people']} trained people), in-process server, worker off; "
         f"{report.get('machine', '')}. All columns in ms, p50 / p99.", "",
         f"### Forget → lexical stages blocking: target p99 ≤ {TARGET_MS:.0f} ms "
         f"({'**met**' if worst <= TARGET_MS else '**missed**'} in wall-clock time: p99 "
         f"{spaced['to_block_p99_ms']:.1f} ms spaced, {ftb['back to back']['to_block_p99_ms']:.1f} ms back to back; "
         f"{'met' if worst_cpu <= TARGET_MS else 'missed'} in CPU time: p99 {spaced['to_block_cpu_p99_ms']:.1f} / "
         f"{ftb['back to back']['to_block_cpu_p99_ms']:.1f} ms)",
         "From the coordinator taking a Forget(subjects=[P]) to the guard holding P's lexical entries: "
         "`hop wait` (onto the one thread that does the rest), `resolve` (the corpus), `derive` (the "
         "lexical entries), `add` (armed: blocking from here). Then, after the block, `ledger` (the durable "
         "write, fsync) and the client's round trip (a second durable write and gRPC). "
         f"After each spaced Forget P's first trained question was blocked in {spaced.get('blocked', 0)}/"
         f"{spaced.get('asked', 0)} cases.", "",
         "| arrivals | Forgets | to block p50 / p99 / max | CPU | hop wait | resolve | derive | add "
         "| then: ledger write | round trip |", "|---|---|---|---|---|---|---|---|---|---|"]
    for pattern in ("spaced", "back to back"):
        r = ftb[pattern]
        cell = lambda k: f"{r[k + '_p50_ms']:.2f} / {r[k + '_p99_ms']:.2f}"  # noqa: E731
        L.append(f"| {pattern} | {r['forgets']} | {cell('to_block')} / {r['to_block_max_ms']:.1f} "
                 f"| {cell('to_block_cpu')} | {cell('hop_wait')} | {cell('resolve')} | {cell('derive')} "
                 f"| {cell('add')} | {cell('ledger')} | {cell('round_trip')} |")
    L += ["", "### Subject resolution (engine resolver, synthesised corpora in the export format)",
          f"{res[0]['queries'] if res else 0} requests per size, wall clock; the subject's CPU-time p99 beside it "
          "tells the code's own tail from time the OS gave to other processes on this shared machine.", "",
          "| corpus people | entries (trained) | index build s | subject p50 / p99 ms | subject CPU p99 ms "
          "| entries per subject | QA pair p50 / p99 ms |", "|---|---|---|---|---|---|---|"]
    for r in res:
        L.append(f"| {r['people']} | {r['entries']} ({r['trained_entries']}) | {r['index_build_s']:.2f} "
                 f"| {r['subject_p50_ms']:.2f} / {r['subject_p99_ms']:.2f} | {r.get('subject_cpu_p99_ms', 0):.2f} "
                 f"| {r['entries_per_subject']:.0f} "
                 f"| {r['qa_p50_ms']:.2f} / {r['qa_p99_ms']:.2f} |")
    return L + [""]
