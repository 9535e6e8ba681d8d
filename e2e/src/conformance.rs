//! Kubernetes' own network suites, unchanged, against a local cluster (issue 10).
//!
//! `weft-e2e conformance netpol` builds the Netpol e2e tests of the pinned k8s.io/kubernetes module
//! (`e2e/conformance`, `go test -c`, cached like the control plane), runs them with a ginkgo focus
//! against the cluster's kubeconfig, and reads the JUnit report the e2e framework writes: a summary
//! table (passed / failed / skipped, each failure by name, each skip with its reason).
//!
//! Skips are only for what this kernel cannot do: the `[Feature:SCTPConnectivity]` specs need SCTP
//! sockets. The two Netpol specs about SCTP *policies* ("even if the plugin doesn't support SCTP")
//! probe over TCP and do run.

pub mod policy_api;

use crate::cluster::Cluster;
use crate::gobuild::{module_stamp, which};
use crate::sys::run;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The specs of the Netpol suite.
pub const NETPOL_FOCUS: &str = r"\[sig-network\] Netpol";

/// What this kernel cannot run, and why.
pub const KERNEL_SKIPS: &[(&str, &str)] = &[(
    r"\[Feature:SCTPConnectivity\]",
    "this kernel has no SCTP sockets",
)];

/// `s` as a literal in a Go regular expression (a ginkgo focus, `go test -run`); `/` too, which
/// `go test` reads as the separator of subtest levels.
pub fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$/".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// The outcome of one spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed(String),
    Skipped(String),
}

/// One spec of a JUnit report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    pub verdict: Verdict,
}

/// The characters XML attributes escape, and how; `&` first, so that escaping runs this list forward
/// and unescaping runs it backward.
const XML_ENTITIES: &[(&str, &str)] = &[
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    ("\"", "&quot;"),
    ("'", "&apos;"),
    ("\n", "&#xA;"),
];

fn unescape(s: &str) -> String {
    XML_ENTITIES
        .iter()
        .rev()
        .fold(s.replace("&#39;", "'"), |s, (c, e)| s.replace(e, c))
}

fn escape_xml(s: &str) -> String {
    XML_ENTITIES
        .iter()
        .fold(s.to_string(), |s, (c, e)| s.replace(c, e))
}

/// The value of attribute `name` in the tag text `tag` (`<x a="1" b="2">`).
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// The specs of a ginkgo JUnit report (the e2e framework's `junit_01.xml`).
pub fn parse_junit(xml: &str) -> Vec<Case> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<testcase") {
        rest = &rest[i..];
        let head_end = rest.find('>').unwrap_or(rest.len());
        let head = &rest[..head_end];
        let self_closing = head.ends_with('/');
        let body_end = if self_closing {
            head_end
        } else {
            rest.find("</testcase>").unwrap_or(rest.len())
        };
        let body = &rest[head_end.min(body_end)..body_end];
        let name = attr(head, "name").unwrap_or_default();
        let message = |tag: &str| {
            body.find(tag).map(|j| {
                let t = &body[j..];
                let t = &t[..t.find('>').unwrap_or(t.len())];
                attr(t, "message").unwrap_or_default()
            })
        };
        let verdict = if let Some(m) = message("<failure").or_else(|| message("<error")) {
            Verdict::Failed(m)
        } else if let Some(m) = message("<skipped") {
            Verdict::Skipped(m)
        } else {
            match attr(head, "status").as_deref() {
                Some("failed") | Some("panicked") | Some("timedout") | Some("interrupted") => {
                    Verdict::Failed(String::new())
                }
                Some("skipped") | Some("pending") => Verdict::Skipped(String::new()),
                _ => Verdict::Passed,
            }
        };
        out.push(Case { name, verdict });
        rest = &rest[body_end.max(1)..];
    }
    out
}

/// Whether a spec was filtered out by the focus (ginkgo reports those as skipped without a reason);
/// they are no part of the run.
fn not_selected(c: &Case) -> bool {
    matches!(&c.verdict, Verdict::Skipped(m) if m.is_empty() || m == "skipped")
}

/// Specs that were not run, with why, under one heading of the summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotRun {
    /// The heading (`not run on this kernel`).
    pub heading: String,
    /// (spec name, reason), in the order printed.
    pub specs: Vec<(String, String)>,
}

/// The summary table of a Netpol run: counts, then each failure by name, then each skip with its
/// reason, then the specs this kernel cannot run.
pub fn render_summary(title: &str, cases: &[Case], skip_reasons: &[(&str, &str)]) -> String {
    let ran: Vec<Case> = cases.iter().filter(|c| !not_selected(c)).cloned().collect();
    let excluded: Vec<(String, String)> = cases
        .iter()
        .filter(|c| not_selected(c))
        .filter_map(|c| {
            skip_reasons
                .iter()
                .find(|(pat, _)| c.name.contains(&pat.replace('\\', "")))
                .map(|(_, why)| (c.name.clone(), why.to_string()))
        })
        .collect();
    render_report(
        title,
        &ran,
        &[NotRun {
            heading: "not run on this kernel".into(),
            specs: excluded,
        }],
    )
}

