//! kstatus, the library behind Flux's health checks and `wait: true` (sigs.k8s.io/cli-utils
//! `pkg/kstatus/status`), as a witness for the end-to-end suites: does a GitOps tool read weft's
//! objects truthfully?
//!
//! `e2e/kstatus` is a Go module that pins cli-utils v0.37.2 and holds `weft-kstatus`, a tiny program
//! that reads objects as `kubectl get -o json` prints them and writes kstatus's verdict on each as
//! one JSON line. Like the control plane and Helm it is built from its module into the clone-
//! independent cache (`<cache>/bin`, stamped with go.mod, go.sum and the source, so an unchanged
//! module costs nothing); `weft-e2e prepare` builds it ahead of the suites.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::gobuild::ensure_go_binaries;

/// The witness program, by binary name and package inside the module.
pub const KSTATUS: &[(&str, &str)] = &[("weft-kstatus", "./cmd/weft-kstatus")];

/// The directory of the pinned kstatus Go module.
pub fn kstatus_module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kstatus")
}

/// Builds `weft-kstatus` into `<cache_dir>/bin` unless it is current; returns the binary's path.
pub fn ensure_kstatus(cache_dir: &Path) -> Result<PathBuf> {
    let bin = ensure_go_binaries(
        &kstatus_module(),
        KSTATUS,
        "kstatus",
        &["cmd/weft-kstatus/main.go"],
        "-s -w",
        &[("CGO_ENABLED", "0")],
        cache_dir,
    )?;
    Ok(bin.join(KSTATUS[0].0))
}

/// kstatus's verdict on one object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Verdict {
    /// The object's kind.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// `InProgress`, `Failed`, `Current`, `Terminating`, `NotFound` or `Unknown`.
    pub status: String,
    /// kstatus's message (a condition's message, or why the generation is not observed yet).
    pub message: String,
}

/// Runs the `weft-kstatus` at `binary` on `json` (one object or a List, as kubectl prints them).
pub fn kstatus_verdicts(binary: &Path, json: &str) -> Result<Vec<Verdict>> {
    let mut child = Command::new(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {}", binary.display()))?;
    child
        .stdin
        .take()
        .context("weft-kstatus has no stdin")?
        .write_all(json.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "weft-kstatus failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("weft-kstatus printed {l:?}")))
        .collect()
}
