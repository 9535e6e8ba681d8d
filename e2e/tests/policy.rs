//! Network policy end to end (issue 9, "How this is shown", item 3): the upstream suites' model on a
//! 3-node local cluster. Namespaces x, y and z hold pods a, b and c each, spread so that every node
//! runs one pod of every namespace and one pod of every name; every pod serves TCP and UDP on ports
//! 80 and 81 (container ports named `serve-<port>-<proto>`, as upstream names them, except that the
//! pods named c swap the names of their two TCP ports: a named port must be resolved on each
//! destination pod, not once per policy).
//!
//! Every scenario applies policies (NetworkPolicy, ClusterNetworkPolicy v1beta1/v1alpha2,
//! AdminNetworkPolicy and BaselineAdminNetworkPolicy v1alpha1), waits until the agents have applied
//! them by polling the full probe matrix (81 pairs x 4 ports) until it equals the expected one or a
//! bound passes, and on a timeout names every pair that differs. The expected verdict of each
//! scenario is a small function written here, from the scenario's own reading of the APIs; it never
//! asks weft-policy. Some scenarios change policies or labels while traffic runs and check the matrix
//! after each step. After each scenario its policies and label changes are removed and the full
//! matrix must be open again, so scenarios do not depend on each other.
//!
//! kube-proxy (nftables mode) runs on every node, so traffic to a Service is judged after its DNAT:
//! scenarios probe a ClusterIP from every pod and a NodePort from the external host, with Service
//! ports that differ from the target ports the policies name. One scenario reads the agents'
//! `weft_agent_policy_dropped_packets_total` before and after a denied probe.
//!
//! SCTP is not probed here: this kernel has no SCTP sockets. weft-policy's privileged test
//! `tests/sctp_netns.rs` shows SCTP enforcement with raw SCTP INIT packets instead.

mod support;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use weft_e2e::Cluster;
use weft_e2e::install::{install_weft, wait_fabric_available};
use weft_e2e::policyapi::install_policy_crds;
use weft_e2e::probe::{self, Endpoint, Family};
use weft_e2e::serve::{PortSpec, Proto};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
/// A denied probe costs this long (TCP connect, or UDP's three tries).
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long the agents may take to apply a change.
const APPLIED_WITHIN: Duration = Duration::from_secs(20);
/// How long after a change the first matrix is probed.
const SETTLE: Duration = Duration::from_millis(300);
/// Every policy the suite creates carries this label, so cleanup finds them all.
const OWNED: &str = "e2e.weft.dev/policy-suite";

const TCP80: PortSpec = PortSpec {
    proto: Proto::Tcp,
    port: 80,
};
const TCP81: PortSpec = PortSpec {
    proto: Proto::Tcp,
    port: 81,
};
const UDP80: PortSpec = PortSpec {
    proto: Proto::Udp,
    port: 80,
};
const UDP81: PortSpec = PortSpec {
    proto: Proto::Udp,
    port: 81,
};
const PORTS: [PortSpec; 4] = [TCP80, TCP81, UDP80, UDP81];

type Labels = BTreeMap<String, String>;

/// A pod of the model, as the expectations read it.
#[derive(Clone, Debug)]
struct Pod {
    ns: &'static str,
    name: &'static str,
    node: String,
    ip: Ipv4Addr,
    labels: Labels,
}

impl Pod {
    fn id(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
    fn is(&self, id: &str) -> bool {
        self.id() == id
    }
    fn has(&self, k: &str, v: &str) -> bool {
        self.labels.get(k).is_some_and(|x| x == v)
    }
    fn has_key(&self, k: &str) -> bool {
        self.labels.contains_key(k)
    }
    /// Whether `p` is this pod's container port named `name`.
    fn named(&self, p: PortSpec, name: &str) -> bool {
        port_name(self.name, p) == name
    }
}

/// The cluster as the expectations see it: pods, namespace labels, node pod CIDRs.
#[derive(Clone, Debug)]
struct World {
    pods: Vec<Pod>,
    ns_labels: BTreeMap<&'static str, Labels>,
    node_cidrs: BTreeMap<String, String>,
    cluster_cidr: String,
    endpoints: Vec<Endpoint>,
}

impl World {
    fn pod(&self, id: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.is(id))
            .unwrap_or_else(|| panic!("no pod {id} in the model"))
    }
    fn ip(&self, id: &str) -> String {
        format!("{}/32", self.pod(id).ip)
    }
    fn cidr(&self, node: &str) -> String {
        self.node_cidrs.get(node).cloned().unwrap_or_default()
    }
    fn ns_has(&self, ns: &str, k: &str, v: &str) -> bool {
        self.ns_labels
            .get(ns)
            .and_then(|l| l.get(k))
            .is_some_and(|x| x == v)
    }
}

/// The labels every pod starts with.
fn base_pod_labels(ns: &str, name: &str) -> Labels {
    let mut l = Labels::new();
    l.insert("pod".into(), name.into());
    l.insert("role".into(), if name == "c" { "db" } else { "web" }.into());
    if matches!((ns, name), ("x", "c") | ("z", "b")) {
        l.insert("canary".into(), "true".into());
    }
    l
}

/// The labels every namespace starts with (besides `kubernetes.io/metadata.name`).
fn base_ns_labels(ns: &str) -> Labels {
    let mut l = Labels::new();
    l.insert("ns".into(), ns.into());
    l.insert("env".into(), if ns == "z" { "dev" } else { "prod" }.into());
    l
}

/// The node a pod runs on: every node gets one pod of each namespace and of each name.
fn node_of(ns_index: usize, pod_index: usize) -> String {
    format!("node-{}", (ns_index + pod_index) % 3 + 1)
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
        Proto::Sctp => "SCTP",
    }
}

/// The name of a pod's container port: `serve-<port>-<proto>`, but pods named c swap the names of
/// their TCP ports.
fn port_name(pod: &str, p: PortSpec) -> String {
    let number = match (pod, p.proto, p.port) {
        ("c", Proto::Tcp, 80) => 81,
        ("c", Proto::Tcp, 81) => 80,
        (_, _, n) => n,
    };
    format!("serve-{number}-{}", proto_name(p.proto).to_lowercase())
}

fn pod_doc(ns: &str, name: &str, node: &str) -> Value {
    let ports: Vec<Value> = PORTS
        .iter()
        .map(|p| json!({"name": port_name(name, *p), "containerPort": p.port, "protocol": proto_name(p.proto)}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": base_pod_labels(ns, name)},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "app", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53", "ports": ports}]}
    })
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

