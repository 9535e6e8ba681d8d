//! End-to-end tests of a dual-stack local cluster: IPv4 and IPv6 node CIDRs, pods with both
//! families, probes over IPv6.

mod support;

use anyhow::{Context, Result, ensure};
use std::time::Duration;
use support::*;
use weft_e2e::Cluster;
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
