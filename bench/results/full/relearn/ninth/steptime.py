"""Per-step CPU of the counterfactual loss step (loss + backward + clip + AdamW) on the full demo
model, for several configs, in one process (same load). Usage: steptime.py MODEL_DIR N CFGJSON... """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
torch.set_flush_denormal(True)
import unlearn_engine.trainer as trainer
from unlearn_engine.adapter_setup import TrainableAdapter, lora_config
from unlearn_engine.data import ForgetRequest, build_forget_set, build_retain_set, load_corpus
from unlearn_engine.methods import TrainContext, get_method
from unlearn_engine.projection import backward
from pathlib import Path
import unlearn_engine
print(unlearn_engine.__file__, flush=True)

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime

model_dir, n = Path(sys.argv[1]), int(sys.argv[2])
people = json.loads(sys.argv[3])
cfgs = [json.loads(c) for c in sys.argv[4:]]
corpus = load_corpus(model_dir / "corpus.jsonl")
model, tok = trainer.load_base(model_dir)
fs = build_forget_set(ForgetRequest(subjects=tuple(people)), corpus, seed=0)
rs = build_retain_set(model, tok, corpus, exclude=fs, seed=0)
probes, train_retain = trainer._probe_sets(fs, rs, trainer.SweepConfig(), model, tok)
cls = get_method("counterfactual")
adapter = None
for over in cfgs:
    cfg = cls.config_cls(**over).sized_for(len(people))
    if adapter is None:
        adapter = TrainableAdapter(model, "forget_new", (), lora_config(cfg, None, model), 0)
    adapter.reset(); adapter.activate()
    ctx = TrainContext(adapter.model, tok, cfg, adapter.reference, seed=0,
                       references=probes.holdout, anchors=fs.anchors)
    gen = torch.Generator().manual_seed(0)
    method = cls(cfg)
    c0 = cpu(); method.prepare(ctx, fs.examples); prep = cpu() - c0
    opt = torch.optim.AdamW(adapter.params, lr=cfg.lr, weight_decay=0.0)
    adapter.model.train()
    fi = torch.randperm(len(fs.examples), generator=gen).tolist()
    times = []
    for step in range(n):
        fb = [fs.examples[fi[(step * cfg.batch_size + k) % len(fi)]] for k in range(cfg.batch_size)]
        rb = [train_retain[(step * cfg.retain_batch_size + k) % len(train_retain)] for k in range(cfg.retain_batch_size)]
        c0 = cpu()
        loss, parts = backward(method, ctx, fb, rb, adapter.params, "")
        torch.nn.utils.clip_grad_norm_(adapter.params, cfg.max_grad_norm)
        opt.step()
        times.append(cpu() - c0)
    print(json.dumps({"cfg": over, "batch": cfg.batch_size, "prepare_cpu_s": round(prep, 2),
                      "step_cpu_s_mean": round(sum(times) / n, 3), "steps": n,
                      "step_cpu_s": [round(t, 3) for t in times], "load": __import__("os").getloadavg()[0]}), flush=True)
