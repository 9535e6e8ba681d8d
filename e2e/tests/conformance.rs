//! The upstream conformance suites in CI (issue 10): a fixed, named subset of each, unchanged, on a
//! local cluster of its own (`hconf`: 3 nodes, kube-proxy, the network-policy-api CRDs, weft).
//! The full runs are `weft-e2e conformance netpol` and `weft-e2e conformance policy-api`
//! (docs/conformance.md); they take too long for CI.
//!
//! Each `#[test]` here is one suite's subset, self-contained: it brings the cluster up through
//! [`on_cluster`], which runs one test at a time (they share the cluster's name) and always tears
//! the cluster down. A test passes only if every named upstream test ran at least one check and
//! none failed, so a subset that matches nothing fails. network-policy-api v0.1.7 probes once right
//! after each policy change, so its subset gets a second run when the first has a failure (see
//! [`run_subset`]); v0.3.0 waits for each probe's expected result itself.
//!
//! Needs root and the suites' binaries (`weft-e2e prepare` builds them; otherwise the first run
//! builds them from the Go proxy):
//! `cargo test -p weft-e2e --test conformance -- --ignored --nocapture`.

mod support;

use anyhow::{Result, ensure};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::*;
use weft_e2e::Cluster;
use weft_e2e::conformance::policy_api::{self, not_run};
use weft_e2e::conformance::{Verdict, regex_escape, render_report};
use weft_e2e::install::{install_weft, wait_fabric_available};
use weft_e2e::policyapi::install_policy_crds;

/// The tests of this file run one after another: they share the cluster's name.
static CLUSTER: Mutex<()> = Mutex::new(());

/// Brings up `hconf`, installs the network-policy-api CRDs and weft, runs `f`, and always tears the
/// cluster down.
fn on_cluster(f: impl FnOnce(&Cluster) -> Result<()>) {
    let _one_at_a_time = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = test_config("hconf", 69, 0);
    cfg.api_port = 17650;
    cfg.port_base = 14700;
    cfg.kube_proxy = true;
    // Another process running this file would share (and tear down) the cluster: one at a time.
    let lock = std::env::temp_dir().join(format!("weft-e2e-suite-{}.lock", cfg.name));
    let _suite_lock = nix::fcntl::Flock::lock(
        std::fs::File::create(&lock).expect("suite lock file"),
        nix::fcntl::FlockArg::LockExclusive,
    )
    .map_err(|(_, e)| e)
    .expect("suite lock");
    let started = Instant::now();
    let c = Cluster::up(cfg).expect("cluster up");
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
        install_policy_crds(&c, Duration::from_secs(60))?;
        install_weft(&c, &[])?;
        wait_fabric_available(&c, "default", Duration::from_secs(180))?;
        eprintln!(
            "cluster {:?} with weft ready after {:.0} s",
            c.cfg.name,
            started.elapsed().as_secs_f64()
        );
        f(&c)
    }));
    let down = c.down();
    match res {
        Ok(r) => r.expect("conformance subset"),
        Err(p) => std::panic::resume_unwind(p),
    }
    down.expect("cluster down");
}

/// The network-policy-api subset, by pinned version: per version one test of policies that deny and
/// pass to the next tier (`…PriorityField`) and one that accepts on a named port (`…EgressNamedPort`).
const POLICY_API_SUBSET: &[(&str, &[&str])] = &[
    (
        "v0.3.0",
        &["CNPAdminTierPriorityField", "CNPAdminTierEgressNamedPort"],
    ),
    (
        "v0.1.7",
        &[
            "AdminNetworkPolicyPriorityField",
            "BaselineAdminNetworkPolicyEgressNamedPort",
        ],
    ),
];

/// Runs the subset of one version once, and, for a version that probes only once right after a
/// policy change ([`policy_api::Version::probes_once`]), a second time if the first had a failure:
/// a race lost by tens of milliseconds does not repeat, a policy weft enforces wrongly fails both
/// runs. Returns the last run's outcome.
fn run_subset(c: &Cluster, version: &str, tests: &[&str]) -> Result<policy_api::Outcome> {
    let v = policy_api::version(version)?;
    let named: Vec<String> = tests.iter().map(|t| t.to_string()).collect();
    let report = std::env::temp_dir().join(format!("weft-conformance-{}", c.cfg.name));
    let attempts = if v.probes_once { 2 } else { 1 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = Instant::now();
        let out = policy_api::run_suite(c, v, &named, &report.join(version))?;
        eprint!(
            "{}",
            render_report(
                &format!(
                    "network-policy-api {version} subset, run {attempt} of at most {attempts}, {:.0} s",
                    started.elapsed().as_secs_f64()
                ),
                &out.cases,
                &not_run(&out.plan)
            )
        );
        let failed = out
            .cases
            .iter()
            .any(|c| matches!(c.verdict, Verdict::Failed(_)));
        if !failed || attempt >= attempts {
            return Ok(out);
        }
        eprintln!("{version} probes once after each policy change: running its subset again");
    }
}