/// Brings the model up once per suite: CRDs, weft, namespaces, pods; returns a copy of it.
fn world(c: &Cluster) -> Result<World> {
    let mut guard = WORLD
        .lock()
        .map_err(|_| anyhow::anyhow!("world lock poisoned"))?;
    if let Some(w) = guard.as_ref() {
        return Ok(w.clone());
    }
    let started = Instant::now();
    if get_json(c, &["namespace", "x"]).is_err() {
        install_policy_crds(c, Duration::from_secs(60))?;
        install_weft(c, &[])?;
        wait_fabric_available(c, "default", Duration::from_secs(180))?;
        let mut docs = Vec::new();
        for ns in NAMESPACES {
            docs.push(json!({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": ns, "labels": base_ns_labels(ns)}}));
        }
        for (i, ns) in NAMESPACES.iter().enumerate() {
            for (j, name) in PODS.iter().enumerate() {
                docs.push(pod_doc(ns, name, &node_of(i, j)));
            }
        }
        c.apply(json!({"apiVersion": "v1", "kind": "List", "items": docs}))?;
    }
    let mut pods = Vec::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        for (j, name) in PODS.iter().enumerate() {
            let p = wait_pod_ready(c, ns, name, Duration::from_secs(90))?;
            let ip: Ipv4Addr = p["status"]["podIP"]
                .as_str()
                .context("pod has no IP")?
                .parse()?;
            pods.push(Pod {
                ns,
                name,
                node: node_of(i, j),
                ip,
                labels: base_pod_labels(ns, name),
            });
        }
    }
    let nodes = get_json(c, &["nodes"])?;
    let node_cidrs: BTreeMap<String, String> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            Some((
                n["metadata"]["name"].as_str()?.to_string(),
                n["spec"]["podCIDR"].as_str()?.to_string(),
            ))
        })
        .collect();
    ensure!(node_cidrs.len() == 3, "node pod CIDRs: {node_cidrs:?}");
    let endpoints: Vec<Endpoint> = c
        .endpoints(false)?
        .into_iter()
        .filter(|e| {
            NAMESPACES
                .iter()
                .any(|ns| e.id.starts_with(&format!("{ns}/")))
        })
        .collect();
    ensure!(endpoints.len() == 9, "expected 9 pods, got {endpoints:?}");
    let w = World {
        pods,
        ns_labels: NAMESPACES.iter().map(|n| (*n, base_ns_labels(n))).collect(),
        node_cidrs,
        cluster_cidr: c.cfg.cluster_cidrs[0].clone(),
        endpoints,
    };
    expect_matrix(
        &w,
        "every pod reaches every pod before any policy",
        &|_, _, _, _| true,
    )?;
    eprintln!(
        "policy suite: model ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    *guard = Some(w.clone());
    Ok(w)
}

/// The expected verdict of one probe: (model, source, destination, port) → allowed.
type Expect<'a> = &'a dyn Fn(&World, &Pod, &Pod, PortSpec) -> bool;

/// One probe whose outcome differs from the expectation.
fn mismatches(w: &World, expect: Expect<'_>) -> Result<Vec<String>> {
    let m = probe::matrix(
        &w.endpoints,
        &w.endpoints,
        &PORTS,
        Family::V4,
        PROBE_TIMEOUT,
    )?;
    let mut out = Vec::new();
    for port in PORTS {
        let rows = m
            .get(&port.to_string())
            .with_context(|| format!("no results for {port}"))?;
        ensure!(rows.len() == 81, "{port}: {} pairs probed", rows.len());
        for o in rows {
            let (s, d) = (w.pod(&o.from), w.pod(&o.to));
            // A pod reaching itself never leaves its namespace: always allowed.
            let want = s.is(&d.id()) || expect(w, s, d, port);
            if want != o.allowed {
                out.push(format!(
                    "{} -> {} {port}: expected {}, got {}{}",
                    o.from,
                    o.to,
                    if want { "allowed" } else { "denied" },
                    if o.allowed { "allowed" } else { "denied" },
                    o.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(out)
}

/// Polls the matrix until it equals the expectation; on a timeout, lists the pairs that differ.
fn expect_matrix(w: &World, what: &str, expect: Expect<'_>) -> Result<Duration> {
    let start = Instant::now();
    // The agents usually apply a change within this; probing earlier mostly measures the old state.
    std::thread::sleep(SETTLE);
    loop {
        let diff = mismatches(w, expect)?;
        if diff.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > APPLIED_WITHIN {
            bail!(
                "{what}: after {:?}, {} probes differ from the expectation:\n  {}",
                APPLIED_WITHIN,
                diff.len(),
                diff.join("\n  ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One scenario's view: the model (labels change with it) and what it must undo.
struct Ctx<'a> {
    c: &'a Cluster,
    w: World,
    base: World,
    touched_pods: Vec<(String, String)>,
    touched_ns: Vec<(&'static str, String)>,
    /// Node labels a scenario set (the suite's own keys: removed by cleanup).
    touched_nodes: Vec<(String, String)>,
}

impl Ctx<'_> {
    /// Applies policies (labelled as the suite's own).
    fn apply(&mut self, docs: Vec<Value>) -> Result<()> {
        let items: Vec<Value> = docs
            .into_iter()
            .map(|mut d| {
                d["metadata"]["labels"][OWNED] = json!("true");
                d
            })
            .collect();
        self.c
            .apply(json!({"apiVersion": "v1", "kind": "List", "items": items}))
    }

    /// Sets (`Some`) or removes (`None`) a label of pod `ns/name`, in the cluster and the model.
    fn label_pod(&mut self, id: &str, key: &str, value: Option<&str>) -> Result<()> {
        let (ns, name) = id.split_once('/').context("pod id")?;
        let arg = match value {
            Some(v) => format!("{key}={v}"),
            None => format!("{key}-"),
        };
        output(
            self.c
                .kubectl()
                .args(["label", "pod", "-n", ns, name, &arg, "--overwrite"]),
        )?;
        self.touched_pods.push((id.to_string(), key.to_string()));
        let p = self
            .w
            .pods
            .iter_mut()
            .find(|p| p.is(id))
            .context("no such pod")?;
        match value {
            Some(v) => p.labels.insert(key.into(), v.into()),
            None => p.labels.remove(key),
        };
        Ok(())
    }

    /// Sets or removes a namespace label.
    fn label_ns(&mut self, ns: &'static str, key: &str, value: Option<&str>) -> Result<()> {
        let arg = match value {
            Some(v) => format!("{key}={v}"),
            None => format!("{key}-"),
        };
        output(
            self.c
                .kubectl()
                .args(["label", "namespace", ns, &arg, "--overwrite"]),
        )?;
        self.touched_ns.push((ns, key.to_string()));
        let l = self.w.ns_labels.entry(ns).or_default();
        match value {
            Some(v) => l.insert(key.into(), v.into()),
            None => l.remove(key),
        };
        Ok(())
    }

    /// Sets or removes a label of a Node; cleanup removes every label set this way (so `key` must
    /// be the suite's own, absent from the base cluster).
    fn label_node(&mut self, node: &str, key: &str, value: Option<&str>) -> Result<()> {
        let arg = match value {
            Some(v) => format!("{key}={v}"),
            None => format!("{key}-"),
        };
        output(
            self.c
                .kubectl()
                .args(["label", "node", node, &arg, "--overwrite"]),
        )?;
        self.touched_nodes.push((node.to_string(), key.to_string()));
        Ok(())
    }

    /// Deletes one of the suite's objects, e.g. `("networkpolicy", "x", "deny")`.
    fn delete(&mut self, kind: &str, ns: &str, name: &str) -> Result<()> {
        let mut cmd = self.c.kubectl();
        cmd.args(["delete", kind, name, "--wait=false"]);
        if !ns.is_empty() {
            cmd.args(["-n", ns]);
        }
        output(&mut cmd).map(|_| ())
    }

    /// Waits until the matrix equals the expectation.
    fn expect(&self, what: &str, expect: Expect<'_>) -> Result<()> {
        let took = expect_matrix(&self.w, what, expect)?;
        eprintln!(
            "    {what}: matrix as expected after {:.1}s",
            took.as_secs_f64()
        );
        Ok(())
    }

    /// Removes the scenario's policies and label changes; the matrix must be open again.
    fn cleanup(&mut self) -> Result<()> {
        let sel = format!("{OWNED}=true");
        output(self.c.kubectl().args([
            "delete",
            "networkpolicies.networking.k8s.io,clusternetworkpolicies.policy.networking.k8s.io,\
             adminnetworkpolicies.policy.networking.k8s.io,baselineadminnetworkpolicies.policy.networking.k8s.io,\
             services",
            "-A",
            "-l",
            &sel,
            "--wait=false",
        ]))?;
        let mut pods = std::mem::take(&mut self.touched_pods);
        pods.sort();
        pods.dedup();
        for (id, key) in pods {
            let v = self.base.pod(&id).labels.get(&key).cloned();
            self.label_pod(&id, &key, v.as_deref())?;
        }
        let mut nss = std::mem::take(&mut self.touched_ns);
        nss.sort();
        nss.dedup();
        for (ns, key) in nss {
            let v = self
                .base
                .ns_labels
                .get(ns)
                .and_then(|l| l.get(&key))
                .cloned();
            self.label_ns(ns, &key, v.as_deref())?;
        }
        let mut nodes = std::mem::take(&mut self.touched_nodes);
        nodes.sort();
        nodes.dedup();
        for (node, key) in nodes {
            self.label_node(&node, &key, None)?;
        }
        self.touched_pods.clear();
        self.touched_ns.clear();
        self.touched_nodes.clear();
        expect_matrix(
            &self.w,
            "policies removed: every pod reaches every pod",
            &|_, _, _, _| true,
        )
        .map(|_| ())
    }
}

/// Probes one pair over and over (every 20 ms) on a thread of its own until stopped: traffic that
/// runs while policies and labels change.
struct Traffic {
    what: String,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Traffic {
    fn start(w: &World, from: &str, to: &str, port: PortSpec) -> Result<Self> {
        let find = |id: &str| {
            w.endpoints
                .iter()
                .find(|e| e.id == id)
                .cloned()
                .with_context(|| format!("no endpoint {id}"))
        };
        let (src, dst) = (find(from)?, find(to)?);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut sent, mut failed) = (0, Vec::new());
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                sent += 1;
                match probe::single(&src, &dst, port, Family::V4, PROBE_TIMEOUT) {
                    Ok(o) if o.allowed => {}
                    Ok(o) => failed.push(format!(
                        "at {:.2}s: {}",
                        start.elapsed().as_secs_f64(),
                        o.error.unwrap_or_default()
                    )),
                    Err(e) => failed.push(format!("{e:#}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (sent, failed)
        });
        Ok(Self {
            what: format!("{from} -> {to} {port}"),
            stop,
            handle,
        })
    }

    /// Stops the traffic; fails unless every probe got through.
    fn finish(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, failed) = self
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("traffic thread panicked"))?;
        eprintln!(
            "    {}: {sent} probes while the policies changed, {} failed",
            self.what,
            failed.len()
        );
        ensure!(sent >= 20, "{}: only {sent} probes ran", self.what);
        ensure!(
            failed.is_empty(),
            "{}: allowed traffic was interrupted while the policies changed ({} of {sent} probes failed):\n  {}",
            self.what,
            failed.len(),
            failed.join("\n  ")
        );
        Ok(())
    }
}

type Scenario = fn(&mut Ctx) -> Result<()>;

fn trial(name: &'static str, f: Scenario) -> Trial {
    (
        name,
        Box::new(move |c: &Cluster| {
            let base = world(c)?;
            let mut ctx = Ctx {
                c,
                w: base.clone(),
                base,
                touched_pods: Vec::new(),
                touched_ns: Vec::new(),
                touched_nodes: Vec::new(),
            };
            let result = f(&mut ctx);
            let cleaned = ctx.cleanup();
            match (result, cleaned) {
                (Ok(()), Ok(())) => Ok(()),
                (Err(e), Ok(())) => Err(e),
                (Ok(()), Err(e)) => Err(e.context("cleanup after the scenario")),
                (Err(e), Err(e2)) => Err(e.context(format!("and the cleanup failed too: {e2:#}"))),
            }
        }),
    )
}

// ---- object builders ----

fn labels(kv: &[(&str, &str)]) -> Value {
    json!({ "matchLabels": kv.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>() })
}
fn ns_sel(ns: &str) -> Value {
    labels(&[("ns", ns)])
}
fn pod_sel(name: &str) -> Value {
    labels(&[("pod", name)])
}
fn all() -> Value {
    json!({})
}
fn expr(key: &str, op: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": op})
    } else {
        json!({"key": key, "operator": op, "values": values})
    }
}
fn np(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"namespace": ns, "name": name}, "spec": spec})
}
fn deny_all_ingress(ns: &str) -> Value {
    np(
        ns,
        "deny-all-ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )
}
fn cnp(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1beta1", "kind": "ClusterNetworkPolicy",
           "metadata": {"name": name}, "spec": spec})
}
fn anp(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
           "metadata": {"name": name}, "spec": spec})
}
fn banp(spec: Value) -> Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
           "metadata": {"name": "default"}, "spec": spec})
}
/// A cluster-wide subject: all pods of the namespaces a selector picks.
fn in_ns(sel: Value) -> Value {
    json!({"namespaces": sel})
}
fn pods_in(ns: Value, pods: Value) -> Value {
    json!({"pods": {"namespaceSelector": ns, "podSelector": pods}})
}
fn cnp_rule(action: &str, peers: Vec<Value>) -> Value {
    json!({"action": action, "from": peers})
}
fn cnp_egress(action: &str, peers: Vec<Value>) -> Value {
    json!({"action": action, "to": peers})
}

