//! Interop with real flannel (issue 8, "How this is shown" 4): flanneld v0.28.10, built from its Go
//! module (`e2e/flannel`), runs on node-3 of a local cluster in kube-subnet-manager mode, and weft's
//! agent on node-1 and node-2 (the fabric's `agent.nodeSelector`). Pods on the two kinds of node
//! reach each other both ways, without NAT. Then node-3 moves to weft in place, as an RKE2/k3s user
//! would do it (docs/migrate-from-flannel.md): flanneld stopped, its CNI config removed, the node
//! labelled for weft's agent; continuous pings through node-3 count what is lost, no pod restarts,
//! and a new pod on node-3 reaches everyone.
//!
//! Not in CI (building flanneld takes minutes): run it as root with
//! `cargo test -p weft-e2e --test flannel -- --ignored --nocapture`.

mod support;

use anyhow::{Context, Result, ensure};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;
use weft_e2e::Cluster;
use weft_e2e::flannel::{Flanneld, ensure_flanneld, place_flannel_conflist};
use weft_e2e::install::{install_weft, wait_fabric_available};
use weft_e2e::probe::{self, Endpoint, Family};
use weft_e2e::serve::parse_ports;

const NS: &str = "interop";
const FLANNEL_NODE: &str = "node-3";
const WEFT_LABEL: &str = "weft.dev/cni";

fn node_ip(c: &Cluster, node: &str, args: &[&str]) -> Result<String> {
    output(
        Command::new("ip")
            .args(["-n", &c.cfg.node_ns(node)])
            .args(args),
    )
}

/// Every pod reaches every pod on TCP and UDP, and is seen with its own address. Prints the matrix.
fn full_matrix(eps: &[Endpoint], title: &str) -> Result<()> {
    let m = probe::matrix(
        eps,
        eps,
        &parse_ports("TCP/80,UDP/53")?,
        Family::V4,
        Duration::from_secs(2),
    )?;
    eprintln!("{title}");
    let mut bad = Vec::new();
    for (port, rows) in &m {
        ensure!(
            rows.len() == eps.len() * eps.len(),
            "{port}: {} pairs",
            rows.len()
        );
        for o in rows {
            let from = eps.iter().find(|e| e.id == o.from).context("source")?;
            let src = o.seen_source.clone().unwrap_or_default();
            let ok = o.allowed && from.ips.iter().any(|ip| ip.to_string() == src);
            eprintln!(
                "  {port:7} {:22} → {:22} {}",
                o.from,
                o.to,
                if ok {
                    "ok".to_string()
                } else {
                    format!("FAILED ({:?}, seen from {src:?})", o.error)
                }
            );
            if !ok {
                bad.push(format!("{port} {} → {}", o.from, o.to));
            }
        }
    }
    ensure!(bad.is_empty(), "{title}: {bad:?}");
    Ok(())
}

fn endpoints(c: &Cluster, n: usize) -> Result<Vec<Endpoint>> {
    let eps: Vec<_> = c
        .endpoints(false)?
        .into_iter()
        .filter(|e| e.id.starts_with(&format!("{NS}/")))
        .collect();
    ensure!(eps.len() == n, "expected {n} pods, got {eps:?}");
    Ok(eps)
}

/// `ping -i 0.01` from one pod to another, until stopped; returns (sent, received).
struct Ping(Child, String);

impl Ping {
    fn start(from: &Endpoint, to: &Endpoint) -> Result<Self> {
        let dst = to.ips[0].to_string();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", from.netns.display()))
            .args(["ping", "-q", "-i", "0.01", "-W", "1", &dst])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("ping")?;
        Ok(Self(child, format!("{} → {}", from.id, to.id)))
    }

    /// SIGINT (ping prints its summary) and the counts.
    fn finish(self) -> Result<(u64, u64, String)> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::SIGINT,
        )?;
        let out = self.0.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .with_context(|| format!("ping printed no summary: {text}"))?;
        let num = |marker: &str| -> Option<u64> {
            line.split(',')
                .find(|p| p.contains(marker))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Ok((
            num("transmitted").unwrap_or(0),
            num("received").unwrap_or(0),
            self.1,
        ))
    }
}

