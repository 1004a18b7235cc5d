#!/usr/bin/env bash
# GPU checks in one run, on a CUDA machine whose python3 has torch, with the repository as the
# working directory and the synthetic set of the default pipeline at data/synthetic.h5.
#   1. `fewsam train run` on the GPU: vit_b (random weights) at 512 px, batch 8, bf16 autocast,
#      and tiny at 256 px: seconds per step of the real trainer (reports/gpu_*_log.csv).
#   2. `fewsam train pretrain-tiny` on the GPU, its step count sized to PRETRAIN_SECONDS from a
#      probe of the step time; weights, card and log land in $OUT.
#
#   OUT=/tmp/gpu PRETRAIN_SECONDS=400 bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu}
PRETRAIN_SECONDS=${PRETRAIN_SECONDS:-400}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
TRAIN_STEPS=${TRAIN_STEPS:-40}
PROBE_STEPS=${PROBE_STEPS:-30}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# A params file with some keys changed: params_with OUTFILE key=value ...
params_with() {
  "$PY" - "$@" <<'EOF'
import sys, yaml
out, *pairs = sys.argv[1:]
data = yaml.safe_load(open("params.yaml"))
for pair in pairs:
    key, value = pair.split("=", 1)
    node = data
    *parents, last = key.split(".")
    for name in parents:
        node = node[name]
    node[last] = yaml.safe_load(value)
yaml.safe_dump(data, open(out, "w"), sort_keys=False)
EOF
}

# 1. The trainer on the GPU.
CONFIGS=${CONFIGS:-"vit_b:512:null tiny:256:models/base/tiny_sam.safetensors"}
for cfg in $CONFIGS; do
  IFS=: read -r -a parts <<< "$cfg"
  set -- "${parts[@]}"
  params_with "$OUT/train_$1.yaml" model.arch=$1 model.input_size=$2 model.checkpoint=$3 \
    train.batch_size=8 train.max_steps=$TRAIN_STEPS train.warmup_steps=1 train.num_workers=4 \
    train.device=$DEVICE
  start=$SECONDS
  timeout 75 "$PY" -m fewsam train run --params "$OUT/train_$1.yaml" --data data/synthetic.h5 \
    --out "$OUT/adapter_$1" --log "$OUT/gpu_$1_log.csv" > "$OUT/train_$1.txt" 2>&1
  echo "train $1 rc=$? wall $((SECONDS - start)) s"
  tail -n 3 "$OUT/train_$1.txt"
  "$PY" - "$OUT/gpu_$1_log.csv" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
s = [float(r["seconds"]) for r in rows[min(5, len(rows) - 1):]]
print(f"{sys.argv[1]}: {len(rows)} steps, median {statistics.median(s):.4f} s/step after 5")
EOF
done

# 2. Pretraining: probe the step time (from the loop's own log), then size the run to the budget.
# Run with -c, not from stdin: the image workers are spawned and re-import the main module.
PROBE=$(cat <<'EOF'
import csv, dataclasses, shutil, sys
from pathlib import Path
from core.params import load_params
from pretrain.loop import new_model, pretrain
out, budget, probe, device = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
p = load_params(Path("params.yaml")).pretrain
p = dataclasses.replace(p, steps=10**6, eval_every=0, save_every=1000, device=device)
pretrain(new_model(0), p, 0, out / "probe", stop_at=probe, report=False)
rows = list(csv.DictReader(open(out / "probe" / "log.csv")))
first = len(rows) // 3  # the first steps warm up kernels and the image workers
per_step = (float(rows[-1]["seconds"]) - float(rows[first]["seconds"])) / (len(rows) - 1 - first)
shutil.rmtree(out / "probe")
steps = max(100, int(budget / per_step / 100) * 100)
print(f"probe: {per_step:.3f} s/step at batch {p.batch_size}; pretraining {steps} steps")
(out / "steps.txt").write_text(str(steps))
EOF
)
"$PY" -c "$PROBE" "$OUT" "$PRETRAIN_SECONDS" "$PROBE_STEPS" "$DEVICE"
steps=${PRETRAIN_STEPS:-$(cat "$OUT/steps.txt")}
# pretrain.minutes stops the run, and ships what it has, should the probe have been optimistic.
params_with "$OUT/pretrain.yaml" pretrain.steps=$steps pretrain.device=$DEVICE \
  pretrain.minutes=$(( PRETRAIN_SECONDS * 13 / 600 + 1 )) \
  pretrain.eval_every=$((steps / 4)) pretrain.curriculum_steps=$((steps * 2 / 5)) \
  pretrain.warmup_steps=$((steps / 20))
grep -A 60 '^pretrain:' "$OUT/pretrain.yaml" | grep -v '^ *#' | tr '\n' ' '; echo
"$PY" -m fewsam train pretrain-tiny --params "$OUT/pretrain.yaml" \
  --out "$OUT/tiny_sam.safetensors" --state "$OUT/state" 2>&1 | grep -v '^\s*$' | tail -n 40

# What comes back: weights, card, and one archive of the logs and params.
rm -rf "$OUT"/adapter_* "$OUT/state/state.pt"
tar -C "$OUT" -czf /tmp/gpu_logs.tgz --exclude 'tiny_sam.*' . && mv /tmp/gpu_logs.tgz "$OUT/logs.tgz"
find "$OUT" -mindepth 1 ! -name 'tiny_sam.*' ! -name logs.tgz -delete 2>/dev/null
ls -la "$OUT"
