//! The conformance suites of sigs.k8s.io/network-policy-api, unchanged, against a local cluster
//! (issue 10): ClusterNetworkPolicy (v1beta1, v1alpha2) at module v0.3.0 and AdminNetworkPolicy /
//! BaselineAdminNetworkPolicy (v1alpha1) at v0.1.7.
//!
//! ```text
//!  go mod download sigs.k8s.io/network-policy-api@<v>   (the Go module proxy)
//!  go test -c ./conformance  in that module, with its own go.mod/go.sum   → <cache>/bin/…test
//!  scan conformance/tests/*.go: each test's features, and which subtests probe SCTP   (pure)
//!  plan: run what weft claims; leave out, with the reason, what needs SCTP or an unclaimed feature
//!  go tool test2json  <binary> -test.run TestConformance/… -test.skip … -supported-features …
//!  → cases (pure), summary table, JUnit report
//! ```
//!
//! The suite probes by `kubectl exec`-ing `/agnhost connect` in the base pods; "denied" means the
//! connection timed out (a policy that drops). Every base pod also runs agnhost `porter` with SCTP
//! ports: on a kernel without SCTP the nodelet withholds those (an Event on the pod), and every test
//! that probes SCTP in any of its subtests is left out whole, listed with its reason, except the
//! tests a version names in [`Version::sctp_subtests_only`]: of those only the subtests that probe
//! SCTP are left out (listed as `Test/subtest`), and the others run.
//!
//! The Go test binary cleans up only when it ends by itself, so the suite runs in a process group of
//! its own: Ctrl-C (or SIGTERM) reaches weft-e2e, which kills the group and deletes the base
//! namespaces and the cluster-wide policies the suites' manifests name. A run also starts by
//! removing whatever an earlier one left, so runs can follow each other; `weft-e2e down` removes
//! everything anyway.
//!
//! Invariant: a test is left out only for a reason [`plan_run`] names (this kernel has no SCTP, or it
//! needs a feature weft does not claim), and every left-out test is printed with it; anything the
//! suite itself skips counts as skipped in the table.

use super::{Case, NotRun, Verdict};
use crate::cluster::Cluster;
use crate::gobuild::{module_stamp, which};
use crate::sys::run;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The top-level Go test of both suites; the conformance tests are its subtests.
pub const ROOT_TEST: &str = "TestConformance";

/// The prefix of the namespaces both suites create for their base pods (and delete, without waiting,
/// when they end).
pub const BASE_NAMESPACE_PREFIX: &str = "network-policy-conformance-";

/// How long the base namespaces of an earlier run may take to go away.
const NAMESPACES_GONE_WITHIN: std::time::Duration = std::time::Duration::from_secs(300);

/// One pinned version of the suite and what weft claims of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    /// The module version.
    pub module: &'static str,
    /// What it tests.
    pub api: &'static str,
    /// The features weft claims (`--supported-features`).
    pub claimed: &'static [&'static str],
    /// Features weft does not claim, with why.
    pub unclaimed: &'static [(&'static str, &'static str)],
    /// Tests of which, on a kernel without SCTP, only the subtests that probe SCTP are left out
    /// (the rest run), instead of the whole test.
    pub sctp_subtests_only: &'static [&'static str],
    /// Whether the suite probes only once right after it creates or changes a policy (v0.1.7),
    /// so that a check can fail when the agents' update (tens of milliseconds) loses the race
    /// against the `kubectl exec` of the probe; v0.3.0 polls each probe for up to 10 s.
    pub probes_once: bool,
}

/// The two pinned versions, in the order they run.
pub const VERSIONS: &[Version] = &[
    Version {
        module: "v0.3.0",
        api: "ClusterNetworkPolicy v1beta1/v1alpha2",
        claimed: &[
            "ClusterNetworkPolicy",
            "ClusterNetworkPolicyNamedPorts",
            "ClusterNetworkPolicyEgressNodePeers",
        ],
        unclaimed: &[],
        sctp_subtests_only: &[
            "CNPAdminTierEgressNodePeers",
            "CNPBaselineTierEgressNodePeers",
        ],
        probes_once: false,
    },
    Version {
        module: "v0.1.7",
        api: "AdminNetworkPolicy/BaselineAdminNetworkPolicy v1alpha1",
        claimed: &[
            "AdminNetworkPolicy",
            "BaselineAdminNetworkPolicy",
            "AdminNetworkPolicyNamedPorts",
            "BaselineAdminNetworkPolicyNamedPorts",
            "AdminNetworkPolicyEgressNodePeers",
            "BaselineAdminNetworkPolicyEgressNodePeers",
        ],
        unclaimed: &[],
        sctp_subtests_only: &[
            "AdminNetworkPolicyEgressNodePeers",
            "BaselineAdminNetworkPolicyEgressNodePeers",
        ],
        probes_once: true,
    },
];

