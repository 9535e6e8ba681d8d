//go:build tools

// Package tools records the Helm CLI that this module builds, so that `go mod tidy`
// keeps its dependencies. Build it with
//
//	go build -trimpath -o "$HOME/.cache/weft-e2e/bin/helm" helm.sh/helm/v3/cmd/helm
//
// (e2e/src/helm.rs does exactly that, and skips the build when go.mod and go.sum
// are unchanged).
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
