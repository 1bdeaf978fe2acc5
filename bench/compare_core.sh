#!/usr/bin/env bash
# Compares two scalectl builds, alternated in one home: `up --level 1` time; then a
# level 3 brought up by OLD, planned (a no-op, or the script stops) and `status`ed by
# both. Usage: bench/compare_core.sh OLD_SCALECTL NEW_SCALECTL [runs]
# Build OLD in a second worktree (`git worktree add ../old REV`, `cargo build -p scalectl`
# there). Both use one shop binary ($SCALECTL_SHOP_BIN, default target/debug/shop) so
# that the program digest matches.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$1; NEW=$2; RUNS=${3:-5}
export SCALECTL_SHOP_BIN=${SCALECTL_SHOP_BIN:-$PWD/target/debug/shop}
H=$(mktemp -d /tmp/bench-core-XXXX); chmod 755 "$H"
trap '"$NEW" --home "$H/h" down --env b3 -q >/dev/null 2>&1 || "$BASE" --home "$H/h" down --env b3 -q >/dev/null 2>&1 || true; "$NEW" --home "$H/h" down --env b1 -q >/dev/null 2>&1 || true; rm -rf "$H"' EXIT
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ub=(); un=()
for i in $(seq "$RUNS"); do
  for which in base new; do
    bin=$BASE; [ $which = new ] && bin=$NEW
    t0=$(now); "$bin" --home "$H/h" up --level 1 --env b1 -q >/dev/null; t1=$(now)
    "$bin" --home "$H/h" down --env b1 -q >/dev/null
    d=$(echo "$t1 - $t0" | bc); [ $which = base ] && ub+=("$d") || un+=("$d")
  done
done
echo "up --level 1: base median $(printf '%s\n' "${ub[@]}" | median) (${ub[*]})"
echo "up --level 1: new  median $(printf '%s\n' "${un[@]}" | median) (${un[*]})"
t0=$(now); "$BASE" --home "$H/h" up --level 3 --env b3 -q >/dev/null; t1=$(now)
echo "up --level 3 by base: $(echo "$t1 - $t0" | bc) s"
"$NEW" --home "$H/h" plan --env b3 --exit-code | grep "No changes" >/dev/null || { echo "the new build plans changes to the old build's environment" >&2; exit 1; }
pb=(); pn=(); sb=(); sn=()
for round in 1 2 3; do
  for which in base new; do
    bin=$BASE; [ $which = new ] && bin=$NEW
    t0=$(now); for i in $(seq 10); do "$bin" --home "$H/h" plan --env b3 --exit-code >/dev/null; done; t1=$(now)
    p=$(echo "($t1 - $t0) * 100" | bc -l)
    t0=$(now); for i in $(seq 5); do "$bin" --home "$H/h" status --env b3 >/dev/null || true; done; t1=$(now)
    s=$(echo "($t1 - $t0) * 200" | bc -l)
    if [ $which = base ]; then pb+=("$p"); sb+=("$s"); else pn+=("$p"); sn+=("$s"); fi
  done
done
echo "no-op plan (no changes, checked) of level 3 (ms per plan): base $(printf '%s\n' "${pb[@]}" | median) (${pb[*]}), new $(printf '%s\n' "${pn[@]}" | median) (${pn[*]})"
echo "status of level 3 (ms per status): base $(printf '%s\n' "${sb[@]}" | median) (${sb[*]}), new $(printf '%s\n' "${sn[@]}" | median) (${sn[*]})"
