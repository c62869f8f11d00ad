#!/usr/bin/env bash
# The GPU check, in at most 8 minutes on one H100 (GPU_CHECK_BUDGET_S, default 480):
# 1. flatbench's attack throughput on ImageNet-size surrogates (random init): ResNet-50 at 224 and
#    Inception-v3 at 299, fp32 and bf16, at the defaults (chunk and memory format by rule) against
#    timed tuning and the bare limit (scripts/bench.py);
#    and batch packing: I-FGSM, MI-FGSM and GNP crafting at batch 25, packed and not (scripts/packing_gpu.py);
#    and torch.compile / CUDA graphs against eager on ResNet-50 bf16, the bare loop and crafting, within
#    its own 180 s (scripts/compile_gpu.py);
# 2. whether the same create_attack call gives the same images twice on CUDA;
# 3. a 1,000-image random-init PGN cell through the command line on generated images, projected
#    from its measured rate when it does not fit the time left; the same cell twice (determinism);
#    with 2 GPUs, the cell under torchrun against one process (scripts/gpu_check_cell.py).
# Writes CSVs, hardware.txt and log.txt into ${OUT:-outputs/gpu_check}; docs/benchmarks.md takes
# its figures from there.
#   bash scripts/gpu_check.sh                     # on a GPU machine
#   bash scripts/gpu_check.sh --device cpu --smoke  # the dry run (tiny sizes, CPU; run by the suite)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$(command -v python3)}
[ -x .venv/bin/python ] && PY=.venv/bin/python
out=${OUT:-outputs/gpu_check}
mkdir -p "$out"
device=cuda; smoke=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --smoke) smoke=(--smoke); shift ;;
    *) echo "gpu_check: unknown argument $1 (valid: --device DEV, --smoke)" >&2; exit 2 ;;
  esac
done
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# The device machines have torch and timm but not Hydra: the cell part needs hydra-core, omegaconf
# and antlr4-python3-runtime. Carried as wheels in .whl/ (scripts/gpu_wheels.sh fetches them here).
if ! "$PY" -c "import hydra, omegaconf" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_check: no hydra-core here and no .whl/: run scripts/gpu_wheels.sh and carry .whl" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/flatbench-site .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/flatbench-site
fi
"$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee "$out/hardware.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee -a "$out/hardware.txt" || true
common=(--device "$device" --steps 1 --repeats 3 --methods ifgsm mifgsm pgn gnp "${smoke[@]}")
if [ ${#smoke[@]} -eq 0 ]; then
  for dtype in fp32 bf16; do
    "$PY" scripts/bench.py --model resnet50 --size 224 --batch 25 --dtype $dtype --search 25 50 100 200 \
      "${common[@]}" --csv "$out/resnet50-224-$dtype.csv" 2>&1 | tee -a "$out/log.txt"
    "$PY" scripts/bench.py --model inception_v3 --size 299 --batch 25 --dtype $dtype --search 25 50 100 200 \
      "${common[@]}" --no-baseline --csv "$out/inception_v3-299-$dtype.csv" 2>&1 | tee -a "$out/log.txt"
  done
  # Batch packing: I-FGSM, MI-FGSM and GNP crafting 500 images at batch 25 through the crafting stage.
  for dtype in fp32 bf16; do
    "$PY" scripts/packing_gpu.py --device "$device" --model resnet50 --size 224 --dtype $dtype 2>&1 | tee -a "$out/log.txt"
  done
  # Can compiling lift the limit itself ? Rows stop being started after --budget-s.
  "$PY" scripts/compile_gpu.py --device "$device" --model resnet50 --size 224 --dtype bf16 --budget-s 180 2>&1 | tee -a "$out/log.txt"
else
  "$PY" scripts/bench.py --model resnet18 --size 64 "${common[@]}" --repeats 1 --csv "$out/smoke.csv" 2>&1 | tee -a "$out/log.txt"
  "$PY" scripts/packing_gpu.py --device "$device" --smoke 2>&1 | tee -a "$out/log.txt"
  "$PY" scripts/compile_gpu.py --device "$device" --smoke 2>&1 | tee -a "$out/log.txt"
fi
"$PY" - "$device" "${#smoke[@]}" <<'PYEOF' 2>&1 | tee -a "$out/log.txt"
# Determinism: the same default PGN call twice on the same model and images.
import sys, time, torch, timm
from flatbench import create_attack
dev, smoke = torch.device(sys.argv[1]), sys.argv[2] != "0"
size, n, N = (64, 2, 2) if smoke else (224, 16, 20)
torch.manual_seed(0)
model = timm.create_model("resnet50", pretrained=False).to(dev).eval()
g = torch.Generator().manual_seed(1)
x, y = torch.rand(n, 3, size, size, generator=g).to(dev), torch.randint(0, 1000, (n,), generator=g).to(dev)
for label, det in (("default", False), ("cudnn.deterministic", True)):
    torch.backends.cudnn.deterministic = det
    runs = []
    for _ in range(2):
        a = create_attack("pgn", model, eps=16 / 255, steps=3, n_samples=N)
        t0 = time.perf_counter(); runs.append(a(x, y, seed=0)); torch.cuda.synchronize() if dev.type == "cuda" else None
        dt = time.perf_counter() - t0
    q = [(r * 255).round() for r in runs]
    diff = (q[0] != q[1]).sum().item()
    print(f"determinism [{label}]: chunk {a.chunk}, {a.memory_format}; 8-bit pixels differing between two identical calls: "
          f"{diff} of {q[0].numel()} ({dt:.2f} s per call)")
PYEOF
budget=${GPU_CHECK_BUDGET_S:-480}
"$PY" scripts/gpu_check_cell.py --out "$out" --device "$device" --budget-s $(( budget - SECONDS - 20 > 30 ? budget - SECONDS - 20 : 30 )) \
  "${smoke[@]}" 2>&1 | tee -a "$out/log.txt"
echo "gpu_check: done in ${SECONDS} s; files in $out"
