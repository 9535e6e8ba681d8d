//! The local cluster run from binaries in a directory that a pod's volumes would hide (issue 7).
//!
//! The agent pods mount an emptyDir on `/tmp`. A checkout or `CARGO_TARGET_DIR` under `/tmp` once
//! made every agent fail with `RunContainerError: … No such file or directory`, because the nodelet
//! looked for the image's binary inside the container's mount namespace. Here the whole bin dir
//! (weft-e2e, weft-nodelet, weft-agent, weft-cni, weft-operator) is copied under `/tmp`, into a directory
//! whose name has a space, and the cluster comes up from there with weft installed.

mod support;

use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;
use weft_e2e::install::{WEFT_NAMESPACE, install_weft, wait_fabric_available};
use weft_e2e::{Cluster, ClusterConfig};

const BINARIES: &[&str] = &[
    "weft-e2e",
    "weft-nodelet",
    "weft-agent",
    "weft-cni",
    "weft-operator",
];

fn copy_bin_dir(to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for b in BINARIES {
        std::fs::copy(bin_dir().join(b), to.join(b)).with_context(|| {
            format!("failed to copy {b} (build the workspace's binaries first)")
        })?;
    }
    Ok(())
}

fn main() {
    let under_tmp: PathBuf =
        PathBuf::from("/tmp").join(format!("weft e2e bin {}", std::process::id()));
    if !std::env::args().any(|a| a == "--list")
        && let Err(e) = copy_bin_dir(&under_tmp)
    {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
    let mut cfg = ClusterConfig::new("wtmp", 2, under_tmp.clone());
    cfg.underlay_octet = 93;
    cfg.api_port = 17449;
    cfg.port_base = 13390;
    let dir = under_tmp.clone();
    let trials: Vec<Trial> = vec![(
        "agent_pods_run_from_a_bin_dir_under_tmp",
        Box::new(move |c| agents_run_from(c, &dir)),
    )];
    run_suite_then(cfg, trials, move || {
        let _ = std::fs::remove_dir_all(&under_tmp);
    })
}

fn agents_run_from(c: &Cluster, dir: &Path) -> Result<()> {
    install_weft(c, &[])?;
    wait_fabric_available(c, "default", Duration::from_secs(120))?;
    let pods = get_json(
        c,
        &[
            "pods",
            "-n",
            WEFT_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=weft-agent",
        ],
    )?;
    let items = pods["items"].as_array().context("no items")?;
    ensure!(
        items.len() == 2,
        "expected one agent per node, got {}",
        items.len()
    );
    for p in items {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|x| x["type"] == "Ready" && x["status"] == "True")
        });
        ensure!(
            p["status"]["phase"] == "Running" && ready,
            "agent {name} is not Running and Ready: {}",
            p["status"]
        );
    }
    // The agents really are the copies under /tmp: every node runs one process whose executable
    // is <dir>/weft-agent.
    let want = dir.join("weft-agent");
    for node in c.cfg.node_names() {
        let ns = Path::new("/run/netns").join(c.cfg.node_ns(&node));
        let found = weft_e2e::sys::pids_in_netns(&ns)
            .into_iter()
            .any(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == want));
        ensure!(found, "no process on {node} runs {}", want.display());
    }
    Ok(())
}
