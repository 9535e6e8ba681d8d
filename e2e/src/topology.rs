//! The cluster's network: an underlay bridge in a namespace of its own, one namespace per node, and an
//! "external" host namespace that stands for everything outside the cluster.
//!
//! ```text
//!   <name>-underlay:  br0 10.U.0.1/24  (API server forwarder listens here)
//!        │ v-node-1      │ v-node-2      │ v-external
//!   <name>-node-1      <name>-node-2    <name>-external
//!    eth0 10.U.0.11     eth0 10.U.0.12   eth0 10.U.0.254 (default gateway of the nodes)
//! ```
//!
//! Nothing here touches the root namespace: every link is created inside a namespace we own.

use crate::config::ClusterConfig;
use crate::sys::{ip, ip_in, list_netns, netns_exists, run};
use anyhow::{Context, Result};
use std::process::Command;

/// Creates the underlay, external host and node namespaces that do not exist yet.
pub fn create(cfg: &ClusterConfig) -> Result<()> {
    let ul = cfg.underlay_ns();
    if !netns_exists(&ul) {
        ip(&["netns", "add", &ul]).context(
            "failed to create a network namespace: run as root on a kernel with network namespaces",
        )?;
        sysctls(
            &ul,
            &[
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ],
        )?;
        ip_in(&ul, &["link", "set", "lo", "up"])?;
        ip_in(&ul, &["link", "add", "br0", "type", "bridge"])
            .context("failed to create the underlay bridge: the kernel needs bridge support")?;
        ip_in(
            &ul,
            &[
                "addr",
                "add",
                &format!("{}/24", cfg.gateway_ip()),
                "dev",
                "br0",
            ],
        )?;
        ip_in(
            &ul,
            &[
                "addr",
                "add",
                &format!("{}/64", cfg.gateway_ip6()),
                "dev",
                "br0",
                "nodad",
            ],
        )?;
        ip_in(&ul, &["link", "set", "br0", "up"])?;
    }
    let ext = cfg.external_ns();
    if !netns_exists(&ext) {
        add_host(
            cfg,
            &ext,
            "v-external",
            &cfg.external_ip().to_string(),
            &cfg.external_ip6(),
            false,
        )?;
    }
    for (i, node) in cfg.node_names().iter().enumerate() {
        let ns = cfg.node_ns(node);
        if !netns_exists(&ns) {
            add_host(
                cfg,
                &ns,
                &format!("v-{node}"),
                &cfg.node_ip(i + 1).to_string(),
                &cfg.node_ip6(i + 1),
                true,
            )
            .with_context(|| format!("failed to create node {node}"))?;
        }
    }
    Ok(())
}

/// One host on the underlay: a namespace whose eth0 is a veth into br0.
fn add_host(
    cfg: &ClusterConfig,
    ns: &str,
    veth: &str,
    ip4: &str,
    ip6: &str,
    node: bool,
) -> Result<()> {
    let ul = cfg.underlay_ns();
    ip(&["netns", "add", ns])?;
    let mut sys = vec![
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
    ];
    if node {
        // A Kubernetes node forwards pod traffic; kubelet's prerequisites include this.
        sys.extend([
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ]);
    }
    sysctls(ns, &sys)?;
    ip_in(
        &ul,
        &[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )
    .context("failed to create a veth pair: the kernel needs veth support")?;
    ip_in(&ul, &["link", "set", veth, "master", "br0", "up"])?;
    ip_in(ns, &["link", "set", "lo", "up"])?;
    ip_in(ns, &["addr", "add", &format!("{ip4}/24"), "dev", "eth0"])?;
    ip_in(
        ns,
        &["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"],
    )?;
    ip_in(ns, &["link", "set", "eth0", "up"])?;
    if node {
        ip_in(
            ns,
            &[
                "route",
                "add",
                "default",
                "via",
                &cfg.external_ip().to_string(),
            ],
        )?;
        ip_in(
            ns,
            &["-6", "route", "add", "default", "via", &cfg.external_ip6()],
        )?;
    }
    Ok(())
}

fn sysctls(ns: &str, pairs: &[(&str, &str)]) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "sysctl", "-q", "-w"]);
    for (k, v) in pairs {
        cmd.arg(format!("{k}={v}"));
    }
    run(&mut cmd).map(|_| ())
}

/// Every namespace that belongs to cluster `name`.
pub fn owned_namespaces(name: &str) -> Vec<String> {
    let node_prefix = format!("{name}-node-");
    let fixed = [format!("{name}-underlay"), format!("{name}-external")];
    list_netns()
        .into_iter()
        .filter(|n| {
            fixed.contains(n)
                || n.strip_prefix(&node_prefix)
                    .is_some_and(|i| !i.is_empty() && i.chars().all(|c| c.is_ascii_digit()))
        })
        .collect()
}

/// Deletes every namespace of the cluster; collects errors instead of stopping at the first.
pub fn delete(name: &str) -> Vec<anyhow::Error> {
    owned_namespaces(name)
        .into_iter()
        .filter_map(|ns| ip(&["netns", "del", &ns]).err())
        .collect()
}
