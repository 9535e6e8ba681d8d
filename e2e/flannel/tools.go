//go:build tools

// Package tools records flanneld, the program this module builds, so that `go mod tidy` keeps its
// dependencies. e2e/tests/flannel.rs builds it with
//
//	go build -trimpath -o "$HOME/.cache/weft-e2e/bin/" github.com/flannel-io/flannel
//
// and skips the build while go.mod and go.sum are unchanged.
package tools

import (
	_ "github.com/flannel-io/flannel"
)
