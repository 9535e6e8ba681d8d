//! Benchmark of the overlay (issue 8): weft's datapath, set up by its agent on a local 3-node
//! cluster, against the kernel's hand-built reference datapath (`shared/reference/
//! datapath-reference.sh`, same topology: an underlay bridge, two node namespaces, pods behind
//! them), in the same run, with the same tools; and the agent's control-plane figures.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo bench -p weft-e2e --bench overlay        # as root; needs iperf3 and sockperf:
//!                                                #   apt-get install iperf3 sockperf
//! ```
//!
//! One run (about 10-15 minutes, bounded by a watchdog):
//! 1. brings up its own cluster `h5bench` (API 17483, ports from 13700, underlay 10.84.0.0/24,
//!    pod network 10.240.0.0/12 so that 500 simulated nodes fit) and installs weft with Helm;
//! 2. the agent's resident memory with 3 nodes;
//! 3. VXLAN: pod on node-1 → pod on node-2, interleaved round by round with the reference's
//!    `setup vxlan` (namespaces `h5r-*`): iperf3 TCP throughput, sockperf 64-byte UDP message rate,
//!    sockperf TCP request/response (ping-pong) latency;
//! 4. node added → its route present on every node, p50/p99 (annotation-only Node objects);
//! 5. CNI ADD for 100 pods created at once on node-3: creation → Running (watch), and the CNI ADD
//!    itself as the nodelet logs it;
//! 6. 500 simulated remote nodes: time to program them all, the agent's resident memory;
//! 7. host-gw (the fabric patched): the datapath again, against the reference's `setup hostgw`.
//!
//! Each datapath figure is printed as a ratio to the reference (for latency: reference ÷ weft, so
//! that above 1 is always better). Everything it created (cluster, reference namespaces, servers)
//! is removed at the end, also on failure, panic, SIGINT/SIGTERM or the watchdog.
//!
//! Knobs: `WEFT_BENCH_REPS` (rounds per datapath, default 3), `WEFT_BENCH_DUR` (seconds per
//! iperf3/sockperf sample, default 5), `WEFT_E2E_BIN_DIR` (where weft-agent, weft-operator,
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
    AGNHOST, Cleanup, PodPair, after, agent_rss_mib, alive, env_num, ghost_node, guard, in_ns,
    iperf3_gbps, kubectl, median, need, need_root, percentile, pod_doc, private_bins, run_bounded,
    run_guarded, sockperf_pp_rtt_us, sockperf_tp_kpps, start_iperf3, start_sockperf, strip_ansi,
};
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
/// The whole run is stopped (and cleaned up) after this long.
const WATCHDOG: Duration = Duration::from_secs(40 * 60);

const NS: &str = "bench";
const CNI_NS: &str = "bench-cni";
const CNI_PODS: usize = 100;
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

