#!/usr/bin/env bash
# One GPU session's checks, one command, under 10 minutes (each step has its own timeout; they sum
# to 9.5 min). Expects carried wheels in .gpu/wheels (the packages the GPU image lacks, for its
# Python) and the small demo model in .gpu/model; writes everything under $OUT.
#   1. the runtime's tests on CUDA (batching, detokenization, serving LoRA, stack/cache versions)
#   2. issue 15's GPU targets: the demo model served vs raw generate (bench/serving.py, interleaved
#      rounds), the server's per-step timeline (bench/serving_profile.py: step time vs time to the
#      client, gaps between steps), and a random-initialised ~1B Llama in bf16 at batch 1 against
#      the card's measured copy bandwidth (bench/decode_bound.py), then served vs raw on that model
#   3. with GPU_CHECK_FORGET=1 also the end-to-end forget on CUDA (bench/gpu_check.py, ~5 min)
set -uo pipefail
: "${OUT:=/tmp/gpu_out}"
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-index .gpu/wheels/*.whl 2>&1 | tail -2
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '', 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee "$OUT/versions.txt"
python3 -m server.codegen >/dev/null 2>&1 || echo "codegen failed"
mkdir -p ~/.cache/lethe && ln -sfn "$PWD/.gpu/model" ~/.cache/lethe/demo-70282b905290de73
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv > "$OUT/nvidia_smi.csv" 2>&1
step() {  # step SECONDS NAME CMD...: run with a timeout, keep its output under $OUT
  local secs=$1 name=$2; shift 2
  echo "== $name (timeout ${secs}s)"
  timeout "$secs" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name rc=$?" | tee -a "$OUT/rc.txt"
  tail -12 "$OUT/$name.txt"
}
step 100 pytest python3 -m pytest -q -p no:cacheprovider -x tests/unit/test_runtime_batching.py \
  tests/unit/test_runtime_text.py tests/unit/test_runtime_stack_cache.py tests/unit/test_engine_cuda.py \
  tests/unit/test_serving_lora.py --tb=short
step 120 serving_demo python3 bench/serving.py --model .gpu/model --rounds 3 --tokens 128 --no-http --out serving-gpu-demo
step 60 profile_demo python3 bench/serving_profile.py --model .gpu/model --tokens 128 --name gpu_demo
# the same with a 0.2 ms GIL switch interval: if the gaps between steps shrink, the decode thread
# was waiting for the GIL behind the loop/gRPC threads (then: the model loop in its own process)
step 60 profile_demo_gil python3 bench/serving_profile.py --model .gpu/model --tokens 128 --name gpu_demo_gil \
  --switch-interval 0.0002
step 110 decode_bound python3 bench/decode_bound.py --tokens 256 --save /tmp/llama1b --out "$OUT/decode_bound.json"
[ -f /tmp/llama1b/config.json ] && step 90 serving_1b python3 bench/serving.py --model /tmp/llama1b --rounds 3 \
  --tokens 128 --concurrency 4 --no-http --out serving-gpu-1b
cp bench/results/serving-gpu-* bench/results/serving_profile_gpu_demo*.json "$OUT/" 2>/dev/null
if [ "${GPU_CHECK_FORGET:-0}" = 1 ]; then
  step 300 gpu_check python3 bench/gpu_check.py --model .gpu/model
fi
cat "$OUT/rc.txt"
