#!/usr/bin/env bash
# One GPU session's checks (device tool). Expects carried wheels in .gpu/wheels (the packages the
# GPU image lacks, for its Python) and the small demo model in .gpu/model.
set -uo pipefail
python3 -m pip install -q --no-deps --no-index .gpu/wheels/*.whl 2>&1 | tail -2
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__)"
python3 -m server.codegen >/dev/null 2>&1 || echo "codegen failed"
mkdir -p "$OUT"
mkdir -p ~/.cache/lethe && ln -sfn "$PWD/.gpu/model" ~/.cache/lethe/demo-70282b905290de73
timeout 240 python3 -m pytest -q -p no:cacheprovider -x tests/unit/test_runtime_batching.py tests/unit/test_runtime_text.py \
  tests/unit/test_engine_cuda.py tests/unit/test_serving_lora.py --tb=short 2>&1 | grep -v -i warn | tail -25 | tee "$OUT/pytest.txt"
timeout 300 python3 bench/gpu_check.py --model .gpu/model 2>"$OUT/stderr.txt" | tee "$OUT/gpu_check.json"
echo "gpu_check rc=${PIPESTATUS[0]}"
tail -20 "$OUT/stderr.txt"
timeout 150 python3 bench/swap.py --model .gpu/model --no-real-forget 2>"$OUT/swap_stderr.txt" | tail -4
cp bench/results/swap.json "$OUT/swap_gpu.json" 2>/dev/null
tail -5 "$OUT/swap_stderr.txt"
