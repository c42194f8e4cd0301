#!/usr/bin/env bash
# Fuzzes the stream read path (rust/core/fuzz) for SECONDS (default 60).
# cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain
# accept them, since this machine has no other toolchain.
set -euo pipefail
cd "$(dirname "$0")/../rust/core"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
RUSTC_BOOTSTRAP=1 cargo fuzz run stream -- -max_total_time="$seconds" -max_len=4096