/// The summary table of any suite: counts of what ran, each failure by name, each skip with its
/// reason, then every group of specs that were not run, each with its reason.
pub fn render_report(title: &str, ran: &[Case], not_run: &[NotRun]) -> String {
    let count = |f: fn(&Verdict) -> bool| ran.iter().filter(|c| f(&c.verdict)).count();
    let passed = count(|v| matches!(v, Verdict::Passed));
    let failed = count(|v| matches!(v, Verdict::Failed(_)));
    let skipped = count(|v| matches!(v, Verdict::Skipped(_)));
    let mut s = format!(
        "{title}\n  {:<8} {:>5}\n  {:<8} {:>5}\n  {:<8} {:>5}\n  {:<8} {:>5}\n",
        "passed",
        passed,
        "failed",
        failed,
        "skipped",
        skipped,
        "total",
        ran.len()
    );
    let mut names: Vec<&Case> = ran.iter().collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    if failed > 0 {
        s.push_str("failed:\n");
        for c in names
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Failed(_)))
        {
            s.push_str(&format!("  FAIL {}\n", c.name));
        }
    }
    if skipped > 0 {
        s.push_str("skipped:\n");
        for c in names.iter() {
            if let Verdict::Skipped(m) = &c.verdict {
                s.push_str(&format!("  SKIP {} ({m})\n", c.name));
            }
        }
    }
    for group in not_run.iter().filter(|g| !g.specs.is_empty()) {
        s.push_str(&format!("{}:\n", group.heading));
        for (name, why) in &group.specs {
            s.push_str(&format!("  SKIP {name} ({why})\n"));
        }
    }
    s
}

/// A JUnit report of `cases` as one test suite (what CI systems read; [`parse_junit`] reads it back).
pub fn render_junit(suite: &str, cases: &[Case]) -> String {
    let count = |f: fn(&Verdict) -> bool| cases.iter().filter(|c| f(&c.verdict)).count();
    let failures = count(|v| matches!(v, Verdict::Failed(_)));
    let skipped = count(|v| matches!(v, Verdict::Skipped(_)));
    let suite = escape_xml(suite);
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{n}\" failures=\"{failures}\" skipped=\"{skipped}\">\n  <testsuite name=\"{suite}\" tests=\"{n}\" failures=\"{failures}\" skipped=\"{skipped}\">\n",
        n = cases.len()
    );
    for c in cases {
        let head = format!(
            "    <testcase name=\"{}\" classname=\"{suite}\"",
            escape_xml(&c.name)
        );
        match &c.verdict {
            Verdict::Passed => s.push_str(&format!("{head}></testcase>\n")),
            Verdict::Failed(m) => s.push_str(&format!(
                "{head}>\n      <failure message=\"{}\" type=\"failed\"></failure>\n    </testcase>\n",
                escape_xml(m)
            )),
            Verdict::Skipped(m) => s.push_str(&format!(
                "{head}>\n      <skipped message=\"{}\"></skipped>\n    </testcase>\n",
                escape_xml(m)
            )),
        }
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

/// The Netpol test binary, built from `e2e/conformance` into the cache unless current.
pub fn ensure_netpol_suite(cache_dir: &Path) -> Result<PathBuf> {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance");
    let bin = cache_dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let out = bin.join("e2e-netpol.test");
    let stamp_file = cache_dir.join("conformance-netpol.stamp");
    let stamp = module_stamp(&module, &["netpol/netpol_test.go"])?;
    if out.exists() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
        return Ok(out);
    }
    if which("go").is_none() {
        bail!("the Go toolchain is needed to build the Netpol suite");
    }
    eprintln!(
        "building the Netpol e2e tests from k8s.io/kubernetes (first time: several minutes)…"
    );
    let tmp = bin.join("e2e-netpol.test.tmp");
    run(Command::new("go")
        .current_dir(&module)
        .args(["test", "-c", "-trimpath", "-o"])
        .arg(&tmp)
        .arg("./netpol"))
    .context("failed to build the Netpol suite")?;
    std::fs::rename(&tmp, &out)?;
    std::fs::write(&stamp_file, stamp)?;
    Ok(out)
}

/// Runs the Netpol suite against `c`; returns the specs from its JUnit report (in `report_dir`).
pub fn run_netpol(c: &Cluster, focus: &str, skip: &str, report_dir: &Path) -> Result<Vec<Case>> {
    let suite = ensure_netpol_suite(&c.cfg.cache_dir)?;
    let _ = std::fs::remove_dir_all(report_dir);
    std::fs::create_dir_all(report_dir)?;
    let status = Command::new(&suite)
        .env("KUBECONFIG", c.cfg.kubeconfig())
        .env("PATH", path_with(&c.cp_bin))
        .arg(format!("--kubeconfig={}", c.cfg.kubeconfig().display()))
        .arg(format!("--report-dir={}", report_dir.display()))
        .arg(format!("--ginkgo.focus={focus}"))
        .arg(format!("--ginkgo.skip={skip}"))
        .arg("--ginkgo.timeout=4h")
        .arg("--ginkgo.no-color")
        .arg("--test.timeout=0")
        .status()
        .with_context(|| format!("failed to run {}", suite.display()))?;
    let junit = report_dir.join("junit_01.xml");
    let xml = std::fs::read_to_string(&junit).with_context(|| {
        format!(
            "the suite wrote no JUnit report at {} (exit {status})",
            junit.display()
        )
    })?;
    Ok(parse_junit(&xml))
}

