//! `cargo bench -p weft-policy --bench compile`: full compile and render time of a synthetic
//! cluster of 10,000 pods (100 namespaces of 100, on 100 nodes), 1,000 NetworkPolicies and 50
//! cluster-wide policies (40 ClusterNetworkPolicies, 9 AdminNetworkPolicies, 1 BANP), and the size
//! of the rendered ruleset. Prints a table; the target for a full compile is under 200 ms.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;
use weft_crds::policy_api::{v1alpha1, v1beta1};
use weft_policy::{
    Index, Kind, NodeInput, ObjectRef, Reuse, compile_node, compile_node_memo,
    compile_node_reusing, render_ruleset, render_update,
};

const NAMESPACES: usize = 100;
const PODS_PER_NAMESPACE: usize = 100;
const NODES: usize = 100;
const POLICIES_PER_NAMESPACE: usize = 10;
const RUNS: usize = 15;

/// The system allocator, counting the bytes live on the heap and their peak, for the memory
/// table: what the index, a compile and a render of this cluster hold and need at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as it came.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as it came.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as it came.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap (live now, peak since the last call) in MiB, and resets the peak to what is live.
fn heap() -> (f64, f64) {
    let live = LIVE.load(Ordering::Relaxed);
    let peak = PEAK.swap(live, Ordering::Relaxed);
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    (mib(live), mib(peak))
}

fn pod(ns: usize, i: usize) -> Pod {
    let n = ns * PODS_PER_NAMESPACE + i;
    let node = n % NODES;
    let ip4 = format!("10.{}.{}.{}", 100 + node / 250, node % 250, 10 + n / NODES);
    let ip6 = format!("fd00:10:{node:x}::{:x}", 10 + n / NODES);
    serde_json::from_value(json!({
        "metadata": {"namespace": format!("ns{ns}"), "name": format!("p{i}"),
                     "labels": {"app": format!("app{}", i % 10), "tier": format!("t{}", i % 3)}},
        "spec": {"nodeName": format!("node{node}"), "containers": [{"name": "c", "ports": [
            {"name": "http", "protocol": "TCP", "containerPort": 8080 + (i % 2) as i32},
            {"name": "dns", "protocol": "UDP", "containerPort": 53}]}]},
        "status": {"phase": "Running", "podIPs": [{"ip": ip4}, {"ip": ip6}]}
    }))
    .expect("pod")
}

fn namespace(ns: usize) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": format!("ns{ns}"), "labels": {
        "kubernetes.io/metadata.name": format!("ns{ns}"), "team": format!("team{}", ns % 10), "env": format!("e{}", ns % 2)}}}))
    .expect("namespace")
}

fn network_policy(ns: usize, k: usize) -> NetworkPolicy {
    let peer_app = format!("app{}", (k + 1) % 10);
    serde_json::from_value(json!({
        "metadata": {"namespace": format!("ns{ns}"), "name": format!("np{k}")},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("app{k}")}},
            "policyTypes": if k.is_multiple_of(3) { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) },
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": peer_app}}},
                          {"namespaceSelector": {"matchLabels": {"team": format!("team{}", k)}}, "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["t0", "t1"]}]}}],
                 "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]},
                {"from": [{"ipBlock": {"cidr": "172.16.0.0/12", "except": [format!("172.16.{k}.0/24")]}}], "ports": [{"protocol": "UDP", "port": 53}]}
            ],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"env": "e0"}}}], "ports": [{"port": "http"}]},
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "UDP", "port": 53}]}
            ]
        }
    }))
    .expect("networkpolicy")
}

fn cnp(i: usize) -> v1beta1::ClusterNetworkPolicy {
    let tier = if i < 30 { "Admin" } else { "Baseline" };
    let action = ["Deny", "Pass", "Accept"][i % 3];
    serde_json::from_value(json!({
        "metadata": {"name": format!("cnp{i}")},
        "spec": {"tier": tier, "priority": i as i32 * 10, "subject": {"namespaces": {"matchLabels": {"team": format!("team{}", i % 10)}}},
            "ingress": [{"name": format!("r{i}"), "action": action,
                         "from": [{"pods": {"namespaceSelector": {"matchLabels": {"env": format!("e{}", i % 2)}}, "podSelector": {"matchLabels": {"tier": format!("t{}", i % 3)}}}}],
                         "protocols": [{"tcp": {"destinationPort": {"range": {"start": 1000 + i as i32, "end": 2000}}}}]}],
            "egress": [{"name": format!("e{i}"), "action": action, "to": [{"networks": [format!("192.168.{i}.0/24")]}]}]}
    }))
    .expect("cnp")
}

fn anp(i: usize) -> v1alpha1::AdminNetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": format!("anp{i}")},
        "spec": {"priority": 500 + i as i32, "subject": {"namespaces": {}},
            "egress": [{"action": "Deny", "to": [{"namespaces": {"matchLabels": {"team": format!("team{i}")}}}],
                        "ports": [{"portNumber": {"protocol": "TCP", "port": 5432}}]}]}
    }))
    .expect("anp")
}

