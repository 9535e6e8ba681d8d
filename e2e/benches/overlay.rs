//! Benchmark of the overlay (issue 8): weft's datapath, set up by its agent on a local 3-node
//! cluster, against flanneld's on a second local cluster and against the kernel's hand-built
//! reference datapath (`shared/reference/datapath-reference.sh`, same topology: an underlay bridge,
//! two node namespaces, pods behind them), bare and with weft's nftables tables loaded, in the same
//! run, with the same tools; and the agent's control-plane figures.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo bench -p weft-e2e --bench overlay        # as root; needs iperf3, sockperf and nft:
//!                                                #   apt-get install iperf3 sockperf nftables
//! ```
//!
//! One run (about 15-25 minutes, bounded by a watchdog):
//! 1. brings up its own cluster `h5bench` (API 17483, ports from 13700, underlay 10.84.0.0/24,
//!    pod network 10.240.0.0/12 so that 500 simulated nodes fit) and installs weft with Helm; and,
//!    meanwhile, a 2-node cluster `h6flb` without weft (API 17660, ports from 14800, underlay
//!    10.60.0.0/24, pod network 10.232.0.0/16) where flanneld v0.28.10 (`weft_e2e::flannel`) runs on
//!    both nodes with flannel's CNI config (a `cni0` bridge), as kube-flannel runs it;
//! 2. the agent's resident memory with 3 nodes;
//! 3. VXLAN: pod on node-1 → pod on node-2, round-robin over four paths: weft's; flanneld's; the
//!    reference's `setup vxlan` (namespaces `h5r-*`); and the same reference (namespaces `h6rt-*`)
//!    with the nftables tables of weft's node-1 and node-2 (`nft list table inet weft-nat`, `inet
//!    weft-policy`, `inet weft-raw`) loaded into its two node namespaces, addresses carried over to the reference's.
//!    Each: iperf3 TCP throughput, sockperf 64-byte UDP message rate, sockperf TCP request/response
//!    (ping-pong) latency;
//! 4. node added → its route present on every node, p50/p99 (annotation-only Node objects);
//! 5. CNI ADD on node-3: 100 pods created at once, then pods created one at a time (each Running
//!    before the next), creation → Running (watch) and the CNI ADD itself as the nodelet logs it.
//!    The bursts of 100 alternate between the control plane sharing the 2 CPUs with the nodes as
//!    the local cluster runs it, and the CPU weight of the control planes (this cluster's and
//!    flanneld's) lowered to 1/16 (`weft_e2e::controlplane::LoweredCpu`), as when they have
//!    machines of their own; both are printed;
//! 6. 500 simulated remote nodes: time to program them all, the agent's resident memory;
//! 7. host-gw (weft's fabric patched, flanneld restarted with Backend Type `host-gw`): the four
//!    paths again, against the reference's `setup hostgw`.
//!
//! Each datapath figure is printed as a ratio to the reference (for latency: reference ÷ path, so
//! that above 1 is always better), and weft's also to the reference with weft's tables. Everything
//! it created (clusters, flanneld, reference namespaces, servers) is removed at the end, also on
//! failure, panic, SIGINT/SIGTERM or the watchdog.
//!
//! Knobs: `WEFT_BENCH_REPS` (rounds per datapath, default 3), `WEFT_BENCH_DUR` (seconds per
//! iperf3/sockperf sample, default 5), `WEFT_BENCH_CNI_ROUNDS` (bursts of 100 pods of each kind,
//! default 2), `WEFT_E2E_BIN_DIR` (where weft-agent, weft-operator,
//! weft-e2e and weft-nodelet are; default: this bench's own target directory), `WEFT_REFERENCE_DIR`
//! (default: `shared/reference` beside the checkout).

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_e2e::bench::{
    AGNHOST, Cleanup, PodPair, after, agent_metrics, agent_rss_mib, alive, env_num, ghost_node,
    guard, in_ns, iperf3_gbps, kubectl, loadavg, median, metric, need, need_root, patch_fabric,
    percentile, pod_doc, private_bins, replace_addrs, run_bounded, run_guarded, sockperf_pp_rtt_us,
    sockperf_tp_kpps, start_iperf3, start_sockperf, strip_ansi, wait_quiet,
};
use weft_e2e::controlplane::{LoweredCpu, remove_lowered_cpu};
use weft_e2e::flannel::{Flanneld, ensure_flanneld, place_flannel_conflist};
use weft_e2e::install::{install_weft, wait_fabric_available};
use weft_e2e::sys::{run, wait_until};
use weft_e2e::{Cluster, ClusterConfig};

/// The cluster and reference namespaces of this bench (names, ports and underlay kept apart from
/// the suites and the demo).
const CLUSTER: &str = "h5bench";
const API_PORT: u16 = 17483;
const PORT_BASE: u16 = 13700;
const UNDERLAY_OCTET: u8 = 84;
const POD_NETWORK: &str = "10.240.0.0/12";
/// Prefix of the reference's namespaces (`h5r-ul`, `h5r-n1`, `h5r-p1a`, …).
const REF_PREFIX: &str = "h5r-";
/// Prefix of the reference's namespaces that carry weft's nftables tables.
const REF_TABLES_PREFIX: &str = "h6rt-";
/// The nftables tables of a weft node that the reference with tables gets.
const WEFT_TABLES: [&str; 3] = ["weft-nat", "weft-policy", "weft-raw"];
/// flanneld's cluster: two nodes, no weft, no kube-proxy (like weft's here).
const FL_CLUSTER: &str = "h6flb";
const FL_API_PORT: u16 = 17660;
const FL_PORT_BASE: u16 = 14800;
const FL_UNDERLAY_OCTET: u8 = 60;
const FL_POD_NETWORK: &str = "10.232.0.0/16";
/// The whole run is stopped (and cleaned up) after this long.
const WATCHDOG: Duration = Duration::from_secs(60 * 60);

