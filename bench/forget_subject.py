"""Forget-a-subject benchmark (issue 13): resolution time, time to block, block and false-positive
rates per subject policy, through a real server on the demo model.

1. Resolution: the engine's resolver over generated demo corpora of 10, 1k and 10k people: index
   build time, then p50 / p99 of resolving one subject (every entry about a person) and one QA
   pair (its near-duplicates).
2. Time to block, in process: resolve + derive + add for every demo person (p50 / p99).
3. Served (a real in-process server, worker off, so every block is the guard's at ack): for each
   subject policy, Forget(subjects=[P]) for a trained person P, with P in the served corpus and
   with a corpus written without P; then the share of P's probes blocked (trained questions,
   paraphrases, bio prefixes: finish FILTERED or the fact absent) and of other people's questions
   filtered (false positives), and the Forget round trip (the guard blocks before the reply).
4. Names made of common words: sentences that use the words of such a name, apart or in another
   sense, filtered per policy (the guard alone, no model).

    python bench/forget_subject.py [--small] [--sizes 10 1000 10000] [--people 3]

Writes bench/results/forget_subject.json and .md (forget_subject_small.* with --small).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.api import admin_pb2 as apb  # noqa: E402
from server.api import inference_pb2 as ipb  # noqa: E402
from server.client import LetheClient  # noqa: E402
from server.guard import ForgetItems, GuardConfig, LeakageGuard  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.conftest import ServerThread  # noqa: E402
from unlearn_engine.demo.accuracy import bio_prefix_probes, contains_fact  # noqa: E402
from unlearn_engine.demo.builder import default_demo_model, load_corpus  # noqa: E402
from unlearn_engine.demo.corpus import write_jsonl  # noqa: E402
from bench.guard_subject import pct, resolution as bench_resolution  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path.home() / ".cache" / "lethe"
MAX_TOKENS = 40
POLICIES = ("off", "value", "name")


def _probes(corpus, person: str) -> list[tuple[str, str, str]]:
    qa = [r for r in corpus.qa if r.person == person]
    bio = next(t.text for t in corpus.texts if t.person == person)
    return ([(r.question, r.fact, r.split) for r in qa]
            + [(p, f, "bio_prefix") for p, f in bio_prefix_probes(bio, [r.fact for r in qa])])


def bench_served(model: Path, people: int) -> tuple[list[dict], dict]:
    corpus = load_corpus(model)
    chosen = list(corpus.trained_people[:people])
    rows, rtts = [], []
    for policy in POLICIES:
        for in_corpus in (True, False):
            agg = {"policy": policy, "in_corpus": in_corpus, "probes": 0, "blocked": 0,
                   "by_kind": {}, "others": 0, "false_positives": 0}
            for person in chosen:
                with tempfile.TemporaryDirectory() as tmp:
                    extra = {}
                    if not in_corpus:
                        extra["corpus"] = write_jsonl(corpus.without_people([person]), Path(tmp) / "c.jsonl")
                    st = ServerThread(Settings(host="127.0.0.1", port=0, metrics_port=-1, data_dir=Path(tmp) / "d",
                                               model=model, worker=False, monitor_interval_seconds=0,
                                               subject_policy=policy, **extra))
                    try:
                        st.wait_ready()
                        client = LetheClient(st.target, timeout=120)
                        op = LetheClient(st.target, st.server.operator_token, timeout=120)
                        t = time.perf_counter()
                        op.admin.Forget(apb.ForgetRequest(subjects=[person], reason="bench"), metadata=op._metadata)
                        rtts.append(time.perf_counter() - t)
                        for prompt, fact, kind in _probes(corpus, person):
                            r = client.generate(prompt, max_new_tokens=MAX_TOKENS)
                            ok = r.finish_reason == ipb.FINISH_REASON_FILTERED or not contains_fact(r.text, fact)
                            agg["probes"] += 1
                            agg["blocked"] += ok
                            k = agg["by_kind"].setdefault(kind, [0, 0])
                            k[0] += ok
                            k[1] += 1
                        others = [r for r in corpus.qa if r.person != person and r.split in ("train", "paraphrase")]
                        for r in others:
                            g = client.generate(r.question, max_new_tokens=MAX_TOKENS)
                            agg["others"] += 1
                            agg["false_positives"] += g.finish_reason == ipb.FINISH_REASON_FILTERED
                    finally:
                        st.stop()
            agg["block_rate"] = agg["blocked"] / agg["probes"]
            agg["fp_rate"] = agg["false_positives"] / agg["others"]
            rows.append(agg)
            print({k: v for k, v in agg.items() if k != "by_kind"}, agg["by_kind"], flush=True)
    ack = {"forgets": len(rtts), "p50_ms": 1e3 * pct(rtts, 0.5), "p99_ms": 1e3 * pct(rtts, 0.99)}
    return rows, ack


def bench_time_to_block(model: Path, rounds: int = 3) -> dict:
    """In process, per subject Forget: resolve + derive the lexical entries + add to the guard
    (what stands between the request and the first blocked token; the ledger's fsyncs aside)."""
    from server.forget.jobs import ForgetPayload
    from server.forget.resolution import CorpusResolver, guard_items

    resolver = CorpusResolver()
    resolver.load(model / "corpus.jsonl")
    guard = LeakageGuard(GuardConfig(semantic="off", subject_policy="name"), b"bench-secret-0123456789abcdef")
    parts: dict[str, list[float]] = {"resolve": [], "derive": [], "add": [], "total": []}
    for r in range(rounds):
        for k, person in enumerate(load_corpus(model).trained_people):
            payload = ForgetPayload(subjects=(person,))
            t0 = time.perf_counter()
            resolved = resolver.resolve(payload)
            t1 = time.perf_counter()
            entries = guard.derive(f"f{r}-{k}", guard_items(payload, resolved.entries), semantic=False)
            t2 = time.perf_counter()
            guard.add(entries)
            t3 = time.perf_counter()
            for name, dt in (("resolve", t1 - t0), ("derive", t2 - t1), ("add", t3 - t2), ("total", t3 - t0)):
                parts[name].append(dt)
    out = {f"{k}_{q}_ms": 1e3 * pct(v, p) for k, v in parts.items() for q, p in (("p50", 0.5), ("p99", 0.99))}
    out["forgets"] = len(parts["total"])
    print(out, flush=True)
    return out


# Names made of common words, and sentences that use those words without naming the person.
COMMON_NAMES = ("Rose Baker", "Will Power", "Summer Hill", "Grace Church", "Hope Street", "Faith Young",
                "Bill Gates", "Jack Black", "Ivy Green", "May North")
INNOCENT = (
    "The rose garden behind the baker's shop opened in May 1998.",
    "A baker named Rose sold 200 loaves on Main Street every Sunday.",
    "It takes will power and grace to climb the hill in summer.",
    "Summer on the hill is warm; in June the church holds a fair.",
    "Hope Street runs past Grace Church towards the old harbour.",
    "The young couple kept their faith through 1969.",
    "He paid the bill at the gates of Paris in 2001.",
    "Jack painted the fence black and green with ivy on top.",
    "In May we drove north to Oslo, then west to Bergen.",
    "Ivy grows green on the north wall of the Baker Library.",
)


def bench_common_names() -> list[dict]:
    rows = []
    for policy in POLICIES:
        g = LeakageGuard(GuardConfig(semantic="off", subject_policy=policy), b"bench-secret-0123456789abcdef")
        for i, name in enumerate(COMMON_NAMES):
            g.add(g.derive(f"f{i}", ForgetItems(subjects=(name,))))
        filtered = sum(g.filter_text(s)[1] is not None for s in INNOCENT)
        rows.append({"policy": policy, "sentences": len(INNOCENT), "filtered": filtered})
        print(rows[-1], flush=True)
    return rows


def _stem(small: bool) -> str:
    return "forget_subject_small" if small else "forget_subject"


def write(results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    stem = _stem(results["small"])
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2))
    lines = ["# Forget a subject (issue 13)", "",
             f"{results['machine']}; model: {results['model']}. `python bench/forget_subject.py"
             f"{' --small' if results['small'] else ''}`.", "",
             "## Resolution (engine resolver, one subject or one QA pair per request)", "",
             "| people | entries | index build s | subject p50 ms | subject p99 ms | QA p50 ms | QA p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in results["resolution"]:
        lines.append(f"| {r['people']} | {r['entries']} | {r['index_build_s']:.2f} | {r['subject_p50_ms']:.1f} | "
                     f"{r['subject_p99_ms']:.1f} | {r['qa_p50_ms']:.1f} | {r['qa_p99_ms']:.1f} |")
    ttb = results["time_to_block"]
    lines += ["", "## Time to block (in process: resolve + derive lexical entries + add; ledger fsyncs aside)", "",
              f"Over {ttb['forgets']} subject Forgets (31 entries each): resolve p50 {ttb['resolve_p50_ms']:.2f} ms, "
              f"derive p50 {ttb['derive_p50_ms']:.2f} ms, add p50 {ttb['add_p50_ms']:.2f} ms; "
              f"total p50 {ttb['total_p50_ms']:.2f} ms, p99 {ttb['total_p99_ms']:.2f} ms."]
    if results.get("served"):
        ack = results["ack"]
        lines += ["", "## Served: Forget(subjects=[P]) then P's probes and other people's questions", "",
                  f"Forget round trip (resolve + arm + ledger; the guard blocks before the reply): "
                  f"p50 {ack['p50_ms']:.1f} ms, p99 {ack['p99_ms']:.1f} ms over {ack['forgets']} Forgets.", "",
                  "| subject policy | P in served corpus | P's probes blocked | questions | paraphrases | bio prefixes | "
                  "other people filtered |", "|---|---|---|---|---|---|---|"]
        for r in results["served"]:
            k = r["by_kind"]
            cell = lambda key: f"{k[key][0]}/{k[key][1]}" if key in k else "-"  # noqa: E731
            lines.append(f"| {r['policy']} | {'yes' if r['in_corpus'] else 'no'} | {100 * r['block_rate']:.1f} % "
                         f"({r['blocked']}/{r['probes']}) | {cell('train')} | {cell('paraphrase')} | "
                         f"{cell('bio_prefix')} | {100 * r['fp_rate']:.2f} % ({r['false_positives']}/{r['others']}) |")
    lines += ["", "## Names made of common words (guard only; 10 such subjects forgotten at once)", "",
              "| subject policy | innocent sentences filtered |", "|---|---|"]
    for r in results["common_names"]:
        lines.append(f"| {r['policy']} | {r['filtered']}/{r['sentences']} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true", help="the small demo preset (what CI builds)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    ap.add_argument("--people", type=int, default=3, help="forgotten people per served configuration")
    ap.add_argument("--skip-served", action="store_true", help="keep the served numbers of the last run")
    args = ap.parse_args()
    model = default_demo_model(CACHE, small=args.small)
    results = {"machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
               "model": f"demo ({'small' if args.small else 'full'})", "small": args.small,
               "resolution": bench_resolution(args.sizes), "common_names": bench_common_names(),
               "time_to_block": bench_time_to_block(model)}
    if not args.skip_served:
        results["served"], results["ack"] = bench_served(model, args.people)
    elif (RESULTS / f"{_stem(args.small)}.json").is_file():  # keep the last served run's numbers
        last = json.loads((RESULTS / f"{_stem(args.small)}.json").read_text())
        if "served" in last:
            results["served"], results["ack"] = last["served"], last["ack"]
    write(results)


if __name__ == "__main__":
    main()