fn banp() -> v1alpha1::BaselineAdminNetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "default"},
        "spec": {"subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"env": "e1"}}}]}]}
    }))
    .expect("banp")
}

fn node(n: usize) -> NodeInput {
    NodeInput {
        node_name: format!("node{n}"),
        host_addrs: vec!["192.168.0.1".parse().expect("ip")],
        pod_cidrs: vec![
            format!("10.{}.{}.0/24", 100 + n / 250, n % 250)
                .parse()
                .expect("cidr"),
            format!("fd00:10:{n:x}::/64").parse().expect("cidr"),
        ],
    }
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn time<T>(f: impl Fn() -> T) -> ((Duration, Duration, Duration), T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = f();
        times.push(t.elapsed());
        last = Some(out);
    }
    (stats(times), last.expect("ran"))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    let namespaces: Vec<Namespace> = (0..NAMESPACES).map(namespace).collect();
    let pods: Vec<Pod> = (0..NAMESPACES)
        .flat_map(|ns| (0..PODS_PER_NAMESPACE).map(move |i| pod(ns, i)))
        .collect();
    let nps: Vec<NetworkPolicy> = (0..NAMESPACES)
        .flat_map(|ns| (0..POLICIES_PER_NAMESPACE).map(move |k| network_policy(ns, k)))
        .collect();
    let cnps: Vec<_> = (0..40).map(cnp).collect();
    let anps: Vec<_> = (0..9).map(anp).collect();
    let banp = banp();
    let build = || {
        let mut ix = Index::new();
        namespaces.iter().for_each(|o| ix.apply_namespace(o));
        pods.iter().for_each(|o| ix.apply_pod(o));
        nps.iter().for_each(|o| ix.apply_network_policy(o));
        cnps.iter().for_each(|o| ix.apply_cluster_network_policy(o));
        anps.iter().for_each(|o| ix.apply_admin_network_policy(o));
        ix.apply_baseline_admin_network_policy(&banp);
        ix
    };
    let (t_index, ix) = time(build);
    assert!(ix.problems().is_empty(), "{:?}", ix.problems());
    let n0 = node(0);
    let (t_compile, ir) = time(|| compile_node(&ix, &n0));
    let (t_render, text) = time(|| render_ruleset(&ir));
    let (t_both, _) = time(|| render_ruleset(&compile_node(&ix, &n0)));

    // One pod added on this node (a new replica): compile again and render the update.
    let mut ix2 = ix.clone();
    let mut extra = pod(0, 0);
    extra.metadata.name = Some("extra".into());
    extra.status.as_mut().expect("status").pod_ips =
        Some(vec![k8s_openapi::api::core::v1::PodIP {
            ip: "10.100.0.250".into(),
        }]);
    ix2.apply_pod(&extra);
    let (t_churn, update) = time(|| render_update(&ir, &compile_node(&ix2, &n0)));

    // One NetworkPolicy of a namespace with pods on this node changed (an ingress rule from a new
    // ipBlock appended, as the policy bench does): the engine compiles reusing the last compile's
    // sets, then renders the update.
    let mut ix3 = ix.clone();
    let mut changed = network_policy(0, 0);
    if let Some(spec) = changed.spec.as_mut() {
        spec.ingress.get_or_insert_with(Vec::new).push(
            serde_json::from_value(json!({"from": [{"ipBlock": {"cidr": "172.31.0.0/24"}}],
                                          "ports": [{"protocol": "TCP", "port": 7000}]}))
            .expect("rule"),
        );
    }
    ix3.apply_network_policy(&changed);
    let (_, memo) = compile_node_memo(&ix, &n0);
    let np0: std::collections::BTreeSet<ObjectRef> = [ObjectRef {
        kind: Kind::NetworkPolicy,
        namespace: Some("ns0".into()),
        name: "np0".into(),
    }]
    .into();
    let reuse = Reuse {
        ir: &ir,
        memo: &memo,
        changed: &np0,
    };
    let (t_policy, _) = time(|| {
        let (next, _) = compile_node_reusing(&ix3, &n0, reuse);
        render_update(&ir, &next)
    });
    let (t_policy_compile, _) = time(|| compile_node_reusing(&ix3, &n0, reuse));
    let (t_policy_scratch, _) = time(|| compile_node(&ix3, &n0));

    // Every pod on one node: no real node runs 10,000 pods; this bounds the worst case.
    let mut all = ix.clone();
    for p in &pods {
        let mut p = p.clone();
        p.spec.as_mut().expect("spec").node_name = Some("node0".into());
        all.apply_pod(&p);
    }
    let wide = NodeInput {
        pod_cidrs: vec![
            "10.0.0.0/8".parse().expect("cidr"),
            "fd00::/16".parse().expect("cidr"),
        ],
        ..n0.clone()
    };
    let (t_all, ir_all) = time(|| compile_node(&all, &wide));
    let (t_all_render, text_all) = time(|| render_ruleset(&ir_all));

    let lines = |t: &str| t.lines().count();
    let rules = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("\t\t") && !l.contains("type filter hook"))
            .count()
    };
    let elements = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("add element"))
            .map(|l| l.matches(", ").count() + 1)
            .sum::<usize>()
    };
    println!(
        "weft-policy compile benchmark: {} pods in {NAMESPACES} namespaces on {NODES} nodes, {} NetworkPolicies, {} cluster-wide policies; {RUNS} runs, median (min-max) in ms",
        pods.len(),
        nps.len(),
        cnps.len() + anps.len() + 1
    );
    println!();
    println!("| measure | median ms | min | max | target |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, t: (Duration, Duration, Duration), target: &str| {
        println!(
            "| {name} | {} | {} | {} | {target} |",
            ms(t.0),
            ms(t.1),
            ms(t.2)
        );
    };
    row("index: apply every object", t_index, "");
    row(
        &format!("compile one node ({} local pods)", ir.pods.len()),
        t_compile,
        "",
    );
    row("render the full ruleset", t_render, "");
    row("full compile + render, one node", t_both, "< 200");
    row("one pod added: compile + incremental render", t_churn, "");
    row(
        "one policy changed: compile reusing the last sets + render update",
        t_policy,
        "",
    );
    row(
        "  of which compile reusing the last sets",
        t_policy_compile,
        "",
    );
    row(
        "  (compile from scratch, for comparison)",
        t_policy_scratch,
        "",
    );
    row(
        &format!(
            "stress: compile with all {} pods on one node",
            ir_all.pods.len()
        ),
        t_all,
        "",
    );
    row("stress: render that ruleset", t_all_render, "");
    println!();
    println!("| ruleset | bytes | lines | rules | set elements | profile chains | address sets |");
    println!("|---|---|---|---|---|---|---|");
    for (name, t, i) in [
        ("one node", &text, &ir),
        ("stress: all pods on one node", &text_all, &ir_all),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            t.len(),
            lines(t),
            rules(t),
            elements(t),
            i.chains.len(),
            i.addr_sets.len() + i.port_sets.len()
        );
    }
    println!();
    println!(
        "pod churn update: full={}, {} bytes, {} statements",
        update.full,
        update.script.len(),
        lines(&update.script)
    );
    memory(&namespaces, &pods, &nps, &cnps, &anps, &banp, &n0);
    // For loading into a kernel: WEFT_BENCH_DUMP=<dir> writes the one-node ruleset and the update.
    if let Some(dir) = std::env::var_os("WEFT_BENCH_DUMP") {
        let dir = std::path::PathBuf::from(dir);
        for (name, body) in [("one-node.nft", &text), ("churn.nft", &update.script)] {
            if let Err(e) = std::fs::write(dir.join(name), body) {
                eprintln!("failed to write {name}: {e}");
            }
        }
    }
}

