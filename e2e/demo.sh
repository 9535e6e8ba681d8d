#!/usr/bin/env bash
# Brings up weft's local demo: a 3-node cluster on this machine (real control plane, nodes in network
# namespaces), shows pods and their connectivity. Installs what is missing first. Needs root.
# Works from any checkout directory and with any CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
cargo build --workspace --bins
# Where cargo put the binaries: ./target, $CARGO_TARGET_DIR or a configured target-dir.
target="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
"$target/debug/weft-e2e" up "$@"
"$target/debug/weft-e2e" demo
