//! End-to-end tests of a dual-stack local cluster: IPv4 and IPv6 node CIDRs, pods with both
//! families, probes over IPv6.

mod support;

use anyhow::{Context, Result, ensure};
use std::time::Duration;
use support::*;
use weft_e2e::Cluster;
use weft_e2e::install::{install_weft, wait_fabric_available};
use weft_e2e::probe::{self, Family};

fn main() {
    let mut cfg = test_config("wdual", 94, 400).dual_stack();
    cfg.nodes = 2;
    let trials: Vec<Trial> = vec![
        (
            "nodes_get_an_ipv4_and_an_ipv6_pod_cidr",
            Box::new(node_cidrs),
        ),
        (
            "pods_get_both_families_and_reach_each_other_over_ipv6",
            Box::new(pods_both_families),
        ),
        (
            "with_weft_pods_on_two_nodes_reach_each_other_over_both_families",
            Box::new(weft_dual_stack_overlay),
        ),
    ];
    run_suite(cfg, trials)
}

fn node_cidrs(c: &Cluster) -> Result<()> {
    for node in c.cfg.node_names() {
        let n = get_json(c, &["node", &node])?;
        let cidrs: Vec<&str> = n["spec"]["podCIDRs"]
            .as_array()
            .context("no podCIDRs")?
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        ensure!(
            cidrs.len() == 2,
            "{node}: expected two pod CIDRs, got {cidrs:?}"
        );
        ensure!(
            cidrs[0].starts_with("10.244.")
                && cidrs[1].starts_with("fd00:10:244:")
                && cidrs[1].ends_with("/64"),
            "{node}: {cidrs:?}"
        );
        let addrs = n["status"]["addresses"].as_array().context("addresses")?;
        ensure!(
            addrs.iter().any(|a| a["type"] == "InternalIP"
                && a["address"].as_str().is_some_and(|s| s.contains(':'))),
            "{node} reports no IPv6 InternalIP"
        );
        place_bridge_conflist(c, &node, "10-e2e.conflist")?;
    }
    Ok(())
}

fn pods_both_families(c: &Cluster) -> Result<()> {
    for name in ["a", "b"] {
        c.apply(pod_yaml(
            "default",
            name,
            Some("node-1"),
            &[],
            &[("TCP", 80), ("UDP", 53)],
        ))?;
    }
    for name in ["a", "b"] {
        let p = wait_pod_ready(c, "default", name, Duration::from_secs(60))?;
        let ips: Vec<&str> = p["status"]["podIPs"]
            .as_array()
            .context("podIPs")?
            .iter()
            .filter_map(|i| i["ip"].as_str())
            .collect();
        ensure!(
            ips.len() == 2 && ips[1].contains(':'),
            "{name}: expected an IPv4 and an IPv6 address, got {ips:?}"
        );
    }
    let a = c.endpoint("default/a")?;
    let b = c.endpoint("default/b")?;
    for port in ["TCP/80", "UDP/53"] {
        let o = probe::single(&a, &b, port.parse()?, Family::V6, Duration::from_secs(2))?;
        ensure!(o.allowed, "{port} over IPv6: {:?}", o.error);
        let src = o.seen_source.unwrap_or_default();
        ensure!(
            src.contains(':'),
            "{port}: the destination saw {src}, not an IPv6 source"
        );
    }
    Ok(())
}

/// weft's dual-stack overlay: `flannel.1` and `flannel-v6.1` on every node, pods on two nodes
/// reaching each other over IPv4 and IPv6 with their own addresses.
fn weft_dual_stack_overlay(c: &Cluster) -> Result<()> {
    // weft's conflist replaces the test's bridge one.
    for node in c.cfg.node_names() {
        let f = c
            .cfg
            .node_dir(&node)
            .join("etc-cni-net.d")
            .join("10-e2e.conflist");
        let _ = std::fs::remove_file(f);
    }
    output(
        c.kubectl()
            .args(["delete", "pod", "-n", "default", "--all", "--wait=false"]),
    )?;
    install_weft(c, &[])?;
    wait_fabric_available(c, "default", Duration::from_secs(120))?;
    output(c.kubectl().args(["create", "namespace", "ds"]))?;
    for (name, node) in [("c", "node-1"), ("d", "node-2")] {
        c.apply(pod_yaml(
            "ds",
            name,
            Some(node),
            &[],
            &[("TCP", 80), ("UDP", 53)],
        ))?;
    }
    for name in ["c", "d"] {
        wait_pod_ready(c, "ds", name, Duration::from_secs(60))?;
    }
    let links = {
        let mut cmd = std::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &c.cfg.node_ns("node-1"),
            "ip",
            "-d",
            "link",
            "show",
            "flannel-v6.1",
        ]);
        output(&mut cmd)?
    };
    ensure!(
        links.contains("vxlan id 1"),
        "no IPv6 VXLAN device: {links}"
    );
    let cc = c.endpoint("ds/c")?;
    let d = c.endpoint("ds/d")?;
    for family in [Family::V4, Family::V6] {
        for (from, to) in [(&cc, &d), (&d, &cc)] {
            for port in ["TCP/80", "UDP/53"] {
                let o = eventually(
                    &format!("{} -> {} {port} {family:?}", from.id, to.id),
                    Duration::from_secs(10),
                    || {
                        let o =
                            probe::single(from, to, port.parse()?, family, Duration::from_secs(2))?;
                        Ok(o.allowed.then_some(o))
                    },
                )?;
                let src = o.seen_source.unwrap_or_default();
                ensure!(
                    from.ips.iter().any(|ip| ip.to_string() == src),
                    "{} -> {} {port} {family:?}: seen from {src}, not the pod's own address",
                    from.id,
                    to.id
                );
            }
        }
    }
    Ok(())
}
