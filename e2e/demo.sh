#!/usr/bin/env bash
# Brings up weft's local demo: a 3-node cluster on this machine (real control plane, nodes in network
# namespaces), shows pods and their connectivity. Installs what is missing first. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
cargo build --workspace --bins
./target/debug/weft-e2e up "$@"
./target/debug/weft-e2e demo