fn pod_uids(c: &Cluster) -> Result<Vec<(String, String, i64)>> {
    let v = get_json(c, &["pods", "-n", NS])?;
    Ok(v["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|p| {
            let restarts = p["status"]["containerStatuses"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s["restartCount"].as_i64()).sum())
                .unwrap_or(0);
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                restarts,
            )
        })
        .collect())
}

fn interop(c: &Cluster) -> Result<()> {
    let exe = ensure_flanneld(c)?;
    // weft's agent only where the label says so; the flannel node has none.
    for n in c.cfg.node_names() {
        if n != FLANNEL_NODE {
            output(
                c.kubectl()
                    .args(["label", "node", &n, &format!("{WEFT_LABEL}=weft")]),
            )?;
        }
    }
    install_weft(
        c,
        &[
            "--set-json",
            &format!(r#"fabric.spec.agent.nodeSelector={{"{WEFT_LABEL}":"weft"}}"#),
        ],
    )?;
    wait_fabric_available(c, "default", Duration::from_secs(180))?;
    place_flannel_conflist(c, FLANNEL_NODE, 1450)?;
    let mut flanneld = Flanneld::start(c, FLANNEL_NODE, &exe, "vxlan")?;

    // flannel's node announces itself; weft's nodes route to it and flannel to them.
    let flannel_cidr = get_json(c, &["node", FLANNEL_NODE])?["spec"]["podCIDR"]
        .as_str()
        .context("podCIDR")?
        .to_string();
    eventually(
        "flannel's annotations, and routes both ways",
        Duration::from_secs(60),
        || {
            let n = get_json(c, &["node", FLANNEL_NODE])?;
            let annotated = n["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"]
                .as_str()
                .is_some_and(|d| d.contains("VtepMAC"));
            let weft_side = ["node-1", "node-2"].iter().all(|w| {
                node_ip(c, w, &["route", "show", &flannel_cidr])
                    .is_ok_and(|r| r.contains("dev flannel.1") && r.contains("onlink"))
            });
            let flannel_routes = node_ip(c, FLANNEL_NODE, &["route", "show", "dev", "flannel.1"])?;
            Ok((annotated && weft_side && flannel_routes.lines().count() >= 2).then_some(()))
        },
    )
    .with_context(|| {
        format!(
            "flanneld log: {}",
            std::fs::read_to_string(c.cfg.log_dir().join(format!("flanneld-{FLANNEL_NODE}.log")))
                .unwrap_or_default()
        )
    })?;
    eprintln!(
        "flannel's routes on {FLANNEL_NODE}:\n{}",
        node_ip(c, FLANNEL_NODE, &["route", "show"])?
    );

    output(c.kubectl().args(["create", "namespace", NS]))?;
    for n in c.cfg.node_names() {
        c.apply(pod_yaml(
            NS,
            &format!("p-{n}"),
            Some(&n),
            &[("app", "p")],
            &[("TCP", 80), ("UDP", 53)],
        ))?;
    }
    for n in c.cfg.node_names() {
        wait_pod_ready(c, NS, &format!("p-{n}"), Duration::from_secs(90))?;
    }
    let eps = endpoints(c, 3)?;
    full_matrix(
        &eps,
        "probe matrix, flannel on node-3, weft on node-1 and node-2:",
    )?;

    // In-place migration of node-3, with traffic through it both ways the whole time.
    let before = pod_uids(c)?;
    let on = |n: &str| eps.iter().find(|e| e.id == format!("{NS}/p-{n}")).cloned();
    let (p1, p2, p3) = (
        on("node-1").context("p-node-1")?,
        on("node-2").context("p-node-2")?,
        on(FLANNEL_NODE).context("p-node-3")?,
    );
    let pings = [Ping::start(&p1, &p3)?, Ping::start(&p3, &p2)?];
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    flanneld.stop()?;
    std::fs::remove_file(
        c.cfg
            .node_dir(FLANNEL_NODE)
            .join("etc-cni-net.d/10-flannel.conflist"),
    )?;
    // Pods already on the node keep their addresses: weft's host-local store starts from
    // flannel's (cbr0), so that no new pod is given an address a running pod holds.
    let store = c.cfg.node_dir(FLANNEL_NODE).join("var-lib-cni/networks");
    std::fs::create_dir_all(store.join("weft"))?;
    for e in std::fs::read_dir(store.join("cbr0"))? {
        let e = e?;
        std::fs::copy(e.path(), store.join("weft").join(e.file_name()))?;
    }
    output(
        c.kubectl()
            .args(["label", "node", FLANNEL_NODE, &format!("{WEFT_LABEL}=weft")]),
    )?;
    // weft's agent on node-3: its conflist written and the fabric Available with 3 agents. The
    // agent adopts flannel's device, neighbours, FDB and routes as they are (same values), so the
    // routes keep flannel's protocol: what it owns is reported below.
    eventually(
        "weft's agent to take node-3 over",
        Duration::from_secs(120),
        || {
            let conf = c
                .cfg
                .node_dir(FLANNEL_NODE)
                .join("etc-cni-net.d/10-weft.conflist")
                .exists();
            let f = get_json(c, &["networkfabric", "default"])?;
            let ready = f["status"]["nodes"]["ready"].as_i64() == Some(3);
            Ok((conf && ready).then_some(()))
        },
    )?;
    wait_fabric_available(c, "default", Duration::from_secs(120))?;
    let took = t.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let mut lost_any = Vec::new();
    for p in pings {
        let (sent, received, what) = p.finish()?;
        eprintln!(
            "migration of {FLANNEL_NODE} (flanneld stopped → weft routing, {took:.1?}): {what}: \
             {sent} sent, {received} received, {} lost",
            sent - received
        );
        if received < sent {
            lost_any.push(format!("{what}: {} of {sent}", sent - received));
        }
    }
    let after = pod_uids(c)?;
    ensure!(
        before == after,
        "pods were restarted or replaced: {before:?} → {after:?}"
    );
    eprintln!(
        "routes on {FLANNEL_NODE} after the migration (weft's carry proto 87):\n{}",
        node_ip(c, FLANNEL_NODE, &["route", "show"])?
    );
    // Pods still on flannel's bridge take the whole subnet as on-link and ARP for the new pods,
    // which sit behind routed veths: the node answers for them on the bridge (proxy ARP).
    output(Command::new("ip").args([
        "netns",
        "exec",
        &c.cfg.node_ns(FLANNEL_NODE),
        "sysctl",
        "-qw",
        "net.ipv4.conf.cni0.proxy_arp=1",
    ]))?;
    // A new pod on the migrated node comes from weft's CNI config and reaches everyone.
    c.apply(pod_yaml(
        NS,
        "p-node-3-new",
        Some(FLANNEL_NODE),
        &[("app", "p")],
        &[("TCP", 80), ("UDP", 53)],
    ))?;
    wait_pod_ready(c, NS, "p-node-3-new", Duration::from_secs(90))?;
    let eps = endpoints(c, 4)?;
    full_matrix(&eps, "probe matrix after the migration (weft everywhere):")?;
    ensure!(lost_any.is_empty(), "packets lost: {lost_any:?}");
    Ok(())
}

#[test]
#[ignore = "builds flanneld and brings up a local cluster (root, minutes): \
            cargo test -p weft-e2e --test flannel -- --ignored --nocapture"]
fn flannel_and_weft_interoperate_and_a_node_migrates_in_place() {
    let mut cfg = test_config("h5fl", 85, 0);
    cfg.api_port = 17485;
    cfg.port_base = 13740;
    let c = Cluster::up(cfg).expect("cluster up");
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| interop(&c)));
    let down = c.down();
    match res {
        Ok(r) => r.expect("interop"),
        Err(p) => std::panic::resume_unwind(p),
    }
    down.expect("cluster down");
}
