#!/usr/bin/env bash
# One-shot GPU check of the toolkit: parity, fp16/bf16 training of CLIP-ReID, a 1-GPU NCCL launch,
# evaluation at Market/MSMT17 scale, loader and training throughput. Prints one summary table.
#
#   bash benchmarks/gpu_suite.sh                 # one H100/H200: under 8 minutes (TOTAL_BUDGET)
#   bash benchmarks/gpu_suite.sh --cpu-smoke     # the same steps on a CPU at tiny sizes (CI)
#   bash benchmarks/gpu_suite.sh --workdir DIR   # keep logs, runs and JSON results in DIR
#
# Each step runs under its own time budget (timeout); a failing, timed-out or skipped step is a
# row of the table and the suite goes on. The table is printed whatever happens (also on Ctrl-C).
# Exit status: 0 when no step failed or timed out (skipped steps do not count), 1 otherwise. Environment: PYTHON (default: python),
# REFERENCE_DIR (default: ../shared/reference), TOTAL_BUDGET (seconds, default 470 on a GPU).

set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
cd "$REPO" || exit 2
PY="${PYTHON:-python}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

SMOKE=0
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) SMOKE=1 ;;
    --workdir) WORK="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
  shift
done
[ -n "$WORK" ] || WORK="$(mktemp -d "${TMPDIR:-/tmp}/clipreid_gpu_suite.XXXXXX")"
mkdir -p "$WORK/logs" "$WORK/runs" "$WORK/json"
STATUS="$WORK/status.tsv"
: > "$STATUS"
REF="${REFERENCE_DIR:-$(dirname "$REPO")/shared/reference}"
if [ "$SMOKE" = 1 ]; then DEV=cpu; TOTAL="${TOTAL_BUDGET:-1200}"; else DEV=cuda; TOTAL="${TOTAL_BUDGET:-470}"; fi
START=$(date +%s)

summary() {
  "$PY" - "$WORK" "$DEV" <<'EOF'
import json, os, sys
work, dev = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
try:
    from bench_common import machine_line
    print("\n" + machine_line(dev))
except Exception as e:  # the table matters more than the header
    print(f"\n(machine line unavailable: {e})")
rows = []

def add(step, status, secs, result):
    rows.append((step, status, secs, result))

def load(name):
    try:
        with open(os.path.join(work, "json", name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

for line in open(os.path.join(work, "status.tsv")):
    name, status, secs, kind, extra = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    result = ""
    log = os.path.join(work, "logs", name + ".log")
    text = open(log, errors="replace").read() if os.path.exists(log) else ""
    if kind == "parity":
        result = "; ".join(l.strip() for l in text.splitlines() if l.startswith("Summary:")) or "no summary line"
    elif kind == "train":
        res = load(name + ".json") or {}
        for ds, m in res.items():
            result = f"{ds}: mAP {m.get('mAP', float('nan')):.1f}, R-1 {m.get('Rank-1', float('nan')):.1f}"
        if status == "PASS" and not res:
            status, result = "FAIL", "no results.json"
    elif kind == "eval":
        parts = load(name + ".json") or []
        bad = [p for p in parts if "error" in p]
        result = ", ".join(f"{p['dataset']} {p['part']} " + (p["error"] if "error" in p else f"{p['seconds']:.1f} s")
                           for p in parts) or "no results"
        if status == "PASS" and (bad or not parts):
            status = "FAIL"
    elif kind == "loader":
        r = {x["name"]: x for x in (load(name + ".json") or []) if x.get("part") == "loader"}
        if "reference-style" in r and "ours" in r:
            a, b = r["reference-style"], r["ours"]
            result = (f"per worker: reference-style {a['images_per_s_per_worker']:.0f}, ours "
                      f"{b['images_per_s_per_worker']:.0f} img/s ({b['images_per_s'] / a['images_per_s']:.2f}x)")
        elif status == "PASS":
            status, result = "FAIL", "no results"
    if kind == "throughput":
        add(name, status, secs, "images/s below (reference-style -> ours)")
        for r in load(name + ".json") or []:
            fmt = lambda v: f"{v:.0f}" if isinstance(v, (int, float)) else str(v)[:40]
            ok = r["ratio"] is not None
            skipped = any(str(r[k]).startswith("skipped") for k in ("reference_style", "ours"))
            add(f"  {r['model']} {r['part']}", "PASS" if ok else "SKIP" if skipped else "FAIL", "",
                f"{fmt(r['reference_style'])} -> {fmt(r['ours'])}" + (f" ({r['ratio']:.2f}x)" if ok else ""))
        continue
    if status != "PASS" and not result and extra:
        result = extra
    if status != "PASS" and not result and text:
        result = text.strip().splitlines()[-1][:100]
    add(name, status, secs, result)

w = max([len(r[0]) for r in rows] + [4])
print(f"\n{'step':{w}s}  {'status':7s}  {'secs':>5s}  result")
print("-" * (w + 60))
for step, status, secs, result in rows:
    print(f"{step:{w}s}  {status:7s}  {secs:>5s}  {result}")
failed = sum(1 for r in rows if r[1] not in ("PASS", "SKIP"))
skipped = sum(1 for r in rows if r[1] == "SKIP")
print(f"\n{len(rows) - failed - skipped} passed, {failed} failed, {skipped} skipped")
print(f"logs, runs and JSON results: {work}")
sys.exit(1 if failed else 0)
EOF
}

finish() {
  trap - EXIT INT TERM
  summary
  exit $?
}
trap finish EXIT
trap 'echo "interrupted"; finish' INT TERM

# run_step NAME BUDGET KIND CMD...: runs CMD under `timeout`, records PASS / FAIL / TIMEOUT / SKIP
run_step() {
  local name="$1" budget="$2" kind="$3"
  shift 3
  local now left status rc t0
  now=$(date +%s)
  left=$((TOTAL - (now - START)))
  if [ "$left" -lt 10 ]; then
    printf '%s\tSKIP\t0\t%s\tsuite time budget spent\n' "$name" "$kind" >> "$STATUS"
    echo "== $name: skipped (suite time budget spent)"
    return
  fi
  [ "$budget" -gt "$left" ] && budget="$left"
  echo "== $name (budget ${budget} s): $*"
  t0=$(date +%s)
  timeout --kill-after=15 "$budget" "$@" > "$WORK/logs/$name.log" 2>&1
  rc=$?
  case "$rc" in
    0) status=PASS ;;
    124|137) status=TIMEOUT ;;
    *) status=FAIL ;;
  esac
  printf '%s\t%s\t%s\t%s\t\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$kind" >> "$STATUS"
  echo "   $status after $(( $(date +%s) - t0 )) s (log: $WORK/logs/$name.log)"
}

