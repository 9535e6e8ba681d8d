//! The demo: what a person sees after `weft-e2e up` — nodes, the fabric's status, pods on every node
//! and the reachability matrix between them.

use crate::cluster::Cluster;
use crate::probe::{self, Family};
use crate::serve::parse_ports;
use crate::sys::{run, wait_until};
use anyhow::Result;
use std::time::Duration;

/// Namespace of the demo's pods.
pub const DEMO_NAMESPACE: &str = "weft-demo";

/// Runs the demo on a running cluster and prints what it finds.
pub fn run_demo(c: &Cluster) -> Result<()> {
    println!("== nodes");
    print!("{}", run(c.kubectl().args(["get", "nodes", "-o", "wide"]))?);
    if let Ok(out) = run(c.kubectl().args(["get", "networkfabrics"])) {
        println!("\n== weft");
        print!("{out}");
        print!(
            "{}",
            run(c.kubectl().args([
                "get",
                "pods",
                "-n",
                crate::install::WEFT_NAMESPACE,
                "-o",
                "wide"
            ]))?
        );
    }
    c.apply(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE}}),
    )?;
    let mut names = Vec::new();
    for node in c.cfg.node_names() {
        for i in 1..=2 {
            let name = format!("web-{node}-{i}");
            c.apply(serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": DEMO_NAMESPACE, "labels": {"app": "web", "node": node}},
                    "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                        "name": "web", "image": "nginx",
                        "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]}]}
                }),
            )?;
            names.push(name);
        }
    }
    let ready = wait_until(
        "demo pods to run",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let out = run(c.kubectl().args([
                "get",
                "pods",
                "-n",
                DEMO_NAMESPACE,
                "-o",
                "jsonpath={.items[*].status.phase}",
            ]))?;
            Ok(out.split_whitespace().filter(|p| *p == "Running").count() == names.len())
        },
    );
    println!("\n== pods");
    print!(
        "{}",
        run(c
            .kubectl()
            .args(["get", "pods", "-n", DEMO_NAMESPACE, "-o", "wide"]))?
    );
    if let Err(e) = ready {
        println!("\nnot every demo pod runs: {e:#}");
        println!(
            "(pods need a CNI configuration on their node; `kubectl describe node` shows why a node is NotReady)"
        );
        return Ok(());
    }
    std::thread::sleep(Duration::from_secs(1));
    let eps: Vec<_> = c
        .endpoints(false)?
        .into_iter()
        .filter(|e| e.id.starts_with(DEMO_NAMESPACE))
        .collect();
    let m = probe::matrix(
        &eps,
        &eps,
        &parse_ports("TCP/80")?,
        Family::V4,
        Duration::from_secs(1),
    )?;
    println!("\n== reachability, TCP/80 (rows: from, columns: to; + reachable, . not)");
    let short: Vec<String> = eps
        .iter()
        .map(|e| {
            e.id.trim_start_matches(&format!("{DEMO_NAMESPACE}/"))
                .trim_start_matches("web-")
                .to_string()
        })
        .collect();
    print!("{:>10}", "");
    for s in &short {
        print!(" {s:>9}");
    }
    println!();
    let rows = m.get("TCP/80").cloned().unwrap_or_default();
    for (i, from) in eps.iter().enumerate() {
        print!("{:>10}", short[i]);
        for to in &eps {
            let ok = rows
                .iter()
                .any(|o| o.from == from.id && o.to == to.id && o.allowed);
            print!(" {:>9}", if ok { "+" } else { "." });
        }
        println!();
    }
    let allowed = rows.iter().filter(|o| o.allowed).count();
    println!("\n{allowed} of {} pod pairs reachable", rows.len());
    let cross = rows
        .iter()
        .filter(|o| node_of(&o.from) != node_of(&o.to))
        .collect::<Vec<_>>();
    let own_ip = |o: &probe::Outcome| {
        eps.iter()
            .any(|e| e.id == o.from && e.ips.iter().any(|ip| Some(ip.to_string()) == o.seen_source))
    };
    println!(
        "{} of {} pairs across nodes reachable, {} of them seen with the sender's own pod IP (no NAT)",
        cross.iter().filter(|o| o.allowed).count(),
        cross.len(),
        cross.iter().filter(|o| o.allowed && own_ip(o)).count()
    );

    println!(
        "\n== leaving the cluster: every pod to the external host {}, TCP/80",
        c.cfg.external_ip()
    );
    let external = probe::Endpoint {
        id: "external".into(),
        netns: format!("/run/netns/{}", c.cfg.external_ns()).into(),
        ips: vec![std::net::IpAddr::V4(c.cfg.external_ip())],
    };
    let out = probe::matrix(
        &eps,
        std::slice::from_ref(&external),
        &parse_ports("TCP/80")?,
        Family::V4,
        Duration::from_secs(1),
    )?;
    for o in out.get("TCP/80").into_iter().flatten() {
        match &o.seen_source {
            Some(src) if o.allowed => println!(
                "  {:>10} → external: reached, seen from {src} (its node: masqueraded)",
                o.from.trim_start_matches(&format!("{DEMO_NAMESPACE}/web-"))
            ),
            _ => println!(
                "  {:>10} → external: not reached ({})",
                o.from.trim_start_matches(&format!("{DEMO_NAMESPACE}/web-")),
                o.error.clone().unwrap_or_default()
            ),
        }
    }
    println!(
        "\nweft today: every node gets its subnet, CNI configuration, flannel annotations and the VXLAN\n\
         (or host-gw) overlay, so pods reach each other across nodes without NAT and leave the cluster\n\
         with their node's address. NetworkPolicy is not enforced yet: that is the next piece."
    );
    Ok(())
}

/// The node part of a demo pod id (`weft-demo/web-node-1-2` → `node-1`).
fn node_of(id: &str) -> &str {
    let name = id.rsplit('/').next().unwrap_or(id);
    let name = name.strip_prefix("web-").unwrap_or(name);
    name.rsplit_once('-').map_or(name, |(n, _)| n)
}