fn main() {
    let mut cfg = test_config("wpol", 82, 0);
    cfg.api_port = 17493;
    cfg.port_base = 13800;
    cfg.kube_proxy = true;
    let scenarios: Vec<(&'static str, Scenario)> = vec![
        // ---- NetworkPolicy ----
        ("np_deny_all_ingress", np_deny_all_ingress),
        ("np_deny_all_egress", np_deny_all_egress),
        ("np_deny_all_both_directions", np_deny_all_both),
        ("np_empty_ingress_list_denies_all", np_empty_ingress_list),
        ("np_allow_from_namespace_selector", np_from_namespace),
        (
            "np_allow_from_pod_selector_same_namespace_only",
            np_from_pod,
        ),
        (
            "np_namespace_and_pod_selector_in_one_peer_is_and",
            np_peer_and,
        ),
        ("np_peers_are_ored", np_peers_or),
        ("np_match_expressions_namespace_in", np_expr_ns_in),
        ("np_match_expressions_pod_notin", np_expr_pod_notin),
        ("np_match_expressions_exists", np_expr_exists),
        ("np_match_labels_and_expressions_subject", np_expr_subject),
        ("np_namespace_selector_by_shared_label", np_ns_by_env),
        ("np_ipblock_with_except", np_ipblock_except),
        ("np_ipblock_node_pod_cidr", np_ipblock_node_cidr),
        (
            "np_egress_to_everything_except_a_node_cidr",
            np_egress_except_node,
        ),
        ("np_egress_to_one_pod_ip", np_egress_pod_ip),
        ("np_named_port_tcp", np_named_tcp),
        ("np_named_port_udp", np_named_udp),
        (
            "np_named_port_with_other_protocol_matches_nothing",
            np_named_wrong_proto,
        ),
        ("np_named_port_missing_matches_nothing", np_named_missing),
        ("np_end_port_range", np_end_port),
        ("np_end_port_ranges_per_protocol", np_end_port_per_proto),
        ("np_udp_only", np_udp_only),
        ("np_port_protocol_defaults_to_tcp", np_default_tcp),
        (
            "np_policy_types_default_from_sections",
            np_types_default_both,
        ),
        (
            "np_policy_types_default_includes_ingress",
            np_types_default_egress_only_rules,
        ),
        (
            "np_policy_types_egress_only_leaves_ingress_open",
            np_types_egress_only,
        ),
        (
            "np_missing_from_allows_all_sources_on_ports",
            np_missing_from,
        ),
        ("np_empty_rule_allows_everything", np_empty_rule),
        (
            "np_empty_pod_selector_peer_is_own_namespace",
            np_empty_pod_peer,
        ),
        (
            "np_empty_namespace_selector_peer_is_all_pods",
            np_empty_ns_peer,
        ),
        ("np_several_policies_union", np_union),
        ("np_deny_all_plus_allow", np_deny_plus_allow),
        ("np_connection_needs_egress_and_ingress", np_both_sides),
        ("np_allow_dns_style_udp_egress", np_dns_style),
        ("np_egress_named_port", np_egress_named),
        ("np_ingress_several_ports_one_peer", np_multi_ports),
        ("np_policy_selects_only_its_namespace", np_own_namespace),
        ("np_policy_updated_while_traffic_runs", np_update),
        ("np_pod_label_added_and_removed", np_pod_label),
        ("np_namespace_label_added", np_ns_label),
        ("np_subject_label_added", np_subject_label),
        ("np_pod_relabelled_into_peer", np_relabel_into_peer),
        ("np_policy_deleted_restores_traffic", np_delete),
        (
            "np_changes_never_interrupt_allowed_traffic",
            np_changes_keep_traffic,
        ),
        ("np_namespace_label_changes_egress_peer", np_ns_label_egress),
        ("np_ipblock_everything_udp_only", np_ipblock_everything),
        ("np_ipblock_except_covering_the_cidr", np_ipblock_except_all),
        (
            "np_explicit_ingress_type_ignores_egress_rules",
            np_explicit_ingress_type,
        ),
        (
            "np_egress_udp_end_port_to_pod_selector",
            np_egress_udp_range,
        ),
        (
            "np_ipblock_except_does_not_cancel_another_peer",
            np_except_vs_peer,
        ),
        (
            "np_ingress_and_egress_policies_on_one_pod",
            np_split_directions,
        ),
        // ---- ClusterNetworkPolicy v1beta1 / v1alpha2 ----
        ("cnp_admin_deny_ingress_from_namespace", cnp_deny_ingress),
        ("cnp_admin_deny_egress_to_namespace", cnp_deny_egress),
        (
            "cnp_admin_accept_overrides_networkpolicy",
            cnp_accept_over_np,
        ),
        (
            "cnp_admin_deny_overrides_networkpolicy_allow",
            cnp_deny_over_np,
        ),
        ("cnp_admin_lower_priority_first_accept", cnp_priority_accept),
        ("cnp_admin_lower_priority_first_deny", cnp_priority_deny),
        ("cnp_admin_rule_order_within_policy", cnp_rule_order),
        ("cnp_admin_pass_to_networkpolicy", cnp_pass_to_np),
        (
            "cnp_admin_pass_without_networkpolicy_allows",
            cnp_pass_allows,
        ),
        ("cnp_baseline_deny", cnp_baseline_deny),
        (
            "cnp_baseline_not_consulted_for_isolated_pods",
            cnp_baseline_vs_np,
        ),
        (
            "cnp_baseline_deny_beside_networkpolicy",
            cnp_baseline_deny_np,
        ),
        ("cnp_admin_pass_then_baseline", cnp_pass_then_baseline),
        ("cnp_subject_pods", cnp_subject_pods),
        (
            "cnp_subject_namespace_expressions_peer_pods",
            cnp_subject_expr,
        ),
        ("cnp_peer_pods_by_label_any_namespace", cnp_peer_pods),
        ("cnp_egress_deny_networks_node_cidr", cnp_networks_node),
        (
            "cnp_egress_accept_networks_over_networkpolicy",
            cnp_networks_accept,
        ),
        ("cnp_networks_priority_accept_one_ip", cnp_networks_priority),
        ("cnp_protocols_tcp_port", cnp_tcp_port),
        ("cnp_protocols_udp_range", cnp_udp_range),
        ("cnp_protocols_named_port", cnp_named_port),
        ("cnp_protocols_several_egress", cnp_protocols_egress),
        ("cnp_accept_some_protocols_then_deny", cnp_accept_protocols),
        ("cnp_v1alpha2_served_beside_v1beta1", cnp_v1alpha2),
        (
            "cnp_priority_changed_while_traffic_runs",
            cnp_priority_update,
        ),
        ("cnp_subject_namespace_label_changes", cnp_subject_label),
        ("cnp_peer_pod_label_changes", cnp_peer_label),
        ("cnp_baseline_egress_deny", cnp_baseline_egress),
        (
            "cnp_egress_accept_does_not_override_ingress_deny",
            cnp_both_sides,
        ),
        (
            "cnp_changes_never_interrupt_accepted_traffic",
            cnp_changes_keep_traffic,
        ),
        (
            "cnp_baseline_ingress_applies_beside_egress_only_networkpolicy",
            cnp_baseline_per_direction_ingress,
        ),
        (
            "cnp_baseline_egress_applies_beside_ingress_only_networkpolicy",
            cnp_baseline_per_direction_egress,
        ),
        ("cnp_admin_pass_egress_to_networkpolicy", cnp_pass_egress),
        (
            "cnp_subject_and_peer_by_one_namespace_label",
            cnp_same_label,
        ),
        // ---- AdminNetworkPolicy / BaselineAdminNetworkPolicy v1alpha1 ----
        ("anp_deny_ingress_from_namespace", anp_deny),
        ("anp_allow_overrides_networkpolicy", anp_allow_over_np),
        ("anp_pass_to_networkpolicy", anp_pass),
        ("anp_priority_order", anp_priority),
        ("anp_port_number", anp_port_number),
        ("anp_port_range", anp_port_range),
        ("anp_named_port", anp_named_port),
        ("anp_egress_networks", anp_egress_networks),
        ("anp_egress_pods", anp_egress_pods),
        ("banp_deny", banp_deny),
        ("banp_yields_to_networkpolicy", banp_vs_np),
        ("anp_pass_then_banp", anp_pass_banp),
        ("banp_egress_deny_one_port", banp_egress_port),
        ("anp_subject_label_changes", anp_subject_label),
        ("anp_action_changed_while_traffic_runs", anp_update),
        ("anp_allow_egress_overrides_networkpolicy", anp_allow_egress),
        // ---- Services (after kube-proxy's DNAT) and the drop metric ----
        (
            "svc_clusterip_judged_on_the_backend_after_dnat",
            svc_clusterip,
        ),
        (
            "svc_clusterip_target_port_counts_not_service_port",
            svc_target_port,
        ),
        ("svc_nodeport_from_the_external_host", svc_nodeport),
        // ---- `nodes` peers (CNP v1beta1) ----
        (
            "cnp_admin_deny_egress_to_nodes_by_label",
            cnp_deny_egress_to_nodes,
        ),
        (
            "metric_denied_probe_counts_on_the_judging_node",
            metric_dropped,
        ),
    ];
    let trials = scenarios.into_iter().map(|(n, f)| trial(n, f)).collect();
    run_suite(cfg, trials)
}

// ---- NetworkPolicy scenarios ----

fn np_deny_all_ingress(t: &mut Ctx) -> Result<()> {
    t.apply(vec![deny_all_ingress("x")])?;
    t.expect("nothing enters x", &|_, _, d, _| d.ns != "x")
}

fn np_deny_all_egress(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "deny-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    )])?;
    t.expect("nothing leaves x", &|_, s, _, _| s.ns != "x")
}

fn np_deny_all_both(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "y",
        "deny-both",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )])?;
    t.expect("y is cut off", &|_, s, d, _| s.ns != "y" && d.ns != "y")
}

fn np_empty_ingress_list(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "empty",
        json!({"podSelector": pod_sel("a"), "ingress": []}),
    )])?;
    t.expect("x/a isolated for ingress", &|_, _, d, _| !d.is("x/a"))
}

fn np_from_namespace(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "from-y",
        json!({"podSelector": pod_sel("a"), "ingress": [{"from": [{"namespaceSelector": ns_sel("y")}]}]}),
    )])?;
    t.expect("x/a only from y; its egress untouched", &|_, s, d, _| {
        !d.is("x/a") || s.ns == "y"
    })
}

fn np_from_pod(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "from-b",
        json!({"podSelector": pod_sel("a"), "ingress": [{"from": [{"podSelector": pod_sel("b")}]}]}),
    )])?;
    t.expect("x/a only from x/b", &|_, s, d, _| {
        !d.is("x/a") || s.is("x/b")
    })
}

fn np_peer_and(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "and",
        json!({"podSelector": pod_sel("a"), "ingress": [{"from": [
            {"namespaceSelector": ns_sel("y"), "podSelector": pod_sel("c")}]}]}),
    )])?;
    t.expect("x/a only from y/c", &|_, s, d, _| {
        !d.is("x/a") || s.is("y/c")
    })
}

fn np_peers_or(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "or",
        json!({"podSelector": pod_sel("a"), "ingress": [{"from": [
            {"namespaceSelector": ns_sel("y")}, {"podSelector": pod_sel("c")}]}]}),
    )])?;
    t.expect("x/a from y/* or x/c", &|_, s, d, _| {
        !d.is("x/a") || s.ns == "y" || s.is("x/c")
    })
}

fn np_expr_ns_in(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "ns-in",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [expr("ns", "In", &["y", "z"])]}}]}]}),
    )])?;
    t.expect("x only from y and z", &|_, s, d, _| {
        d.ns != "x" || s.ns != "x"
    })
}

fn np_expr_pod_notin(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "notin",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {}, "podSelector": {"matchExpressions": [expr("pod", "NotIn", &["a"])]}}]}]}),
    )])?;
    t.expect("x from every pod not named a", &|_, s, d, _| {
        d.ns != "x" || s.labels.get("pod").is_none_or(|v| v != "a")
    })
}

fn np_expr_exists(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "exists",
        json!({"podSelector": pod_sel("b"), "ingress": [{"from": [
            {"namespaceSelector": {}, "podSelector": {"matchExpressions": [expr("canary", "Exists", &[])]}}]}]}),
    )])?;
    t.expect("x/b only from canaries", &|_, s, d, _| {
        !d.is("x/b") || s.has_key("canary")
    })
}

fn np_expr_subject(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "z",
        "web-not-canary",
        json!({"podSelector": {"matchLabels": {"role": "web"},
                               "matchExpressions": [expr("canary", "DoesNotExist", &[])]},
               "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [expr("env", "NotIn", &["prod"])]}}]}]}),
    )])?;
    t.expect(
        "z's non-canary web pods only from non-prod namespaces",
        &|w, s, d, _| {
            let subject = d.ns == "z" && d.has("role", "web") && !d.has_key("canary");
            !subject || !w.ns_has(s.ns, "env", "prod")
        },
    )
}

fn np_ns_by_env(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "prod",
        json!({"podSelector": pod_sel("c"), "ingress": [{"from": [{"namespaceSelector": labels(&[("env", "prod")])}]}]}),
    )])?;
    t.expect("x/c only from prod namespaces", &|w, s, d, _| {
        !d.is("x/c") || w.ns_has(s.ns, "env", "prod")
    })
}

fn np_ipblock_except(t: &mut Ctx) -> Result<()> {
    let (cidr, except) = (t.w.cluster_cidr.clone(), t.w.ip("y/b"));
    t.apply(vec![np(
        "x",
        "ipblock",
        json!({"podSelector": pod_sel("a"), "ingress": [{"from": [{"ipBlock": {"cidr": cidr, "except": [except]}}]}]}),
    )])?;
    t.expect("x/a from the cluster CIDR but y/b", &|_, s, d, _| {
        !d.is("x/a") || !s.is("y/b")
    })
}

fn np_ipblock_node_cidr(t: &mut Ctx) -> Result<()> {
    let cidr = t.w.cidr("node-2");
    t.apply(vec![np(
        "x",
        "node-2",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}),
    )])?;
    t.expect("x only from pods on node-2", &|_, s, d, _| {
        d.ns != "x" || s.node == "node-2"
    })
}

fn np_egress_except_node(t: &mut Ctx) -> Result<()> {
    let cidr = t.w.cidr("node-3");
    t.apply(vec![np(
        "x",
        "not-node-3",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [cidr]}}]}]}),
    )])?;
    t.expect("x reaches everything but node-3's pods", &|_, s, d, _| {
        s.ns != "x" || d.node != "node-3"
    })
}

fn np_egress_pod_ip(t: &mut Ctx) -> Result<()> {
    let ip = t.w.ip("y/c");
    t.apply(vec![np(
        "x",
        "to-yc",
        json!({"podSelector": pod_sel("a"), "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": ip}}]}]}),
    )])?;
    t.expect("x/a reaches only y/c", &|_, s, d, _| {
        !s.is("x/a") || d.is("y/c")
    })
}

fn np_named_tcp(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "named",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
    )])?;
    t.expect(
        "x open on serve-81-tcp only (TCP/81; TCP/80 on the c pods)",
        &|_, _, d, p| d.ns != "x" || d.named(p, "serve-81-tcp"),
    )
}

fn np_named_udp(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "y",
        "named",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": "serve-80-udp"}]}]}),
    )])?;
    t.expect("y open on UDP/80 only", &|_, _, d, p| {
        d.ns != "y" || p == UDP80
    })
}

