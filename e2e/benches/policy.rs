//! Benchmark of the policy engine (issue 9) at scale, through a real API server, beside
//! kube-router v2.1.0's network-policy controller (the one k3s ships) in the same run.
//!
//! ```text
//! cargo build --release -p weft-node-agent -p weft-operator --bins
//! cargo build -p weft-e2e --bins
//! cargo bench -p weft-e2e --bench policy   # as root; needs sockperf, iptables and ipset:
//!                                          #   apt-get install sockperf iptables ipset
//! ```
//!
//! One run (bounded by a watchdog):
//! 1. brings up its own 3-node cluster `hbnpol` (API 17610, ports from 14100, underlay
//!    10.73.0.0/24, pod network 10.176.0.0/12), installs the policy CRDs and weft with Helm;
//! 2. feeds it a synthetic cluster through the API server: 99 annotation-only Nodes, 100
//!    namespaces of 100 pods (10,000; one pod per namespace is a real pod on node-1, the measured
//!    node, run by the nodelet; the others are API objects bound to the simulated nodes, with
//!    `status.podIPs` set by the bench), 1,000 NetworkPolicies and 50 ClusterNetworkPolicies
//!    (v1beta1), the generator of `weft-policy`'s compile bench;
//! 3. weft: full compile and kernel load of node-1's ruleset from the objects read back from the
//!    API (weft-policy's compiler and `nft -f` into a scratch namespace); API event (pod added,
//!    policy changed) → the element or rule in node-1's kernel, seen by `nft monitor` there, and the
//!    agent's own `policy_apply_seconds` histogram; the agent's VmRSS; pod created → reachable at
//!    50 pods/s, clusterloader2's pod-creation reachability method;
//! 4. the per-packet cost on the VXLAN path (pod on node-1 → pod on node-2, both selected by
//!    policies): sockperf 64-byte UDP rate and TCP ping-pong with weft's policy on and off (the
//!    fabric's `spec.policy.enabled: false`), alternating rounds; weft's figures are printed here;
//! 5. kube-router (`--run-firewall` only, in node-1's and node-2's namespaces via `ip netns exec`,
//!    with a kubeconfig and `--hostname-override`, weft's policy off): process start → first full
//!    sync, its full sync durations (its log at `-v=1`), API event → member of the ipset kube-router
//!    names for it (`ipset test`), VmRSS, pod created → reachable, and the same per-packet rounds
//!    with its three jumps from INPUT/FORWARD/OUTPUT in place and removed (starting it again for
//!    each round would cost a first sync of minutes). It does not implement ClusterNetworkPolicy
//!    (n/a in the table). A failure here is reported beside what it measured so far.
//!
//! Everything it created (cluster, scratch namespace, kube-router processes, servers) is removed at
//! the end, also on failure, panic, SIGINT/SIGTERM or the watchdog.
//!
//! Knobs: `WEFT_BENCH_REPS` (rounds of the datapath comparison, default 5; each sample waits
//! for the CPUs to go quiet first, [`weft_e2e::bench::wait_quiet`]), `WEFT_BENCH_DUR`
//! (seconds per sockperf sample, default 5), `WEFT_BENCH_EVENTS` (samples per event kind, default
//! 20 for weft; `WEFT_BENCH_KR_EVENTS`, default 1, for kube-router, whose every event costs a full
//! sync of minutes here), `WEFT_BENCH_CL2_PODS` (target pods of the reachability test, default 100),
//! `WEFT_BENCH_PEER=none` (weft's part only, no kube-router: about 12 minutes instead of 30+),
//! `WEFT_E2E_BIN_DIR` (where weft-agent, weft-operator, weft-e2e and weft-nodelet are).

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_crds::policy_api::v1beta1::ClusterNetworkPolicy;
use weft_e2e::bench::{
    Cleanup, PAUSE, PodPair, agent_metrics, alive, alternate, env_num, ghost_node, guard,
    has_token, in_ns, kubectl, loadavg, median, metric, need, need_root, patch_fabric,
    peak_mib_on_node, percentile, pod_doc, private_bins, rss_mib_on_node, run_bounded, run_guarded,
    sockperf_pp_rtt_us, sockperf_tp_kpps, start_sockperf, wait_quiet,
};
use weft_e2e::install::{install_weft, wait_fabric_available};
use weft_e2e::kuberouter::{full_syncs_ms, ingress_ipblock_set, ingress_pod_peers_set};
use weft_e2e::policyapi::install_policy_crds;
use weft_e2e::sys::{run, wait_until};
use weft_e2e::{Cluster, ClusterConfig};

const CLUSTER: &str = "hbnpol";
const API_PORT: u16 = 17610;
const PORT_BASE: u16 = 14100;
const UNDERLAY_OCTET: u8 = 73;
const POD_NETWORK: &str = "10.176.0.0/12";
/// The scratch namespace the full ruleset is loaded into.
const LOAD_NS: &str = "hbnpol-load";
const WATCHDOG: Duration = Duration::from_secs(110 * 60);

const NAMESPACES: usize = 100;
const PODS_PER_NAMESPACE: usize = 100;
const POLICIES_PER_NAMESPACE: usize = 10;
const CNPS: usize = 50;
const GHOSTS: usize = 99;
const GHOST_LABEL: &str = "weft.dev/bench-ghost";
/// The node whose policy is measured.
const MEASURED: &str = "node-1";
/// Ports of the measured path's servers (allowed by the `path-*` policies).
const RR_PORT: u16 = 9050;
const UDP_PORT: u16 = 9051;

// ---------------------------------------------------------------- the synthetic cluster

fn namespace(ns: usize) -> Namespace {
    from_json(json!({"metadata": {"name": format!("ns{ns}"), "labels": {
        "team": format!("team{}", ns % 10), "env": format!("e{}", ns % 2)}}}))
}

fn labels(i: usize) -> serde_json::Value {
    json!({"app": format!("app{}", i % 10), "tier": format!("t{}", i % 3)})
}

fn ports() -> serde_json::Value {
    json!([{"name": "http", "protocol": "TCP", "containerPort": 8080},
           {"name": "dns", "protocol": "UDP", "containerPort": 53}])
}

/// Simulated node `g` and its pod subnet.
fn ghost_name(g: usize) -> String {
    format!("hbn-ghost-{g}")
}

/// Pod `i` of namespace `ns`: the first of each namespace is a real pod on the measured node; the
/// others are bound to a simulated node with an address in its subnet.
fn pod(ns: usize, i: usize) -> (Pod, Option<String>) {
    if i == 0 {
        let mut doc = pod_doc(&format!("ns{ns}"), "p0", MEASURED, &[], PAUSE);
        doc["metadata"]["labels"] = labels(i);
        doc["spec"]["containers"][0]["ports"] = ports();
        return (from_json(doc), None);
    }
    let n = ns * PODS_PER_NAMESPACE + i;
    let g = n % GHOSTS;
    let ip = format!("10.177.{g}.{}", 2 + n / GHOSTS);
    (
        ghost_pod(&format!("ns{ns}"), &format!("p{i}"), g, labels(i)),
        Some(ip),
    )
}

/// A pod bound to simulated node `g` (no nodelet runs it): it tolerates the node's taints so that
/// it is never evicted.
fn ghost_pod(ns: &str, name: &str, g: usize, labels: serde_json::Value) -> Pod {
    from_json(json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": ghost_name(g), "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "c", "image": PAUSE, "ports": ports()}]}
    }))
}

fn network_policy(ns: usize, k: usize) -> NetworkPolicy {
    let peer_app = format!("app{}", (k + 1) % 10);
    from_json(json!({
        "metadata": {"namespace": format!("ns{ns}"), "name": format!("np{k}")},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("app{k}")}},
            "policyTypes": if k.is_multiple_of(3) { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) },
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": peer_app}}},
                          {"namespaceSelector": {"matchLabels": {"team": format!("team{k}")}}, "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["t0", "t1"]}]}}],
                 "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]},
                {"from": [{"ipBlock": {"cidr": "172.16.0.0/12", "except": [format!("172.16.{k}.0/24")]}}], "ports": [{"protocol": "UDP", "port": 53}]}
            ],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"env": "e0"}}}], "ports": [{"port": "http"}]},
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "UDP", "port": 53}]}
            ]
        }
    }))
}