fn policy_api_subset(c: &Cluster) -> Result<()> {
    for (version, tests) in POLICY_API_SUBSET {
        let out = run_subset(c, version, tests)?;
        ensure!(
            out.plan.left_out.is_empty(),
            "the subset names tests that are left out: {:?}",
            out.plan.left_out
        );
        for t in *tests {
            let checks = out
                .cases
                .iter()
                .filter(|c| c.name == *t || c.name.starts_with(&format!("{t}/")))
                .count();
            ensure!(checks > 0, "{version}: {t} ran no check");
        }
        let failed: Vec<&str> = out
            .cases
            .iter()
            .filter(|c| !matches!(c.verdict, Verdict::Passed))
            .map(|c| c.name.as_str())
            .collect();
        ensure!(
            failed.is_empty(),
            "{version}: not passed: {failed:?} (report: {})",
            out.junit.display()
        );
    }
    Ok(())
}

#[test]
#[ignore = "needs root, brings up a local cluster and runs upstream suites (minutes): \
            cargo test -p weft-e2e --test conformance -- --ignored --nocapture"]
fn policy_api_named_subset_passes() {
    on_cluster(policy_api_subset);
}

/// The Netpol subset: specs of `[sig-network] Netpol` by their names, chosen to cover ingress
/// isolation on TCP and UDP (and SCTP, which this kernel skips), a named port, egress denial, an
/// ipBlock with `except`, and a policy updated while it is enforced. Each name is the end of a spec's
/// full text; pods of the suite spread over the cluster's 3 nodes and the suite probes through
/// Services' ClusterIPs, so this is policy after kube-proxy's DNAT, across nodes.
const NETPOL_SUBSET: &[&str] = &[
    "should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]",
    "should allow ingress access on one named port [Feature:NetworkPolicy]",
    "should deny egress from pods based on PodSelector [Feature:NetworkPolicy]",
    "should enforce except clause while egress access to server in CIDR block [Feature:NetworkPolicy]",
    "should enforce updated policy [Feature:NetworkPolicy]",
];

fn netpol_subset(c: &Cluster) -> Result<()> {
    use weft_e2e::conformance::{KERNEL_SKIPS, NETPOL_FOCUS, render_summary, run_netpol};
    let focus = format!(
        "{NETPOL_FOCUS}.*({})",
        NETPOL_SUBSET
            .iter()
            .map(|n| regex_escape(n))
            .collect::<Vec<_>>()
            .join("|")
    );
    let skips: Vec<&str> = KERNEL_SKIPS.iter().map(|(p, _)| *p).collect();
    let report = std::env::temp_dir().join(format!("weft-conformance-{}-netpol", c.cfg.name));
    let started = Instant::now();
    let cases = run_netpol(c, &focus, &skips.join("|"), &report)?;
    eprint!(
        "{}",
        render_summary(
            &format!(
                "Netpol subset on cluster {:?} ({} nodes), {:.0} s",
                c.cfg.name,
                c.cfg.nodes,
                started.elapsed().as_secs_f64()
            ),
            &cases,
            KERNEL_SKIPS
        )
    );
    for name in NETPOL_SUBSET {
        ensure!(
            cases
                .iter()
                .any(|c| c.name.ends_with(name) && matches!(c.verdict, Verdict::Passed)),
            "Netpol: no passed spec named {name:?}"
        );
    }
    let failed: Vec<&str> = cases
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Failed(_)))
        .map(|c| c.name.as_str())
        .collect();
    ensure!(failed.is_empty(), "Netpol: failed: {failed:?}");
    Ok(())
}

#[test]
#[ignore = "needs root, brings up a local cluster and runs upstream suites (minutes): \
            cargo test -p weft-e2e --test conformance -- --ignored --nocapture"]
fn netpol_named_subset_passes() {
    on_cluster(netpol_subset);
}

#[test]
fn spec_names_are_escaped_for_ginkgo() {
    assert_eq!(
        regex_escape("should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]"),
        r"should support a 'default-deny-ingress' policy \[Feature:NetworkPolicy\]"
    );
    assert_eq!(regex_escape("a.b(c)|d"), r"a\.b\(c\)\|d");
}