fn np_named_wrong_proto(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "z",
        "named",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": "serve-80-udp"}]}]}),
    )])?;
    t.expect(
        "a UDP port's name with TCP matches nothing",
        &|_, _, d, _| d.ns != "z",
    )
}

fn np_named_missing(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "missing",
        json!({"podSelector": pod_sel("a"), "ingress": [{"ports": [{"port": "no-such-port"}]}]}),
    )])?;
    t.expect("x/a closed", &|_, _, d, _| !d.is("x/a"))
}

fn np_end_port(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "range",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 80, "endPort": 81}]}]}),
    )])?;
    t.expect("x open on TCP 80-81", &|_, _, d, p| {
        d.ns != "x" || p.proto == Proto::Tcp
    })
}

fn np_end_port_per_proto(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "y",
        "ranges",
        json!({"podSelector": {}, "ingress": [{"ports": [
            {"protocol": "TCP", "port": 81, "endPort": 100},
            {"protocol": "UDP", "port": 1, "endPort": 80}]}]}),
    )])?;
    t.expect("y open on TCP/81 and UDP/80", &|_, _, d, p| {
        d.ns != "y" || p == TCP81 || p == UDP80
    })
}

fn np_udp_only(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "z",
        "udp",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 81}]}]}),
    )])?;
    t.expect("z open on UDP/81", &|_, _, d, p| d.ns != "z" || p == UDP81)
}

fn np_default_tcp(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "tcp",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
    )])?;
    t.expect("x open on TCP/80", &|_, _, d, p| d.ns != "x" || p == TCP80)
}

fn np_types_default_both(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "both",
        json!({"podSelector": pod_sel("a"),
               "ingress": [{"from": [{"namespaceSelector": ns_sel("y")}]}],
               "egress": [{"to": [{"namespaceSelector": ns_sel("z")}]}]}),
    )])?;
    t.expect("x/a from y, to z", &|_, s, d, _| {
        (!d.is("x/a") || s.ns == "y") && (!s.is("x/a") || d.ns == "z")
    })
}

fn np_types_default_egress_only_rules(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "egress-rules",
        json!({"podSelector": pod_sel("b"), "egress": [{"to": [{"namespaceSelector": {}}]}]}),
    )])?;
    t.expect(
        "x/b isolated for ingress (default Ingress type), egress to all pods",
        &|_, _, d, _| !d.is("x/b"),
    )
}

fn np_types_egress_only(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "y",
        "egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": ns_sel("x")}]}]}),
    )])?;
    t.expect("y reaches only x; anyone reaches y", &|_, s, d, _| {
        s.ns != "y" || d.ns == "x"
    })
}

fn np_missing_from(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "z",
        "ports",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 80}, {"protocol": "TCP", "port": 81}]}]}),
    )])?;
    t.expect("z from everyone on UDP/80 and TCP/81", &|_, _, d, p| {
        d.ns != "z" || p == UDP80 || p == TCP81
    })
}

fn np_empty_rule(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        deny_all_ingress("x"),
        np(
            "x",
            "open-a",
            json!({"podSelector": pod_sel("a"), "ingress": [{}]}),
        ),
    ])?;
    t.expect("x closed but x/a", &|_, _, d, _| d.ns != "x" || d.is("x/a"))
}

fn np_empty_pod_peer(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "own-ns",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    )])?;
    t.expect("x only from x", &|_, s, d, _| d.ns != "x" || s.ns == "x")
}

fn np_empty_ns_peer(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "y",
        "all-pods",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 81}]}]}),
    )])?;
    t.expect("y from every pod on TCP/81", &|_, _, d, p| {
        d.ns != "y" || p == TCP81
    })
}

fn np_union(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        np(
            "x",
            "from-y",
            json!({"podSelector": pod_sel("a"), "ingress": [{"from": [{"namespaceSelector": ns_sel("y")}]}]}),
        ),
        np(
            "x",
            "from-z-80",
            json!({"podSelector": {"matchExpressions": [expr("pod", "In", &["a", "b"])]},
                   "ingress": [{"from": [{"namespaceSelector": ns_sel("z")}], "ports": [{"port": 80}]}]}),
        ),
    ])?;
    t.expect(
        "x/a from y or z on TCP/80; x/b from z on TCP/80",
        &|_, s, d, p| {
            if d.is("x/a") {
                s.ns == "y" || (s.ns == "z" && p == TCP80)
            } else if d.is("x/b") {
                s.ns == "z" && p == TCP80
            } else {
                true
            }
        },
    )
}

fn np_deny_plus_allow(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        deny_all_ingress("x"),
        np(
            "x",
            "a-from-b",
            json!({"podSelector": pod_sel("a"), "ingress": [{"from": [{"podSelector": pod_sel("b")}]}]}),
        ),
    ])?;
    t.expect("only x/b -> x/a enters x", &|_, s, d, _| {
        d.ns != "x" || (d.is("x/a") && s.is("x/b"))
    })
}

fn np_both_sides(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        np(
            "x",
            "to-y",
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": ns_sel("y")}]}]}),
        ),
        np(
            "y",
            "from-z",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": ns_sel("z")}]}]}),
        ),
    ])?;
    t.expect(
        "x may send only to y, y takes only from z: x -> y denied",
        &|_, s, d, _| (s.ns != "x" || d.ns == "y") && (d.ns != "y" || s.ns == "z"),
    )
}

fn np_dns_style(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "dns",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": ns_sel("z"), "podSelector": pod_sel("c")}],
            "ports": [{"protocol": "UDP", "port": 80}]}]}),
    )])?;
    t.expect("x reaches only z/c on UDP/80", &|_, s, d, p| {
        s.ns != "x" || (d.is("z/c") && p == UDP80)
    })
}

fn np_egress_named(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "y",
        "named-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"protocol": "TCP", "port": "serve-80-tcp"}]}]}),
    )])?;
    t.expect(
        "y sends only to each destination's serve-80-tcp",
        &|_, s, d, p| s.ns != "y" || d.named(p, "serve-80-tcp"),
    )
}

fn np_multi_ports(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "ports",
        json!({"podSelector": pod_sel("b"), "ingress": [{"from": [{"namespaceSelector": ns_sel("z")}],
               "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "UDP", "port": 81}]}]}),
    )])?;
    t.expect("x/b from z on TCP/80 and UDP/81", &|_, s, d, p| {
        !d.is("x/b") || (s.ns == "z" && (p == TCP80 || p == UDP81))
    })
}

fn np_own_namespace(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "z",
        "a",
        json!({"podSelector": pod_sel("a"), "policyTypes": ["Ingress"]}),
    )])?;
    t.expect("only z/a is isolated, not x/a or y/a", &|_, _, d, _| {
        !d.is("z/a")
    })
}

fn np_update(t: &mut Ctx) -> Result<()> {
    let with_from = |ns: &str| {
        np(
            "x",
            "changing",
            json!({"podSelector": pod_sel("a"), "ingress": [{"from": [{"namespaceSelector": ns_sel(ns)}]}]}),
        )
    };
    t.apply(vec![with_from("y")])?;
    t.expect("x/a from y", &|_, s, d, _| !d.is("x/a") || s.ns == "y")?;
    t.apply(vec![with_from("z")])?;
    t.expect("updated: x/a from z", &|_, s, d, _| {
        !d.is("x/a") || s.ns == "z"
    })
}

fn np_pod_label(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "granted",
        json!({"podSelector": pod_sel("a"), "ingress": [{"from": [
            {"namespaceSelector": {}, "podSelector": labels(&[("access", "granted")])}]}]}),
    )])?;
    let e = |_: &World, s: &Pod, d: &Pod, _: PortSpec| !d.is("x/a") || s.has("access", "granted");
    t.expect("x/a closed: nobody has access", &e)?;
    t.label_pod("y/b", "access", Some("granted"))?;
    t.expect("y/b labelled: y/b reaches x/a", &e)?;
    t.label_pod("y/b", "access", None)?;
    t.expect("label removed: x/a closed again", &e)
}

fn np_ns_label(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "team",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": labels(&[("team", "blue")])}]}]}),
    )])?;
    let e =
        |w: &World, s: &Pod, d: &Pod, _: PortSpec| d.ns != "x" || w.ns_has(s.ns, "team", "blue");
    t.expect("x closed: no namespace is blue", &e)?;
    t.label_ns("z", "team", Some("blue"))?;
    t.expect("z labelled blue: z reaches x", &e)
}

fn np_subject_label(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "locked",
        json!({"podSelector": labels(&[("locked", "yes")]), "policyTypes": ["Ingress"]}),
    )])?;
    let e = |_: &World, _: &Pod, d: &Pod, _: PortSpec| !d.has("locked", "yes");
    t.expect("no pod is locked", &e)?;
    t.label_pod("x/b", "locked", Some("yes"))?;
    t.expect("x/b locked", &e)?;
    t.label_pod("x/b", "locked", None)?;
    t.expect("x/b unlocked", &e)
}

fn np_relabel_into_peer(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "from-b",
        json!({"podSelector": pod_sel("a"), "ingress": [{"from": [{"podSelector": pod_sel("b")}]}]}),
    )])?;
    let e = |_: &World, s: &Pod, d: &Pod, _: PortSpec| {
        !d.is("x/a") || (s.ns == "x" && s.has("pod", "b"))
    };
    t.expect("x/a from x/b", &e)?;
    t.label_pod("x/c", "pod", Some("b"))?;
    t.expect("x/c relabelled pod=b: x/c reaches x/a too", &e)
}

fn np_delete(t: &mut Ctx) -> Result<()> {
    t.apply(vec![deny_all_ingress("z")])?;
    t.expect("z closed", &|_, _, d, _| d.ns != "z")?;
    t.delete("networkpolicy", "z", "deny-all-ingress")?;
    t.expect("deleted: z open", &|_, _, _, _| true)
}

fn np_changes_keep_traffic(t: &mut Ctx) -> Result<()> {
    let from = |peers: Value| {
        np(
            "x",
            "changing",
            json!({"podSelector": pod_sel("a"), "ingress": [{"from": peers}]}),
        )
    };
    t.apply(vec![from(json!([{"namespaceSelector": ns_sel("y")}]))])?;
    t.expect("x/a from y", &|_, s, d, _| !d.is("x/a") || s.ns == "y")?;
    let tcp = Traffic::start(&t.w, "y/b", "x/a", TCP80)?;
    let udp = Traffic::start(&t.w, "y/c", "x/a", UDP81)?;
    t.apply(vec![from(
        json!([{"namespaceSelector": ns_sel("y")}, {"namespaceSelector": ns_sel("z"), "podSelector": pod_sel("a")}]),
    )])?;
    t.expect("x/a from y and z/a", &|_, s, d, _| {
        !d.is("x/a") || s.ns == "y" || s.is("z/a")
    })?;
    t.apply(vec![np(
        "x",
        "second",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    )])?;
    t.label_pod("y/a", "extra", Some("1"))?;
    t.expect("x also from x; x/b, x/c only from x", &|_, s, d, _| {
        d.ns != "x" || s.ns == "x" || (d.is("x/a") && (s.ns == "y" || s.is("z/a")))
    })?;
    t.apply(vec![from(json!([{"namespaceSelector": ns_sel("y")}]))])?;
    t.delete("networkpolicy", "x", "second")?;
    t.expect("back to x/a from y", &|_, s, d, _| {
        !d.is("x/a") || s.ns == "y"
    })?;
    tcp.finish()?;
    udp.finish()
}

fn np_ns_label_egress(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "to-open",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": labels(&[("open", "yes")])}]}]}),
    )])?;
    let e = |w: &World, s: &Pod, d: &Pod, _: PortSpec| s.ns != "x" || w.ns_has(d.ns, "open", "yes");
    t.expect("x reaches nothing", &e)?;
    t.label_ns("z", "open", Some("yes"))?;
    t.expect("z labelled open: x reaches z", &e)?;
    t.label_ns("z", "open", None)?;
    t.label_ns("y", "open", Some("yes"))?;
    t.expect("label moved to y: x reaches y only", &e)
}