fn cnp(i: usize) -> ClusterNetworkPolicy {
    let tier = if i < 30 { "Admin" } else { "Baseline" };
    let action = ["Deny", "Pass", "Accept"][i % 3];
    from_json(json!({
        "apiVersion": "policy.networking.k8s.io/v1beta1", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": format!("cnp{i}")},
        "spec": {"tier": tier, "priority": i as i32 * 10, "subject": {"namespaces": {"matchLabels": {"team": format!("team{}", i % 10)}}},
            "ingress": [{"name": format!("r{i}"), "action": action,
                         "from": [{"pods": {"namespaceSelector": {"matchLabels": {"env": format!("e{}", i % 2)}}, "podSelector": {"matchLabels": {"tier": format!("t{}", i % 3)}}}}],
                         "protocols": [{"tcp": {"destinationPort": {"range": {"start": 1000 + i as i32, "end": 2000}}}}]}],
            "egress": [{"name": format!("e{i}"), "action": action, "to": [{"networks": [format!("192.168.{i}.0/24")]}]}]}
    }))
}

/// The measured path's policies: the server (app0, selected by np0 too) admits the client (app1)
/// on the sockperf ports; the client may reach it there (and nothing else: ICMP is denied, which
/// tells that policy is on).
fn path_policies() -> Vec<NetworkPolicy> {
    let ports =
        json!([{"protocol": "TCP", "port": RR_PORT}, {"protocol": "UDP", "port": UDP_PORT}]);
    vec![
        from_json(
            json!({"metadata": {"namespace": "ns0", "name": "path-server"}, "spec": {
            "podSelector": {"matchLabels": {"app": "app0"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "app1"}}}], "ports": ports}]}}),
        ),
        from_json(
            json!({"metadata": {"namespace": "ns0", "name": "path-client"}, "spec": {
            "podSelector": {"matchLabels": {"app": "app1"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "app0"}}}], "ports": ports}]}}),
        ),
    ]
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    match serde_json::from_value(v) {
        Ok(t) => t,
        Err(e) => panic!("a generated object does not parse: {e}"),
    }
}

/// The status a kubelet would post for a pod on a simulated node.
fn ghost_status(ip: &str, g: usize) -> serde_json::Value {
    json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                      "hostIP": ghost_public_ip(g), "hostIPs": [{"ip": ghost_public_ip(g)}]}})
}

fn ghost_public_ip(g: usize) -> String {
    format!("172.21.0.{}", g + 1)
}

/// Creates `items` with `create`, 16 at a time.
async fn create_all<T, F, Fut>(items: Vec<T>, create: F) -> Result<()>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    futures::stream::iter(items)
        .map(create)
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Everything of the synthetic cluster, through the API server.
async fn populate(client: &kube::Client) -> Result<f64> {
    let start = Instant::now();
    let pp = PostParams::default();
    let nodes: Api<Node> = Api::all(client.clone());
    create_all((0..GHOSTS).collect(), |g| {
        let nodes = nodes.clone();
        async move {
            let n = ghost_node(
                &ghost_name(g),
                GHOST_LABEL,
                g,
                &format!("10.177.{g}.0/24"),
                &ghost_public_ip(g),
            )?;
            nodes.create(&PostParams::default(), &n).await?;
            Ok(())
        }
    })
    .await?;
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in 0..NAMESPACES {
        nss.create(&pp, &namespace(ns)).await?;
    }
    let cnps: Api<ClusterNetworkPolicy> = Api::all(client.clone());
    for i in 0..CNPS {
        cnps.create(&pp, &cnp(i)).await?;
    }
    let all_nps: Vec<NetworkPolicy> = (0..NAMESPACES)
        .flat_map(|ns| (0..POLICIES_PER_NAMESPACE).map(move |k| network_policy(ns, k)))
        .chain(path_policies())
        .collect();
    create_all(all_nps, |np| {
        let client = client.clone();
        async move {
            let ns = np.metadata.namespace.clone().unwrap_or_default();
            Api::<NetworkPolicy>::namespaced(client, &ns)
                .create(&PostParams::default(), &np)
                .await?;
            Ok(())
        }
    })
    .await?;
    eprintln!(
        "  {GHOSTS} nodes, {NAMESPACES} namespaces, {CNPS} ClusterNetworkPolicies, {} NetworkPolicies in {:.0} s",
        NAMESPACES * POLICIES_PER_NAMESPACE + 2,
        start.elapsed().as_secs_f64()
    );
    let pods: Vec<(Pod, Option<String>, usize)> = (0..NAMESPACES)
        .flat_map(|ns| {
            (0..PODS_PER_NAMESPACE).map(move |i| {
                let (p, ip) = pod(ns, i);
                (p, ip, (ns * PODS_PER_NAMESPACE + i) % GHOSTS)
            })
        })
        .collect();
    create_all(pods, |(p, ip, g)| {
        let client = client.clone();
        async move {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let api = Api::<Pod>::namespaced(client, &ns);
            api.create(&PostParams::default(), &p).await?;
            if let Some(ip) = ip {
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(ghost_status(&ip, g)),
                )
                .await?;
            }
            Ok(())
        }
    })
    .await?;
    Ok(start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------- weft's side

/// Cumulative buckets (upper bound in s, count) of the agent's apply histogram, all kinds added.
fn apply_buckets(text: &str) -> BTreeMap<String, f64> {
    buckets(text, "weft_agent_policy_apply_seconds", None)
}

/// Cumulative buckets (upper bound in s, count) of histogram `metric` in a scrape, over the
/// series whose labels include `only` (`key="value"`), or all series added.
fn buckets(text: &str, metric: &str, only: Option<&str>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let prefix = format!("{metric}_bucket{{");
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(&prefix) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if only.is_some_and(|o| !labels.split(',').any(|kv| kv == o)) {
            continue;
        }
        let Some(le) = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("le=\""))
            .map(|v| v.trim_end_matches('"').to_owned())
        else {
            continue;
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            *out.entry(le).or_insert(0.0) += v;
        }
    }
    out
}

/// The agent's stages (`weft_agent_policy_stage_seconds`) and transaction kinds
/// (`weft_agent_policy_apply_seconds` by kind) between two scrapes: one line per stage with its
/// count and the bucket bounds of its median and 99th percentile, then the count per kind.
fn stage_summary(before: &str, after: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stage in ["follow", "compile", "render", "kernel"] {
        let only = format!("stage=\"{stage}\"");
        let (b, a) = (
            buckets(before, "weft_agent_policy_stage_seconds", Some(&only)),
            buckets(after, "weft_agent_policy_stage_seconds", Some(&only)),
        );
        let n = a.get("+Inf").copied().unwrap_or(0.0) - b.get("+Inf").copied().unwrap_or(0.0);
        out.push(format!(
            "{stage}: {n:.0} × (p50 {} / p99 {})",
            bucket_percentile(&b, &a, 50.0),
            bucket_percentile(&b, &a, 99.0)
        ));
    }
    for kind in ["elements", "incremental", "full"] {
        let only = format!("kind=\"{kind}\"");
        let (b, a) = (
            buckets(before, "weft_agent_policy_apply_seconds", Some(&only)),
            buckets(after, "weft_agent_policy_apply_seconds", Some(&only)),
        );
        let n = a.get("+Inf").copied().unwrap_or(0.0) - b.get("+Inf").copied().unwrap_or(0.0);
        out.push(format!("{kind} transactions: {n:.0}"));
    }
    out
}

/// The bucket bound under which `p` % of the observations between two snapshots fall.
fn bucket_percentile(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    p: f64,
) -> String {
    let mut rows: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            (bound, n - before.get(le).copied().unwrap_or(0.0))
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = rows.last().map_or(0.0, |r| r.1);
    if total <= 0.0 {
        return "no samples".into();
    }
    let need = (p / 100.0 * total).ceil();
    rows.iter()
        .find(|(_, n)| *n >= need)
        .map_or("?".into(), |(b, _)| {
            if b.is_infinite() {
                "> 8 s".into()
            } else {
                format!("≤ {:.1} ms", b * 1e3)
            }
        })
}

