#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, through libfuzzer-sys on the stable compiler) of
# manifest loading with overlays and --set (target `manifest`) and of chaos experiment
# parsing (target `experiment`), seeded from environments/ and chaos/. A panic, or an
# input that takes more than 10 s (a hang), stops the run with a non-zero exit and the
# input saved under fuzz/artifacts/. The corpus grows in fuzz/corpus/ between runs.
# Usage: fuzz/run.sh [SECONDS per target, default 600] [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift $(( $# > 0 ? 1 : 0 ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest experiment)
cargo build --release --locked -q
mkdir -p artifacts
for t in "${targets[@]}"; do
  seeds=$(mktemp -d)
  trap 'rm -rf "$seeds"' EXIT
  case $t in
    manifest)
      cp ../environments/level-*.yaml "$seeds/"
      # The same with an overlay and --set assignments (parts after NUL bytes).
      printf '%s\0spec:\n  shop:\n    workers: 3\n\0spec.shop.dbPoolSize=42\0spec.redis.maxmemory=2 GiB\n' \
        "$(cat ../environments/level-3.yaml)" >"$seeds/level-3-overlay-set" ;;
    experiment) cp ../chaos/*.yaml "$seeds/" ;;
    *) echo "unknown target $t (manifest, experiment)" >&2; exit 2 ;;
  esac
  mkdir -p "corpus/$t"
  echo "fuzzing $t for ${secs}s" >&2
  ./target/x86_64-unknown-linux-gnu/release/"$t" "corpus/$t" "$seeds" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t-" 2>"artifacts/$t.log" || {
      tail -n 40 "artifacts/$t.log" >&2
      echo "fuzz target $t failed: the input is in fuzz/artifacts/ (replay: fuzz/target/x86_64-unknown-linux-gnu/release/$t FILE)" >&2
      exit 1
    }
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "artifacts/$t.log" | sed "s/^/$t: /" >&2
  rm -rf "$seeds"
done
