#!/usr/bin/env bash
# The GPU benches on a lent GPU machine, in one call of about 8 minutes at most:
#   1. python -m bench.gpu_members   -> $OUT/gpu_members.json, $OUT/gpu_members.log
#      (each member alone on the card, then all three together: memory and ensemble images/s)
#   2. python -m bench.real_size --device cuda -> $OUT/real_size.json, $OUT/real_size.log
#      (3B/10B checkpoints written to /tmp and loaded through the project's loader)
#   plus $OUT/env.log (GPU, Python and package versions). Not a test; CI never runs it.
#
# Prepare here, once, from the repository root. bitsandbytes is not in the device image and
# travels as a wheel in .whl (ignored by git). The 0.50.2 wheel is about 43 MB and the tracked
# tree about 41 MB: together over the 64 MiB a call may carry, so strip the GPU libraries the
# machine does not use (its torch is 2.11 + CUDA 13.0; bitsandbytes picks
# libbitsandbytes_cuda130.so); about 7 MB remain:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#       --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl bitsandbytes==0.50.2
#   zip -q -d .whl/bitsandbytes-0.50.2-*.whl 'bitsandbytes/libbitsandbytes_cuda11*' \
#       'bitsandbytes/libbitsandbytes_cuda12*' 'bitsandbytes/libbitsandbytes_rocm*' \
#       'bitsandbytes/libbitsandbytes_xpu*'
#
# (pip installs the stripped wheel: seen here with pip --target.) Its other needs (torch,
# numpy, packaging) are in the image. Then call the device tool's run with:
#
#   command:   bash bench/device_check.sh
#   carry:     [".whl"]
#   timeout_s: 600
#
# Without .whl the script still runs: the 8-bit and 4-bit rows say bitsandbytes is missing.
# Time (not yet measured on a GPU): gpu_members gets a hard `timeout` of 200 s and starts
# nothing new after 120 s ("together" first, so the budget never skips it); real_size a
# hard 270 s, starts no scenario after 250 s or with under 30 s left, and gives each build or
# scenario at most what is left. The whole script ends within about 8 minutes plus the
# install; a row cut by the budget says "skipped: time budget spent" or "timed out".
set -u -o pipefail
OUT=${OUT:-/tmp/device-check-out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PY:-python3}  # the device image's python3 holds torch

if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY - <<'EOF'
import importlib, sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
for name in ("transformers", "peft", "accelerate", "timm", "bitsandbytes", "safetensors", "cv2"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as exc:  # report and go on: the benches say which rows it costs
        print(name, "NOT IMPORTABLE:", type(exc).__name__, exc)
EOF
    df -h /tmp | tail -1
} 2>&1 | tee "$OUT/env.log"

status=0
# 1. all three members together (the new measurement, first), then each alone
timeout 200 $PY -m bench.gpu_members --models together,pg2-3b,pg2-10b-8bit,detr-r50 \
    --budget-s 120 --batches 1,4,16 --json "$OUT/gpu_members.json" 2>&1 \
    | tee "$OUT/gpu_members.log" || status=1

# 2. the checkpoints through the loader (about 26 GB written under /tmp, removed at the end)
timeout 270 $PY -m bench.real_size --device cuda --budget-s 250 --timeout-s 180 \
    --workdir /tmp/real_size-bench --json "$OUT/real_size.json" 2>&1 \
    | tee "$OUT/real_size.log" || status=1

echo "device_check: exit status $status (logs and JSON in $OUT)"
exit $status
