#!/usr/bin/env bash
# Builds corral's fuzz targets on the stable toolchain and runs each for a fixed time.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 30 s, every target)
# libFuzzer comes from libfuzzer-sys; coverage from LLVM's SanitizerCoverage pass, asked
# for with -C flags that stable rustc accepts (what cargo-fuzz passes, minus the -Z ones).
# A crash leaves its input in fuzz/artifacts/TARGET/ and fails the script; turn it into a
# regression test next to the parser it broke, then keep the input in fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(policy_load proxy_head gateway_eventstream sandbox_sockaddr)
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
# --target keeps the flags off build scripts and proc macros.
cargo build --release --locked --target "$triple" --bins

# New inputs go to a scratch corpus (the first directory); fuzz/corpus/ holds the seeds.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t" "$scratch/$t"
  echo "fuzz: $t for ${seconds}s"
  "target/$triple/release/$t" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" -rss_limit_mb=2048 -timeout=10 "$scratch/$t" "corpus/$t" \
    2> "artifacts/$t.log" || { tail -n 40 "artifacts/$t.log" >&2; echo "fuzz: $t failed" >&2; exit 1; }
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+.*DONE' "artifacts/$t.log" | tail -n 3
done
