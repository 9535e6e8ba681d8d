//! The demo: what a person sees after `weft-e2e up` — nodes, the fabric's status, pods on every node
//! and the reachability matrix between them; then one NetworkPolicy and the matrix it leaves.

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
    let rows = m.get("TCP/80").cloned().unwrap_or_default();
    print!("{}", render_matrix(&eps, &rows));
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
    show_policy(c, &eps)?;
    println!(
        "\nweft today: every node gets its subnet, CNI configuration, flannel annotations and the VXLAN\n\
         (or host-gw) overlay, so pods reach each other across nodes without NAT and leave the cluster\n\
         with their node's address; every agent enforces NetworkPolicy (and the cluster-wide\n\
         ClusterNetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy) for its own pods.\n\
         While no policy exists, pod-to-pod packets of flows conntrack does not know skip the\n\
         nodes' netfilter hooks on weft's eBPF fast path (metrics weft_agent_fastpath_*)."
    );
    Ok(())
}

/// The demo's NetworkPolicy: node-1's pods take TCP/80 only from pods on node-1.
pub const DEMO_POLICY: &str = "node-1-local";

/// Whether the demo policy lets `from` reach `to` (pod ids; a pod always reaches itself).
fn demo_policy_allows(from: &str, to: &str) -> bool {
    from == to || node_of(to) != "node-1" || node_of(from) == "node-1"
}

/// Applies [`DEMO_POLICY`], waits (bounded) until the agents enforce it, prints the matrix with the
/// pairs it denies, and removes it again.
fn show_policy(c: &Cluster, eps: &[probe::Endpoint]) -> Result<()> {
    println!(
        "\n== NetworkPolicy {DEMO_NAMESPACE}/{DEMO_POLICY}: pods on node-1 take TCP/80 only from pods on node-1"
    );
    c.apply(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": DEMO_NAMESPACE, "name": DEMO_POLICY},
        "spec": {"podSelector": {"matchLabels": {"node": "node-1"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"node": "node-1"}}}],
                              "ports": [{"protocol": "TCP", "port": 80}]}]}
    }))?;
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    let enforced = wait_until(
        "the agents to enforce the demo policy",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let m = probe::matrix(
                eps,
                eps,
                &parse_ports("TCP/80")?,
                Family::V4,
                Duration::from_secs(1),
            )?;
            rows = m.get("TCP/80").cloned().unwrap_or_default();
            Ok(!rows.is_empty()
                && rows
                    .iter()
                    .all(|o| o.allowed == demo_policy_allows(&o.from, &o.to)))
        },
    );
    let took = started.elapsed();
    println!("(rows: from, columns: to; + reachable, . not)");
    print!("{}", render_matrix(eps, &rows));
    let denied: Vec<_> = rows.iter().filter(|o| !o.allowed).collect();
    println!(
        "\n{} of {} pod pairs reachable; denied by the policy:",
        rows.len() - denied.len(),
        rows.len()
    );
    for o in &denied {
        println!("  {} → {}", short_id(&o.from), short_id(&o.to));
    }
    match &enforced {
        Ok(()) => println!(
            "the probes showed it enforced {:.1}s after kubectl apply (a denied probe waits 1 s)",
            took.as_secs_f64()
        ),
        Err(e) => println!("not enforced as written: {e:#}"),
    }
    run(c.kubectl().args([
        "delete",
        "networkpolicy",
        "-n",
        DEMO_NAMESPACE,
        DEMO_POLICY,
        "--wait=false",
    ]))?;
    let reopened = wait_until(
        "every pair to be reachable again",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let m = probe::matrix(
                eps,
                eps,
                &parse_ports("TCP/80")?,
                Family::V4,
                Duration::from_secs(1),
            )?;
            Ok(m.get("TCP/80").is_some_and(|r| r.iter().all(|o| o.allowed)))
        },
    );
    match reopened {
        Ok(()) => println!("policy deleted: every pair reachable again"),
        Err(e) => println!("policy deleted, but: {e:#}"),
    }
    Ok(())
}

/// A demo pod's id without namespace and `web-` (`weft-demo/web-node-1-2` → `node-1-2`).
fn short_id(id: &str) -> &str {
    id.trim_start_matches(&format!("{DEMO_NAMESPACE}/"))
        .trim_start_matches("web-")
}

/// The reachability matrix as text: rows are sources, columns destinations, `+` reachable.
fn render_matrix(eps: &[probe::Endpoint], rows: &[probe::Outcome]) -> String {
    let mut out = format!("{:>10}", "");
    for e in eps {
        out.push_str(&format!(" {:>9}", short_id(&e.id)));
    }
    out.push('\n');
    for from in eps {
        out.push_str(&format!("{:>10}", short_id(&from.id)));
        for to in eps {
            let ok = rows
                .iter()
                .any(|o| o.from == from.id && o.to == to.id && o.allowed);
            out.push_str(&format!(" {:>9}", if ok { "+" } else { "." }));
        }
        out.push('\n');
    }
    out
}

/// The node part of a demo pod id (`weft-demo/web-node-1-2` → `node-1`).
fn node_of(id: &str) -> &str {
    let name = id.rsplit('/').next().unwrap_or(id);
    let name = name.strip_prefix("web-").unwrap_or(name);
    name.rsplit_once('-').map_or(name, |(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: &str) -> probe::Endpoint {
        probe::Endpoint {
            id: format!("{DEMO_NAMESPACE}/web-{id}"),
            netns: "/nonexistent".into(),
            ips: Vec::new(),
        }
    }

    #[test]
    fn the_demo_policy_closes_node_1_to_other_nodes_only() {
        let id = |s: &str| format!("{DEMO_NAMESPACE}/web-{s}");
        assert!(demo_policy_allows(&id("node-1-1"), &id("node-1-2")));
        assert!(!demo_policy_allows(&id("node-2-1"), &id("node-1-2")));
        assert!(demo_policy_allows(&id("node-1-1"), &id("node-2-2")));
        assert!(demo_policy_allows(&id("node-3-1"), &id("node-2-2")));
        assert!(demo_policy_allows(&id("node-1-2"), &id("node-1-2")));
    }

    #[test]
    fn the_matrix_marks_reachable_pairs() {
        let eps = [ep("node-1-1"), ep("node-2-1")];
        let o = |from: &probe::Endpoint, to: &probe::Endpoint, allowed| probe::Outcome {
            from: from.id.clone(),
            to: to.id.clone(),
            allowed,
            error: None,
            seen_source: None,
        };
        let rows = [
            o(&eps[0], &eps[0], true),
            o(&eps[0], &eps[1], true),
            o(&eps[1], &eps[0], false),
            o(&eps[1], &eps[1], true),
        ];
        let text = render_matrix(&eps, &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("node-1-1") && lines[0].contains("node-2-1"));
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["node-1-1", "+", "+"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["node-2-1", ".", "+"]
        );
    }
}
