//! Installing weft onto a local cluster the way a user does: `helm upgrade --install` of
//! `charts/weft` (CRDs, operator Deployment, RBAC and a NetworkFabric), then waiting for the fabric's
//! conditions to say what happened.

use crate::cluster::Cluster;
use crate::helm::{chart_dir, ensure_helm};
use crate::sys::{run, wait_until};
use anyhow::{Context, Result};
use std::time::Duration;

/// Namespace the chart is installed into.
pub const WEFT_NAMESPACE: &str = "weft-system";
/// Helm release name.
pub const RELEASE: &str = "weft";

/// Installs (or upgrades) weft with Helm and waits for the operator to be ready. `extra` are more
/// helm arguments (e.g. `--set fabric.create=false`).
pub fn install_weft(c: &Cluster, extra: &[&str]) -> Result<()> {
    let helm = ensure_helm(&c.cfg.cache_dir)?;
    let cidrs = serde_json::to_string(&c.cfg.cluster_cidrs)?;
    run(std::process::Command::new(&helm)
        .env("KUBECONFIG", c.cfg.kubeconfig())
        .args(["upgrade", "--install", RELEASE])
        .arg(chart_dir())
        .args([
            "--namespace",
            WEFT_NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout",
            "3m",
        ])
        .args([
            "--set-json",
            &format!("fabric.spec.podNetwork.cidrs={cidrs}"),
        ])
        .args(["--set", "logFormat=text"])
        .args(extra))
    .context("helm install of charts/weft failed")?;
    Ok(())
}

/// The fabric's condition `kind` as (status, reason, message).
pub fn fabric_condition(
    c: &Cluster,
    fabric: &str,
    kind: &str,
) -> Result<Option<(String, String, String)>> {
    let out = run(c
        .kubectl()
        .args(["get", "networkfabric", fabric, "-o", "json"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["status"]["conditions"].as_array().and_then(|cs| {
        cs.iter().find(|x| x["type"] == kind).map(|x| {
            let s = |k: &str| x[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
    }))
}

/// Waits until the fabric reports Available=True.
pub fn wait_fabric_available(c: &Cluster, fabric: &str, timeout: Duration) -> Result<()> {
    let mut last = String::new();
    let res = wait_until(
        &format!("NetworkFabric {fabric} to be Available"),
        timeout,
        Duration::from_millis(500),
        || match fabric_condition(c, fabric, "Available")? {
            Some((s, r, m)) => {
                last = format!("Available={s} ({r}: {m})");
                Ok(s == "True")
            }
            None => Ok(false),
        },
    );
    res.with_context(|| format!("last seen: {last}"))
}

/// `helm uninstall` of the release, waiting for its resources to go.
pub fn uninstall_weft(c: &Cluster) -> Result<()> {
    let helm = ensure_helm(&c.cfg.cache_dir)?;
    run(std::process::Command::new(&helm)
        .env("KUBECONFIG", c.cfg.kubeconfig())
        .args([
            "uninstall",
            RELEASE,
            "--namespace",
            WEFT_NAMESPACE,
            "--wait",
            "--timeout",
            "5m",
        ]))
    .context("helm uninstall failed")?;
    Ok(())
}