/// Runs the reference script with our prefix and work directory.
fn reference(script: &Path, work: &Path, args: &[&str]) -> Result<String> {
    run(Command::new("bash")
        .arg(script)
        .args(args)
        .env("PFX", REF_PREFIX)
        .env("WORK", work.join("ref-work"))
        .env("RES", work.join("ref-results")))
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

/// Medians over rounds of weft's path and the reference's, measured round-robin so that drift of
/// a loaded machine hits both alike.
struct Compared {
    weft: Vec<Sample>,
    reference: Vec<Sample>,
}

fn compare(weft: &PodPair, reference: &PodPair, reps: u64, dur: u64) -> Result<Compared> {
    let mut out = Compared {
        weft: Vec::new(),
        reference: Vec::new(),
    };
    for r in 0..reps {
        // Alternate which goes first.
        let order = if r % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_weft in order {
            let p = if is_weft { weft } else { reference };
            let s = measure(p, dur)?;
            eprintln!(
                "  round {} {:9}: {:.2} Gbit/s, {:.1} kpps, RTT {:.1} µs (p99 {:.1})",
                r + 1,
                if is_weft { "weft" } else { "reference" },
                s.tcp_gbps,
                s.udp64_kpps,
                s.rr_rtt_us,
                s.rr_rtt_p99_us
            );
            if is_weft {
                out.weft.push(s)
            } else {
                out.reference.push(s)
            }
        }
    }
    Ok(out)
}

fn med_of(v: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    let mut x: Vec<f64> = v.iter().map(f).collect();
    median(&mut x)
}

// ---------------------------------------------------------------- the cluster side

/// The two measured pods (client on node-1, server on node-2), as nsenter paths and the server's IP.
fn weft_path(c: &Cluster) -> Result<PodPair> {
    if kubectl(c, &["get", "namespace", NS]).is_err() {
        kubectl(c, &["create", "namespace", NS])?;
        c.apply(pod_doc(NS, "client", "node-1", &[], AGNHOST))?;
        c.apply(pod_doc(NS, "server", "node-2", &[], AGNHOST))?;
    }
    let mut found = None;
    wait_until(
        "the bench pods to run",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let eps = c.endpoints(false)?;
            let get = |id: &str| eps.iter().find(|e| e.id == id).cloned();
            if let (Some(cl), Some(sv)) = (get("bench/client"), get("bench/server"))
                && let Some(ip) = sv.ips.iter().find(|i| i.is_ipv4())
            {
                found = Some(PodPair {
                    client: cl.netns,
                    server: sv.netns,
                    server_ip: ip.to_string(),
                });
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

/// 100 pods created at once on node-3: creation → Running (seen by a watch), and the nodelet's own
/// CNI ADD timings.
async fn cni_add(c: &Cluster, client: &kube::Client) -> Result<(Vec<f64>, Vec<f64>)> {
    kubectl(c, &["create", "namespace", CNI_NS])?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), CNI_NS);
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
        .map(|i| serde_json::from_value(pod_doc(CNI_NS, &format!("c-{i}"), "node-3", &[], AGNHOST)))
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
    // The nodelet's own timing of each ADD.
    let log = std::fs::read_to_string(c.cfg.log_dir().join("nodelet-node-3.log"))?;
    let cni: Vec<f64> = strip_ansi(&log)
        .lines()
        .filter(|l| l.contains("CNI ADD done") && l.contains(&format!("pod={CNI_NS}/")))
        .filter_map(|l| after(l, "cni_add_ms="))
        .collect();
    kubectl(
        c,
        &[
            "delete",
            "namespace",
            CNI_NS,
            "--wait=true",
            "--timeout=180s",
        ],
    )?;
    Ok((to_running, cni))
}

fn set_backend(c: &Cluster, backend: &str) -> Result<()> {
    kubectl(
        c,
        &[
            "patch",
            "networkfabric",
            "default",
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"spec":{{"overlay":{{"backend":"{backend}"}}}}}}"#),
        ],
    )?;
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

/// The reference's two pods, as nsenter paths.
fn reference_path() -> PodPair {
    PodPair {
        client: PathBuf::from(format!("/run/netns/{REF_PREFIX}p1a")),
        server: PathBuf::from(format!("/run/netns/{REF_PREFIX}p2a")),
        server_ip: "10.244.2.2".into(),
    }
}

// ---------------------------------------------------------------- the run

struct Report {
    rss_3: f64,
    vxlan: Compared,
    hostgw: Compared,
    added_ms: Vec<f64>,
    to_running_ms: Vec<f64>,
    cni_add_ms: Vec<f64>,
    sim_created_s: f64,
    sim_programmed_s: f64,
    rss_500: f64,
    reps: u64,
    dur: u64,
}

fn bench(c: &Cluster, cleanup: &Cleanup, script: &Path, reps: u64, dur: u64) -> Result<Report> {
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(c.client())?;
    eprintln!("installing weft");
    install_weft(c, &[])?;
    wait_fabric_available(c, "default", Duration::from_secs(180))?;
    let weft = weft_path(c)?;
    std::thread::sleep(Duration::from_secs(5));
    let rss_3 = agent_rss_mib(c, "node-1")?;

    alive(c, "VXLAN")?;
    eprintln!("VXLAN: weft vs the reference ({reps} rounds of {dur} s per metric)");
    reference(script, &cleanup.work, &["setup", "vxlan"])?;
    eprintln!("reference datapath (vxlan) set up in {REF_PREFIX}* namespaces");
    let refp = reference_path();
    start_servers(cleanup, "weft", &weft)?;
    start_servers(cleanup, "reference", &refp)?;
    let vxlan = compare(&weft, &refp, reps, dur)?;
    cleanup.stop_servers(None);

    alive(c, "node added")?;
    eprintln!("node added → routed ({ADDED_SAMPLES} nodes, one at a time)");
    let added_ms = rt.block_on(node_added(c, &client))?;

    alive(c, "CNI ADD")?;
    eprintln!("CNI ADD: {CNI_PODS} pods at once on node-3");
    let (to_running_ms, cni_add_ms) = rt.block_on(cni_add(c, &client))?;

    alive(c, "500 simulated")?;
    eprintln!("{SIMULATED} simulated nodes");
    let (sim_created_s, sim_programmed_s, rss_500) = rt.block_on(simulated_nodes(c, &client))?;

    alive(c, "host-gw")?;
    eprintln!("host-gw: weft vs the reference");
    set_backend(c, "host-gw")?;
    // New pods, so that they get host-gw's MTU (the uplink's) as the reference's pods do.
    kubectl(
        c,
        &["delete", "namespace", NS, "--wait=true", "--timeout=120s"],
    )?;
    let weft = weft_path(c)?;
    reference(script, &cleanup.work, &["setup", "hostgw"])?;
    start_servers(cleanup, "weft", &weft)?;
    start_servers(cleanup, "reference", &refp)?;
    let hostgw = compare(&weft, &refp, reps, dur)?;
    cleanup.stop_servers(None);
    Ok(Report {
        rss_3,
        vxlan,
        hostgw,
        added_ms,
        to_running_ms,
        cni_add_ms,
        sim_created_s,
        sim_programmed_s,
        rss_500,
        reps,
        dur,
    })
}

/// One printed metric: its name, unit, how to read it from a sample, and whether higher is better.
type Row = (&'static str, &'static str, fn(&Sample) -> f64, bool);

fn print(r: &mut Report) {
    println!(
        "\nweft's datapath vs the kernel's hand-built reference (pod on node 1 → pod on node 2; \
         medians of {} rounds, {} s each; ratio = weft ÷ reference, latency: reference ÷ weft; target ≥ 0.97)\n",
        r.reps, r.dur
    );
    println!("| backend | metric | weft | reference | ratio |");
    println!("|---|---|---|---|---|");
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
            let w = med_of(&cmp.weft, f);
            let rf = med_of(&cmp.reference, f);
            let ratio = if higher { w / rf } else { rf / w };
            println!("| {name} | {metric} | {w:.2} {unit} | {rf:.2} {unit} | {ratio:.2} |");
        }
    }
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
        "CNI ADD (nodelet's timing of the conflist's plugins), 100 pods at once on one node",
        &mut r.cni_add_ms,
        "p99 < 50 ms",
    );
    row(
        "pod created → Running, 100 pods at once on one node",
        &mut r.to_running_ms,
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
    let mut cfg = ClusterConfig::new(CLUSTER, 3, bins);
    cfg.api_port = API_PORT;
    cfg.port_base = PORT_BASE;
    cfg.underlay_octet = UNDERLAY_OCTET;
    cfg.cluster_cidrs = vec![POD_NETWORK.into()];
    let cleanup = Arc::new(Cleanup::new(cfg.clone(), work.clone()));
    {
        let (script, work) = (script.clone(), work.clone());
        cleanup.on_teardown(move || {
            if let Err(e) = reference(&script, &work, &["teardown"]) {
                eprintln!("reference teardown: {e:#}");
            }
        });
    }
    guard(cleanup.clone(), WATCHDOG);
    let started = Instant::now();
    let mut report = run_guarded(cfg, &cleanup, |c| bench(c, &cleanup, &script, reps, dur))?;
    print(&mut report);
    println!("\n(whole run: {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}
