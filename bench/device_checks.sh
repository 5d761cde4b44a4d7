#!/usr/bin/env bash
# GPU checks for a borrowed CUDA machine (the device tool; see README "GPU"): the CUDA tests and the
# training and inference benches on the GPU (single pass, Monte Carlo on the device, delta method).
# Run from the repository root on a machine whose python3 has torch with CUDA; missing pure packages come as wheels in .whl/ (carried), the model
# as derived/model/model.pt (carried) when there is one. JSON and logs go to $OUT (or bench/results).
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:$PWD/bench:${PYTHONPATH:-} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
"$PY" -m pytest tests/model/test_cuda.py -q -p no:cacheprovider -x 2>&1 | tee "$OUT/test_cuda.log"
"$PY" bench/train.py --max-samples 1024 --n-stars 1024 --epochs 3 --out "$OUT/train_gpu.json" 2>&1 | tail -n 25
# Monte Carlo on the device (noise made there), delta method, single pass; the goal on an
# H100/H200-class GPU is >= 400 spectra/s with 100 draws (DR17, 657 000 spectra, in under 30 min)
"$PY" bench/infer.py --n-synthetic 512 --n-mc 512 --n-delta 512 --repeats 3 --max-batch 25600 --out "$OUT/infer_gpu.json" 2>&1 | tail -n 60
"$PY" bench/infer.py --n-synthetic 512 --n-mc 512 --n-delta 512 --repeats 2 --out "$OUT/infer_gpu_max1600.json" 2>&1 | grep -E '"(fast|mc_speedup|delta_spectra_per_s|delta_speedup)"' 