fn np_ipblock_everything(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "any-udp",
        json!({"podSelector": pod_sel("b"), "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
               "ports": [{"protocol": "UDP", "port": 80}, {"protocol": "UDP", "port": 81}]}]}),
    )])?;
    t.expect("x/b from anywhere on UDP", &|_, _, d, p| {
        !d.is("x/b") || p.proto == Proto::Udp
    })
}

fn np_ipblock_except_all(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "except-all",
        json!({"podSelector": pod_sel("c"), "ingress": [{"from": [{"ipBlock": {
            "cidr": "10.244.0.0/16", "except": ["10.244.0.0/17", "10.244.128.0/17"]}}]}]}),
    )])?;
    t.expect(
        "x/c: the except covers the CIDR, nothing allowed",
        &|_, _, d, _| !d.is("x/c"),
    )
}

fn np_explicit_ingress_type(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "ingress-only",
        json!({"podSelector": pod_sel("a"), "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"namespaceSelector": ns_sel("y")}]}],
               "egress": [{"to": [{"namespaceSelector": ns_sel("z")}]}]}),
    )])?;
    t.expect(
        "x/a from y; its egress rules are ignored (policyTypes: Ingress)",
        &|_, s, d, _| !d.is("x/a") || s.ns == "y",
    )
}

fn np_egress_udp_range(t: &mut Ctx) -> Result<()> {
    t.apply(vec![np(
        "x",
        "udp-db",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {}, "podSelector": labels(&[("role", "db")])}],
            "ports": [{"protocol": "UDP", "port": 81, "endPort": 90}]}]}),
    )])?;
    t.expect("x reaches only db pods on UDP/81", &|_, s, d, p| {
        s.ns != "x" || (d.has("role", "db") && p == UDP81)
    })
}

fn np_except_vs_peer(t: &mut Ctx) -> Result<()> {
    let (cidr, yc) = (t.w.cidr(&t.w.pod("y/c").node), t.w.ip("y/c"));
    t.apply(vec![np(
        "x",
        "except-or-pod",
        json!({"podSelector": pod_sel("a"), "ingress": [{"from": [
            {"ipBlock": {"cidr": cidr, "except": [yc]}},
            {"namespaceSelector": ns_sel("y"), "podSelector": pod_sel("c")}]}]}),
    )])?;
    t.expect(
        "x/a from y/c's node (y/c excepted there but allowed by the pod peer)",
        &|w, s, d, _| !d.is("x/a") || s.node == w.pod("y/c").node,
    )
}

fn np_split_directions(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        np(
            "z",
            "in",
            json!({"podSelector": pod_sel("b"), "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"namespaceSelector": ns_sel("x")}]}]}),
        ),
        np(
            "z",
            "out",
            json!({"podSelector": pod_sel("b"), "policyTypes": ["Egress"],
                   "egress": [{"to": [{"namespaceSelector": ns_sel("y")}], "ports": [{"protocol": "UDP", "port": 80}]}]}),
        ),
    ])?;
    t.expect("z/b from x only, to y on UDP/80 only", &|_, s, d, p| {
        (!d.is("z/b") || s.ns == "x") && (!s.is("z/b") || (d.ns == "y" && p == UDP80))
    })
}

// ---- ClusterNetworkPolicy scenarios ----

fn cnp_deny_ingress(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "deny-y-to-x",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
               "ingress": [cnp_rule("Deny", vec![in_ns(ns_sel("y"))])]}),
    )])?;
    t.expect("y -> x denied", &|_, s, d, _| !(d.ns == "x" && s.ns == "y"))
}

fn cnp_deny_egress(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "deny-y-to-z",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("y")),
               "egress": [cnp_egress("Deny", vec![in_ns(ns_sel("z"))])]}),
    )])?;
    t.expect("y -> z denied", &|_, s, d, _| !(s.ns == "y" && d.ns == "z"))
}

fn cnp_accept_over_np(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        deny_all_ingress("x"),
        cnp(
            "accept-y",
            json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Accept", vec![in_ns(ns_sel("y"))])]}),
        ),
    ])?;
    t.expect("x closed by NetworkPolicy but y accepted", &|_, s, d, _| {
        d.ns != "x" || s.ns == "y"
    })
}

fn cnp_deny_over_np(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        np("x", "open", json!({"podSelector": {}, "ingress": [{}]})),
        cnp(
            "deny-z",
            json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(ns_sel("z"))])]}),
        ),
    ])?;
    t.expect("z -> x denied despite the NetworkPolicy", &|_, s, d, _| {
        !(d.ns == "x" && s.ns == "z")
    })
}

fn cnp_priority_accept(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        cnp(
            "p5-accept-y",
            json!({"tier": "Admin", "priority": 5, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Accept", vec![in_ns(ns_sel("y"))])]}),
        ),
        cnp(
            "p10-deny-all",
            json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(all())])]}),
        ),
    ])?;
    t.expect("x only from y", &|_, s, d, _| d.ns != "x" || s.ns == "y")
}

fn cnp_priority_deny(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        deny_all_ingress("x"),
        cnp(
            "p5-deny-y",
            json!({"tier": "Admin", "priority": 5, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(ns_sel("y"))])]}),
        ),
        cnp(
            "p10-accept-yz",
            json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Accept", vec![in_ns(json!({"matchExpressions": [expr("ns", "In", &["y", "z"])]}))])]}),
        ),
    ])?;
    t.expect(
        "x: y denied first, z accepted over the NetworkPolicy, x closed by it",
        &|_, s, d, _| d.ns != "x" || s.ns == "z",
    )
}

fn cnp_rule_order(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "order",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
               "ingress": [cnp_rule("Accept", vec![pods_in(ns_sel("y"), pod_sel("a"))]),
                           cnp_rule("Deny", vec![in_ns(ns_sel("y"))])]}),
    )])?;
    t.expect(
        "y/a accepted by the first rule, y/b and y/c denied",
        &|_, s, d, _| !(d.ns == "x" && s.ns == "y" && s.name != "a"),
    )
}

fn cnp_pass_to_np(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        cnp(
            "p10-pass-y",
            json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Pass", vec![in_ns(ns_sel("y"))])]}),
        ),
        cnp(
            "p20-deny-all",
            json!({"tier": "Admin", "priority": 20, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(all())])]}),
        ),
        np(
            "x",
            "from-yc",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": ns_sel("y"), "podSelector": pod_sel("c")}]}]}),
        ),
    ])?;
    t.expect(
        "y passed to the NetworkPolicy (which allows y/c), the rest denied",
        &|_, s, d, _| d.ns != "x" || s.is("y/c"),
    )
}

fn cnp_pass_allows(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        cnp(
            "p10-pass-y",
            json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Pass", vec![in_ns(ns_sel("y"))])]}),
        ),
        cnp(
            "p20-deny-all",
            json!({"tier": "Admin", "priority": 20, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(all())])]}),
        ),
    ])?;
    t.expect(
        "y passed (nothing else decides: allowed), the rest denied",
        &|_, s, d, _| d.ns != "x" || s.ns == "y",
    )
}

fn cnp_baseline_deny(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "baseline-deny-z",
        json!({"tier": "Baseline", "priority": 10, "subject": in_ns(ns_sel("x")),
               "ingress": [cnp_rule("Deny", vec![in_ns(ns_sel("z"))])]}),
    )])?;
    t.expect("z -> x denied by the baseline", &|_, s, d, _| {
        !(d.ns == "x" && s.ns == "z")
    })
}

fn cnp_baseline_vs_np(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        cnp(
            "baseline-accept-z",
            json!({"tier": "Baseline", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Accept", vec![in_ns(ns_sel("z"))])]}),
        ),
        np(
            "x",
            "from-y",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": ns_sel("y")}]}]}),
        ),
    ])?;
    t.expect(
        "x isolated by the NetworkPolicy: only y, the baseline's accept of z is not reached",
        &|_, s, d, _| d.ns != "x" || s.ns == "y",
    )
}

fn cnp_baseline_deny_np(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        cnp(
            "baseline-deny-all",
            json!({"tier": "Baseline", "priority": 10, "subject": in_ns(ns_sel("y")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(all())])]}),
        ),
        np(
            "y",
            "a-from-x",
            json!({"podSelector": pod_sel("a"), "ingress": [{"from": [{"namespaceSelector": ns_sel("x")}]}]}),
        ),
    ])?;
    t.expect(
        "y/a from x (NetworkPolicy), y/b and y/c closed by the baseline",
        &|_, s, d, _| d.ns != "y" || (d.name == "a" && s.ns == "x"),
    )
}

fn cnp_pass_then_baseline(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        cnp(
            "p1-pass-z",
            json!({"tier": "Admin", "priority": 1, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Pass", vec![in_ns(ns_sel("z"))])]}),
        ),
        cnp(
            "p2-accept-y",
            json!({"tier": "Admin", "priority": 2, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Accept", vec![in_ns(ns_sel("y"))])]}),
        ),
        cnp(
            "baseline-deny-yz",
            json!({"tier": "Baseline", "priority": 1, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(json!({"matchExpressions": [expr("ns", "In", &["y", "z"])]}))])]}),
        ),
    ])?;
    t.expect(
        "z passed down to the baseline's deny; y accepted before it",
        &|_, s, d, _| !(d.ns == "x" && s.ns == "z"),
    )
}

fn cnp_subject_pods(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "isolate-xa",
        json!({"tier": "Admin", "priority": 10, "subject": pods_in(ns_sel("x"), pod_sel("a")),
               "ingress": [cnp_rule("Deny", vec![in_ns(all())])]}),
    )])?;
    t.expect("x/a closed", &|_, _, d, _| !d.is("x/a"))
}

fn cnp_subject_expr(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "prod-not-to-zb",
        json!({"tier": "Admin", "priority": 10,
               "subject": in_ns(json!({"matchExpressions": [expr("env", "In", &["prod"])]})),
               "egress": [cnp_egress("Deny", vec![pods_in(ns_sel("z"), pod_sel("b"))])]}),
    )])?;
    t.expect("prod namespaces (x, y) cannot reach z/b", &|w, s, d, _| {
        !(w.ns_has(s.ns, "env", "prod") && d.is("z/b"))
    })
}

fn cnp_peer_pods(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "no-db-into-z",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("z")),
               "ingress": [cnp_rule("Deny", vec![pods_in(all(), labels(&[("role", "db")]))])]}),
    )])?;
    t.expect("db pods (c) cannot reach z", &|_, s, d, _| {
        !(d.ns == "z" && s.has("role", "db"))
    })
}

fn cnp_networks_node(t: &mut Ctx) -> Result<()> {
    let cidr = t.w.cidr("node-3");
    t.apply(vec![cnp(
        "x-not-node-3",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
               "egress": [cnp_egress("Deny", vec![json!({"networks": [cidr]})])]}),
    )])?;
    t.expect("x cannot reach node-3's pods", &|_, s, d, _| {
        !(s.ns == "x" && d.node == "node-3")
    })
}

fn cnp_networks_accept(t: &mut Ctx) -> Result<()> {
    let ip = t.w.ip("y/a");
    t.apply(vec![
        np(
            "x",
            "deny-egress",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        ),
        cnp(
            "x-to-ya",
            json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "egress": [cnp_egress("Accept", vec![json!({"networks": [ip]})])]}),
        ),
    ])?;
    t.expect(
        "x's egress closed by NetworkPolicy, y/a accepted by network",
        &|_, s, d, _| s.ns != "x" || d.is("y/a"),
    )
}

