#!/usr/bin/env bash
# One command for the GPU run: synthesise the full-size phantom, run every method's `paper` preset
# on one fold (or all folds, optionally through Ray), write per-epoch training time, inference time
# per case and peak GPU memory per method into benchmarks/README.md's GPU table, and the report.
#
#   benchmarks/gpu_paper.sh                       # CUDA, paper preset, fold 0, every method
#   benchmarks/gpu_paper.sh --all-folds --executor ray   # all 5 folds as Ray tasks (docs/cluster.md)
#   benchmarks/gpu_paper.sh --device cpu --preset smoke --cases 6 --shape 40 80 80 --split-folds 2 \
#       --method threshold-baseline --method patch25d-cnn --out /tmp/gpu --readme /tmp/README.md
#                                                 # everything short of the GPU, on tiny data
#
# Options: --device cuda|cpu (cuda), --preset smoke|quick|paper (paper), --cases N (40),
# --shape Z Y X (80 160 160), --split-folds K (5), --method M (repeatable; default every
# registered method), --all-folds, --executor local|ray (local), --out DIR (gpu-paper-run),
# --readme FILE (benchmarks/README.md), --reports DIR (reports). Re-running resumes: finished folds
# are reused. Needs the project's environment (.venv, or PYTHON=...).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
PYTHON="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

device=cuda preset=paper cases=40 shape=(80 160 160) split_folds=5 executor=local all_folds=0
out=gpu-paper-run readme="$repo/benchmarks/README.md" reports="$repo/reports" methods=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --preset) preset="$2"; shift 2 ;;
    --cases) cases="$2"; shift 2 ;;
    --shape) shape=("$2" "$3" "$4"); shift 4 ;;
    --split-folds) split_folds="$2"; shift 2 ;;
    --method) methods+=("$2"); shift 2 ;;
    --all-folds) all_folds=1; shift ;;
    --executor) executor="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --readme) readme="$2"; shift 2 ;;
    --reports) reports="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see $0 --help)" >&2; exit 2 ;;
  esac
done
case "$device" in cuda|cpu) ;; *) echo "error: --device $device: use cuda or cpu" >&2; exit 2 ;; esac
case "$executor" in local|ray) ;; *) echo "error: --executor $executor: use local or ray" >&2; exit 2 ;; esac
if [ "$device" = cuda ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: --device cuda but torch sees no CUDA GPU here; run on a GPU machine or pass --device cpu" >&2
  exit 2
fi

avnbench() { "$PYTHON" -m avnbench "$@"; }
mkdir -p "$out/gpu_mem"
out="$(cd "$out" && pwd)"
data="$out/data" work="$out/work" uri="sqlite:///$out/mlflow.db"
if [ ${#methods[@]} -eq 0 ]; then
  # every registered method, sorted: an ensemble's members (nnunet-2d, nnunet-3d) come before it
  read -r -a methods <<< "$("$PYTHON" -c 'from avnbench.plugins import load_registry; print(" ".join(sorted(load_registry().methods)))')"
fi

if [ ! -f "$data/cases.json" ]; then
  avnbench data synth --out "$data" --cases "$cases" --shape "${shape[@]}"
  avnbench data split "$data" --folds "$split_folds"
fi
folds=(--folds 0)
[ "$all_folds" = 1 ] && folds=()
common=(--preset "$preset" "${folds[@]}" --device "$device" --data "$data" --workdir "$work" --tracking-uri "$uri")

sample_gpu() {  # peak used memory of the GPU (MiB), every 0.5 s, while a method runs
  while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1 >> "$1"; sleep 0.5; done
}
if [ "$executor" = ray ]; then
  method_args=(); for m in "${methods[@]}"; do method_args+=(--method "$m"); done
  avnbench run "${method_args[@]}" "${common[@]}" --executor ray
else
  for m in "${methods[@]}"; do
    sampler=""
    if [ "$device" = cuda ] && command -v nvidia-smi > /dev/null; then
      : > "$out/gpu_mem/$m.txt"; sample_gpu "$out/gpu_mem/$m.txt" & sampler=$!
    fi
    status=0; avnbench run --method "$m" "${common[@]}" || status=$?
    [ -n "$sampler" ] && kill "$sampler" 2> /dev/null && wait "$sampler" 2> /dev/null || true
    [ "$status" = 0 ] || { echo "error: $m failed (exit $status); fix it and re-run the same command to resume" >&2; exit "$status"; }
  done
fi

if [ "$device" = cuda ]; then
  where="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)"
else
  where="CPU only ($(nproc) cores), no GPU: peak GPU memory does not apply"
fi
what="$(date -u +%Y-%m-%d), $where; phantom ${cases} hips at ${shape[*]}, preset $preset"
[ "$all_folds" = 1 ] && what="$what, all $split_folds folds" || what="$what, fold 0"
what="$what, executor $executor, commit $(git -C "$repo" rev-parse --short HEAD 2> /dev/null || echo '?')"
method_args=(); for m in "${methods[@]}"; do method_args+=(--method "$m"); done
"$PYTHON" -m avnbench.reporting.report_gpu --work "$work" --readme "$readme" --preset "$preset" \
  "${method_args[@]}" --gpu-mem-dir "$out/gpu_mem" \
  --header "Measured by \`benchmarks/gpu_paper.sh\` on $what (s/epoch: mean over epochs and folds)."
avnbench report --tracking-uri "$uri" --workdir "$work" --out "$reports"
echo "GPU table written into $readme; report into $reports; runs in $uri"