const NS: &str = "bench";
const CNI_NS: &str = "bench-cni";
const CNI_PODS: usize = 100;
/// Bursts of 100 pods with the control plane sharing the CPUs, and as many with it lowered.
const CNI_ROUNDS: u64 = 2;
const CNI_SEQ_NS: &str = "bench-cni-seq";
const CNI_SEQ_PODS: usize = 30;
const GHOST_LABEL: &str = "weft.dev/bench-ghost";
const ADDED_SAMPLES: usize = 30;
const SIMULATED: usize = 500;

/// Server ports in the measured pods (apart from the reference script's own servers).
const IPERF_PORT: u16 = 5301;
const RR_PORT: u16 = 11311;
const UDP_PORT: u16 = 11312;

// ---------------------------------------------------------------- setup

fn reference_script() -> Result<PathBuf> {
    let dir = match std::env::var_os("WEFT_REFERENCE_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference"),
    };
    let s = dir.join("datapath-reference.sh");
    ensure!(
        s.is_file(),
        "the reference datapath script {} is missing (set WEFT_REFERENCE_DIR)",
        s.display()
    );
    Ok(s)
}

/// Runs the reference script for the namespaces `prefix*`, with a work directory of their own.
fn reference(script: &Path, work: &Path, prefix: &str, args: &[&str]) -> Result<String> {
    run(Command::new("bash")
        .arg(script)
        .args(args)
        .env("PFX", prefix)
        .env("WORK", work.join(format!("{prefix}work")))
        .env("RES", work.join(format!("{prefix}results"))))
}

/// Starts iperf3 and sockperf (TCP and UDP) servers at the path's server end.
fn start_servers(cleanup: &Cleanup, tag: &'static str, p: &PodPair) -> Result<()> {
    start_iperf3(cleanup, tag, p, IPERF_PORT)?;
    start_sockperf(cleanup, tag, p, RR_PORT, true)?;
    start_sockperf(cleanup, tag, p, UDP_PORT, false)?;
    std::thread::sleep(Duration::from_millis(500));
    // Reachable before measuring.
    run_bounded(
        &mut in_ns(&p.client, &["ping", "-c", "1", "-W", "2", &p.server_ip]),
        Duration::from_secs(5),
    )
    .context("the measured path does not work")?;
    Ok(())
}

/// One sample of each metric.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    tcp_gbps: f64,
    udp64_kpps: f64,
    rr_rtt_us: f64,
    rr_rtt_p99_us: f64,
}

fn measure(p: &PodPair, dur: u64) -> Result<Sample> {
    let pause = || std::thread::sleep(Duration::from_millis(500));
    let tcp_gbps = iperf3_gbps(p, IPERF_PORT, dur)?;
    pause();
    let udp64_kpps = sockperf_tp_kpps(p, UDP_PORT, dur)?;
    pause();
    let (rr_rtt_us, rr_rtt_p99_us) = sockperf_pp_rtt_us(p, RR_PORT, dur)?;
    pause();
    Ok(Sample {
        tcp_gbps,
        udp64_kpps,
        rr_rtt_us,
        rr_rtt_p99_us,
    })
}

/// The measured paths, in the order of the table's columns.
const PATHS: [&str; 4] = ["reference", "reference+tables", "weft", "flanneld"];

/// Samples of each path in [`PATHS`] order, measured round-robin so that drift of a loaded
/// machine hits all alike: round `r` starts with path `r mod 4`, so each goes first as often.
struct Compared {
    samples: [Vec<Sample>; 4],
}

fn compare(paths: &[&PodPair; 4], reps: u64, dur: u64) -> Result<Compared> {
    let mut out = Compared {
        samples: Default::default(),
    };
    for r in 0..reps as usize {
        for k in 0..PATHS.len() {
            let i = (r + k) % PATHS.len();
            wait_quiet(Duration::from_secs(30));
            let s = measure(paths[i], dur)?;
            eprintln!(
                "  round {} {:16}: {:.2} Gbit/s, {:.1} kpps, RTT {:.1} µs (p99 {:.1})",
                r + 1,
                PATHS[i],
                s.tcp_gbps,
                s.udp64_kpps,
                s.rr_rtt_us,
                s.rr_rtt_p99_us
            );
            out.samples[i].push(s);
        }
    }
    Ok(out)
}

fn med_of(v: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    let mut x: Vec<f64> = v.iter().map(f).collect();
    median(&mut x)
}

// ---------------------------------------------------------------- the cluster side

/// The two measured pods (client on node-1, server on node-2) of cluster `c`, created if missing:
/// nsenter paths and the server's IP, and the client's IP.
fn bench_pods(c: &Cluster) -> Result<(PodPair, String)> {
    if kubectl(c, &["get", "namespace", NS]).is_err() {
        kubectl(c, &["create", "namespace", NS])?;
        c.apply(pod_doc(NS, "client", "node-1", &[], AGNHOST))?;
        c.apply(pod_doc(NS, "server", "node-2", &[], AGNHOST))?;
    }
    let mut found = None;
    wait_until(
        &format!("the bench pods of {} to run", c.cfg.name),
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let eps = c.endpoints(false)?;
            let get = |id: &str| eps.iter().find(|e| e.id == id).cloned();
            if let (Some(cl), Some(sv)) = (get("bench/client"), get("bench/server"))
                && let Some(ip) = sv.ips.iter().find(|i| i.is_ipv4())
                && let Some(cip) = cl.ips.iter().find(|i| i.is_ipv4())
            {
                found = Some((
                    PodPair {
                        client: cl.netns,
                        server: sv.netns,
                        server_ip: ip.to_string(),
                    },
                    cip.to_string(),
                ));
                return Ok(true);
            }
            Ok(false)
        },
    )?;
    found.context("bench pods")
}