fn cnp_networks_priority(t: &mut Ctx) -> Result<()> {
    let (ip, cluster) = (t.w.ip("z/c"), t.w.cluster_cidr.clone());
    t.apply(vec![
        cnp(
            "p5-accept-zc",
            json!({"tier": "Admin", "priority": 5, "subject": in_ns(ns_sel("y")),
                   "egress": [cnp_egress("Accept", vec![json!({"networks": [ip]})])]}),
        ),
        cnp(
            "p10-deny-cluster",
            json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("y")),
                   "egress": [cnp_egress("Deny", vec![json!({"networks": [cluster]})])]}),
        ),
    ])?;
    t.expect("y reaches only z/c", &|_, s, d, _| {
        s.ns != "y" || d.is("z/c")
    })
}

fn cnp_tcp_port(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "deny-tcp-80",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
               "ingress": [{"action": "Deny", "from": [in_ns(all())],
                            "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}]}),
    )])?;
    t.expect("x closed on TCP/80 only", &|_, _, d, p| {
        !(d.ns == "x" && p == TCP80)
    })
}

fn cnp_udp_range(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "deny-udp-range",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("y")),
               "ingress": [{"action": "Deny", "from": [in_ns(all())],
                            "protocols": [{"udp": {"destinationPort": {"range": {"start": 80, "end": 81}}}}]}]}),
    )])?;
    t.expect("y closed on UDP 80-81", &|_, _, d, p| {
        !(d.ns == "y" && p.proto == Proto::Udp)
    })
}

fn cnp_named_port(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "deny-named",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("z")),
               "ingress": [{"action": "Deny", "from": [in_ns(all())],
                            "protocols": [{"destinationNamedPort": "serve-81-tcp"}]}]}),
    )])?;
    t.expect("z closed on its port serve-81-tcp", &|_, _, d, p| {
        !(d.ns == "z" && d.named(p, "serve-81-tcp"))
    })
}

fn cnp_protocols_egress(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "xb-egress",
        json!({"tier": "Admin", "priority": 10, "subject": pods_in(ns_sel("x"), pod_sel("b")),
               "egress": [{"action": "Deny", "to": [in_ns(all())],
                           "protocols": [{"tcp": {"destinationPort": {"number": 81}}},
                                         {"udp": {"destinationPort": {"number": 80}}}]}]}),
    )])?;
    t.expect("x/b cannot send to TCP/81 or UDP/80", &|_, s, _, p| {
        !(s.is("x/b") && (p == TCP81 || p == UDP80))
    })
}

fn cnp_accept_protocols(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        cnp(
            "p1-accept-tcp",
            json!({"tier": "Admin", "priority": 1, "subject": in_ns(ns_sel("x")),
                   "ingress": [{"action": "Accept", "from": [in_ns(all())],
                                "protocols": [{"tcp": {"destinationPort": {"range": {"start": 80, "end": 81}}}}]}]}),
        ),
        cnp(
            "p2-deny-all",
            json!({"tier": "Admin", "priority": 2, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(all())])]}),
        ),
    ])?;
    t.expect("x open on TCP only", &|_, _, d, p| {
        d.ns != "x" || p.proto == Proto::Tcp
    })
}

fn cnp_v1alpha2(t: &mut Ctx) -> Result<()> {
    let mut o = cnp(
        "alpha2-deny-y-to-z",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("z")),
               "ingress": [cnp_rule("Deny", vec![in_ns(ns_sel("y"))])]}),
    );
    o["apiVersion"] = json!("policy.networking.k8s.io/v1alpha2");
    t.apply(vec![o])?;
    t.expect("y -> z denied", &|_, s, d, _| !(d.ns == "z" && s.ns == "y"))
}

fn cnp_priority_update(t: &mut Ctx) -> Result<()> {
    let deny = |priority: i32| {
        cnp(
            "deny-y",
            json!({"tier": "Admin", "priority": priority, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(ns_sel("y"))])]}),
        )
    };
    t.apply(vec![
        cnp(
            "accept-y",
            json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Accept", vec![in_ns(ns_sel("y"))])]}),
        ),
        cnp(
            "deny-z",
            json!({"tier": "Admin", "priority": 15, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(ns_sel("z"))])]}),
        ),
        deny(20),
    ])?;
    t.expect(
        "accept y (10) before deny y (20): only z -> x denied",
        &|_, s, d, _| !(d.ns == "x" && s.ns == "z"),
    )?;
    t.apply(vec![deny(5)])?;
    t.expect("deny y moved to 5: y and z -> x denied", &|_, s, d, _| {
        !(d.ns == "x" && s.ns != "x")
    })
}

fn cnp_subject_label(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "quarantine",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(labels(&[("quarantine", "yes")])),
               "ingress": [cnp_rule("Deny", vec![in_ns(all())])]}),
    )])?;
    let e = |w: &World, _: &Pod, d: &Pod, _: PortSpec| !w.ns_has(d.ns, "quarantine", "yes");
    t.expect("no namespace in quarantine", &e)?;
    t.label_ns("y", "quarantine", Some("yes"))?;
    t.expect("y in quarantine", &e)
}

fn cnp_peer_label(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "blocked",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
               "ingress": [cnp_rule("Deny", vec![pods_in(all(), labels(&[("blocked", "yes")]))])]}),
    )])?;
    let e = |_: &World, s: &Pod, d: &Pod, _: PortSpec| !(d.ns == "x" && s.has("blocked", "yes"));
    t.expect("nobody blocked", &e)?;
    t.label_pod("z/a", "blocked", Some("yes"))?;
    t.expect("z/a blocked from x", &e)?;
    t.label_pod("z/a", "blocked", None)?;
    t.expect("z/a unblocked", &e)
}

fn cnp_baseline_egress(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "baseline-z-not-to-x",
        json!({"tier": "Baseline", "priority": 10, "subject": in_ns(ns_sel("z")),
               "egress": [cnp_egress("Deny", vec![in_ns(ns_sel("x"))])]}),
    )])?;
    t.expect("z -> x denied by the baseline", &|_, s, d, _| {
        !(s.ns == "z" && d.ns == "x")
    })
}

fn cnp_both_sides(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        cnp(
            "p1-x-egress-accept",
            json!({"tier": "Admin", "priority": 1, "subject": in_ns(ns_sel("x")),
                   "egress": [cnp_egress("Accept", vec![in_ns(all())])]}),
        ),
        cnp(
            "p2-y-ingress-deny-x",
            json!({"tier": "Admin", "priority": 2, "subject": in_ns(ns_sel("y")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(ns_sel("x"))])]}),
        ),
    ])?;
    t.expect(
        "x's egress accept does not open y's ingress deny",
        &|_, s, d, _| !(s.ns == "x" && d.ns == "y"),
    )
}

fn cnp_changes_keep_traffic(t: &mut Ctx) -> Result<()> {
    let deny_all = |priority: i32| {
        cnp(
            "deny-all",
            json!({"tier": "Admin", "priority": priority, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(all())])]}),
        )
    };
    let accept = |peers: Vec<Value>| {
        cnp(
            "accept",
            json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Accept", peers)]}),
        )
    };
    t.apply(vec![accept(vec![in_ns(ns_sel("y"))]), deny_all(20)])?;
    t.expect("x only from y", &|_, s, d, _| d.ns != "x" || s.ns == "y")?;
    let tcp = Traffic::start(&t.w, "y/a", "x/b", TCP81)?;
    let udp = Traffic::start(&t.w, "y/b", "x/c", UDP80)?;
    t.apply(vec![deny_all(30)])?;
    t.apply(vec![accept(vec![in_ns(ns_sel("y")), in_ns(ns_sel("z"))])])?;
    t.expect("x from y and z", &|_, s, d, _| d.ns != "x" || s.ns != "x")?;
    t.label_ns("y", "extra", Some("1"))?;
    t.apply(vec![accept(vec![in_ns(ns_sel("y"))])])?;
    t.expect("x only from y again", &|_, s, d, _| {
        d.ns != "x" || s.ns == "y"
    })?;
    tcp.finish()?;
    udp.finish()
}

fn cnp_baseline_per_direction_ingress(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        np(
            "x",
            "egress-open",
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
        ),
        cnp(
            "baseline-deny-y",
            json!({"tier": "Baseline", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [cnp_rule("Deny", vec![in_ns(ns_sel("y"))])]}),
        ),
    ])?;
    t.expect(
        "x isolated for egress only: the baseline still denies y -> x",
        &|_, s, d, _| !(d.ns == "x" && s.ns == "y"),
    )
}

fn cnp_baseline_per_direction_egress(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        np(
            "x",
            "ingress-open",
            json!({"podSelector": {}, "ingress": [{}]}),
        ),
        cnp(
            "baseline-x-not-to-z",
            json!({"tier": "Baseline", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "egress": [cnp_egress("Deny", vec![in_ns(ns_sel("z"))])]}),
        ),
    ])?;
    t.expect(
        "x isolated for ingress only: the baseline still denies x -> z",
        &|_, s, d, _| !(s.ns == "x" && d.ns == "z"),
    )
}

fn cnp_pass_egress(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        cnp(
            "p10-pass-to-y",
            json!({"tier": "Admin", "priority": 10, "subject": in_ns(ns_sel("x")),
                   "egress": [cnp_egress("Pass", vec![in_ns(ns_sel("y"))])]}),
        ),
        cnp(
            "p20-deny-all",
            json!({"tier": "Admin", "priority": 20, "subject": in_ns(ns_sel("x")),
                   "egress": [cnp_egress("Deny", vec![in_ns(all())])]}),
        ),
        np(
            "x",
            "to-ya",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"namespaceSelector": ns_sel("y"), "podSelector": pod_sel("a")}]}]}),
        ),
    ])?;
    t.expect(
        "x -> y passed to the NetworkPolicy (y/a only), the rest denied",
        &|_, s, d, _| s.ns != "x" || d.is("y/a"),
    )
}

fn cnp_same_label(t: &mut Ctx) -> Result<()> {
    t.apply(vec![cnp(
        "red-not-from-red",
        json!({"tier": "Admin", "priority": 10, "subject": in_ns(labels(&[("team", "red")])),
               "ingress": [cnp_rule("Deny", vec![in_ns(labels(&[("team", "red")]))])]}),
    )])?;
    let e = |w: &World, s: &Pod, d: &Pod, _: PortSpec| {
        !(w.ns_has(d.ns, "team", "red") && w.ns_has(s.ns, "team", "red"))
    };
    t.label_ns("x", "team", Some("red"))?;
    t.expect("x red: x's pods cannot reach each other", &e)?;
    t.label_ns("y", "team", Some("red"))?;
    t.expect("x and y red: no traffic among them", &e)
}

// ---- AdminNetworkPolicy / BaselineAdminNetworkPolicy scenarios ----

fn anp_deny(t: &mut Ctx) -> Result<()> {
    t.apply(vec![anp(
        "deny-x-to-y",
        json!({"priority": 10, "subject": in_ns(ns_sel("y")),
               "ingress": [{"name": "deny-x", "action": "Deny", "from": [in_ns(ns_sel("x"))]}]}),
    )])?;
    t.expect("x -> y denied", &|_, s, d, _| !(d.ns == "y" && s.ns == "x"))
}

fn anp_allow_over_np(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        deny_all_ingress("z"),
        anp(
            "allow-x",
            json!({"priority": 10, "subject": in_ns(ns_sel("z")),
                   "ingress": [{"action": "Allow", "from": [in_ns(ns_sel("x"))]}]}),
        ),
    ])?;
    t.expect(
        "z closed by NetworkPolicy, x allowed by the ANP",
        &|_, s, d, _| d.ns != "z" || s.ns == "x",
    )
}

fn anp_pass(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        anp(
            "p10-pass-y",
            json!({"priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [{"action": "Pass", "from": [in_ns(ns_sel("y"))]}]}),
        ),
        anp(
            "p20-deny-all",
            json!({"priority": 20, "subject": in_ns(ns_sel("x")),
                   "ingress": [{"action": "Deny", "from": [in_ns(all())]}]}),
        ),
        np(
            "x",
            "from-yb",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": ns_sel("y"), "podSelector": pod_sel("b")}]}]}),
        ),
    ])?;
    t.expect("y passed to the NetworkPolicy (y/b only)", &|_, s, d, _| {
        d.ns != "x" || s.is("y/b")
    })
}

