// Package netpol runs Kubernetes' NetworkPolicy e2e tests (test/e2e/network/netpol), unchanged,
// against the cluster of --kubeconfig: the same specs as the upstream e2e.test binary, without the
// suites that do not concern a network fabric. Built with `go test -c` by `weft-e2e conformance
// netpol`, which passes the ginkgo focus and the report directory.
package netpol

import (
	"flag"
	"os"
	"testing"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"

	"k8s.io/component-base/logs"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"

	// The specs: [sig-network] Netpol ...
	_ "k8s.io/kubernetes/test/e2e/network/netpol"

	// As in test/e2e/e2e_test.go: define and freeze the feature constants, reconfigure the
	// framework, and make the logging flags part of the command line.
	_ "k8s.io/component-base/logs/testinit"
	_ "k8s.io/kubernetes/test/e2e/feature"
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
)

func TestMain(m *testing.M) {
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	framework.AfterReadingAllFlags(&framework.TestContext)
	os.Exit(m.Run())
}

func TestNetpol(t *testing.T) {
	logs.InitLogs()
	defer logs.FlushLogs()
	klog.EnableContextualLogging(true)
	gomega.RegisterFailHandler(framework.Fail)
	suiteConfig, reporterConfig := framework.CreateGinkgoConfig()
	ginkgo.RunSpecs(t, "Kubernetes e2e suite (Netpol)", suiteConfig, reporterConfig)
}
