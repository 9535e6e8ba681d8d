//go:build tools

// Package tools records kube-router, the program this module builds for the policy benchmark
// (e2e/benches/policy.rs): its network-policy controller (--run-firewall only) beside weft's
// policy engine on the same cluster. Nothing here is weft's product code, and it is never shipped.
// The bench builds it with
//
//	go build -trimpath -o "$HOME/.cache/weft-e2e/bin/" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
//
// and skips the build while go.mod and go.sum are unchanged.
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