/// Waits until node `node`'s agent has programmed `pods` local pods and its set elements stopped
/// changing for 3 s.
fn wait_agent_settled(c: &Cluster, node: &str, pods: usize, timeout: Duration) -> Result<()> {
    let mut last = (-1.0, Instant::now());
    wait_until(
        &format!("the agent on {node} to program {pods} pods and settle"),
        timeout,
        Duration::from_millis(500),
        || {
            let m = agent_metrics(c, node)?;
            let local = metric(&m, "weft_agent_policy_local_pods").unwrap_or(0.0);
            let elems = metric(&m, "weft_agent_policy_set_elements").unwrap_or(-1.0);
            if elems != last.0 {
                last = (elems, Instant::now());
            }
            Ok(local >= pods as f64 && last.1.elapsed() > Duration::from_secs(3))
        },
    )
}

/// Full compile (and render) of node-1's ruleset from the objects read back from the API server,
/// with weft-policy's compiler, and its kernel load with `nft -f` into a scratch namespace.
struct Compiled {
    compile_ms: Vec<f64>,
    render_ms: Vec<f64>,
    load_ms: Vec<f64>,
    size: weft_policy::Size,
    bytes: usize,
}

async fn compile_and_load(c: &Cluster, client: &kube::Client, runs: usize) -> Result<Compiled> {
    let lp = kube::api::ListParams::default();
    let pods = Api::<Pod>::all(client.clone()).list(&lp).await?.items;
    let nss = Api::<Namespace>::all(client.clone()).list(&lp).await?.items;
    let nps = Api::<NetworkPolicy>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    let cnps = Api::<ClusterNetworkPolicy>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    let mut ix = weft_policy::Index::new();
    nss.iter().for_each(|o| ix.apply_namespace(o));
    pods.iter().for_each(|o| ix.apply_pod(o));
    nps.iter().for_each(|o| ix.apply_network_policy(o));
    cnps.iter().for_each(|o| ix.apply_cluster_network_policy(o));
    ensure!(
        ix.problems().is_empty(),
        "the index refuses objects: {:?}",
        ix.problems()
    );
    let node = Api::<Node>::all(client.clone()).get(MEASURED).await?;
    let pod_cidrs = weft_crds::node::node_pod_cidrs(&node)
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let addrs: serde_json::Value = serde_json::from_str(&run(Command::new("ip").args([
        "-n",
        &c.cfg.node_ns(MEASURED),
        "-j",
        "addr",
        "show",
    ]))?)?;
    let host_addrs: Vec<IpAddr> = addrs
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["local"].as_str()?.parse().ok())
        .collect();
    let input = weft_policy::NodeInput {
        node_name: MEASURED.into(),
        host_addrs,
        pod_cidrs,
    };
    let (mut compile_ms, mut render_ms, mut load_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let ir = weft_policy::compile_node(&ix, &input);
        compile_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let text = weft_policy::render_ruleset(&ir);
        render_ms.push(t.elapsed().as_secs_f64() * 1e3);
        last = Some((ir, text));
    }
    let (ir, text) = last.context("no compile run")?;
    let file = std::env::temp_dir().join("hbnpol-ruleset.nft");
    std::fs::write(&file, &text)?;
    let _ = run(Command::new("ip").args(["netns", "del", LOAD_NS]));
    run(Command::new("ip").args(["netns", "add", LOAD_NS]))?;
    for _ in 0..runs {
        let t = Instant::now();
        run(Command::new("ip")
            .args(["netns", "exec", LOAD_NS, "nft", "-f"])
            .arg(&file))
        .context("loading the full ruleset into a scratch namespace")?;
        load_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = run(Command::new("ip").args(["netns", "del", LOAD_NS]));
    let _ = std::fs::remove_file(&file);
    Ok(Compiled {
        compile_ms,
        render_ms,
        load_ms,
        size: ir.size(),
        bytes: text.len(),
    })
}