/// PATH with the cluster's kubectl first (the e2e framework shells out to kubectl).
fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="4" disabled="0" errors="0" failures="1" time="10">
  <testsuite name="Kubernetes e2e suite" package="/" tests="4" skipped="0" failures="1">
    <testcase name="[sig-network] Netpol NetworkPolicy between server and client should support allow-all policy [Feature:NetworkPolicy]" classname="Kubernetes e2e suite" status="passed" time="30.1"></testcase>
    <testcase name="[sig-network] Netpol NetworkPolicy between server and client should support a &#39;default-deny-ingress&#39; policy [Feature:NetworkPolicy]" classname="Kubernetes e2e suite" status="failed" time="60.2">
      <failure message="Expected&#xA;    &lt;bool&gt;: false" type="failed">[FAILED] Expected...</failure>
    </testcase>
    <testcase name="[sig-network] Netpol [Feature:SCTPConnectivity] [LinuxOnly] NetworkPolicy between server and client using SCTP should support a &#39;default-deny-ingress&#39; policy" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[sig-network] Netpol [LinuxOnly] NetworkPolicy between server and client using UDP should enforce policy based on Ports" classname="Kubernetes e2e suite" status="skipped" time="0.5">
      <skipped message="skipped - Only supported for providers [gce]"></skipped>
    </testcase>
  </testsuite>
</testsuites>"#;

    #[test]
    fn junit_specs_are_read_with_their_verdicts() {
        let cases = parse_junit(REPORT);
        assert_eq!(cases.len(), 4);
        assert_eq!(cases[0].verdict, Verdict::Passed);
        assert!(cases[1].name.contains("'default-deny-ingress'"));
        assert!(matches!(&cases[1].verdict, Verdict::Failed(m) if m.contains("<bool>: false")));
        assert_eq!(cases[2].verdict, Verdict::Skipped("skipped".into()));
        assert!(matches!(&cases[3].verdict, Verdict::Skipped(m) if m.contains("providers")));
    }

    #[test]
    fn the_summary_counts_what_ran_and_names_failures_and_skips_with_reasons() {
        let s = render_summary("Netpol", &parse_junit(REPORT), KERNEL_SKIPS);
        assert!(s.contains("passed       1"), "{s}");
        assert!(s.contains("failed       1"), "{s}");
        assert!(s.contains("skipped      1"), "{s}");
        assert!(s.contains("total        3"), "{s}");
        assert!(s.contains("FAIL [sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress'"));
        assert!(s.contains("(skipped - Only supported for providers [gce])"));
        assert!(
            s.contains(
                "not run on this kernel:\n  SKIP [sig-network] Netpol [Feature:SCTPConnectivity]"
            ) && s.contains("(this kernel has no SCTP sockets)"),
            "{s}"
        );
    }

    #[test]
    fn a_written_junit_report_reads_back_with_the_same_verdicts() {
        let cases = vec![
            Case {
                name: "A/allow <TCP> 'x' & \"y\"".into(),
                verdict: Verdict::Passed,
            },
            Case {
                name: "A/deny".into(),
                verdict: Verdict::Failed("expected TIMEOUT\ngot REFUSED".into()),
            },
            Case {
                name: "B".into(),
                verdict: Verdict::Skipped("suite does not support X".into()),
            },
        ];
        let xml = render_junit("network-policy-api v0.3.0", &cases);
        assert!(
            xml.contains(r#"tests="3" failures="1" skipped="1""#),
            "{xml}"
        );
        assert_eq!(parse_junit(&xml), cases);
    }

    #[test]
    fn a_report_lists_every_group_of_specs_not_run_with_its_reason() {
        let ran = vec![Case {
            name: "T/x".into(),
            verdict: Verdict::Passed,
        }];
        let s = render_report(
            "t",
            &ran,
            &[
                NotRun {
                    heading: "not run on this kernel".into(),
                    specs: vec![("Gress".into(), "probes SCTP".into())],
                },
                NotRun {
                    heading: "empty".into(),
                    specs: vec![],
                },
            ],
        );
        assert!(
            s.contains("passed       1") && s.contains("total        1"),
            "{s}"
        );
        assert!(
            s.contains("not run on this kernel:\n  SKIP Gress (probes SCTP)\n"),
            "{s}"
        );
        assert!(!s.contains("empty:"), "{s}");
    }
}