/// The pinned version `module` (`v0.3.0`).
pub fn version(module: &str) -> Result<&'static Version> {
    VERSIONS
        .iter()
        .find(|v| v.module == module)
        .with_context(|| {
            format!(
                "no pinned network-policy-api version {module:?} (pinned: {})",
                VERSIONS
                    .iter()
                    .map(|v| v.module)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// One conformance test as its source declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteTest {
    /// `ShortName`, the subtest name under [`ROOT_TEST`].
    pub name: String,
    /// The features it needs (`suite.SupportX` → `X`).
    pub features: Vec<String>,
    /// Its `t.Run` subtests.
    pub subtests: usize,
    /// How many of them probe SCTP.
    pub sctp_subtests: usize,
    /// The names of those, as Go reports them (spaces become `_`).
    pub sctp_subtest_names: Vec<String>,
}

/// Reads the conformance tests out of the suite's sources (`conformance/tests/*.go`): each
/// `ShortName`, the `suite.Support…` features in its `Features` list, and its `t.Run` subtests with
/// whether each probes `"sctp"`.
pub fn scan_suite(sources: &[String]) -> Vec<SuiteTest> {
    let mut out = Vec::new();
    for src in sources {
        let mut parts = src.split("ShortName:");
        parts.next();
        for part in parts {
            let Some(name) = part.split('"').nth(1) else {
                continue;
            };
            let features = part
                .find("Features:")
                .map(|i| {
                    // `Features: []suite.SupportedFeature{ suite.SupportX, … }`: the list only.
                    let block = &part[i..];
                    let block = &block[block.find('{').map_or(0, |o| o + 1)..];
                    let block = &block[..block.find('}').unwrap_or(block.len())];
                    block
                        .split("suite.Support")
                        .skip(1)
                        .filter_map(|f| {
                            let id: String = f
                                .chars()
                                .take_while(|c| c.is_ascii_alphanumeric())
                                .collect();
                            (!id.is_empty()).then_some(id)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let subs: Vec<&str> = part.split("t.Run(\"").skip(1).collect();
            out.push(SuiteTest {
                name: name.to_string(),
                features,
                subtests: subs.len(),
                sctp_subtests: subs.iter().filter(|s| s.contains("\"sctp\"")).count(),
                sctp_subtest_names: subs
                    .iter()
                    .filter(|s| s.contains("\"sctp\""))
                    .filter_map(|s| s.split('"').next())
                    .map(|n| n.replace(' ', "_"))
                    .collect(),
            });
        }
    }
    out
}

/// Why a test is left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeftOut {
    /// This kernel cannot do what it probes.
    Kernel(String),
    /// It needs a feature weft does not claim.
    Unclaimed(String),
}

/// What one run does: the `-test.run` and `-test.skip` patterns, and every test left out with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPlan {
    pub run: String,
    pub skip: Option<String>,
    pub left_out: Vec<(String, LeftOut)>,
}

fn alternatives(names: &[&str]) -> String {
    let escaped: Vec<String> = names.iter().map(|n| super::regex_escape(n)).collect();
    format!("^({})$", escaped.join("|"))
}

/// Plans a run of `tests` (the whole suite, or only those named in `only`): a test that needs a
/// feature weft does not claim, or (on a kernel without SCTP) probes SCTP in any subtest, is left out
/// with the reason. A name in `only` that the suite lacks is an error.
pub fn plan_run(
    v: &Version,
    tests: &[SuiteTest],
    only: &[String],
    kernel_has_sctp: bool,
) -> Result<RunPlan> {
    for name in only {
        if !tests.iter().any(|t| &t.name == name) {
            bail!(
                "network-policy-api {} has no conformance test {name:?}",
                v.module
            );
        }
    }
    let mut left_out = Vec::new();
    for t in tests {
        if !only.is_empty() && !only.contains(&t.name) {
            continue;
        }
        let unclaimed = t.features.iter().find_map(|f| {
            v.unclaimed
                .iter()
                .find(|(u, _)| u == f)
                .map(|(u, why)| format!("needs feature {u}: {why}"))
                .or_else(|| {
                    (!v.claimed.contains(&f.as_str()))
                        .then(|| format!("needs feature {f}, which weft does not claim"))
                })
        });
        if let Some(why) = unclaimed {
            left_out.push((t.name.clone(), LeftOut::Unclaimed(why)));
        } else if t.sctp_subtests > 0
            && t.sctp_subtests < t.subtests
            && !kernel_has_sctp
            && v.sctp_subtests_only.contains(&t.name.as_str())
        {
            for sub in &t.sctp_subtest_names {
                left_out.push((
                    format!("{}/{sub}", t.name),
                    LeftOut::Kernel(
                        "this subtest probes SCTP; this kernel has no SCTP sockets (the test's other subtests run)".into(),
                    ),
                ));
            }
        } else if t.sctp_subtests > 0 && !kernel_has_sctp {
            left_out.push((
                t.name.clone(),
                LeftOut::Kernel(format!(
                    "{} of its {} subtests probe SCTP; this kernel has no SCTP sockets",
                    t.sctp_subtests, t.subtests
                )),
            ));
        }
    }
    let only: Vec<&str> = only.iter().map(String::as_str).collect();
    let run = if only.is_empty() {
        format!("^{ROOT_TEST}$")
    } else {
        format!("^{ROOT_TEST}$/{}", alternatives(&only))
    };
    // Whole tests in one alternative; each test's left-out subtests in one of their own (Go splits
    // the pattern at unbracketed `|` first, then each alternative at `/` by level).
    let whole: Vec<&str> = left_out
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !n.contains('/'))
        .collect();
    let mut patterns = Vec::new();
    if !whole.is_empty() {
        patterns.push(format!("^{ROOT_TEST}$/{}", alternatives(&whole)));
    }
    let mut subs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (n, _) in &left_out {
        if let Some((test, sub)) = n.split_once('/') {
            subs.entry(test).or_default().push(sub);
        }
    }
    for (test, subs) in subs {
        patterns.push(format!(
            "^{ROOT_TEST}$/^{}$/{}",
            super::regex_escape(test),
            alternatives(&subs)
        ));
    }
    let skip = (!patterns.is_empty()).then(|| patterns.join("|"));
    Ok(RunPlan {
        run,
        skip,
        left_out,
    })
}

/// The left-out tests as the summary prints them: the kernel's first, then weft's.
pub fn not_run(plan: &RunPlan) -> Vec<NotRun> {
    let group = |heading: &str, kernel: bool| NotRun {
        heading: heading.into(),
        specs: plan
            .left_out
            .iter()
            .filter_map(|(n, why)| match (why, kernel) {
                (LeftOut::Kernel(w), true) | (LeftOut::Unclaimed(w), false) => {
                    Some((n.clone(), w.clone()))
                }
                _ => None,
            })
            .collect(),
    };
    vec![
        group("not run on this kernel", true),
        group("not claimed by weft", false),
    ]
}

/// One event of `go test -json` (test2json).
#[derive(Debug, serde::Deserialize)]
struct Event {
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Test")]
    test: Option<String>,
    #[serde(rename = "Output")]
    output: Option<String>,
}

/// The verdicts of a `go test -json` stream: every leaf test (one without subtests), and every test
/// that failed without a failing subtest (a failed setup or manifest), named without the
/// `TestConformance/` prefix. A failure's message is the test's own output (its assertion lines),
/// a skip's the reason the suite gave.
pub fn parse_test_json(stream: &str) -> Vec<Case> {
    let mut order: Vec<String> = Vec::new();
    let mut output: BTreeMap<String, String> = BTreeMap::new();
    let mut result: BTreeMap<String, String> = BTreeMap::new();
    for line in stream.lines() {
        let Ok(e) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        let Some(test) = e.test else {
            continue;
        };
        match e.action.as_str() {
            "run" if !order.contains(&test) => order.push(test),
            "output" => output
                .entry(test)
                .or_default()
                .push_str(e.output.as_deref().unwrap_or_default()),
            "pass" | "fail" | "skip" => {
                result.insert(test, e.action);
            }
            _ => {}
        }
    }
    let is_parent = |t: &str| {
        let prefix = format!("{t}/");
        order.iter().any(|o| o.starts_with(&prefix))
    };
    let failed_below = |t: &str| {
        let prefix = format!("{t}/");
        order
            .iter()
            .any(|o| o.starts_with(&prefix) && result.get(o).is_none_or(|r| r == "fail"))
    };
    let message = |t: &str| -> String {
        output
            .get(t)
            .map(|o| {
                o.lines()
                    .filter(|l| {
                        let l = l.trim_start();
                        !(l.starts_with("=== ") || l.starts_with("--- "))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    order
        .iter()
        .filter_map(|t| {
            let r = result.get(t).map(String::as_str).unwrap_or("fail");
            // A parent counts only when it failed by itself (its setup), not through a subtest.
            let failed_by_itself = r == "fail" && !failed_below(t);
            if is_parent(t) && !failed_by_itself {
                return None;
            }
            let verdict = match r {
                "pass" => Verdict::Passed,
                "skip" => Verdict::Skipped(
                    message(t)
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("skipped")
                        .trim()
                        .to_string(),
                ),
                _ => Verdict::Failed(message(t)),
            };
            let name = t
                .strip_prefix(&format!("{ROOT_TEST}/"))
                .unwrap_or(t)
                .to_string();
            Some(Case { name, verdict })
        })
        .collect()
}

/// The module's directory in Go's module cache (downloaded through the proxy if missing).
fn module_dir(cache_dir: &Path, v: &Version) -> Result<PathBuf> {
    crate::policyapi::download_module(cache_dir, v.module)
}

/// The conformance test binary of `v`, built in the module itself (its own go.mod and go.sum pin
/// every dependency) into the cache unless current.
pub fn ensure_suite(cache_dir: &Path, v: &Version) -> Result<PathBuf> {
    let module = module_dir(cache_dir, v)?;
    let bin = cache_dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let out = bin.join(format!("network-policy-api-{}.test", v.module));
    let stamp_file = cache_dir.join(format!("conformance-policy-api-{}.stamp", v.module));
    let stamp = format!(
        "{} {}",
        v.module,
        module_stamp(&module, &["conformance/conformance_test.go"])?
    );
    if out.exists() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
        return Ok(out);
    }
    if which("go").is_none() {
        bail!("the Go toolchain is needed to build the network-policy-api conformance suite");
    }
    eprintln!(
        "building the network-policy-api {} conformance tests (first time: several minutes)…",
        v.module
    );
    let tmp = bin.join(format!("network-policy-api-{}.test.tmp", v.module));
    run(Command::new("go")
        .current_dir(&module)
        .env("GOFLAGS", "-mod=readonly")
        .args(["test", "-c", "-trimpath", "-o"])
        .arg(&tmp)
        .arg("./conformance"))
    .with_context(|| format!("failed to build the network-policy-api {} suite", v.module))?;
    std::fs::rename(&tmp, &out)?;
    std::fs::write(&stamp_file, stamp)?;
    Ok(out)
}

/// The suite's tests, read from the module's sources.
pub fn suite_tests(cache_dir: &Path, v: &Version) -> Result<Vec<SuiteTest>> {
    let dir = module_dir(cache_dir, v)?.join("conformance/tests");
    let mut sources = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("failed to read {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "go") {
            sources.push(std::fs::read_to_string(&p)?);
        }
    }
    let mut tests = scan_suite(&sources);
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    if tests.is_empty() {
        bail!("found no conformance tests in {}", dir.display());
    }
    Ok(tests)
}

/// The base namespaces left in the cluster, from `kubectl get namespaces -o name`.
pub fn base_namespaces(names: &str) -> Vec<String> {
    names
        .lines()
        .filter_map(|l| l.trim().strip_prefix("namespace/"))
        .filter(|n| n.starts_with(BASE_NAMESPACE_PREFIX))
        .map(str::to_string)
        .collect()
}

/// The cluster-scoped kinds the suites' manifests create, with their resource names.
const POLICY_KINDS: &[(&str, &str)] = &[
    (
        "ClusterNetworkPolicy",
        "clusternetworkpolicies.policy.networking.k8s.io",
    ),
    (
        "AdminNetworkPolicy",
        "adminnetworkpolicies.policy.networking.k8s.io",
    ),
    (
        "BaselineAdminNetworkPolicy",
        "baselineadminnetworkpolicies.policy.networking.k8s.io",
    ),
];

/// The cluster-scoped policies a suite manifest creates, as (resource, name). Read line by line:
/// the manifests are Go templates (`{{ index .HostNetworkPorts 0 }}`), not always YAML.
pub fn manifest_policies(manifest: &str) -> Vec<(&'static str, String)> {
    manifest
        .split("\n---")
        .filter_map(|doc| {
            let kind = doc
                .lines()
                .find_map(|l| l.strip_prefix("kind:"))
                .map(|k| k.trim().trim_matches('"'))?;
            let resource = POLICY_KINDS.iter().find(|(k, _)| *k == kind)?.1;
            let name = doc
                .lines()
                .skip_while(|l| !l.starts_with("metadata:"))
                .skip(1)
                .take_while(|l| l.starts_with(' '))
                .find_map(|l| l.strip_prefix("  name:"))
                .map(|n| n.trim().trim_matches('"').to_string())?;
            Some((resource, name))
        })
        .collect()
}

/// Set by SIGINT/SIGTERM while a suite runs.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// While a suite runs: SIGINT and SIGTERM are caught, and a watcher kills the suite's process group
/// when one arrives.
struct Interrupt {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl Interrupt {
    fn catch(group: u32) -> Result<Self> {
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
        use std::sync::atomic::Ordering;
        INTERRUPTED.store(false, Ordering::SeqCst);
        let act = SigAction::new(
            SigHandler::Handler(on_interrupt),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: the handler only stores to an atomic.
            unsafe { sigaction(sig, &act) }.context("failed to catch SIGINT/SIGTERM")?;
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        let watcher = std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    let pgid = nix::unistd::Pid::from_raw(-(group as i32));
                    let _ = nix::sys::signal::kill(pgid, Signal::SIGKILL);
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        Ok(Self {
            done,
            watcher: Some(watcher),
        })
    }

    /// Stops watching and restores the default handlers; whether a signal came.
    fn release(mut self) -> bool {
        self.stop()
    }

    fn stop(&mut self) -> bool {
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: restoring the default disposition.
            let _ = unsafe { sigaction(sig, &dfl) };
        }
        INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes what an earlier run left (one interrupted, or the other version's namespaces, which a
/// suite deletes as it ends without waiting): the cluster-scoped policies that either version's
/// manifests name, and the base namespaces; with `wait`, waits until those are gone, since pods
/// cannot be created in a namespace that is terminating.
fn clear_earlier_runs(c: &Cluster, wait: bool) -> Result<()> {
    let mut policies: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for v in VERSIONS {
        let base = module_dir(&c.cfg.cache_dir, v)?.join("conformance/base");
        for dir in std::fs::read_dir(&base)
            .with_context(|| format!("failed to read {}", base.display()))?
        {
            let dir = dir?.path();
            if !dir.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&dir)? {
                let f = f?.path();
                if f.extension().is_some_and(|x| x == "yaml") {
                    for (resource, name) in manifest_policies(&std::fs::read_to_string(&f)?) {
                        policies.entry(resource).or_default().push(name);
                    }
                }
            }
        }
    }
    for (resource, mut names) in policies {
        names.sort();
        names.dedup();
        run(c
            .kubectl()
            .args(["delete", resource, "--ignore-not-found", "--wait=false"])
            .args(&names))
        .with_context(|| {
            format!("failed to delete the suites' {resource} left by an earlier run")
        })?;
    }
    let left = base_namespaces(&run(c.kubectl().args(["get", "namespaces", "-o", "name"]))?);
    if !left.is_empty() {
        run(c
            .kubectl()
            .args(["delete", "namespace", "--ignore-not-found", "--wait=false"])
            .args(&left))?;
    }
    if !wait {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + NAMESPACES_GONE_WITHIN;
    let mut said = false;
    loop {
        let left = base_namespaces(&run(c.kubectl().args(["get", "namespaces", "-o", "name"]))?);
        if left.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the namespaces of an earlier run are still there after {NAMESPACES_GONE_WITHIN:?}: {}",
                left.join(", ")
            );
        }
        if !said {
            eprintln!(
                "waiting for the namespaces of an earlier run to go: {}",
                left.join(", ")
            );
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// The outcome of one version's run.
#[derive(Debug)]
pub struct Outcome {
    pub cases: Vec<Case>,
    pub plan: RunPlan,
    /// Where the JUnit report was written.
    pub junit: PathBuf,
}

/// Runs the suite of `v` against `c` (the tests named in `only`, or all): builds it if needed, runs
/// it under test2json with the suite's progress on stderr, and writes `go-test.json` and
/// `junit.xml` into `report_dir`.
pub fn run_suite(c: &Cluster, v: &Version, only: &[String], report_dir: &Path) -> Result<Outcome> {
    let suite = ensure_suite(&c.cfg.cache_dir, v)?;
    let tests = suite_tests(&c.cfg.cache_dir, v)?;
    let plan = plan_run(
        v,
        &tests,
        only,
        crate::nodelet::container::kernel_has_sctp(),
    )?;
    let _ = std::fs::remove_dir_all(report_dir);
    std::fs::create_dir_all(report_dir)?;
    clear_earlier_runs(c, true)?;
    let mut cmd = Command::new("go");
    cmd.args(["tool", "test2json", "-t", "-p"])
        .arg(format!("network-policy-api@{}", v.module))
        .arg(&suite)
        .arg("-test.v=test2json")
        .arg(format!("-test.run={}", plan.run))
        .arg("-test.timeout=0")
        .arg("-test.count=1")
        .arg(format!("-supported-features={}", v.claimed.join(",")));
    if let Some(skip) = &plan.skip {
        cmd.arg(format!("-test.skip={skip}"));
    }
    // Its own process group: Ctrl-C reaches only this process, which stops the suite and removes
    // what it created (the Go test binary, killed by a signal, cleans up nothing).
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .env("KUBECONFIG", c.cfg.kubeconfig())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("failed to run {} under go tool test2json", suite.display()))?;
    let interrupt = Interrupt::catch(child.id())?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut stream = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if let Ok(e) = serde_json::from_str::<Event>(&line)
            && e.action == "output"
            && let Some(o) = &e.output
        {
            eprint!("{o}");
        }
        stream.push_str(&line);
        stream.push('\n');
    }
    let status = child.wait()?;
    if interrupt.release() {
        eprintln!("interrupted: removing the suite's namespaces and policies");
        clear_earlier_runs(c, false)?;
        bail!("the network-policy-api {} suite was interrupted", v.module);
    }
    std::fs::write(report_dir.join("go-test.json"), &stream)?;
    let cases = parse_test_json(&stream);
    if cases.is_empty() {
        bail!(
            "the network-policy-api {} suite reported no test (exit {status})",
            v.module
        );
    }
    let junit = report_dir.join("junit.xml");
    std::fs::write(
        &junit,
        super::render_junit(&format!("network-policy-api {}", v.module), &cases),
    )?;
    Ok(Outcome { cases, plan, junit })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EGRESS: &str = r#"
var CNPAdminTierEgressNamedPort = suite.ConformanceTest{
	ShortName:   "CNPAdminTierEgressNamedPort",
	Features: []suite.SupportedFeature{
		suite.SupportClusterNetworkPolicy,
		suite.SupportClusterNetworkPolicyNamedPorts,
	},
	Test: func(t *testing.T, s *suite.ConformanceTestSuite) {
		t.Run("Should support an 'allow-egress' policy for named port", func(t *testing.T) {
			kubernetes.PokeServer(t, s.ClientSet, &s.KubeConfig, "ns", "p-0", "tcp", ip, int32(80), s.TimeoutConfig, true)
		})
	},
}

var CNPAdminTierEgressNodePeers = suite.ConformanceTest{
	ShortName:   "CNPAdminTierEgressNodePeers",
	Features: []suite.SupportedFeature{
		suite.SupportClusterNetworkPolicy,
		suite.SupportClusterNetworkPolicyEgressNodePeers,
	},
	Test: func(t *testing.T, s *suite.ConformanceTestSuite) {
		t.Run("allow", func(t *testing.T) {})
		t.Run("deny", func(t *testing.T) {
			kubernetes.PokeServer(t, s.ClientSet, &s.KubeConfig, "ns", "p-1", "sctp", ip, int32(9003), s.TimeoutConfig, false)
		})
	},
}
"#;

    const GRESS: &str = r#"
var CNPAdminTierGress = suite.ConformanceTest{
	ShortName:   "CNPAdminTierGress",
	Features: []suite.SupportedFeature{
		suite.SupportClusterNetworkPolicy,
	},
	Test: func(t *testing.T, s *suite.ConformanceTestSuite) {
		t.Run("tcp only", func(t *testing.T) {
			kubernetes.PokeServer(t, s.ClientSet, &s.KubeConfig, "ns", "p-0", "tcp", ip, int32(80), s.TimeoutConfig, true)
		})
		t.Run("all protocols", func(t *testing.T) {
			kubernetes.PokeServer(t, s.ClientSet, &s.KubeConfig, "ns", "p-0", "sctp", ip, int32(9003), s.TimeoutConfig, true)
		})
	},
}
"#;

    fn scanned() -> Vec<SuiteTest> {
        scan_suite(&[EGRESS.to_string(), GRESS.to_string()])
    }

    #[test]
    fn the_suite_source_gives_each_test_its_features_and_sctp_subtests() {
        let t = scanned();
        assert_eq!(
            t[0],
            SuiteTest {
                name: "CNPAdminTierEgressNamedPort".into(),
                features: vec![
                    "ClusterNetworkPolicy".into(),
                    "ClusterNetworkPolicyNamedPorts".into()
                ],
                subtests: 1,
                sctp_subtests: 0,
                sctp_subtest_names: vec![],
            }
        );
        assert_eq!((t[1].subtests, t[1].sctp_subtests), (2, 1));
        assert_eq!(t[1].sctp_subtest_names, vec!["deny".to_string()]);
        assert_eq!(t[2].name, "CNPAdminTierGress");
        assert_eq!((t[2].subtests, t[2].sctp_subtests), (2, 1));
    }

    #[test]
    fn sctp_tests_are_left_out_only_on_a_kernel_without_sctp_and_unclaimed_features_always() {
        let v = version("v0.3.0").unwrap();
        let plan = plan_run(v, &scanned(), &[], false).unwrap();
        assert_eq!(plan.run, "^TestConformance$");
        // CNPAdminTierGress is left out whole; of the node peers test (named in
        // `sctp_subtests_only`) only its SCTP subtest.
        assert_eq!(
            plan.skip.as_deref(),
            Some(
                "^TestConformance$/^(CNPAdminTierGress)$|^TestConformance$/^CNPAdminTierEgressNodePeers$/^(deny)$"
            )
        );
        assert_eq!(
            plan.left_out,
            vec![
                (
                    "CNPAdminTierEgressNodePeers/deny".into(),
                    LeftOut::Kernel(
                        "this subtest probes SCTP; this kernel has no SCTP sockets (the test's other subtests run)".into()
                    )
                ),
                (
                    "CNPAdminTierGress".into(),
                    LeftOut::Kernel(
                        "1 of its 2 subtests probe SCTP; this kernel has no SCTP sockets".into()
                    )
                ),
            ]
        );
        let groups = not_run(&plan);
        assert_eq!(groups[0].specs.len(), 2);
        assert!(groups[1].specs.is_empty());
        let with_sctp = plan_run(v, &scanned(), &[], true).unwrap();
        assert_eq!(
            (with_sctp.left_out.len(), with_sctp.skip),
            (0, None),
            "with SCTP everything runs"
        );
    }

    #[test]
    fn a_named_subset_runs_only_those_tests_and_an_unknown_name_is_refused() {
        let v = version("v0.3.0").unwrap();
        let only = vec!["CNPAdminTierEgressNamedPort".to_string()];
        let plan = plan_run(v, &scanned(), &only, false).unwrap();
        assert_eq!(
            plan.run,
            "^TestConformance$/^(CNPAdminTierEgressNamedPort)$"
        );
        assert_eq!((plan.skip, plan.left_out.len()), (None, 0));
        let err = plan_run(v, &scanned(), &["Nope".to_string()], false).unwrap_err();
        assert!(err.to_string().contains("\"Nope\""), "{err}");
        assert!(version("v9").is_err());
    }

    #[test]
    fn a_feature_weft_never_heard_of_is_not_claimed() {
        let v = version("v0.1.7").unwrap();
        let t = vec![SuiteTest {
            name: "X".into(),
            features: vec!["AdminNetworkPolicy".into(), "SomethingNew".into()],
            subtests: 1,
            sctp_subtests: 0,
            sctp_subtest_names: vec![],
        }];
        let plan = plan_run(v, &t, &[], true).unwrap();
        assert_eq!(
            plan.left_out,
            vec![(
                "X".into(),
                LeftOut::Unclaimed("needs feature SomethingNew, which weft does not claim".into())
            )]
        );
    }

    fn ev(action: &str, test: &str, output: &str) -> String {
        serde_json::json!({"Action": action, "Package": "p", "Test": test, "Output": output})
            .to_string()
    }

    #[test]
    fn test2json_events_become_leaf_cases_and_setup_failures() {
        let r = "TestConformance";
        let a = "TestConformance/CNPAdminTierPriorityField";
        let a1 = "TestConformance/CNPAdminTierPriorityField/Should_Deny";
        let a2 = "TestConformance/CNPAdminTierPriorityField/Should_Pass";
        let b = "TestConformance/CNPAdminTierEgressTCP";
        let s = "TestConformance/CNPAdminTierEgressNodePeers";
        let stream = [
            ev("run", r, ""),
            ev("run", a, ""),
            ev("run", a1, ""),
            ev("output", a1, "=== RUN   x\n"),
            ev("pass", a1, ""),
            ev("run", a2, ""),
            ev("output", a2, "    helper.go:106: Expected connection to fail\n"),
            ev("output", a2, "    --- FAIL: x (1s)\n"),
            ev("fail", a2, ""),
            ev("fail", a, ""),
            ev("run", b, ""),
            ev("output", b, "    apply.go:70: unable to create policy\n"),
            ev("fail", b, ""),
            ev("run", s, ""),
            ev(
                "output",
                s,
                "    suite.go:196: Skipping CNPAdminTierEgressNodePeers: suite does not support X\n",
            ),
            ev("skip", s, ""),
            "not json".into(),
            ev("fail", r, ""),
        ]
        .join("\n");
        let cases = parse_test_json(&stream);
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "CNPAdminTierPriorityField/Should_Deny",
                "CNPAdminTierPriorityField/Should_Pass",
                "CNPAdminTierEgressTCP",
                "CNPAdminTierEgressNodePeers"
            ],
            "a parent with a failing subtest is not counted again"
        );
        assert_eq!(cases[0].verdict, Verdict::Passed);
        assert_eq!(
            cases[1].verdict,
            Verdict::Failed("    helper.go:106: Expected connection to fail".into())
        );
        assert!(
            matches!(&cases[2].verdict, Verdict::Failed(m) if m.contains("unable to create")),
            "a test that failed without subtests (its manifest) is a failure"
        );
        assert!(
            matches!(&cases[3].verdict, Verdict::Skipped(m) if m.contains("does not support X"))
        );
    }

    #[test]
    fn a_run_cut_short_fails_the_test_that_was_running() {
        let t = "TestConformance/CNPAdminTierGress/x";
        let stream = [ev("run", "TestConformance", ""), ev("run", t, "")].join("\n");
        let cases = parse_test_json(&stream);
        assert_eq!(cases.len(), 1);
        assert!(matches!(cases[0].verdict, Verdict::Failed(_)));
    }

    #[test]
    fn only_the_suites_base_namespaces_are_waited_for() {
        let out = "namespace/default\nnamespace/network-policy-conformance-gryffindor\nnamespace/weft-system\nnamespace/network-policy-conformance-forbidden-forrest\n";
        assert_eq!(
            base_namespaces(out),
            [
                "network-policy-conformance-gryffindor",
                "network-policy-conformance-forbidden-forrest"
            ]
        );
        assert!(base_namespaces("namespace/default\n").is_empty());
    }

    #[test]
    fn the_policies_of_a_templated_manifest_are_found_by_kind_and_name() {
        let m = r#"apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata:
  name: priority-50-example
spec:
  tier: Admin
  egress:
  - name: "allow-egress-to-{{ index .HostNetworkPorts 0 }}-on-nodes"
    ports:
    - portRange:
        start: {{ index .HostNetworkPorts 0 }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-gress
  namespace: network-policy-conformance-gryffindor
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata:
  labels:
    name: x
  name: "default"
"#;
        assert_eq!(
            manifest_policies(m),
            [
                (
                    "clusternetworkpolicies.policy.networking.k8s.io",
                    "priority-50-example".to_string()
                ),
                (
                    "baselineadminnetworkpolicies.policy.networking.k8s.io",
                    "default".to_string()
                ),
            ],
            "namespaced NetworkPolicies go with their namespace"
        );
    }
}