/// `nft monitor` in a node's namespace: every line with the time it arrived.
struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Monitor {
    fn start(c: &Cluster, node: &str) -> Result<Monitor> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &c.cfg.node_ns(node)])
            .args(["stdbuf", "-oL", "nft", "monitor"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("nft monitor")?;
        let out = child.stdout.take().context("nft monitor stdout")?;
        let lines: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut v) = l.lock() {
                    v.push((Instant::now(), line));
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        Ok(Monitor { child, lines })
    }

    /// The arrival of the first line after `since` that holds `token` (not as part of a longer
    /// number). Each line is looked at once.
    fn wait(&self, token: &str, since: Instant, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        let mut cursor = match self.lines.lock() {
            Ok(v) => v.iter().rposition(|(t, _)| *t < since).map_or(0, |i| i + 1),
            Err(_) => bail!("lock"),
        };
        loop {
            if let Ok(v) = self.lines.lock() {
                if let Some((t, _)) = v[cursor..].iter().find(|(_, l)| has_token(l, token)) {
                    return Ok(*t);
                }
                cursor = v.len();
            }
            ensure!(
                Instant::now() < deadline,
                "{token} not in the kernel after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How an event is seen in the kernel of the measured node.
trait KernelWatch {
    /// Waits until the pod address `ip` is in the set of namespace `ns`'s `np0` rule 0 peers.
    fn pod_in(&self, ns: usize, ip: &str, since: Instant) -> Result<Instant>;
    /// Waits until the ipBlock `cidr` (a new ingress rule 2 of `ns`'s np0) is in the kernel.
    fn block_in(&self, ns: usize, cidr: &str, since: Instant) -> Result<Instant>;
}

impl KernelWatch for Monitor {
    fn pod_in(&self, _ns: usize, ip: &str, since: Instant) -> Result<Instant> {
        self.wait(ip, since, Duration::from_secs(30))
    }
    fn block_in(&self, _ns: usize, cidr: &str, since: Instant) -> Result<Instant> {
        self.wait(cidr, since, Duration::from_secs(30))
    }
}

/// API event → kernel: `n` pods added (their address set in status) in namespace `ns_pods`, and
/// `n` policy changes (an ingress rule from a new ipBlock added to np0 of namespaces
/// `ns_first..`). Returns the latencies in ms (pods, policies).
#[allow(clippy::too_many_arguments)]
async fn events(
    client: &kube::Client,
    watch: &dyn KernelWatch,
    ns_pods: usize,
    ns_first: usize,
    octet: u8,
    n: usize,
    pod_ms: &mut Vec<f64>,
    policy_ms: &mut Vec<f64>,
) -> Result<()> {
    let ns = format!("ns{ns_pods}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for j in 0..n {
        let name = format!("ev-{octet}-{j}");
        let ip = format!("10.178.{octet}.{}", j + 2);
        pods.create(
            &PostParams::default(),
            &ghost_pod(&ns, &name, 0, json!({"app": "app1", "tier": "t0"})),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = Instant::now();
        pods.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(ghost_status(&ip, 0)),
        )
        .await?;
        let seen = watch.pod_in(ns_pods, &ip, t0)?;
        pod_ms.push(seen.duration_since(t0).as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for j in 0..n {
        let ns = format!("ns{}", ns_first + j);
        let cidr = format!("172.31.{}.0/24", (ns_first + j) % 256);
        let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
        let patch = json!([{"op": "add", "path": "/spec/ingress/-", "value":
            {"from": [{"ipBlock": {"cidr": cidr}}], "ports": [{"protocol": "TCP", "port": 7000}]}}]);
        let t0 = Instant::now();
        nps.patch(
            "np0",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(patch)?),
        )
        .await?;
        let seen = watch.block_in(ns_first + j, &cidr, t0)?;
        policy_ms.push(seen.duration_since(t0).as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------- kube-router

/// Polls `ipset test` in the measured node's namespace.
struct IpsetWatch {
    netns: PathBuf,
    timeout: Duration,
}

impl IpsetWatch {
    fn wait(&self, set: &str, addr: &str, since: Instant) -> Result<Instant> {
        let deadline = since + self.timeout;
        loop {
            let ok = in_ns(&self.netns, &["ipset", "-q", "test", set, addr])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok {
                return Ok(Instant::now());
            }
            ensure!(
                Instant::now() < deadline,
                "{addr} not in kube-router's set {set} after {:?}",
                self.timeout
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl KernelWatch for IpsetWatch {
    fn pod_in(&self, ns: usize, ip: &str, since: Instant) -> Result<Instant> {
        let set = ingress_pod_peers_set(&format!("ns{ns}"), "np0", 0);
        self.wait(&set, ip, since)
    }
    fn block_in(&self, ns: usize, cidr: &str, since: Instant) -> Result<Instant> {
        let set = ingress_ipblock_set(&format!("ns{ns}"), "np0", 2);
        let addr = cidr.replace(".0/24", ".1");
        self.wait(&set, &addr, since)
    }
}

/// kube-router's network-policy controller on some nodes.
struct KubeRouter {
    bin: PathBuf,
    kubeconfig: PathBuf,
    work: PathBuf,
    running: Mutex<Vec<(String, Child)>>,
}

impl KubeRouter {
    fn log(&self, node: &str) -> PathBuf {
        self.work.join(format!("kube-router-{node}.log"))
    }

    /// Starts it on `nodes` and waits for the first full sync on each.
    fn start(&self, c: &Cluster, nodes: &[&str]) -> Result<Vec<f64>> {
        let mut running = self.running.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let mut started = Vec::new();
        for node in nodes {
            let log = std::fs::File::create(self.log(node))?;
            let child = Command::new("ip")
                .args(["netns", "exec", &c.cfg.node_ns(node)])
                .arg(&self.bin)
                .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                .arg(format!("--hostname-override={node}"))
                .args([
                    "--run-firewall=true",
                    "--run-router=false",
                    "--run-service-proxy=false",
                    "--health-port=0",
                    "--metrics-port=0",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    "-v=1",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting kube-router")?;
            running.push((node.to_string(), child));
            started.push((node.to_string(), Instant::now()));
        }
        drop(running);
        let mut firsts = Vec::new();
        for (node, t) in started {
            let log = self.log(&node);
            wait_until(
                &format!("kube-router's first full sync on {node}"),
                Duration::from_secs(1800),
                Duration::from_millis(200),
                || {
                    if let Ok(mut r) = self.running.lock()
                        && let Some((_, ch)) = r.iter_mut().find(|(n, _)| *n == node)
                        && let Some(st) = ch.try_wait()?
                    {
                        bail!("kube-router on {node} exited ({st}): {}", tail(&log, 20));
                    }
                    Ok(!self.syncs(&node).is_empty())
                },
            )?;
            firsts.push(t.elapsed().as_secs_f64());
        }
        Ok(firsts)
    }

    /// The durations of kube-router's full syncs on `node` ("sync iptables took …"), in ms.
    fn syncs(&self, node: &str) -> Vec<f64> {
        let text = std::fs::read_to_string(self.log(node)).unwrap_or_default();
        full_syncs_ms(&text)
    }

    /// Stops every instance and removes its rules and sets (`--cleanup-config` in the same namespace).
    fn stop(&self, c: &Cluster) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        for (node, mut child) in running.drain(..) {
            // SAFETY: plain syscall on our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            // kube-router's --cleanup-config cleans the policy controller's rules and sets first,
            // then crashes in the service proxy's cleanup where there is no IPVS; only the first
            // part matters here.
            let out = Command::new("ip")
                .args(["netns", "exec", &c.cfg.node_ns(&node)])
                .arg(&self.bin)
                .arg("--cleanup-config")
                .stdin(Stdio::null())
                .output();
            let cleaned = out.as_ref().is_ok_and(|o| {
                String::from_utf8_lossy(&o.stderr)
                    .contains("Successfully cleaned the NetworkPolicyController configurations")
            });
            if !cleaned {
                eprintln!("kube-router --cleanup-config on {node} did not clean its policy rules");
            }
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The admin kubeconfig with the API server's address as the nodes reach it.
fn in_cluster_kubeconfig(c: &Cluster, work: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(c.cfg.kubeconfig())?;
    let local = c.cfg.api_url_local();
    ensure!(
        text.contains(&local),
        "the kubeconfig does not name {local}"
    );
    let out = work.join("kubeconfig-in-cluster");
    std::fs::write(&out, text.replace(&local, &c.cfg.api_url_in_cluster()))?;
    Ok(out)
}

// ---------------------------------------------------------------- pod created → reachable

/// A raw ICMP socket in a pod's namespace: echo requests out, replies in (no process in the pod).
struct Pinger {
    fd: OwnedFd,
    id: u16,
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Pinger {
    fn new(netns: &Path, id: u16) -> Result<Pinger> {
        let fd = weft_e2e::netns::in_netns(netns, || {
            // SAFETY: plain syscall; the descriptor is owned below.
            let fd = unsafe {
                libc::socket(
                    libc::AF_INET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_ICMP,
                )
            };
            ensure!(
                fd >= 0,
                "raw ICMP socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh descriptor we own.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })?;
        Ok(Pinger { fd, id })
    }

    fn send(&self, to: Ipv4Addr, seq: u16) {
        let mut pkt = [0u8; 16];
        pkt[0] = 8;
        pkt[4..6].copy_from_slice(&self.id.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(to).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: valid buffer and address for the call.
        unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
        }
    }

    /// The sources of the echo replies to us received since the last call.
    fn replies(&self) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        loop {
            // SAFETY: valid buffer for the call.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                return out;
            }
            let n = n as usize;
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if n < ihl + 8 || buf[ihl] != 0 {
                continue;
            }
            if u16::from_be_bytes([buf[ihl + 4], buf[ihl + 5]]) == self.id {
                out.push(Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]));
            }
        }
    }
}

/// What the reachability test measured, per target pod (ms from its creation call).
#[derive(Default)]
struct Reach {
    ip_assigned_ms: Vec<f64>,
    after_ip_ms: Vec<f64>,
    created_ms: Vec<f64>,
    /// Targets the denied client reached at least once.
    denied_reached: usize,
    targets: usize,
}

/// clusterloader2's pod-creation reachability method: a client pod runs first; target pods are
/// created at `rate`/s; as soon as a target has an address the client probes it until it answers.
/// Here the probe is an ICMP echo from the client's namespace every 10 ms (the target only holds
/// its namespace). A second client, which no policy allows, probes the same targets: any answer
/// to it is a pod reachable before its policy was in force.
async fn reachability(
    c: &Cluster,
    client: &kube::Client,
    ns: &str,
    targets: usize,
    rate: f64,
) -> Result<Reach> {
    kubectl(c, &["create", "namespace", ns])?;
    let np = |name: &str, spec: serde_json::Value| -> NetworkPolicy {
        from_json(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
    };
    let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let pp = PostParams::default();
    nps.create(
        &pp,
        &np(
            "deny-all",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ),
    )
    .await?;
    nps.create(
        &pp,
        &np(
            "allow-client",
            json!({"podSelector": {"matchLabels": {"role": "target"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}),
        ),
    )
    .await?;
    for (name, role) in [("client", "client"), ("other", "other")] {
        c.apply(pod_doc(ns, name, "node-2", &[("role", role)], PAUSE))?;
    }
    let ns_of = |id: &str| -> Result<PathBuf> { Ok(c.endpoint(&format!("{ns}/{id}"))?.netns) };
    let mut found = None;
    wait_until(
        "the reachability clients to run",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            found = ns_of("client").ok().zip(ns_of("other").ok());
            Ok(found.is_some())
        },
    )?;
    let (client_ns, other_ns) = found.context("clients")?;
    let allowed = Arc::new(Pinger::new(&client_ns, 0x5701)?);
    let denied = Arc::new(Pinger::new(&other_ns, 0x5702)?);

    // Target name → creation call, address seen, first answer.
    type Times = BTreeMap<String, (Instant, Option<(Ipv4Addr, Instant)>, Option<Instant>)>;
    let times: Arc<Mutex<Times>> = Arc::default();
    let denied_hits: Arc<Mutex<std::collections::BTreeSet<Ipv4Addr>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (times, denied_hits, stop) = (times.clone(), denied_hits.clone(), stop.clone());
        let (allowed, denied) = (allowed.clone(), denied.clone());
        std::thread::spawn(move || {
            let mut seq = 0u16;
            while !stop.load(Ordering::SeqCst) {
                seq = seq.wrapping_add(1);
                let ips: Vec<(Ipv4Addr, bool)> = times
                    .lock()
                    .map(|t| {
                        t.values()
                            .filter_map(|(_, ip, ok)| ip.map(|(ip, _)| (ip, ok.is_some())))
                            .collect()
                    })
                    .unwrap_or_default();
                for (ip, answered) in &ips {
                    if !answered {
                        allowed.send(*ip, seq);
                    }
                    denied.send(*ip, seq);
                }
                std::thread::sleep(Duration::from_millis(10));
                let now = Instant::now();
                let got = allowed.replies();
                if let Ok(mut t) = times.lock() {
                    for from in got {
                        for (_, ip, ok) in t.values_mut() {
                            if ip.is_some_and(|(i, _)| i == from) && ok.is_none() {
                                *ok = Some(now);
                            }
                        }
                    }
                }
                if let Ok(mut d) = denied_hits.lock() {
                    d.extend(denied.replies());
                }
            }
        })
    };

    // Addresses as the API shows them, as soon as they appear.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let watch = {
        let (pods, times) = (pods.clone(), times.clone());
        tokio::spawn(async move {
            let cfg = kube::runtime::watcher::Config::default().labels("role=target");
            let mut s = std::pin::pin!(kube::runtime::watcher(pods, cfg));
            while let Some(ev) = s.next().await {
                let Ok(kube::runtime::watcher::Event::Apply(p)) = ev else {
                    continue;
                };
                let ip = p
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|i| i.parse::<Ipv4Addr>().ok());
                if let (Some(name), Some(ip), Ok(mut t)) = (p.metadata.name, ip, times.lock())
                    && let Some(e) = t.get_mut(&name)
                    && e.1.is_none()
                {
                    e.1 = Some((ip, Instant::now()));
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let every = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut creations = Vec::new();
    for i in 0..targets {
        let name = format!("t{i}");
        let p: Pod = from_json(pod_doc(ns, &name, MEASURED, &[("role", "target")], PAUSE));
        if let Ok(mut t) = times.lock() {
            t.insert(name, (Instant::now(), None, None));
        }
        let pods = pods.clone();
        creations.push(tokio::spawn(async move {
            pods.create(&PostParams::default(), &p).await
        }));
        let next = start + every * (i as u32 + 1);
        tokio::time::sleep_until(next.into()).await;
    }
    for c in creations {
        c.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = times
            .lock()
            .map(|t| t.values().filter(|v| v.2.is_some()).count())
            .unwrap_or(0);
        if done >= targets {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("  only {done} of {targets} targets reachable after 3 minutes");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The denied client keeps probing a little longer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let _ = prober.join();
    watch.abort();
    let times = times.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let mut r = Reach {
        targets,
        ..Reach::default()
    };
    let hits = denied_hits.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    for (created, ip, ok) in times.values() {
        if let Some((addr, seen)) = ip {
            r.ip_assigned_ms
                .push(seen.duration_since(*created).as_secs_f64() * 1e3);
            if let Some(ok) = ok {
                r.after_ip_ms
                    .push(ok.saturating_duration_since(*seen).as_secs_f64() * 1e3);
                r.created_ms
                    .push(ok.duration_since(*created).as_secs_f64() * 1e3);
            }
            if hits.contains(addr) {
                r.denied_reached += 1;
            }
        }
    }
    drop(hits);
    kubectl(
        c,
        &["delete", "namespace", ns, "--wait=true", "--timeout=180s"],
    )?;
    Ok(r)
}

// ---------------------------------------------------------------- the measured path

/// The measured path's pods: client (app1) on node-1, server (app0) on node-2, in ns0.
fn path(c: &Cluster) -> Result<PodPair> {
    for (name, node, app) in [
        ("path-client", "node-1", "app1"),
        ("path-server", "node-2", "app0"),
    ] {
        c.apply(pod_doc(
            "ns0",
            name,
            node,
            &[("app", app), ("tier", "t1")],
            PAUSE,
        ))?;
    }
    let mut found = None;
    wait_until(
        "the measured pods to run",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let eps = c.endpoints(false)?;
            let get = |id: &str| eps.iter().find(|e| e.id == id).cloned();
            if let (Some(cl), Some(sv)) = (get("ns0/path-client"), get("ns0/path-server"))
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
    found.context("measured pods")
}

/// Whether a ping from the path's client reaches its server (policy denies ICMP there).
fn pings(p: &PodPair) -> bool {
    run_bounded(
        &mut in_ns(&p.client, &["ping", "-c", "1", "-W", "1", &p.server_ip]),
        Duration::from_secs(5),
    )
    .is_ok()
}

/// Whether the allowed sockperf traffic passes (a 1 s ping-pong).
fn allowed_passes(p: &PodPair) -> bool {
    sockperf_pp_rtt_us(p, RR_PORT, 1).is_ok()
}

fn weft_table_on(c: &Cluster, node: &str) -> bool {
    run(Command::new("ip").args([
        "netns",
        "exec",
        &c.cfg.node_ns(node),
        "nft",
        "list",
        "table",
        "inet",
        "weft-policy",
    ]))
    .is_ok()
}

/// Switches weft's policy on or off through the fabric and waits until node-1 and node-2 agree.
fn set_weft_policy(c: &Cluster, p: &PodPair, on: bool) -> Result<()> {
    patch_fabric(c, json!({"policy": {"enabled": on}}))?;
    wait_until(
        &format!(
            "weft's policy {} on node-1 and node-2",
            if on { "on" } else { "off" }
        ),
        Duration::from_secs(600),
        Duration::from_millis(500),
        || {
            Ok(["node-1", "node-2"]
                .iter()
                .all(|n| weft_table_on(c, n) == on)
                && pings(p) != on
                && allowed_passes(p))
        },
    )?;
    wait_fabric_available(c, "default", Duration::from_secs(300))
}

/// One sample of each per-packet metric.
#[derive(Clone, Copy, Debug)]
struct Sample {
    udp64_kpps: f64,
    rtt_us: f64,
    rtt_p99_us: f64,
}

fn sample(p: &PodPair, dur: u64) -> Result<Sample> {
    let waited = wait_quiet(Duration::from_secs(30));
    if waited > Duration::from_secs(2) {
        eprintln!(
            "  (waited {:.0} s for the CPUs to go quiet)",
            waited.as_secs_f64()
        );
    }
    let udp64_kpps = sockperf_tp_kpps(p, UDP_PORT, dur)?;
    std::thread::sleep(Duration::from_millis(500));
    let (rtt_us, rtt_p99_us) = sockperf_pp_rtt_us(p, RR_PORT, dur)?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(Sample {
        udp64_kpps,
        rtt_us,
        rtt_p99_us,
    })
}

// ---------------------------------------------------------------- the run

/// One engine's figures.
#[derive(Default)]
struct Side {
    compile_ms: Vec<f64>,
    render_ms: Vec<f64>,
    load_ms: Vec<f64>,
    full_sync_ms: Vec<f64>,
    first_sync_s: Vec<f64>,
    pod_event_ms: Vec<f64>,
    policy_event_ms: Vec<f64>,
    histogram: Option<(String, String)>,
    /// The agent's own stage timings over the events (see [`stage_summary`]).
    stages: Vec<String>,
    rss_mib: f64,
    /// Peak resident set since the agent started (VmHWM).
    peak_mib: f64,
    /// Agents restarted with the whole cluster present (the per-packet rounds' policy-on
    /// restarts): (VmRSS after a round, VmHWM), each in MiB.
    restarted_mib: Vec<(f64, f64)>,
    reach: Reach,
    samples: Vec<Sample>,
    ruleset: String,
    /// Why the engine's measurements stopped early.
    error: Option<String>,
}

struct Report {
    weft: Side,
    kr: Side,
    off: Vec<Sample>,
    kr_off: Vec<Sample>,
    populate_s: f64,
    caught_up_s: f64,
    loads: Vec<String>,
    reps: u64,
    dur: u64,
}

fn bench(c: &Cluster, cleanup: &Cleanup, kr_bin: PathBuf) -> Result<Report> {
    let reps = env_num("WEFT_BENCH_REPS", 5).max(1);
    let dur = env_num("WEFT_BENCH_DUR", 5).max(1);
    let n_events = env_num("WEFT_BENCH_EVENTS", 20).max(1) as usize;
    // kube-router answers every event with a full sync, minutes long at this scale.
    let kr_events = env_num("WEFT_BENCH_KR_EVENTS", 1).max(1) as usize;
    let cl2_pods = env_num("WEFT_BENCH_CL2_PODS", 100).max(1) as usize;
    let mut loads = vec![loadavg()];
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(c.client())?;
    eprintln!("installing the policy CRDs and weft");
    install_policy_crds(c, Duration::from_secs(120))?;
    install_weft(c, &[])?;
    wait_fabric_available(c, "default", Duration::from_secs(300))?;

    alive(c, "populate")?;
    eprintln!(
        "populating: {GHOSTS} simulated nodes, {} pods, {} NetworkPolicies, {CNPS} ClusterNetworkPolicies",
        NAMESPACES * PODS_PER_NAMESPACE,
        NAMESPACES * POLICIES_PER_NAMESPACE
    );
    let populate_s = rt.block_on(populate(&client))?;
    eprintln!("  populated in {populate_s:.0} s");
    let p = path(c)?;
    start_sockperf(cleanup, "path", &p, RR_PORT, true)?;
    start_sockperf(cleanup, "path", &p, UDP_PORT, false)?;
    // node-1: one real pod per namespace, the path's client.
    let t = Instant::now();
    wait_agent_settled(c, MEASURED, NAMESPACES + 1, Duration::from_secs(1800))?;
    let caught_up_s = t.elapsed().as_secs_f64();
    eprintln!(
        "  the agent on {MEASURED} settled {caught_up_s:.0} s after the last object was created"
    );
    ensure!(
        !pings(&p) && allowed_passes(&p),
        "weft's policy is not in force on the measured path"
    );
    loads.push(loadavg());

    let mut weft = Side::default();
    alive(c, "compile")?;
    eprintln!("weft: full compile and load of {MEASURED}'s ruleset");
    let compiled = rt.block_on(compile_and_load(c, &client, 7))?;
    weft.compile_ms = compiled.compile_ms;
    weft.render_ms = compiled.render_ms;
    weft.load_ms = compiled.load_ms;
    let s = compiled.size;
    weft.ruleset = format!(
        "{} bytes, {} chains, {} rules, {} sets, {} elements, {} local pods",
        compiled.bytes, s.chains, s.rules, s.sets, s.elements, s.pods
    );

    alive(c, "events")?;
    eprintln!("weft: API event → kernel ({n_events} pods added, {n_events} policies changed)");
    let scrape_before = agent_metrics(c, MEASURED)?;
    let before = apply_buckets(&scrape_before);
    let monitor = Monitor::start(c, MEASURED)?;
    let (mut pod_ms, mut policy_ms) = (Vec::new(), Vec::new());
    rt.block_on(events(
        &client,
        &monitor,
        0,
        0,
        0,
        n_events,
        &mut pod_ms,
        &mut policy_ms,
    ))?;
    drop(monitor);
    let scrape_after = agent_metrics(c, MEASURED)?;
    let after = apply_buckets(&scrape_after);
    weft.stages = stage_summary(&scrape_before, &scrape_after);
    weft.histogram = Some((
        bucket_percentile(&before, &after, 50.0),
        bucket_percentile(&before, &after, 99.0),
    ));
    weft.pod_event_ms = pod_ms;
    weft.policy_event_ms = policy_ms;
    std::thread::sleep(Duration::from_secs(5));
    weft.rss_mib = rss_mib_on_node(c, MEASURED, "weft-agent")?;
    // The peak since the agent started: it has been running since before the 10,000 pods
    // arrived, so this includes working through that backlog.
    weft.peak_mib = peak_mib_on_node(c, MEASURED, "weft-agent")?;

    alive(c, "reachability")?;
    eprintln!("weft: pod created → reachable ({cl2_pods} pods at 50/s)");
    weft.reach = rt.block_on(reachability(c, &client, "cl2-weft", cl2_pods, 50.0))?;
    loads.push(loadavg());

    // The per-packet cost of weft's policy: on and off (the fabric), alternating rounds.
    let mut off = Vec::new();
    let on = alternate(
        reps,
        |on| {
            alive(c, "datapath")?;
            set_weft_policy(c, &p, on)?;
            if on {
                // The fresh agent's first full transaction, from its first list event.
                let m = agent_metrics(c, MEASURED)?;
                let sum = metric(&m, "weft_agent_policy_apply_seconds_sum{kind=\"full\"}");
                let n = metric(&m, "weft_agent_policy_apply_seconds_count{kind=\"full\"}");
                if let (Some(sum), Some(1.0)) = (sum, n) {
                    weft.first_sync_s.push(sum);
                }
            }
            Ok(())
        },
        |r, on| {
            check_path(&p, on)?;
            let s = sample(&p, dur)?;
            log_sample(r, if on { "weft" } else { "weft off" }, &s);
            if on {
                weft.samples.push(s);
                // This agent started with the 10,000 pods already there: its whole first list.
                weft.restarted_mib.push((
                    rss_mib_on_node(c, MEASURED, "weft-agent")?,
                    peak_mib_on_node(c, MEASURED, "weft-agent")?,
                ));
            } else {
                off.push(s);
            }
            Ok(())
        },
    )?;
    if on {
        set_weft_policy(c, &p, false)?;
    }
    loads.push(loadavg());
    // weft's figures now, in case kube-router's part (long) does not finish.
    let mut report = Report {
        weft,
        kr: Side::default(),
        off,
        kr_off: Vec::new(),
        populate_s,
        caught_up_s,
        loads,
        reps,
        dur,
    };
    println!("\n## weft alone (kube-router's part follows)");
    print(&report);
    if std::env::var("WEFT_BENCH_PEER").as_deref() == Ok("none") {
        eprintln!("WEFT_BENCH_PEER=none: kube-router's part skipped");
        cleanup.stop_servers(None);
        return Ok(report);
    }

    // kube-router, weft's policy off. Its failures are reported with what it measured so far.
    let kr = Arc::new(KubeRouter {
        bin: kr_bin,
        kubeconfig: in_cluster_kubeconfig(c, &cleanup.work)?,
        work: cleanup.work.clone(),
        running: Mutex::new(Vec::new()),
    });
    {
        let (kr, cfg) = (kr.clone(), c.cfg.clone());
        cleanup.on_teardown(move || {
            if let Ok(c) = Cluster::attach(cfg) {
                kr.stop(&c);
            }
        });
    }
    let knobs = (reps, dur, kr_events, cl2_pods);
    if let Err(e) = kube_router_phase(
        c,
        &client,
        &rt,
        &kr,
        &p,
        &mut report.kr,
        &mut report.kr_off,
        &mut report.loads,
        knobs,
    ) {
        eprintln!("kube-router: {e:#}");
        report.kr.error = Some(format!("{e:#}"));
    }
    kr.stop(c);
    cleanup.stop_servers(None);
    report.loads.push(loadavg());
    Ok(report)
}

fn log_sample(r: u64, what: &str, s: &Sample) {
    eprintln!(
        "  round {} {what:18}: {:.1} kpps, RTT {:.1} µs (p99 {:.1})",
        r + 1,
        s.udp64_kpps,
        s.rtt_us,
        s.rtt_p99_us
    );
}

/// Fails unless the measured path is in the state `policy_on` says: the allowed traffic passes,
/// ICMP is dropped when policy is on and passes when it is off.
fn check_path(p: &PodPair, policy_on: bool) -> Result<()> {
    ensure!(allowed_passes(p), "the allowed traffic does not pass");
    ensure!(
        pings(p) != policy_on,
        "policy should be {}, but ping {}",
        if policy_on { "on" } else { "off" },
        if policy_on { "passes" } else { "is dropped" }
    );
    Ok(())
}

/// kube-router's jumps from the filter table's base chains into its own chains, in `node`'s
/// namespace: `iptables-save` lines without the leading `-A `.
fn kube_router_hooks(c: &Cluster, node: &str) -> Result<Vec<String>> {
    let text = run(Command::new("ip").args([
        "netns",
        "exec",
        &c.cfg.node_ns(node),
        "iptables-save",
        "-t",
        "filter",
    ]))?;
    Ok(text
        .lines()
        .filter(|l| {
            ["-A INPUT ", "-A FORWARD ", "-A OUTPUT "]
                .iter()
                .any(|b| l.starts_with(b))
                && l.contains("-j KUBE-ROUTER-")
        })
        .map(|l| l.trim_start_matches("-A ").to_owned())
        .collect())
}

/// Removes (`-D`) or puts back at the top (`-I <chain> 1`) kube-router's jumps on `node`.
/// Puts kube-router's jumps `hooks` back at the top of their chains (`on`, those missing only), or
/// removes every jump it has now (it re-adds them at each full sync).
fn hook_kube_router(c: &Cluster, node: &str, hooks: &[String], on: bool) -> Result<()> {
    let present = kube_router_hooks(c, node)?;
    let todo: Vec<&String> = if on {
        hooks.iter().filter(|h| !present.contains(h)).collect()
    } else {
        present.iter().collect()
    };
    for h in todo {
        let (chain, rest) = h
            .split_once(' ')
            .context("an iptables rule without a chain")?;
        let cmd = if on {
            format!("iptables -t filter -I {chain} 1 {rest}")
        } else {
            format!("iptables -t filter -D {chain} {rest}")
        };
        run(Command::new("ip")
            .args(["netns", "exec", &c.cfg.node_ns(node), "sh", "-c"])
            .arg(&cmd))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn kube_router_phase(
    c: &Cluster,
    client: &kube::Client,
    rt: &tokio::runtime::Runtime,
    kr: &KubeRouter,
    p: &PodPair,
    side: &mut Side,
    off: &mut Vec<Sample>,
    loads: &mut Vec<String>,
    (reps, dur, n_events, cl2_pods): (u64, u64, usize, usize),
) -> Result<()> {
    const NODES: [&str; 2] = ["node-1", "node-2"];
    eprintln!("kube-router: started on {NODES:?}, waiting for its first full sync");
    side.first_sync_s = kr.start(c, &NODES)?;
    loads.push(loadavg());
    check_path(p, true)?;
    side.rss_mib = rss_mib_on_node(c, MEASURED, "kube-router")?;
    side.peak_mib = peak_mib_on_node(c, MEASURED, "kube-router")?;
    side.full_sync_ms = kr.syncs(MEASURED);
    side.ruleset = kube_router_ruleset(c);
    eprintln!(
        "kube-router: API event → ipset ({n_events} pods added, {n_events} policies changed)"
    );
    let watch = IpsetWatch {
        netns: PathBuf::from(format!("/run/netns/{}", c.cfg.node_ns(MEASURED))),
        timeout: Duration::from_secs(1200),
    };
    let mut pod_ms = Vec::new();
    let mut policy_ms = Vec::new();
    let res = rt.block_on(events(
        client,
        &watch,
        1,
        50,
        1,
        n_events,
        &mut pod_ms,
        &mut policy_ms,
    ));
    side.pod_event_ms = pod_ms;
    side.policy_event_ms = policy_ms;
    side.full_sync_ms = kr.syncs(MEASURED);
    res?;
    side.rss_mib = side
        .rss_mib
        .max(rss_mib_on_node(c, MEASURED, "kube-router")?);
    alive(c, "kube-router reachability")?;
    eprintln!("kube-router: pod created → reachable ({cl2_pods} pods at 50/s)");
    side.reach = rt.block_on(reachability(c, client, "cl2-kr", cl2_pods, 50.0))?;
    side.full_sync_ms = kr.syncs(MEASURED);
    side.rss_mib = side
        .rss_mib
        .max(rss_mib_on_node(c, MEASURED, "kube-router")?);
    loads.push(loadavg());

    // The per-packet cost: kube-router's rules hooked in and unhooked, alternating rounds. (It
    // re-adds the hooks at its next full sync, so the path is checked before every sample.)
    let hooks: Vec<Vec<String>> = NODES
        .iter()
        .map(|n| kube_router_hooks(c, n))
        .collect::<Result<_>>()?;
    ensure!(
        hooks.iter().all(|h| h.len() == 3),
        "kube-router's hooks are not the three expected: {hooks:?}"
    );
    let hooked = alternate(
        reps,
        |on| {
            alive(c, "kube-router datapath")?;
            for (n, h) in NODES.iter().zip(&hooks) {
                hook_kube_router(c, n, h, on)?;
            }
            Ok(())
        },
        |r, on| {
            // kube-router re-adds its jumps at the end of every full sync (pod events keep it
            // syncing here): an "unhooked" sample is taken again when they came back meanwhile.
            for _ in 0..3 {
                if !on {
                    for (n, h) in NODES.iter().zip(&hooks) {
                        hook_kube_router(c, n, h, false)?;
                    }
                }
                check_path(p, on)?;
                let s = sample(p, dur)?;
                if check_path(p, on).is_err() {
                    eprintln!("  kube-router hooked itself in again during the sample; again");
                    continue;
                }
                let what = if on {
                    "kube-router"
                } else {
                    "kube-router unhooked"
                };
                log_sample(r, what, &s);
                if on {
                    side.samples.push(s);
                } else {
                    off.push(s);
                }
                return Ok(());
            }
            bail!("kube-router kept hooking itself in during 3 samples")
        },
    )?;
    if !hooked {
        for (n, h) in NODES.iter().zip(&hooks) {
            hook_kube_router(c, n, h, true)?;
        }
    }
    side.full_sync_ms = kr.syncs(MEASURED);
    Ok(())
}

/// The size of kube-router's ruleset on the measured node.
fn kube_router_ruleset(c: &Cluster) -> String {
    let ns = c.cfg.node_ns(MEASURED);
    let rules =
        run(Command::new("ip").args(["netns", "exec", &ns, "iptables-save", "-t", "filter"]))
            .map(|t| t.lines().filter(|l| l.starts_with("-A")).count())
            .unwrap_or(0);
    let sets = run(Command::new("ip").args(["netns", "exec", &ns, "ipset", "save"]))
        .map(|t| {
            let sets = t.lines().filter(|l| l.starts_with("create")).count();
            let members = t.lines().filter(|l| l.starts_with("add")).count();
            format!("{sets} ipsets, {members} members")
        })
        .unwrap_or_default();
    format!("{rules} iptables rules (filter), {sets}")
}

// ---------------------------------------------------------------- printing

fn stat(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    if p == 50.0 {
        median(&mut v)
    } else {
        percentile(&mut v, p)
    }
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

fn print(r: &Report) {
    let (w, k) = (&r.weft, &r.kr);
    println!(
        "\nweft's policy engine vs kube-router v2.1.0's network-policy controller, {} pods \
         ({} on the measured node), {} NetworkPolicies, {CNPS} ClusterNetworkPolicies v1beta1, \
         through the API server (created in {:.0} s; weft's agent on the measured node had \
         them all in its kernel {:.0} s after the last creation)\n",
        NAMESPACES * PODS_PER_NAMESPACE,
        NAMESPACES,
        NAMESPACES * POLICIES_PER_NAMESPACE + 2,
        r.populate_s,
        r.caught_up_s
    );
    println!("| measure | weft | kube-router | target |");
    println!("|---|---|---|---|");
    println!(
        "| full compile time (median / max of {}) | {} / {} (+ render {}) | n/a: no separate compile; full sync below | < 200 ms |",
        w.compile_ms.len(),
        ms(stat(&w.compile_ms, 50.0)),
        ms(stat(&w.compile_ms, 100.0)),
        ms(stat(&w.render_ms, 50.0)),
    );
    println!(
        "| full kernel load time (median / max) | {} / {} (`nft -f`, scratch netns) | full sync (build + iptables-restore + ipset), median / max of {}: {} / {} | < 1 s |",
        ms(stat(&w.load_ms, 50.0)),
        ms(stat(&w.load_ms, 100.0)),
        k.full_sync_ms.len(),
        ms(stat(&k.full_sync_ms, 50.0)),
        ms(stat(&k.full_sync_ms, 100.0)),
    );
    let (hp50, hp99) = w.histogram.clone().unwrap_or_default();
    println!(
        "| API event → kernel, pod added (p50 / p99; weft {} samples, kube-router {}) | {} / {} | {} / {} | p99 < 50 ms |",
        w.pod_event_ms.len(),
        k.pod_event_ms.len(),
        ms(stat(&w.pod_event_ms, 50.0)),
        ms(stat(&w.pod_event_ms, 99.0)),
        ms(stat(&k.pod_event_ms, 50.0)),
        ms(stat(&k.pod_event_ms, 99.0)),
    );
    println!(
        "| API event → kernel, policy changed (p50 / p99; weft {} samples, kube-router {}) | {} / {} | {} / {} | p99 < 50 ms |",
        w.policy_event_ms.len(),
        k.policy_event_ms.len(),
        ms(stat(&w.policy_event_ms, 50.0)),
        ms(stat(&w.policy_event_ms, 99.0)),
        ms(stat(&k.policy_event_ms, 50.0)),
        ms(stat(&k.policy_event_ms, 99.0)),
    );
    println!(
        "| the agent's own policy_apply_seconds over those events (p50 / p99, bucket bounds) | {hp50} / {hp99} | n/a | |"
    );
    println!(
        "| the agent's stages over those events (count × bucket bounds) | {} | n/a | |",
        w.stages.join("; ")
    );
    println!(
        "| resident memory (VmRSS, measured node) | {:.1} MiB | {:.1} MiB | < 60 MiB |",
        w.rss_mib, k.rss_mib
    );
    println!(
        "| peak resident memory since start, the 10,000 pods arriving while it runs (VmHWM) | {:.1} MiB | {:.1} MiB | < 60 MiB |",
        w.peak_mib, k.peak_mib
    );
    let worst = |v: &[(f64, f64)]| {
        v.iter()
            .copied()
            .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
            .map_or("–".to_owned(), |(rss, hwm)| {
                format!("{rss:.1} MiB / {hwm:.1} MiB (worst of {})", v.len())
            })
    };
    println!(
        "| weft restarted with the 10,000 pods present (policy on again in the per-packet rounds): resident after a round / peak (VmRSS / VmHWM) | {} | n/a | < 60 MiB |",
        worst(&w.restarted_mib)
    );
    for (what, f) in [
        (
            "pod created → IP assigned (nodelet, CNI)",
            (|x: &Reach| &x.ip_assigned_ms) as fn(&Reach) -> &Vec<f64>,
        ),
        (
            "IP assigned → reachable (clusterloader2's metric)",
            |x: &Reach| &x.after_ip_ms,
        ),
        (
            "pod created → reachable as allowed, 50 pods/s",
            |x: &Reach| &x.created_ms,
        ),
    ] {
        println!(
            "| {what} (p50 / p99) | {} / {} | {} / {} | {} |",
            ms(stat(f(&w.reach), 50.0)),
            ms(stat(f(&w.reach), 99.0)),
            ms(stat(f(&k.reach), 50.0)),
            ms(stat(f(&k.reach), 99.0)),
            if what.starts_with("pod created → reachable") {
                "p99 < 1 s"
            } else {
                ""
            }
        );
    }
    println!(
        "| targets reachable / reached by a client no policy allows | {} of {} / {} | {} of {} / {} | 0 reached when denied |",
        w.reach.created_ms.len(),
        w.reach.targets,
        w.reach.denied_reached,
        k.reach.created_ms.len(),
        k.reach.targets,
        k.reach.denied_reached
    );
    println!("| ClusterNetworkPolicy (50 loaded) | enforced | n/a: not implemented | |");
    println!(
        "| ruleset on the measured node | {} | {} | |",
        w.ruleset, k.ruleset
    );
    let list = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| start → first full ruleset in the kernel (weft: agent restarted by the fabric, its first list event → transaction committed, node-1; kube-router: process start → first full sync, node-1 and node-2) | {} | {} | |",
        list(&w.first_sync_s),
        list(&k.first_sync_s)
    );
    let med = |v: &[Sample], f: fn(&Sample) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        median(&mut x)
    };
    println!(
        "\nper-packet cost on the VXLAN path (pod on node-1 → pod on node-2, both selected by policies), \
         medians of {} alternating rounds of {} s each; ratio = on ÷ off (latency: off ÷ on), target ≥ 0.95; \
         weft off = the fabric's spec.policy.enabled false; kube-router unhooked = its three jumps from \
         INPUT/FORWARD/OUTPUT removed, its chains and ipsets left in place\n",
        r.reps, r.dur
    );
    println!("| metric | weft off | weft | ratio | kube-router unhooked | kube-router | ratio |");
    println!("|---|---|---|---|---|---|---|");
    type Row = (&'static str, &'static str, fn(&Sample) -> f64, bool);
    let rows: [Row; 3] = [
        (
            "64-byte UDP rate (sockperf tp)",
            "kpps",
            |s| s.udp64_kpps,
            true,
        ),
        (
            "TCP request/response RTT (sockperf pp)",
            "µs",
            |s| s.rtt_us,
            false,
        ),
        (
            "TCP request/response RTT p99",
            "µs",
            |s| s.rtt_p99_us,
            false,
        ),
    ];
    for (name, unit, f, higher) in rows {
        let ratio = |on: f64, off: f64| if higher { on / off } else { off / on };
        let (wo, wv) = (med(&r.off, f), med(&w.samples, f));
        let (ko, kv) = (med(&r.kr_off, f), med(&k.samples, f));
        println!(
            "| {name} | {wo:.1} {unit} | {wv:.1} {unit} | {:.2} | {ko:.1} {unit} | {kv:.1} {unit} | {:.2} |",
            ratio(wv, wo),
            ratio(kv, ko)
        );
    }
    if let Some(e) = &k.error {
        println!("\nkube-router's measurements stopped early: {e}");
    }
    println!(
        "\nload average (1, 5, 15 min) at the phases: {}",
        r.loads.join(" → ")
    );
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    need_root("the policy benchmark")?;
    need("sockperf", "apt-get install sockperf")?;
    for p in ["iptables", "iptables-save", "ipset"] {
        need(
            p,
            "kube-router's network-policy controller needs iptables and ipset: apt-get install iptables ipset",
        )?;
    }
    need("nsenter", "apt-get install util-linux")?;
    need("stdbuf", "apt-get install coreutils")?;
    let work = std::env::temp_dir().join(format!("weft-bench-{CLUSTER}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let own_bins = PathBuf::from(env!("CARGO_BIN_EXE_weft-e2e"))
        .parent()
        .context("bin dir")?
        .to_path_buf();
    let bins = private_bins(&work, &own_bins)?;
    let mut cfg = ClusterConfig::new(CLUSTER, 3, bins);
    cfg.api_port = API_PORT;
    cfg.port_base = PORT_BASE;
    cfg.underlay_octet = UNDERLAY_OCTET;
    cfg.cluster_cidrs = vec![POD_NETWORK.into()];
    eprintln!("kube-router v2.1.0 from its Go module (cached after the first build)");
    let kr_bin = weft_e2e::gobuild::ensure_kube_router(&cfg.cache_dir)?.join("kube-router");
    let cleanup = Arc::new(Cleanup::new(cfg.clone(), work));
    cleanup.on_teardown(|| {
        let _ = run(Command::new("ip").args(["netns", "del", LOAD_NS]));
    });
    guard(cleanup.clone(), WATCHDOG);
    let started = Instant::now();
    let report = run_guarded(cfg, &cleanup, |c| bench(c, &cleanup, kr_bin))?;
    println!("\n## weft and kube-router");
    print(&report);
    println!("\n(whole run: {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}