/// What the agent holds and needs at its start in this cluster, step by step as its policy
/// engine goes (index, compile with the memo, the full render),
/// on the heap: each step's peak above what was live before it, and what it leaves live.
fn memory(
    namespaces: &[Namespace],
    pods: &[Pod],
    nps: &[NetworkPolicy],
    cnps: &[v1beta1::ClusterNetworkPolicy],
    anps: &[v1alpha1::AdminNetworkPolicy],
    banp: &v1alpha1::BaselineAdminNetworkPolicy,
    node: &NodeInput,
) {
    println!();
    println!(
        "| heap, one node's start (MiB) | live after | peak during | step's own peak | step leaves |"
    );
    println!("|---|---|---|---|---|");
    let (base, _) = heap();
    let mut before = base;
    let mut row = |name: &str| {
        let (live, peak) = heap();
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:+.1} |",
            live - base,
            peak - base,
            peak - before,
            live - before
        );
        before = live;
    };
    let mut ix = Index::new();
    namespaces.iter().for_each(|o| ix.apply_namespace(o));
    pods.iter().for_each(|o| ix.apply_pod(o));
    row(&format!(
        "index: {} namespaces, {} pods",
        namespaces.len(),
        pods.len()
    ));
    nps.iter().for_each(|o| ix.apply_network_policy(o));
    cnps.iter().for_each(|o| ix.apply_cluster_network_policy(o));
    anps.iter().for_each(|o| ix.apply_admin_network_policy(o));
    ix.apply_baseline_admin_network_policy(banp);
    row(&format!(
        "index: + {} policies",
        nps.len() + cnps.len() + anps.len() + 1
    ));
    let (ir, memo) = compile_node_memo(&ix, node);
    row("compile (IR and memo kept)");
    let text = render_ruleset(&ir);
    row(&format!("full render ({} bytes of script)", text.len()));
    drop(text);
    row("script dropped");
    drop((ir, memo, ix));
}
