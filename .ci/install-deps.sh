#!/usr/bin/env bash
# Installs what weft's build, local cluster and tests need on a fresh Debian machine. Idempotent and
# quick when everything is already there.
set -euo pipefail

PKGS=(containernetworking-plugins iproute2 iputils-ping python3 nftables iptables conntrack ipset ethtool kmod procps util-linux jq curl ca-certificates build-essential clang libelf-dev zlib1g-dev pkg-config)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
command -v go >/dev/null || { echo "go is missing: install Go 1.24 or newer first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt || true