fn anp_priority(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        deny_all_ingress("x"),
        anp(
            "p3-deny-z",
            json!({"priority": 3, "subject": in_ns(ns_sel("x")),
                   "ingress": [{"action": "Deny", "from": [in_ns(ns_sel("z"))]}]}),
        ),
        anp(
            "p7-allow-all",
            json!({"priority": 7, "subject": in_ns(ns_sel("x")),
                   "ingress": [{"action": "Allow", "from": [in_ns(all())]}]}),
        ),
    ])?;
    t.expect(
        "x: z denied at 3, everyone else allowed at 7",
        &|_, s, d, _| d.ns != "x" || s.ns != "z",
    )
}

fn anp_port_number(t: &mut Ctx) -> Result<()> {
    t.apply(vec![anp(
        "deny-udp-81",
        json!({"priority": 10, "subject": in_ns(ns_sel("x")),
               "ingress": [{"action": "Deny", "from": [in_ns(all())],
                            "ports": [{"portNumber": {"protocol": "UDP", "port": 81}}]}]}),
    )])?;
    t.expect("x closed on UDP/81", &|_, _, d, p| {
        !(d.ns == "x" && p == UDP81)
    })
}

fn anp_port_range(t: &mut Ctx) -> Result<()> {
    t.apply(vec![anp(
        "deny-tcp-range",
        json!({"priority": 10, "subject": in_ns(ns_sel("y")),
               "ingress": [{"action": "Deny", "from": [in_ns(all())],
                            "ports": [{"portRange": {"protocol": "TCP", "start": 80, "end": 81}}]}]}),
    )])?;
    t.expect("y closed on TCP 80-81", &|_, _, d, p| {
        !(d.ns == "y" && p.proto == Proto::Tcp)
    })
}

fn anp_named_port(t: &mut Ctx) -> Result<()> {
    t.apply(vec![anp(
        "deny-named",
        json!({"priority": 10, "subject": in_ns(ns_sel("z")),
               "ingress": [{"action": "Deny", "from": [in_ns(all())],
                            "ports": [{"namedPort": "serve-80-tcp"}]}]}),
    )])?;
    t.expect("z closed on serve-80-tcp", &|_, _, d, p| {
        !(d.ns == "z" && d.named(p, "serve-80-tcp"))
    })
}

fn anp_egress_networks(t: &mut Ctx) -> Result<()> {
    let cidr = t.w.cidr("node-1");
    t.apply(vec![anp(
        "xc-not-node-1",
        json!({"priority": 10, "subject": pods_in(ns_sel("x"), pod_sel("c")),
               "egress": [{"action": "Deny", "to": [{"networks": [cidr]}]}]}),
    )])?;
    t.expect("x/c cannot reach node-1's pods", &|_, s, d, _| {
        !(s.is("x/c") && d.node == "node-1")
    })
}

fn anp_egress_pods(t: &mut Ctx) -> Result<()> {
    t.apply(vec![anp(
        "z-not-to-ya",
        json!({"priority": 10, "subject": in_ns(ns_sel("z")),
               "egress": [{"action": "Deny", "to": [pods_in(ns_sel("y"), pod_sel("a"))]}]}),
    )])?;
    t.expect("z cannot reach y/a", &|_, s, d, _| {
        !(s.ns == "z" && d.is("y/a"))
    })
}

fn banp_deny(t: &mut Ctx) -> Result<()> {
    t.apply(vec![banp(json!({"subject": in_ns(ns_sel("x")),
               "ingress": [{"action": "Deny", "from": [in_ns(ns_sel("y"))]}]}))])?;
    t.expect("y -> x denied by the baseline", &|_, s, d, _| {
        !(d.ns == "x" && s.ns == "y")
    })
}

fn banp_vs_np(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        banp(json!({"subject": in_ns(ns_sel("x")),
                    "ingress": [{"action": "Deny", "from": [in_ns(all())]}]})),
        np(
            "x",
            "a-from-z",
            json!({"podSelector": pod_sel("a"), "ingress": [{"from": [{"namespaceSelector": ns_sel("z")}]}]}),
        ),
    ])?;
    t.expect(
        "x/a from z (NetworkPolicy), x/b and x/c closed by the baseline",
        &|_, s, d, _| d.ns != "x" || (d.is("x/a") && s.ns == "z"),
    )
}

fn anp_pass_banp(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        anp(
            "pass-y",
            json!({"priority": 10, "subject": in_ns(ns_sel("x")),
                   "ingress": [{"action": "Pass", "from": [in_ns(ns_sel("y"))]}]}),
        ),
        banp(json!({"subject": in_ns(ns_sel("x")),
                    "ingress": [{"action": "Allow", "from": [in_ns(ns_sel("z"))]},
                                {"action": "Deny", "from": [in_ns(all())]}]})),
    ])?;
    t.expect(
        "y passed to the baseline and denied there; z allowed by it",
        &|_, s, d, _| d.ns != "x" || s.ns == "z",
    )
}

fn banp_egress_port(t: &mut Ctx) -> Result<()> {
    t.apply(vec![banp(json!({"subject": in_ns(ns_sel("z")),
        "egress": [{"action": "Deny", "to": [in_ns(ns_sel("y"))],
                    "ports": [{"portNumber": {"protocol": "TCP", "port": 81}}]}]}))])?;
    t.expect("z -> y TCP/81 denied", &|_, s, d, p| {
        !(s.ns == "z" && d.ns == "y" && p == TCP81)
    })
}

fn anp_subject_label(t: &mut Ctx) -> Result<()> {
    t.apply(vec![anp(
        "isolated",
        json!({"priority": 10, "subject": pods_in(all(), labels(&[("isolated", "true")])),
               "ingress": [{"action": "Deny", "from": [in_ns(all())]}]}),
    )])?;
    let e = |_: &World, _: &Pod, d: &Pod, _: PortSpec| !d.has("isolated", "true");
    t.expect("nobody isolated", &e)?;
    t.label_pod("y/c", "isolated", Some("true"))?;
    t.expect("y/c isolated", &e)?;
    t.label_pod("y/c", "isolated", None)?;
    t.expect("y/c released", &e)
}

fn anp_update(t: &mut Ctx) -> Result<()> {
    let with = |action: &str| {
        anp(
            "changing",
            json!({"priority": 10, "subject": in_ns(ns_sel("z")),
                   "ingress": [{"action": action, "from": [in_ns(ns_sel("x"))]}]}),
        )
    };
    t.apply(vec![deny_all_ingress("y"), with("Deny")])?;
    t.expect("x -> z denied", &|_, s, d, _| {
        d.ns != "y" && !(d.ns == "z" && s.ns == "x")
    })?;
    t.apply(vec![with("Pass")])?;
    t.expect("Deny changed to Pass: x -> z allowed", &|_, _, d, _| {
        d.ns != "y"
    })
}

fn anp_allow_egress(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        np(
            "y",
            "deny-egress",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        ),
        anp(
            "y-to-z",
            json!({"priority": 10, "subject": in_ns(ns_sel("y")),
                   "egress": [{"action": "Allow", "to": [in_ns(ns_sel("z"))]}]}),
        ),
    ])?;
    t.expect(
        "y's egress closed by NetworkPolicy, z allowed by the ANP",
        &|_, s, d, _| s.ns != "y" || d.ns == "z",
    )
}

// ---- Services: judged after kube-proxy's DNAT ----

/// The Service `x/web` in front of x/b (and only it): Service port 80 → 80, 81 → 80 and
/// 8080 → 81, so that a Service port never equals the target port a policy must match.
fn web_service(kind: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
    "metadata": {"namespace": "x", "name": "web"},
    "spec": {"type": kind, "selector": {"pod": "b"},
             "ports": [
                 {"name": "p80", "protocol": "TCP", "port": 80, "targetPort": 80},
                 {"name": "p81", "protocol": "TCP", "port": 81, "targetPort": 80},
                 {"name": "p8080", "protocol": "TCP", "port": 8080, "targetPort": "serve-81-tcp"}
             ]}})
}

/// x/b accepts only x/a, on `port` (a number or a name of x/b's ports).
fn b_from_a(port: Value) -> Value {
    np(
        "x",
        "b-from-a",
        json!({"podSelector": pod_sel("b"),
               "ingress": [{"from": [{"podSelector": pod_sel("a")}], "ports": [{"port": port}]}]}),
    )
}

/// Service port → the target port kube-proxy forwards it to on x/b.
fn target_of(service_port: u16) -> u16 {
    match service_port {
        8080 => 81,
        _ => 80,
    }
}

/// Probes the Service `x/web` on each of `ports` from every pod of the model except x/b itself
/// (its own traffic through the Service is hairpinned and masqueraded by kube-proxy), in
/// parallel; returns the outcomes that differ from `expect(source, service port)`.
fn service_mismatches(
    t: &Ctx,
    ports: &[u16],
    expect: &dyn Fn(&Pod, u16) -> bool,
) -> Result<Vec<String>> {
    let svc = t.c.service("x/web")?;
    ensure!(
        svc.backends == ["x/b"],
        "x/web's endpoints: {:?}",
        svc.backends
    );
    let mut jobs = Vec::new();
    for e in t.w.endpoints.iter().filter(|e| e.id != "x/b") {
        for port in ports {
            let (e, svc, port) = (e.clone(), svc.clone(), *port);
            let spec = PortSpec {
                proto: Proto::Tcp,
                port,
            };
            jobs.push((
                e.id.clone(),
                port,
                std::thread::spawn(move || {
                    probe::to_service(&e, &svc, spec, Family::V4, PROBE_TIMEOUT)
                }),
            ));
        }
    }
    let mut out = Vec::new();
    for (from, port, job) in jobs {
        let o = job
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
        let want = expect(t.w.pod(&from), port);
        if want != o.allowed {
            out.push(format!(
                "{from} -> service x/web TCP/{port} (pod port {}): expected {}, got {}{}",
                target_of(port),
                if want { "allowed" } else { "denied" },
                if o.allowed { "allowed" } else { "denied" },
                o.error.map(|e| format!(" ({e})")).unwrap_or_default()
            ));
        }
    }
    Ok(out)
}