/// `ip -n <node ns> route show …`.
fn node_routes(c: &Cluster, node: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip")
        .args(["-n", &c.cfg.node_ns(node), "route", "show"])
        .args(args))
}

/// An annotation-only Node: a flannel/weft peer as the API shows it (podCIDR + flannel's
/// annotations), without a kubelet. Without the `kubernetes.io/os` label, no DaemonSet pod goes
/// there.
fn ghost(i: usize) -> Result<Node> {
    let (subnet, public_ip) = ghost_addrs(i);
    ghost_node(&format!("ghost-{i}"), GHOST_LABEL, i, &subnet, &public_ip)
}

/// Ghost `i`'s pod subnet (in 10.241.0.0/16 and up, away from what the controller manager gives
/// the real nodes) and its public address (off the underlay: no traffic ever goes there).
fn ghost_addrs(i: usize) -> (String, String) {
    let n = 256 + i; // 10.241.0.0/24 onwards
    (
        format!("10.{}.{}.0/24", 240 + n / 256, n % 256),
        format!("172.20.{}.{}", i / 250, i % 250 + 1),
    )
}

/// Node added → its route present on every node: one ghost at a time.
async fn node_added(c: &Cluster, client: &kube::Client) -> Result<Vec<f64>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut times = Vec::new();
    for i in 0..ADDED_SAMPLES {
        let (subnet, _) = ghost_addrs(i);
        let g = ghost(i)?;
        let start = Instant::now();
        nodes.create(&PostParams::default(), &g).await?;
        let mut pending: Vec<String> = c.cfg.node_names();
        while !pending.is_empty() {
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "ghost-{i}'s route {subnet} not on {pending:?} after 10 s"
            );
            let mut still = Vec::new();
            for n in pending {
                if !node_routes(c, &n, &[&subnet])?.contains("proto 87") {
                    still.push(n);
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    delete_ghosts(c, client).await?;
    Ok(times)
}

/// Deletes every ghost and waits until no node holds a ghost's route.
async fn delete_ghosts(c: &Cluster, client: &kube::Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{GHOST_LABEL}=true"));
    nodes
        .delete_collection(&DeleteParams::default(), &lp)
        .await?;
    for _ in 0..600 {
        let mut left = 0;
        for n in c.cfg.node_names() {
            left += node_routes(c, &n, &["proto", "87"])?
                .lines()
                .filter(|l| {
                    l.starts_with("10.241.") || l.starts_with("10.242.") || l.starts_with("10.243.")
                })
                .count();
        }
        if left == 0 && nodes.list(&lp).await?.items.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("ghost routes still present 2 minutes after their nodes were deleted")
}

/// 500 annotation-only nodes: time until node-1 routes them all, then the agent's memory.
async fn simulated_nodes(c: &Cluster, client: &kube::Client) -> Result<(f64, f64, f64)> {
    let nodes: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    let docs: Vec<Node> = (0..SIMULATED).map(ghost).collect::<Result<_>>()?;
    futures::stream::iter(docs)
        .map(|g| {
            let nodes = nodes.clone();
            async move { nodes.create(&PostParams::default(), &g).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    let created = start.elapsed().as_secs_f64();
    loop {
        let n = node_routes(c, "node-1", &["proto", "87"])?
            .lines()
            .filter(|l| l.starts_with("10.241.") || l.starts_with("10.242."))
            .count();
        if n >= SIMULATED {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(300),
            "only {n} of {SIMULATED} simulated nodes routed on node-1 after 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let programmed = start.elapsed().as_secs_f64();
    // Let the agent settle (a resync, allocator caches) before reading its memory.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss = agent_rss_mib(c, "node-1")?;
    delete_ghosts(c, client).await?;
    Ok((created, programmed, rss))
}

/// The 100-pod bursts on node-3, [`CNI_ROUNDS`] of each kind, alternating: with the control plane
/// sharing the CPUs with the nodes as it runs here, and with its CPU weight lowered
/// ([`LoweredCpu`]), as when it has machines of its own. Creation → Running and the nodelet's CNI
/// ADD timings of each kind, pooled.
///
/// Lowered means both control planes on this machine: the measured cluster's and flanneld's
/// cluster's (idle then, but its processes share the same CPUs).
async fn cni_bursts(
    c: &Cluster,
    flannel: &ClusterConfig,
    client: &kube::Client,
) -> Result<[(Vec<f64>, Vec<f64>); 2]> {
    let [mut shared, mut lowered] = <[(Vec<f64>, Vec<f64>); 2]>::default();
    let report = |what: &str, round: u64, cni: &[f64]| {
        let mut v = cni.to_vec();
        eprintln!(
            "  burst {round}, {what}: CNI ADD p50 {:.1} ms, p99 {:.1} ms",
            percentile(&mut v, 50.0),
            percentile(&mut v, 99.0)
        );
    };
    for round in 0..env_num("WEFT_BENCH_CNI_ROUNDS", CNI_ROUNDS).max(1) {
        let (to_running, cni) = cni_add(c, client, &format!("{CNI_NS}-shared-{round}")).await?;
        report("control plane sharing the CPUs", round, &cni);
        shared.0.extend(to_running);
        shared.1.extend(cni);
        let low = [LoweredCpu::lower(&c.cfg)?, LoweredCpu::lower(flannel)?];
        let burst = cni_add(c, client, &format!("{CNI_NS}-lowered-{round}")).await;
        for l in low {
            l.restore()?;
        }
        let (to_running, cni) = burst?;
        report("control planes at 1/16 CPU weight", round, &cni);
        lowered.0.extend(to_running);
        lowered.1.extend(cni);
    }
    Ok([shared, lowered])
}

/// 100 pods created at once in namespace `ns` on node-3: creation → Running (seen by a watch), and
/// the nodelet's own CNI ADD timings.
async fn cni_add(c: &Cluster, client: &kube::Client, ns: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    kubectl(c, &["create", "namespace", ns])?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let running: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let watch = {
        let pods = pods.clone();
        let running = running.clone();
        tokio::spawn(async move {
            let mut s = std::pin::pin!(kube::runtime::watcher(pods, Default::default()));
            while let Some(ev) = s.next().await {
                let Ok(ev) = ev else { continue };
                let list = match ev {
                    kube::runtime::watcher::Event::Apply(p)
                    | kube::runtime::watcher::Event::InitApply(p) => vec![p],
                    _ => continue,
                };
                for p in list {
                    if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        && let (Some(name), Ok(mut r)) = (p.metadata.name, running.lock())
                    {
                        r.entry(name).or_insert_with(Instant::now);
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let docs: Vec<Pod> = (0..CNI_PODS)
        .map(|i| serde_json::from_value(pod_doc(ns, &format!("c-{i}"), "node-3", &[], AGNHOST)))
        .collect::<Result<_, _>>()?;
    let created: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    futures::stream::iter(docs)
        .map(|p| {
            let pods = pods.clone();
            let created = created.clone();
            async move {
                let name = p.metadata.name.clone().unwrap_or_default();
                let t = Instant::now();
                let r = pods.create(&PostParams::default(), &p).await;
                if let Ok(mut m) = created.lock() {
                    m.insert(name, t);
                }
                r
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let start = Instant::now();
    loop {
        let n = running.lock().map(|r| r.len()).unwrap_or(0);
        if n >= CNI_PODS {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(180),
            "only {n} of {CNI_PODS} pods Running after 3 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.abort();
    let created = created.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let running = running.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let to_running: Vec<f64> = created
        .iter()
        .filter_map(|(n, t)| Some(running.get(n)?.duration_since(*t).as_secs_f64() * 1e3))
        .collect();
    let cni = nodelet_cni_add_ms(c, ns)?;
    ensure!(
        cni.len() == CNI_PODS,
        "the nodelet logged {} CNI ADDs in {ns}, not {CNI_PODS}",
        cni.len()
    );
    kubectl(
        c,
        &["delete", "namespace", ns, "--wait=true", "--timeout=180s"],
    )?;
    Ok((to_running, cni))
}

/// The nodelet's own timing of each CNI ADD of a pod in namespace `ns` on node-3.
fn nodelet_cni_add_ms(c: &Cluster, ns: &str) -> Result<Vec<f64>> {
    let log = std::fs::read_to_string(c.cfg.log_dir().join("nodelet-node-3.log"))?;
    Ok(strip_ansi(&log)
        .lines()
        .filter(|l| l.contains("CNI ADD done") && l.contains(&format!("pod={ns}/")))
        .filter_map(|l| after(l, "cni_add_ms="))
        .collect())
}

/// Pods created on node-3 one at a time, each `Running` (polled every 20 ms) before the next is
/// created: the plugins' own cost without queueing. Creation → Running, and the nodelet's timing.
async fn cni_add_one_at_a_time(c: &Cluster, client: &kube::Client) -> Result<(Vec<f64>, Vec<f64>)> {
    kubectl(c, &["create", "namespace", CNI_SEQ_NS])?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), CNI_SEQ_NS);
    let mut to_running = Vec::new();
    for i in 0..CNI_SEQ_PODS {
        let name = format!("s-{i}");
        let p: Pod = serde_json::from_value(pod_doc(CNI_SEQ_NS, &name, "node-3", &[], AGNHOST))?;
        let t = Instant::now();
        pods.create(&PostParams::default(), &p).await?;
        loop {
            let got = pods.get(&name).await?;
            if got.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                break;
            }
            ensure!(
                t.elapsed() < Duration::from_secs(60),
                "{CNI_SEQ_NS}/{name} not Running after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        to_running.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cni = nodelet_cni_add_ms(c, CNI_SEQ_NS)?;
    ensure!(
        cni.len() == CNI_SEQ_PODS,
        "the nodelet logged {} CNI ADDs in {CNI_SEQ_NS}, not {CNI_SEQ_PODS}",
        cni.len()
    );
    kubectl(
        c,
        &[
            "delete",
            "namespace",
            CNI_SEQ_NS,
            "--wait=true",
            "--timeout=180s",
        ],
    )?;
    Ok((to_running, cni))
}

fn set_backend(c: &Cluster, backend: &str) -> Result<()> {
    patch_fabric(c, serde_json::json!({"overlay": {"backend": backend}}))?;
    let octet = c.cfg.underlay_octet;
    wait_until(
        &format!("{backend} routes on every node"),
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            for n in c.cfg.node_names() {
                let r = node_routes(c, &n, &["proto", "87"])?;
                let ok = match backend {
                    "host-gw" => {
                        r.lines().count() == 2
                            && r.lines().all(|l| l.contains(&format!("via 10.{octet}.0.")))
                    }
                    _ => r.lines().count() == 2 && r.lines().all(|l| l.contains("flannel.1")),
                };
                if !ok {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )?;
    wait_fabric_available(c, "default", Duration::from_secs(120))
}

/// The two pods of the reference in namespaces `prefix*`, as nsenter paths.
fn reference_path(prefix: &str) -> PodPair {
    PodPair {
        client: PathBuf::from(format!("/run/netns/{prefix}p1a")),
        server: PathBuf::from(format!("/run/netns/{prefix}p2a")),
        server_ip: "10.244.2.2".into(),
    }
}

/// `node`'s pod CIDR in cluster `c`.
fn pod_cidr(c: &Cluster, node: &str) -> Result<String> {
    let n: serde_json::Value =
        serde_json::from_str(&kubectl(c, &["get", "node", node, "-o", "json"])?)?;
    Ok(n["spec"]["podCIDR"]
        .as_str()
        .with_context(|| format!("{node} has no podCIDR"))?
        .to_string())
}

/// Whether `text` holds an address starting with `prefix` (a whole token).
fn holds_prefix(text: &str, prefix: &str) -> bool {
    replace_addrs(text, &[(prefix.to_string(), "#".to_string())]) != text
}

/// The tables [`WEFT_TABLES`] as weft's agent keeps them on `node-<i>` (1 or 2) of `c`, carried
/// over to the reference's node `i`: the measured pods' addresses to the reference's pods'
/// (10.244.1.2, 10.244.2.2), the pod network to 10.244.0.0/16, each node's subnet to
/// 10.244.<k>.0/24 and its underlay address to 192.0.2.<k>. Fails if any of the cluster's
/// addressing is left.
fn weft_tables_for_reference(
    c: &Cluster,
    i: usize,
    client_ip: &str,
    server_ip: &str,
) -> Result<String> {
    let ns = c.cfg.node_ns(&format!("node-{i}"));
    let mut text = String::new();
    // weft-raw exists with the vxlan backend only.
    let held = run(Command::new("ip").args(["netns", "exec", &ns, "nft", "list", "tables"]))?;
    for t in WEFT_TABLES
        .iter()
        .filter(|t| held.contains(&format!("table inet {t}\n")))
    {
        text.push_str(&run(
            Command::new("ip").args(["netns", "exec", &ns, "nft", "list", "table", "inet", t])
        )?);
    }
    let mut map = vec![
        (client_ip.to_string(), "10.244.1.2".to_string()),
        (server_ip.to_string(), "10.244.2.2".to_string()),
        (POD_NETWORK.to_string(), "10.244.0.0/16".to_string()),
    ];
    for (k, node) in c.cfg.node_names().iter().enumerate() {
        let k = k + 1;
        map.push((c.cfg.node_ip(k).to_string(), format!("192.0.2.{k}")));
        let cidr = pod_cidr(c, node)?;
        let prefix = cidr
            .strip_suffix("0/24")
            .with_context(|| format!("{node}'s pod CIDR {cidr} is not a /24"))?;
        map.push((prefix.to_string(), format!("10.244.{k}.")));
    }
    let out = replace_addrs(&text, &map);
    let mut left: Vec<String> = (240..=255)
        .filter(|o| *o != 244)
        .map(|o| format!("10.{o}."))
        .collect();
    left.push(format!("10.{}.", c.cfg.underlay_octet));
    for p in left {
        ensure!(
            !holds_prefix(&out, &p),
            "node-{i}'s tables still hold an address in {p}* after carrying them over:\n{out}"
        );
    }
    Ok(out)
}

/// Loads weft's tables of node-1 and node-2 into the reference's `h6rt-n1` and `h6rt-n2`
/// (already set up). Returns what `nft list tables` shows on weft's node-1 and the ruleset
/// loaded into `h6rt-n1`.
fn load_weft_tables(
    c: &Cluster,
    work: &Path,
    client_ip: &str,
    server_ip: &str,
) -> Result<(String, String)> {
    let mut first = String::new();
    for i in 1..=2 {
        let text = weft_tables_for_reference(c, i, client_ip, server_ip)?;
        let file = work.join(format!("weft-tables-n{i}.nft"));
        std::fs::write(&file, &text)?;
        let ns = format!("{REF_TABLES_PREFIX}n{i}");
        run(Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f"])
            .arg(&file))
        .with_context(|| format!("loading weft's node-{i} tables into {ns}:\n{text}"))?;
        let tables = run(Command::new("ip").args(["netns", "exec", &ns, "nft", "list", "tables"]))?;
        for t in WEFT_TABLES
            .iter()
            .filter(|t| text.contains(&format!("table inet {t} ")))
        {
            ensure!(
                tables.contains(&format!("table inet {t}\n")),
                "{ns} lacks {t}: {tables}"
            );
        }
        if i == 1 {
            first = text;
        }
    }
    let on_weft = run(Command::new("ip").args([
        "netns",
        "exec",
        &c.cfg.node_ns("node-1"),
        "nft",
        "list",
        "tables",
    ]))?;
    Ok((on_weft, first))
}

// ---------------------------------------------------------------- flanneld's cluster

/// The configuration of flanneld's cluster: two nodes, no weft, no kube-proxy.
fn flannel_config(bins: PathBuf) -> ClusterConfig {
    let mut cfg = ClusterConfig::new(FL_CLUSTER, 2, bins);
    cfg.api_port = FL_API_PORT;
    cfg.port_base = FL_PORT_BASE;
    cfg.underlay_octet = FL_UNDERLAY_OCTET;
    cfg.cluster_cidrs = vec![FL_POD_NETWORK.into()];
    cfg
}

/// flanneld with `backend` on both nodes of `fc`, flannel's CNI config with the backend's MTU,
/// and the measured pods. A backend switch is done as an operator does it: flanneld stopped, the
/// pods deleted, the old backend's device (and the routes through it) and the bridge removed,
/// then flanneld started with the new net-conf.json and the pods created again.
fn flannel_path(
    fc: &Cluster,
    exe: &Path,
    backend: &str,
    running: &mut Vec<Flanneld>,
) -> Result<PodPair> {
    for mut f in running.drain(..) {
        f.stop()?;
    }
    if kubectl(fc, &["get", "namespace", NS]).is_ok() {
        kubectl(
            fc,
            &["delete", "namespace", NS, "--wait=true", "--timeout=120s"],
        )?;
    }
    let mtu = if backend == "vxlan" { 1450 } else { 1500 };
    for n in fc.cfg.node_names() {
        let ns = fc.cfg.node_ns(&n);
        for dev in ["flannel.1", "cni0"] {
            if run(Command::new("ip").args(["-n", &ns, "link", "show", "dev", dev])).is_ok() {
                run(Command::new("ip").args(["-n", &ns, "link", "del", dev]))?;
            }
        }
        place_flannel_conflist(fc, &n, mtu)?;
    }
    for n in fc.cfg.node_names() {
        running.push(Flanneld::start(fc, &n, exe, backend)?);
    }
    let names = fc.cfg.node_names();
    let cidrs: Vec<String> = names
        .iter()
        .map(|n| pod_cidr(fc, n))
        .collect::<Result<_>>()?;
    wait_until(
        &format!("flanneld's {backend} routes on both nodes"),
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            for f in running.iter_mut() {
                ensure!(
                    f.running(),
                    "flanneld exited (see {}/flanneld-*.log)",
                    fc.cfg.log_dir().display()
                );
            }
            for (i, n) in names.iter().enumerate() {
                for (j, cidr) in cidrs.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    let r = node_routes(fc, n, &[cidr])?;
                    let ok = match backend {
                        "host-gw" => r.contains(&format!("via {} dev eth0", fc.cfg.node_ip(j + 1))),
                        _ => r.contains("dev flannel.1") && r.contains("onlink"),
                    };
                    if !ok {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        },
    )?;
    eprintln!(
        "flanneld ({backend}) routes on {FL_CLUSTER} node-1:\n{}and its nftables tables:\n{}",
        node_routes(fc, "node-1", &[])?,
        run(Command::new("ip").args([
            "netns",
            "exec",
            &fc.cfg.node_ns("node-1"),
            "nft",
            "list",
            "tables"
        ]))?
    );
    Ok(bench_pods(fc)?.0)
}

// ---------------------------------------------------------------- the run

/// The fast path's counters (forwarded, tracked, to_stack) on node-1 and node-2, added.
fn fastpath_counts(c: &Cluster) -> Result<[f64; 3]> {
    let mut out = [0.0; 3];
    for node in ["node-1", "node-2"] {
        let text = agent_metrics(c, node)?;
        for (i, result) in ["forwarded", "tracked", "to_stack"].iter().enumerate() {
            out[i] += metric(
                &text,
                &format!("weft_agent_fastpath_packets_total{{result=\"{result}\"}}"),
            )
            .unwrap_or(0.0);
        }
    }
    Ok(out)
}

/// The four paths of one backend, set up and compared; also what weft's fast path did meanwhile.
#[allow(clippy::too_many_arguments)]
fn datapaths(
    c: &Cluster,
    fc: &Cluster,
    cleanup: &Cleanup,
    script: &Path,
    exe: &Path,
    flanneld: &mut Vec<Flanneld>,
    backend: &str,
    reps: u64,
    dur: u64,
) -> Result<(Compared, String, String)> {
    let (weft, weft_client_ip) = bench_pods(c)?;
    let fl = flannel_path(fc, exe, backend, flanneld)?;
    let mode = if backend == "host-gw" {
        "hostgw"
    } else {
        "vxlan"
    };
    reference(script, &cleanup.work, REF_PREFIX, &["setup", mode])?;
    reference(script, &cleanup.work, REF_TABLES_PREFIX, &["setup", mode])?;
    let (on_weft, loaded) = load_weft_tables(c, &cleanup.work, &weft_client_ip, &weft.server_ip)?;
    eprintln!(
        "reference datapath ({mode}) set up in {REF_PREFIX}* and {REF_TABLES_PREFIX}*; weft's node-1 \
         holds\n{on_weft}loaded into {REF_TABLES_PREFIX}n1 (and node-2's into {REF_TABLES_PREFIX}n2):\n{loaded}"
    );
    let refp = reference_path(REF_PREFIX);
    let reft = reference_path(REF_TABLES_PREFIX);
    for (tag, p) in [
        ("reference", &refp),
        ("reference+tables", &reft),
        ("weft", &weft),
        ("flanneld", &fl),
    ] {
        start_servers(cleanup, tag, p)?;
    }
    eprintln!(
        "{backend}: {} ({reps} rounds of {dur} s per metric, load average {})",
        PATHS.join(", "),
        loadavg()
    );
    let before = fastpath_counts(c);
    let cmp = compare(&[&refp, &reft, &weft, &fl], reps, dur)?;
    cleanup.stop_servers(None);
    // The agent records its program's counters every second.
    std::thread::sleep(Duration::from_millis(1500));
    let after = fastpath_counts(c);
    let fastpath = match (before, after) {
        (Ok(b), Ok(a)) => format!(
            "weft's fast path during the rounds (node-1 + node-2): {} packets forwarded by the \
             program, {} left to the stack as conntrack knew their flow, {} as the FIB would not \
             forward them",
            a[0] - b[0],
            a[1] - b[1],
            a[2] - b[2]
        ),
        (Err(e), _) | (_, Err(e)) => format!("weft's fast path counters: unreadable ({e:#})"),
    };
    eprintln!("{fastpath}");
    let _ = loaded;
    Ok((cmp, on_weft, fastpath))
}

struct Report {
    rss_3: f64,
    vxlan: Compared,
    hostgw: Compared,
    fastpath_vxlan: String,
    fastpath_hostgw: String,
    tables_on_weft: String,
    added_ms: Vec<f64>,
    to_running_ms: Vec<f64>,
    cni_add_ms: Vec<f64>,
    low_to_running_ms: Vec<f64>,
    low_cni_add_ms: Vec<f64>,
    seq_to_running_ms: Vec<f64>,
    seq_cni_add_ms: Vec<f64>,
    sim_created_s: f64,
    sim_programmed_s: f64,
    rss_500: f64,
    reps: u64,
    dur: u64,
    load: Vec<String>,
}

fn bench(
    c: &Cluster,
    fl_cfg: ClusterConfig,
    cleanup: &Cleanup,
    script: &Path,
    reps: u64,
    dur: u64,
) -> Result<Report> {
    let mut load = vec![loadavg()];
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(c.client())?;
    // flanneld's cluster comes up while weft is installed; it is always joined before any error
    // returns, so that the teardown never races its bring-up.
    let fl_up = std::thread::spawn(move || Cluster::up(fl_cfg));
    let weft_setup = (|| -> Result<f64> {
        eprintln!("installing weft");
        install_weft(c, &[])?;
        wait_fabric_available(c, "default", Duration::from_secs(180))?;
        bench_pods(c)?;
        std::thread::sleep(Duration::from_secs(5));
        agent_rss_mib(c, "node-1")
    })();
    let fc = fl_up
        .join()
        .map_err(|_| anyhow::anyhow!("bringing up {FL_CLUSTER} panicked"))??;
    eprintln!("cluster {FL_CLUSTER} up");
    let rss_3 = weft_setup?;
    let exe = ensure_flanneld(&fc)?;
    let mut flanneld = Vec::new();

    alive(c, "VXLAN")?;
    let (vxlan, tables_on_weft, fastpath_vxlan) = datapaths(
        c,
        &fc,
        cleanup,
        script,
        &exe,
        &mut flanneld,
        "vxlan",
        reps,
        dur,
    )?;
    load.push(loadavg());

    alive(c, "node added")?;
    eprintln!("node added → routed ({ADDED_SAMPLES} nodes, one at a time)");
    let added_ms = rt.block_on(node_added(c, &client))?;

    alive(c, "CNI ADD")?;
    eprintln!(
        "CNI ADD: {CNI_PODS} pods at once on node-3, the control plane's CPU weight as is, then lowered"
    );
    let [
        (to_running_ms, cni_add_ms),
        (low_to_running_ms, low_cni_add_ms),
    ] = rt.block_on(cni_bursts(c, &fc.cfg, &client))?;
    eprintln!("CNI ADD: {CNI_SEQ_PODS} pods one at a time on node-3");
    let (seq_to_running_ms, seq_cni_add_ms) = rt.block_on(cni_add_one_at_a_time(c, &client))?;

    alive(c, "500 simulated")?;
    eprintln!("{SIMULATED} simulated nodes");
    let (sim_created_s, sim_programmed_s, rss_500) = rt.block_on(simulated_nodes(c, &client))?;

    alive(c, "host-gw")?;
    set_backend(c, "host-gw")?;
    // New pods, so that they get host-gw's MTU (the uplink's) as the reference's pods do.
    kubectl(
        c,
        &["delete", "namespace", NS, "--wait=true", "--timeout=120s"],
    )?;
    let (hostgw, _, fastpath_hostgw) = datapaths(
        c,
        &fc,
        cleanup,
        script,
        &exe,
        &mut flanneld,
        "host-gw",
        reps,
        dur,
    )?;
    load.push(loadavg());
    for mut f in flanneld {
        f.stop()?;
    }
    Ok(Report {
        rss_3,
        vxlan,
        hostgw,
        fastpath_vxlan,
        fastpath_hostgw,
        tables_on_weft,
        added_ms,
        to_running_ms,
        cni_add_ms,
        low_to_running_ms,
        low_cni_add_ms,
        seq_to_running_ms,
        seq_cni_add_ms,
        sim_created_s,
        sim_programmed_s,
        rss_500,
        reps,
        dur,
        load,
    })
}

/// One printed metric: its name, unit, how to read it from a sample, and whether higher is better.
type Row = (&'static str, &'static str, fn(&Sample) -> f64, bool);

fn print(r: &mut Report) {
    println!(
        "\nthe datapaths, pod on node 1 → pod on node 2 (medians of {} rounds, {} s each, round-robin; \
         load average at start / after VXLAN / after host-gw: {}):\n\
         reference = the kernel's hand-built datapath; +tables = the same with weft's nftables tables \
         loaded in its node namespaces; weft = set up by weft's agent; flanneld = set up by flanneld \
         v0.28.10.\nratio = path ÷ reference (latency: reference ÷ path), so above 1 is better; \
         target for weft ≥ 0.97\n",
        r.reps,
        r.dur,
        r.load.join(" / ")
    );
    println!(
        "| backend | metric | reference | reference+tables | weft | flanneld | weft ÷ ref | \
         weft ÷ ref+tables | flanneld ÷ ref | ref+tables ÷ ref |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, cmp) in [("vxlan", &r.vxlan), ("host-gw", &r.hostgw)] {
        let rows: [Row; 4] = [
            (
                "TCP throughput (iperf3, 1 stream)",
                "Gbit/s",
                |s| s.tcp_gbps,
                true,
            ),
            (
                "64-byte UDP rate (sockperf tp)",
                "kpps",
                |s| s.udp64_kpps,
                true,
            ),
            (
                "TCP request/response RTT (sockperf pp)",
                "µs",
                |s| s.rr_rtt_us,
                false,
            ),
            (
                "TCP request/response RTT p99",
                "µs",
                |s| s.rr_rtt_p99_us,
                false,
            ),
        ];
        for (metric, unit, f, higher) in rows {
            let [rf, rt, w, fl] = [0, 1, 2, 3].map(|i| med_of(&cmp.samples[i], f));
            let ratio = |x: f64, base: f64| if higher { x / base } else { base / x };
            println!(
                "| {name} | {metric} | {rf:.2} {unit} | {rt:.2} {unit} | {w:.2} {unit} | {fl:.2} {unit} \
                 | {:.2} | {:.2} | {:.2} | {:.2} |",
                ratio(w, rf),
                ratio(w, rt),
                ratio(fl, rf),
                ratio(rt, rf)
            );
        }
    }
    println!(
        "\nvxlan: {}\nhost-gw: {}",
        r.fastpath_vxlan, r.fastpath_hostgw
    );
    println!(
        "\n(+tables: what weft's node-1 held, loaded with its addresses carried over: {})",
        r.tables_on_weft
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("\nweft's control plane on the same cluster\n");
    println!("| metric | p50 | p99 | n | target |");
    println!("|---|---|---|---|---|");
    let row = |what: &str, v: &mut Vec<f64>, target: &str| {
        let n = v.len();
        println!(
            "| {what} | {:.0} ms | {:.0} ms | {n} | {target} |",
            percentile(v, 50.0),
            percentile(v, 99.0)
        );
    };
    row(
        "CNI ADD (nodelet's timing of the conflist's plugins), 100 pods at once on one node, \
         the control plane sharing the CPUs",
        &mut r.cni_add_ms,
        "",
    );
    row(
        "pod created → Running, 100 pods at once on one node, the control plane sharing the CPUs",
        &mut r.to_running_ms,
        "",
    );
    row(
        "CNI ADD (nodelet's timing), 100 pods at once on one node, the control planes' CPU weight \
         1/16 (as on machines of their own)",
        &mut r.low_cni_add_ms,
        "p99 < 50 ms",
    );
    row(
        "pod created → Running, 100 pods at once on one node, the control planes' CPU weight 1/16",
        &mut r.low_to_running_ms,
        "",
    );
    row(
        &format!(
            "CNI ADD (nodelet's timing), {CNI_SEQ_PODS} pods one at a time on one node (each Running before the next)"
        ),
        &mut r.seq_cni_add_ms,
        "p99 < 50 ms",
    );
    row(
        "pod created → Running, one at a time",
        &mut r.seq_to_running_ms,
        "",
    );
    row(
        "node added → its route on every node",
        &mut r.added_ms,
        "< 1 s",
    );
    println!("\n| agent resident memory (VmRSS, node-1) | MiB | target |");
    println!("|---|---|---|");
    println!("| 3 nodes | {:.1} | < 30 MiB |", r.rss_3);
    println!(
        "| 3 nodes + {SIMULATED} simulated (created in {:.1} s, all routed after {:.1} s) | {:.1} | < 30 MiB |",
        r.sim_created_s, r.sim_programmed_s, r.rss_500
    );
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    need_root("the overlay benchmark")?;
    for p in ["iperf3", "sockperf"] {
        need(p, "apt-get install iperf3 sockperf")?;
    }
    need("nft", "apt-get install nftables")?;
    need("nsenter", "apt-get install util-linux")?;
    need(
        "python3",
        "apt-get install python3 (the reference script uses it)",
    )?;
    let reps = env_num("WEFT_BENCH_REPS", 3).max(1);
    let dur = env_num("WEFT_BENCH_DUR", 5).max(1);
    let work = std::env::temp_dir().join(format!("weft-bench-{CLUSTER}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let own_bins = PathBuf::from(env!("CARGO_BIN_EXE_weft-e2e"))
        .parent()
        .context("bin dir")?
        .to_path_buf();
    let bins = private_bins(&work, &own_bins)?;
    let script = reference_script()?;
    let mut cfg = ClusterConfig::new(CLUSTER, 3, bins.clone());
    cfg.api_port = API_PORT;
    cfg.port_base = PORT_BASE;
    cfg.underlay_octet = UNDERLAY_OCTET;
    cfg.cluster_cidrs = vec![POD_NETWORK.into()];
    let fl_cfg = flannel_config(bins);
    let cleanup = Arc::new(Cleanup::new(cfg.clone(), work.clone()));
    {
        let (script, work) = (script.clone(), work.clone());
        cleanup.on_teardown(move || {
            for prefix in [REF_PREFIX, REF_TABLES_PREFIX] {
                if let Err(e) = reference(&script, &work, prefix, &["teardown"]) {
                    eprintln!("reference teardown ({prefix}*): {e:#}");
                }
            }
        });
    }
    {
        // flanneld and everything else in its nodes go with the cluster.
        let fl_cfg = fl_cfg.clone();
        cleanup.on_teardown(move || {
            if Cluster::is_running(&fl_cfg) || fl_cfg.state_dir().exists() {
                match Cluster::attach(fl_cfg.clone()).and_then(Cluster::down) {
                    Ok(()) => eprintln!("cluster {} removed", fl_cfg.name),
                    Err(e) => eprintln!("cluster {} teardown: {e:#}", fl_cfg.name),
                }
            }
        });
    }
    {
        // A run stopped by a signal mid-burst drops no guard: the lowered cgroups go here.
        let cfgs = [cfg.clone(), fl_cfg.clone()];
        cleanup.on_teardown(move || {
            for cfg in &cfgs {
                if let Err(e) = remove_lowered_cpu(cfg) {
                    eprintln!("{}: control plane's CPU cgroup: {e:#}", cfg.name);
                }
            }
        });
    }
    guard(cleanup.clone(), WATCHDOG);
    let started = Instant::now();
    let mut report = run_guarded(cfg, &cleanup, |c| {
        bench(c, fl_cfg, &cleanup, &script, reps, dur)
    })?;
    print(&mut report);
    println!("\n(whole run: {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}