if [ "$DEV" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  printf 'cuda-available\tFAIL\t0\tcheck\t\n' >> "$STATUS"
  echo "No CUDA device: run with --cpu-smoke on a machine without a GPU." > "$WORK/logs/cuda-available.log"
  exit 1
fi

# ---------------------------------------------------------------- 1. parity (fp32 and fp64 cases)
shopt -s nullglob
cases32=("$REF"/case_*.pt)
cases64=("$REF"/float64/case_*.pt)
if [ ${#cases32[@]} -gt 0 ]; then
  run_step parity-fp32 60 parity "$PY" tools/check_parity.py --device "$DEV" "${cases32[@]}"
else
  printf 'parity-fp32\tSKIP\t0\tparity\t\n' >> "$STATUS"; echo "no cases in $REF" > "$WORK/logs/parity-fp32.log"
fi
if [ ${#cases64[@]} -gt 0 ]; then
  run_step parity-fp64 60 parity "$PY" tools/check_parity.py --device "$DEV" --dtype float64 "${cases64[@]}"
else
  printf 'parity-fp64\tSKIP\t0\tparity\t\n' >> "$STATUS"; echo "no cases in $REF/float64" > "$WORK/logs/parity-fp64.log"
fi

# ---------------------------------------------------------------- 2. CLIP-ReID end to end, both phases
CFG=projects/CLIPReID/configs/synthetic/cnn_clipreid_tiny.yml
COMMON=(MODEL.DEVICE "$DEV" DATASETS.ROOT_DIR "$WORK/datasets" SOLVER.AMP.ENABLED True)
if [ "$SMOKE" = 1 ]; then
  COMMON+=(DATASETS.SYNTHETIC.NUM_TRAIN_IDS 8 DATASETS.SYNTHETIC.IMAGES_PER_ID 4 DATASETS.SYNTHETIC.NUM_TEST_IDS 4
           DATASETS.SYNTHETIC.NUM_DISTRACTORS 2 DATASETS.SYNTHETIC.NUM_JUNK 1
           CLIPREID.STAGE1.MAX_EPOCHS 2 CLIPREID.STAGE1.WARMUP_EPOCHS 1 SOLVER.MAX_EPOCHS 2 SOLVER.WARMUP_EPOCHS 1
           SOLVER.STEPS_EPOCHS "(1, 2)" SOLVER.CHECKPOINT_PERIOD 2 TEST.EVAL_PERIOD 2 DATALOADER.NUM_WORKERS 0
           MODEL.COMPILE_BACKEND aot_eager)
  TRAIN_BUDGET=300
else
  COMMON+=(DATALOADER.NUM_WORKERS 4)
  TRAIN_BUDGET=100
fi
train_run() {  # NAME BUDGET extra overrides...
  local name="$1" budget="$2"
  shift 2
  run_step "$name" "$budget" train "$PY" tools/train_net.py --config-file "$CFG" --overwrite "${COMMON[@]}" \
    OUTPUT_DIR "$WORK/runs/$name" "$@"
  cp "$WORK/runs/$name/results.json" "$WORK/json/$name.json" 2>/dev/null || true
}
# fp16 with a GradScaler, the reference's settings (on a CPU float16 autocast falls back to float32)
train_run train-fp16 "$TRAIN_BUDGET" SOLVER.AMP.DTYPE float16 SOLVER.PARAM_GROUPS per_tensor
# bf16 with every speed option: device augmentation, decode cache, fused optimizer, torch.compile
train_run train-bf16 "$((TRAIN_BUDGET + 50))" SOLVER.AMP.DTYPE bfloat16 TEST.PRECISION bfloat16 \
  INPUT.DEVICE_AUGMENT True DATALOADER.DECODE_CACHE ram MODEL.COMPILE default

# ---------------------------------------------------------------- 3. one-process launch through torchrun (NCCL on a GPU)
run_step launch-torchrun 90 train "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 tools/train_net.py \
  --config-file "$CFG" --overwrite "${COMMON[@]}" OUTPUT_DIR "$WORK/runs/launch-torchrun" SOLVER.AMP.DTYPE bfloat16 \
  CLIPREID.STAGE1.MAX_EPOCHS 2 CLIPREID.STAGE1.WARMUP_EPOCHS 1 SOLVER.MAX_EPOCHS 2 SOLVER.WARMUP_EPOCHS 1 \
  SOLVER.STEPS_EPOCHS "(1, 2)" SOLVER.CHECKPOINT_PERIOD 2 TEST.EVAL_PERIOD 2
cp "$WORK/runs/launch-torchrun/results.json" "$WORK/json/launch-torchrun.json" 2>/dev/null || true

# ---------------------------------------------------------------- 4. evaluation at Market-1501 / MSMT17 scale
# (smoke: the reference evaluator needs galleries of at least 50 images: Market at 1% has 159)
if [ "$SMOKE" = 1 ]; then SCALE=(--scale 0.01); else SCALE=(); fi
run_step eval-market 60 eval "$PY" benchmarks/eval_scale.py --datasets market --device "$DEV" "${SCALE[@]}" \
  --parts metrics-baseline,metrics-ours,rerank-ours --json "$WORK/json/eval-market.json"
[ "$SMOKE" = 1 ] && SCALE=(--scale 0.003)
run_step eval-msmt17 80 eval "$PY" benchmarks/eval_scale.py --datasets msmt --device "$DEV" "${SCALE[@]}" \
  --parts metrics-ours,rerank-ours --json "$WORK/json/eval-msmt17.json"

# ---------------------------------------------------------------- 5. loader and training throughput
if [ "$SMOKE" = 1 ]; then
  run_step loader 60 loader "$PY" benchmarks/loader_throughput.py --device "$DEV" --num-images 64 --size 32 16 \
    --batch 8 --workers 0 --stage-images 16 --root "$WORK/loader_data" --json "$WORK/json/loader.json"
  # every model and part at tiny sizes (torch.compile is exercised by train-bf16 above; here the
  # tiny models run eager to stay quick); the fast-reid backbones' rows run in the GPU run only
  # (tests/benchmarks/test_fastreid_backbones_throughput.py runs them at tiny sizes)
  run_step throughput 120 throughput "$PY" benchmarks/train_throughput.py --tiny --device "$DEV" --backbones "" \
    --steps 1 --warmup 1 --workers 0 --compile-mode "" --ours-dtype bfloat16 --root "$WORK/train_data" \
    --json "$WORK/json/throughput.json"
else
  run_step loader 45 loader "$PY" benchmarks/loader_throughput.py --device "$DEV" --num-images 3000 --workers 8 \
    --root "$WORK/loader_data" --json "$WORK/json/loader.json"
  run_step throughput 160 throughput "$PY" benchmarks/train_throughput.py --device "$DEV" --time-budget 140 \
    --steps 20 --warmup 6 --workers 8 --root "$WORK/train_data" --json "$WORK/json/throughput.json"
fi