/// Polls the Service probes until they equal the expectation (kube-proxy programs a new Service
/// within a second or two); on a timeout, lists the probes that differ.
fn expect_service(t: &Ctx, what: &str, expect: &dyn Fn(&Pod, u16) -> bool) -> Result<()> {
    let start = Instant::now();
    loop {
        let diff = service_mismatches(t, &[80, 81, 8080], expect)?;
        if diff.is_empty() {
            eprintln!(
                "    {what}: 24 probes through the ClusterIP as expected after {:.1}s",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() > APPLIED_WITHIN + Duration::from_secs(20) {
            bail!(
                "{what}: {} probes through the ClusterIP differ:\n  {}",
                diff.len(),
                diff.join("\n  ")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A policy that lets only x/a reach x/b on TCP/80 holds through a ClusterIP in front of x/b: the
/// verdict is taken on x/b's address after the DNAT, for sources on all three nodes (same node as
/// x/b: y/a, z/c).
fn svc_clusterip(t: &mut Ctx) -> Result<()> {
    t.apply(vec![web_service("ClusterIP")])?;
    // Before any policy every source reaches x/b through every Service port.
    expect_service(t, "no policy: the Service is open", &|_, _| true)?;
    t.apply(vec![b_from_a(json!(80))])?;
    t.expect("x/b admits only x/a on TCP/80", &|_, s, d, p| {
        !d.is("x/b") || (s.is("x/a") && p == TCP80)
    })?;
    expect_service(
        t,
        "through the ClusterIP, only x/a reaches x/b, on the Service ports that lead to pod port 80",
        &|s, port| s.is("x/a") && target_of(port) == 80,
    )
}

/// The policy names the target port (by its name on x/b); the Service port that leads there is
/// allowed, and a Service port numbered like the policy's port but leading elsewhere is not.
fn svc_target_port(t: &mut Ctx) -> Result<()> {
    t.apply(vec![
        web_service("ClusterIP"),
        b_from_a(json!("serve-81-tcp")),
    ])?;
    t.expect("x/b admits only x/a on TCP/81", &|_, s, d, p| {
        !d.is("x/b") || (s.is("x/a") && p == TCP81)
    })?;
    expect_service(
        t,
        "Service port 8080 → 81 allowed from x/a; Service port 81 → 80 denied",
        &|s, port| s.is("x/a") && target_of(port) == 81,
    )?;
    // The same policy by number: the outcome is the same.
    t.apply(vec![b_from_a(json!(81))])?;
    expect_service(t, "the policy's port 81 by number", &|s, port| {
        s.is("x/a") && target_of(port) == 81
    })
}

/// Probes `node_ip:node_port` from the cluster's external host; allowed when x/b answers.
fn from_external(c: &Cluster, node_ip: Ipv4Addr, node_port: u16) -> Result<bool> {
    let addr = std::net::SocketAddr::new(node_ip.into(), node_port);
    let external = std::path::PathBuf::from("/run/netns").join(c.cfg.external_ns());
    let reply = weft_e2e::netns::in_netns(&external, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(probe::request(addr, Proto::Tcp, PROBE_TIMEOUT)))
    })?;
    Ok(matches!(reply, Ok(r) if r.split_whitespace().next() == Some("x/b")))
}

/// A NodePort in front of x/b, probed from the external host at the node that runs x/b. There the
/// forward hook still sees the external client's address (kube-proxy masquerades only after it, in
/// postrouting), so the policy judges that client on x/b's port: denied while only x/a is allowed,
/// allowed once an ipBlock names the external host, and only on the Service port that leads to
/// the allowed pod port. (Through another node, kube-proxy's masquerade replaces the client with
/// that node's address before x/b's node sees it, as with any CNI: not meaningful for a policy on
/// the client.)
fn svc_nodeport(t: &mut Ctx) -> Result<()> {
    t.apply(vec![web_service("NodePort"), b_from_a(json!(80))])?;
    t.expect("x/b admits only x/a on TCP/80", &|_, s, d, p| {
        !d.is("x/b") || (s.is("x/a") && p == TCP80)
    })?;
    let svc = get_json(t.c, &["service", "-n", "x", "web"])?;
    let node_port = |name: &str| -> Result<u16> {
        svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["nodePort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .with_context(|| format!("no nodePort for {name}: {svc}"))
    };
    let (np80, np8080) = (node_port("p80")?, node_port("p8080")?);
    let node = &t.w.pod("x/b").node;
    let index: usize = node
        .trim_start_matches("node-")
        .parse()
        .context("node index")?;
    let ip = t.c.cfg.node_ip(index);
    // Denied: the external host is not x/a. Checked a few times (a deny is the absence of an
    // answer), after the policy is known to be in force.
    for _ in 0..3 {
        ensure!(
            !from_external(t.c, ip, np80)?,
            "the NodePort {ip}:{np80} reached x/b from the external host although only x/a may"
        );
    }
    let external = format!("{}/32", t.c.cfg.external_ip());
    t.apply(vec![np(
        "x",
        "b-from-external",
        json!({"podSelector": pod_sel("b"),
               "ingress": [{"from": [{"ipBlock": {"cidr": external}}], "ports": [{"port": 80}]}]}),
    )])?;
    eventually(
        "the NodePort to admit the external host once an ipBlock names it",
        APPLIED_WITHIN,
        || Ok(from_external(t.c, ip, np80)?.then_some(())),
    )?;
    ensure!(
        !from_external(t.c, ip, np8080)?,
        "NodePort {np8080} (to pod port 81) reached x/b; the ipBlock allows only port 80"
    );
    eprintln!(
        "    NodePort {ip}:{np80} (→ x/b:80) from {external}: denied, then allowed by the ipBlock; {np8080} (→ 81) denied"
    );
    Ok(())
}

// ---- `nodes` peers ----

/// Whether a TCP connection from `from`'s network namespace to `addr` opens within the probe
/// timeout: Ok(true) connected, Ok(false) timed out (a policy drop); anything else (refused,
/// unreachable) is an error, so that a missing server cannot pass for a deny.
fn connects(from: &Endpoint, addr: std::net::SocketAddr) -> Result<bool> {
    weft_e2e::netns::in_netns(
        &from.netns,
        move || match std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(false),
            Err(e) => Err(anyhow::anyhow!("connect {addr}: {e}")),
        },
    )
}

/// Every pod against every node's address (the agent's metrics port, which listens on the node's
/// network namespace like any host-network server); lists the probes whose outcome differs from
/// `expect(source pod, node name)`.
fn node_mismatches(t: &Ctx, expect: &dyn Fn(&Pod, &str) -> bool) -> Result<Vec<String>> {
    let port = u16::try_from(weft_crds::fabric::DEFAULT_METRICS_PORT)?;
    let mut jobs = Vec::new();
    for e in &t.w.endpoints {
        for k in 1..=3usize {
            let addr = std::net::SocketAddr::new(t.c.cfg.node_ip(k).into(), port);
            let e = e.clone();
            jobs.push((
                e.id.clone(),
                format!("node-{k}"),
                addr,
                std::thread::spawn(move || connects(&e, addr)),
            ));
        }
    }
    let mut out = Vec::new();
    for (from, node, addr, job) in jobs {
        let got = job
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
        let want = expect(t.w.pod(&from), &node);
        if want != got {
            out.push(format!(
                "{from} -> {node} ({addr}): expected {}, got {}",
                if want { "allowed" } else { "denied" },
                if got { "allowed" } else { "denied" }
            ));
        }
    }
    Ok(out)
}

/// Polls the pod → node probes until they equal the expectation; on a timeout, lists those that
/// differ.
fn expect_nodes(t: &Ctx, what: &str, expect: &dyn Fn(&Pod, &str) -> bool) -> Result<()> {
    let start = Instant::now();
    loop {
        let diff = node_mismatches(t, expect)?;
        if diff.is_empty() {
            eprintln!(
                "    {what}: 27 pod -> node probes as expected after {:.1}s",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() > APPLIED_WITHIN {
            bail!(
                "{what}: {} pod -> node probes differ:\n  {}",
                diff.len(),
                diff.join("\n  ")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// An Admin-tier ClusterNetworkPolicy denies egress from namespace x to the nodes labelled
/// `e2e.weft.dev/no-x=true` (their `status.addresses`), first node-2: x's pods on node-1 and
/// node-3 cannot reach node-2's address; x's pods on node-2 still reach their own node (never
/// filtered); y and z reach every node, and x reaches node-1 and node-3. Pod-to-pod traffic is
/// untouched. Then the label moves from node-2 to node-3 (node churn, the policy unchanged) and
/// the deny follows it.
fn cnp_deny_egress_to_nodes(t: &mut Ctx) -> Result<()> {
    const KEY: &str = "e2e.weft.dev/no-x";
    expect_nodes(t, "no policy: every pod reaches every node", &|_, _| true)?;
    t.label_node("node-2", KEY, Some("true"))?;
    t.apply(vec![cnp(
        "deny-x-to-labelled-nodes",
        json!({"tier": "Admin", "priority": 20, "subject": {"namespaces": ns_sel("x")},
               "egress": [{"name": "no-labelled-nodes", "action": "Deny",
                           "to": [{"nodes": {"matchLabels": {KEY: "true"}}}]}]}),
    )])?;
    expect_nodes(
        t,
        "x cannot reach node-2 except from node-2 itself; all else reaches every node",
        &|s, node| !(s.ns == "x" && node == "node-2" && s.node != "node-2"),
    )?;
    t.expect("pod-to-pod traffic is untouched", &|_, _, _, _| true)?;
    t.label_node("node-3", KEY, Some("true"))?;
    t.label_node("node-2", KEY, None)?;
    expect_nodes(
        t,
        "the label moved to node-3: x cannot reach node-3 except from node-3 itself",
        &|s, node| !(s.ns == "x" && node == "node-3" && s.node != "node-3"),
    )
}

// ---- the drop metric ----

/// `weft_agent_policy_dropped_packets_total{direction, reason="policy"}` of the agent on `node`,
/// read from its /metrics inside the node's network namespace.
fn dropped_on(c: &Cluster, node: &str, direction: &str) -> Result<u64> {
    use std::io::{Read, Write};
    let path = std::path::PathBuf::from("/run/netns").join(c.cfg.node_ns(node));
    let port = u16::try_from(weft_crds::fabric::DEFAULT_METRICS_PORT)?;
    let body = weft_e2e::netns::in_netns(&path, move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?;
    let series = format!(
        "weft_agent_policy_dropped_packets_total{{direction=\"{direction}\",reason=\"policy\"}} "
    );
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .with_context(|| format!("{node}: no {series}in /metrics"))?
        .trim()
        .parse()
        .with_context(|| format!("{node}: {series}"))
}

/// A denied probe raises the drop metric of the node that judged it: ingress on the destination's
/// node for an ingress deny, egress on the source's node for an egress deny, and nothing in the
/// other direction.
fn metric_dropped(t: &mut Ctx) -> Result<()> {
    // x/b on node-2 isolated for ingress; the source z/a on node-3.
    t.apply(vec![np(
        "x",
        "deny-b",
        json!({"podSelector": pod_sel("b"), "policyTypes": ["Ingress"]}),
    )])?;
    t.expect("nothing enters x/b", &|_, _, d, _| !d.is("x/b"))?;
    let (dst, src) = (t.w.pod("x/b").node.clone(), t.w.pod("z/a").node.clone());
    ensure!(dst != src, "the probe must cross nodes");
    let endpoints = t.w.endpoints.clone();
    let find = move |id: &str| {
        endpoints
            .iter()
            .find(|e| e.id == id)
            .cloned()
            .with_context(|| format!("no endpoint {id}"))
    };
    let before = (
        dropped_on(t.c, &dst, "ingress")?,
        dropped_on(t.c, &src, "egress")?,
    );
    let o = probe::single(
        &find("z/a")?,
        &find("x/b")?,
        TCP80,
        Family::V4,
        PROBE_TIMEOUT,
    )?;
    ensure!(!o.allowed, "z/a -> x/b TCP/80 was allowed");
    let after = (
        dropped_on(t.c, &dst, "ingress")?,
        dropped_on(t.c, &src, "egress")?,
    );
    eprintln!(
        "    z/a -> x/b TCP/80 denied: ingress drops on {dst} {} -> {}, egress drops on {src} {} -> {}",
        before.0, after.0, before.1, after.1
    );
    ensure!(
        after.0 > before.0,
        "the ingress drop counter of {dst} did not grow: {} -> {}",
        before.0,
        after.0
    );
    ensure!(
        after.1 == before.1,
        "the egress drop counter of {src} grew for an ingress deny: {} -> {}",
        before.1,
        after.1
    );
    // An egress deny counts on the source's node.
    t.apply(vec![np(
        "z",
        "deny-out-a",
        json!({"podSelector": pod_sel("a"), "policyTypes": ["Egress"]}),
    )])?;
    t.expect("nothing leaves z/a; nothing enters x/b", &|_, s, d, _| {
        !d.is("x/b") && !s.is("z/a")
    })?;
    let before = dropped_on(t.c, &src, "egress")?;
    let o = probe::single(
        &find("z/a")?,
        &find("y/c")?,
        TCP80,
        Family::V4,
        PROBE_TIMEOUT,
    )?;
    ensure!(!o.allowed, "z/a -> y/c TCP/80 was allowed");
    let after = dropped_on(t.c, &src, "egress")?;
    eprintln!("    z/a -> y/c TCP/80 denied: egress drops on {src} {before} -> {after}");
    ensure!(
        after > before,
        "the egress drop counter of {src} did not grow: {before} -> {after}"
    );
    Ok(())
}
