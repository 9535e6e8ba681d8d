//! Small builders for the tests: API objects from JSON, the way they arrive from the API server.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use weft_crds::policy_api::{v1alpha1, v1beta1};
use weft_policy::{Index, NodeInput};

pub mod netns;

pub fn namespace(name: &str, labels: Value) -> Namespace {
    let mut l = labels;
    l["kubernetes.io/metadata.name"] = name.into();
    serde_json::from_value(json!({"metadata": {"name": name, "labels": l}})).expect("namespace")
}

/// A running pod with one address per entry of `ips` and named ports `(name, protocol, port)`.
pub fn pod(
    ns: &str,
    name: &str,
    node: &str,
    labels: Value,
    ips: &[&str],
    ports: &[(&str, &str, i32)],
) -> Pod {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, c)| json!({"name": n, "protocol": p, "containerPort": c}))
        .collect();
    let pod_ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ips.first(), "podIPs": pod_ips}
    }))
    .expect("pod")
}

/// A Node with `labels` and `status.addresses` given as `(type, address)`.
pub fn node(name: &str, labels: Value, addresses: &[(&str, &str)]) -> Node {
    let addrs: Vec<Value> = addresses
        .iter()
        .map(|(t, a)| json!({"type": t, "address": a}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": addrs}
    }))
    .expect("node")
}

/// The Node objects of n1 (zone=a: InternalIPs 192.168.1.1 and fd00:1::1) and n2 (zone=b:
/// InternalIP 192.168.1.2, ExternalIP 203.0.113.2), each with its Hostname entry.
pub fn nodes() -> Vec<Node> {
    vec![
        node(
            "n1",
            json!({"kubernetes.io/os": "linux", "zone": "a"}),
            &[
                ("InternalIP", "192.168.1.1"),
                ("InternalIP", "fd00:1::1"),
                ("Hostname", "n1"),
            ],
        ),
        node(
            "n2",
            json!({"kubernetes.io/os": "linux", "zone": "b"}),
            &[
                ("InternalIP", "192.168.1.2"),
                ("ExternalIP", "203.0.113.2"),
                ("Hostname", "n2"),
            ],
        ),
    ]
}

pub fn network_policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .expect("networkpolicy")
}

pub fn cnp(name: &str, spec: Value) -> v1beta1::ClusterNetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "policy.networking.k8s.io/v1beta1", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("cnp")
}

pub fn anp(name: &str, spec: Value) -> v1alpha1::AdminNetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("anp")
}

pub fn banp(spec: Value) -> v1alpha1::BaselineAdminNetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
        "metadata": {"name": "default"}, "spec": spec
    }))
    .expect("banp")
}

/// Node n1: host 192.168.1.1 / fd00:1::1, pod CIDRs 10.244.1.0/24 and fd00:10:244:1::/64.
pub fn node1() -> NodeInput {
    NodeInput {
        node_name: "n1".into(),
        host_addrs: vec![
            "192.168.1.1".parse().expect("ip"),
            "fd00:1::1".parse().expect("ip"),
        ],
        pod_cidrs: vec![
            "10.244.1.0/24".parse().expect("cidr"),
            "fd00:10:244:1::/64".parse().expect("cidr"),
        ],
    }
}

/// Node n2: host 192.168.1.2, pod CIDR 10.244.2.0/24 (IPv4 only).
pub fn node2() -> NodeInput {
    NodeInput {
        node_name: "n2".into(),
        host_addrs: vec!["192.168.1.2".parse().expect("ip")],
        pod_cidrs: vec!["10.244.2.0/24".parse().expect("cidr")],
    }
}

/// Namespaces x (team=a), y (team=b), z; pods a,b in x and y on n1 (dual-stack), c in x and z on n2;
/// the Node objects of [`nodes`].
pub fn cluster() -> Index {
    let mut ix = Index::new();
    for n in nodes() {
        ix.apply_node(&n);
    }
    ix.apply_namespace(&namespace("x", json!({"team": "a"})));
    ix.apply_namespace(&namespace("y", json!({"team": "b"})));
    ix.apply_namespace(&namespace("z", json!({})));
    let web = [("http", "TCP", 8080), ("dns", "UDP", 53)];
    ix.apply_pod(&pod(
        "x",
        "a",
        "n1",
        json!({"app": "a"}),
        &["10.244.1.10", "fd00:10:244:1::10"],
        &web,
    ));
    ix.apply_pod(&pod(
        "x",
        "b",
        "n1",
        json!({"app": "b"}),
        &["10.244.1.11", "fd00:10:244:1::11"],
        &[],
    ));
    ix.apply_pod(&pod(
        "y",
        "a",
        "n1",
        json!({"app": "a"}),
        &["10.244.1.20", "fd00:10:244:1::20"],
        &web,
    ));
    ix.apply_pod(&pod(
        "y",
        "b",
        "n1",
        json!({"app": "b"}),
        &["10.244.1.21", "fd00:10:244:1::21"],
        &[],
    ));
    ix.apply_pod(&pod(
        "x",
        "c",
        "n2",
        json!({"app": "c"}),
        &["10.244.2.10"],
        &[("http", "TCP", 9090)],
    ));
    ix.apply_pod(&pod(
        "z",
        "c",
        "n2",
        json!({"app": "c"}),
        &["10.244.2.30"],
        &[],
    ));
    ix
}

pub fn ip(s: &str) -> std::net::IpAddr {
    s.parse().expect("ip")
}
