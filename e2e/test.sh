#!/usr/bin/env bash
# weft's whole test suite: formatting, lints, unit and golden tests, and the end-to-end suites on
# local clusters (needs root). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
cargo fmt --all -- --check
cargo build --workspace --bins --tests
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# The Go helper behind the nodes' kubelet API (logs, exec; exec needs root for nsenter).
(cd e2e/kubeletapi && go vet ./... && go test ./...)
# The chart lifecycle on its own local cluster (needs root, ~70 s).
cargo test -p weft-e2e --test chart -- --ignored
# A fixed, named subset of Kubernetes' Netpol e2e tests and of the network-policy-api conformance
# suites (both pinned versions), each on its own local 3-node cluster (needs root, ~6 min; the full
# runs: weft-e2e conformance netpol | policy-api, see docs/conformance.md).
cargo test -p weft-e2e --test conformance -- --ignored --nocapture
