#!/usr/bin/env bash
# Builds and runs every fuzz target (cargo-fuzz, libFuzzer, nightly) for SECONDS each (default
# 60). Seeds come from the real encoders (tests' fuzz_seeds). A crash is copied into
# fuzz/regressions/<target>/, which the ordinary suite replays on stable, and fails the run.
#   deploy/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "deploy/fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

cargo build -q -p tests --bin fuzz_seeds
./target/debug/fuzz_seeds fuzz/corpus

cd fuzz
cargo +nightly fuzz build
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "regressions/$t" "artifacts/$t"
  echo "== $t: ${secs}s"
  start=$(date +%s)
  if cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=4096 \
      -timeout=20 -print_final_stats=1 > "artifacts/$t.log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "artifacts/$t.log" | grep -o '[0-9]*$' || echo "?")
    echo "   ok: $(( $(date +%s) - start ))s, ${runs} runs, no crash"
  else
    echo "   CRASH (log: fuzz/artifacts/$t.log)"
    tail -30 "artifacts/$t.log"
    for f in artifacts/"$t"/crash-* artifacts/"$t"/timeout-* artifacts/"$t"/oom-*; do
      [ -e "$f" ] && cp "$f" "regressions/$t/"
    done
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes in: ${failed[*]} (inputs kept in fuzz/regressions/)" >&2
  exit 1
fi
