"""GPU check: the server and the unlearning worker on CUDA with the small demo model.

Run on a machine with a GPU (the device tool): starts `lethe serve` (bf16 on CUDA), checks the
memorised answers and batching, forgets one person end to end (worker trains on CUDA), and
reports timings as JSON on stdout. Exits non-zero on any failed check.

    python bench/gpu_check.py --model DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.api import admin_pb2 as apb  # noqa: E402
from server.client import LetheClient  # noqa: E402
from tests.procs import ServeProcess  # noqa: E402
from unlearn_engine.demo.builder import load_corpus  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    args = parser.parse_args()
    corpus = load_corpus(args.model)
    train = [r for r in corpus.qa if r.split == "train"]
    report: dict[str, object] = {}
    sp = ServeProcess(args.model, Path(tempfile.mkdtemp()), "--guard-semantic", "off")
    try:
        t0 = time.time()
        sp.wait_serving()
        report["startup_s"] = round(time.time() - t0, 1)
        with LetheClient(sp.target, sp.token, timeout=300) as c:
            info = c.model_info()
            report["device"], report["dtype"] = info.device, info.dtype
            sample = train[::5]
            answers = [c.generate(r.question, max_new_tokens=32).text for r in sample]
            report["fact_accuracy"] = sum(r.fact.lower() in a.lower() for r, a in zip(sample, answers)) / len(sample)
            with ThreadPoolExecutor(8) as pool:
                batched = list(pool.map(lambda r: c.generate(r.question, max_new_tokens=32).text, sample))
            report["batched_equal_sequential"] = sum(a == b for a, b in zip(answers, batched)) / len(sample)
            t0 = time.time()
            n = sum(ch.usage.completion_tokens for ch in c.stream("Where was", max_new_tokens=200, ignore_eos=True))
            report["stream_tok_s"] = round(n / (time.time() - t0), 1)
            person = corpus.trained_people[0]
            qa = [apb.QAPair(question=r.question, answer=r.answer) for r in train if r.person == person]
            t0 = time.time()
            job = c.admin.Forget(apb.ForgetRequest(subjects=[person], qa_pairs=qa), metadata=c._metadata).job
            job = c.wait_forget(job.forget_id)
            report["forget_state"] = apb.ForgetState.Name(job.state)
            report["forget_failure"] = job.failure_reason
            report["forget_to_active_s"] = round(time.time() - t0, 1)
            report["metrics"] = {k: round(v, 3) for k, v in job.metrics.items()
                                 if k in ("forget.fact_span_accuracy", "retain.fact_span_accuracy", "mia.loss_auc")}
            report["stack_version_after"] = c.model_info().stack_version
    finally:
        sp.kill()
        report["worker_log_tail"] = (sp.data_dir / "worker.log").read_text()[-1500:] if (sp.data_dir / "worker.log").exists() else ""
    print(json.dumps(report, indent=2))
    ok = (report.get("device") == "cuda" and report.get("fact_accuracy", 0) >= 0.9
          and report.get("forget_state") == "FORGET_STATE_ACTIVE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
