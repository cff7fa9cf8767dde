"""Per-person retain damage of job 5 (Fundvolen Gendurdane) on the record run's stack of 4."""
import sys, torch; torch.set_num_threads(1)
sys.path.insert(0, "bench")
from pathlib import Path
from collections import defaultdict
from sequential_server import Evaluator
from unlearn_engine.demo.builder import load_corpus
from unlearn_engine.demo.accuracy import greedy_answers, contains_fact
md = Path.home() / ".cache/lethe/demo-cd0d1c88e9bebbb4"
c = load_corpus(md)
ads = sorted(Path("/tmp/creep/keep5/adapters").iterdir())  # ids sort by time (ULID-like)
forgot = ["Graenbamen Texrondwick", "Tresdral Farounddane", "Thanmoro Faesvam", "Massael Gendthi", "Fundvolen Gendurdane"]
keep = [p for p in c.trained_people if p not in forgot]
ev = Evaluator(md, c, keep)
recs = ev.retain
res = {}
for n in (4, 5):
    m, t = ev.model(ads[:n])
    ans = greedy_answers(m, t, [r.question for r in recs])
    res[n] = [contains_fact(a, r.fact) for a, r in zip(ans, recs)]
    print(n, sum(res[n]) / len(recs), flush=True)
lost = defaultdict(list)
for r, a, b in zip(recs, res[4], res[5]):
    if a and not b:
        lost[r.person].append(r.attribute)
gained = sum(1 for a, b in zip(res[4], res[5]) if b and not a)
print("lost by job 5:", sum(len(v) for v in lost.values()), "gained:", gained)
for p, v in sorted(lost.items(), key=lambda x: -len(x[1])):
    print(f"  {p}: {len(v)} {sorted(set(v))}")
fv = [r for r in c.qa if r.person == "Fundvolen Gendurdane" and r.split == "train"]
vals = {r.attribute: r.fact for r in fv}
print("Fundvolen's values:", vals)
shared = defaultdict(list)
for r in recs:
    if vals.get(r.attribute) == r.fact:
        shared[r.attribute].append(r.person)
print("retain QA holding one of his values:", {k: len(v) for k, v in shared.items()})
lost_shared = sum(1 for r, a, b in zip(recs, res[4], res[5]) if a and not b and vals.get(r.attribute) == r.fact)
print("of the lost, holding his value for that attribute:", lost_shared)
