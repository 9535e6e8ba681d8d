//! The index: synchronous state over the watched objects, fed with apply/delete.
//!
//! It keeps only what policy needs (labels, addresses, node, named container ports, phase; a
//! Node's labels and the IPs of its `status.addresses`, for `nodes` peers) and
//! converts each policy once, when it arrives, into the normalized [`model`](crate::model) form with
//! its refusals. Invariant: the index is a pure function of the set of objects applied and not
//! deleted since (applying an object twice or in another order gives the same index); it never
//! fails and never panics on API input.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use weft_crds::policy_api::{v1alpha1, v1alpha2, v1beta1};

use crate::Problem;
use crate::model::{self, Kind, ObjectRef, Policy, Proto};
use crate::selector::Labels;

static EMPTY_LABELS: Labels = Labels::new();

/// A pod's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A named container port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    /// The port's name.
    pub name: String,
    /// Its protocol.
    pub proto: Proto,
    /// Its number.
    pub port: u16,
}

/// What the index keeps of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    /// Labels: one copy per distinct label set, shared by every pod that has it (the replicas of
    /// a Deployment or DaemonSet all do).
    pub labels: Arc<Labels>,
    /// Addresses (`status.podIPs`, else `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// `spec.nodeName`.
    pub node: String,
    /// Named container ports.
    pub named_ports: Vec<NamedPort>,
    /// `spec.hostNetwork`: such pods are neither subjects nor peers.
    pub host_network: bool,
    /// Phase Succeeded or Failed: the pod holds no address any more.
    pub terminated: bool,
}

impl PodInfo {
    /// Whether policy sees this pod (as subject or peer): a pod-network pod with an address that
    /// has not terminated.
    pub fn is_live(&self) -> bool {
        !self.host_network && !self.terminated && !self.ips.is_empty()
    }
}

/// What the index keeps of a Node: what a `nodes` peer selects on and what it matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// Labels.
    pub labels: Labels,
    /// The IPs in `status.addresses` (every type: InternalIP, ExternalIP, and any other entry
    /// whose value is an IP address; host names are skipped), sorted and deduplicated.
    pub ips: Vec<IpAddr>,
}

/// Synchronous state over Pods, Namespaces, Nodes and the four policy kinds.
#[derive(Debug, Clone, Default)]
pub struct Index {
    pods: BTreeMap<String, BTreeMap<String, PodInfo>>,
    namespaces: BTreeMap<String, Labels>,
    nodes: BTreeMap<String, NodeInfo>,
    network_policies: BTreeMap<String, BTreeMap<String, Policy>>,
    cluster_policies: BTreeMap<ObjectRef, Policy>,
    pod_problems: BTreeMap<PodKey, Vec<String>>,
    /// Every pod holding an address (live or not), for the incremental compiler's check that an
    /// address changes hands only through a full compile. Sorted and without duplicates; almost
    /// always one pod, which a `Vec` holds in one small allocation (a set's node is ten times
    /// that, and this map has an entry per address of every pod in the cluster).
    by_ip: BTreeMap<IpAddr, Vec<PodKey>>,
    /// The pods' distinct label sets ([`PodInfo::labels`] points into it). A set no pod has is
    /// dropped when its last pod goes, or, if someone else held a copy of that pod's
    /// [`PodInfo`] then (the engine keeps the state before a change), by the next sweep.
    label_sets: BTreeSet<Arc<Labels>>,
    /// How many pods the index holds (the bound of `label_sets` that triggers a sweep).
    pod_count: usize,
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// Adds or replaces a pod.
    pub fn apply_pod(&mut self, pod: &Pod) {
        let key = PodKey {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
        };
        let mut bad = Vec::new();
        let no_spec = Default::default();
        let no_status = Default::default();
        let spec: &k8s_openapi::api::core::v1::PodSpec = pod.spec.as_ref().unwrap_or(&no_spec);
        let status: &k8s_openapi::api::core::v1::PodStatus =
            pod.status.as_ref().unwrap_or(&no_status);
        let mut ip_strings: Vec<String> = status
            .pod_ips
            .iter()
            .flatten()
            .map(|p| p.ip.clone())
            .collect();
        if ip_strings.is_empty() {
            ip_strings.extend(status.pod_ip.clone());
        }
        let mut ips = Vec::new();
        for s in ip_strings {
            match s.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => bad.push(format!("status.podIPs: {s:?} is not an IP address")),
            }
        }
        ips.sort();
        ips.dedup();
        let mut named_ports = Vec::new();
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                let Some(name) = p.name.clone().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let proto = Proto::parse(p.protocol.as_deref().unwrap_or("TCP"));
                match (proto, u16::try_from(p.container_port)) {
                    (Some(proto), Ok(port)) if port > 0 => {
                        named_ports.push(NamedPort { name, proto, port })
                    }
                    _ => bad.push(format!(
                        "container {}: port {name} ({} {:?}) is not usable",
                        c.name, p.container_port, p.protocol
                    )),
                }
            }
        }
        named_ports.sort();
        named_ports.dedup();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&EMPTY_LABELS);
        let labels = match self.label_sets.get(labels) {
            Some(shared) => shared.clone(),
            None => {
                let new = Arc::new(labels.clone());
                self.label_sets.insert(new.clone());
                new
            }
        };
        let info = PodInfo {
            labels,
            ips,
            node: spec.node_name.clone().unwrap_or_default(),
            named_ports,
            host_network: spec.host_network.unwrap_or(false),
            terminated: matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")),
        };
        if bad.is_empty() {
            self.pod_problems.remove(&key);
        } else {
            self.pod_problems.insert(key.clone(), bad);
        }
        for ip in &info.ips {
            let holders = self.by_ip.entry(*ip).or_default();
            if let Err(at) = holders.binary_search(&key) {
                holders.insert(at, key.clone());
            }
        }
        let old = self
            .pods
            .entry(key.namespace.clone())
            .or_default()
            .insert(key.name.clone(), info);
        match old {
            Some(old) => self.forget(&key, old),
            None => self.pod_count += 1,
        }
    }

    /// Drops what the index held for `old`, the pod `key` was before it was replaced or
    /// deleted: its addresses no longer in its entry, and its label set if no pod has it now.
    fn forget(&mut self, key: &PodKey, old: PodInfo) {
        let now = self.pod(key).map(|p| p.ips.as_slice()).unwrap_or_default();
        let gone: Vec<IpAddr> = old
            .ips
            .iter()
            .filter(|ip| !now.contains(ip))
            .copied()
            .collect();
        for ip in gone {
            if let Some(keys) = self.by_ip.get_mut(&ip) {
                if let Ok(at) = keys.binary_search(key) {
                    keys.remove(at);
                }
                if keys.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
        // The interner's own reference and `old`'s: nobody else has these labels.
        if Arc::strong_count(&old.labels) == 2 {
            self.label_sets.remove(&old.labels);
        }
        drop(old);
        // Sets whose last pod went while a copy of it was held elsewhere: every pod holds one
        // set, so more sets than pods means some are unused. Amortized: a sweep halves them.
        if self.label_sets.len() > 2 * self.pod_count + 16 {
            self.label_sets.retain(|l| Arc::strong_count(l) > 1);
        }
    }

    /// Removes a pod.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        let key = PodKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let old = self.pods.get_mut(namespace).and_then(|ns| ns.remove(name));
        if self.pods.get(namespace).is_some_and(BTreeMap::is_empty) {
            self.pods.remove(namespace);
        }
        if let Some(old) = old {
            self.pod_count -= 1;
            self.forget(&key, old);
        }
        self.pod_problems.remove(&key);
    }

    /// Adds or replaces a namespace (its labels).
    pub fn apply_namespace(&mut self, ns: &Namespace) {
        self.namespaces.insert(
            ns.metadata.name.clone().unwrap_or_default(),
            ns.metadata.labels.clone().unwrap_or_default(),
        );
    }

    /// Removes a namespace.
    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Adds or replaces a Node (its labels and addresses). Returns whether that changed what the
    /// index holds (a Node's status is rewritten often, its labels and addresses rarely).
    pub fn apply_node(&mut self, node: &Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut ips: Vec<IpAddr> = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter_map(|a| a.address.trim().parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        let info = NodeInfo {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ips,
        };
        if self.nodes.get(&name) == Some(&info) {
            return false;
        }
        self.nodes.insert(name, info);
        true
    }

    /// Removes a Node.
    pub fn delete_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// Every Node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = (&String, &NodeInfo)> {
        self.nodes.iter()
    }

    /// Adds or replaces a NetworkPolicy.
    pub fn apply_network_policy(&mut self, np: &NetworkPolicy) {
        let p = model::from_network_policy(np);
        let ns = p.source.namespace.clone().unwrap_or_default();
        self.network_policies
            .entry(ns)
            .or_default()
            .insert(p.source.name.clone(), p);
    }

    /// Removes a NetworkPolicy.
    pub fn delete_network_policy(&mut self, namespace: &str, name: &str) {
        if let Some(ns) = self.network_policies.get_mut(namespace) {
            ns.remove(name);
            if ns.is_empty() {
                self.network_policies.remove(namespace);
            }
        }
    }

    /// Adds or replaces a ClusterNetworkPolicy (v1beta1).
    pub fn apply_cluster_network_policy(&mut self, cnp: &v1beta1::ClusterNetworkPolicy) {
        let p = model::from_cluster_network_policy(cnp);
        self.cluster_policies.insert(p.source.clone(), p);
    }

    /// Adds or replaces a ClusterNetworkPolicy read as v1alpha2 (the same object as v1beta1).
    pub fn apply_cluster_network_policy_v1alpha2(&mut self, cnp: &v1alpha2::ClusterNetworkPolicy) {
        self.apply_cluster_network_policy(&cnp.clone().into());
    }

    /// Removes a ClusterNetworkPolicy.
    pub fn delete_cluster_network_policy(&mut self, name: &str) {
        self.cluster_policies
            .remove(&ObjectRef::cluster(Kind::ClusterNetworkPolicy, name));
    }

    /// Adds or replaces an AdminNetworkPolicy.
    pub fn apply_admin_network_policy(&mut self, anp: &v1alpha1::AdminNetworkPolicy) {
        let p = model::from_admin_network_policy(anp);
        self.cluster_policies.insert(p.source.clone(), p);
    }

    /// Removes an AdminNetworkPolicy.
    pub fn delete_admin_network_policy(&mut self, name: &str) {
        self.cluster_policies
            .remove(&ObjectRef::cluster(Kind::AdminNetworkPolicy, name));
    }

    /// Adds or replaces a BaselineAdminNetworkPolicy.
    pub fn apply_baseline_admin_network_policy(
        &mut self,
        banp: &v1alpha1::BaselineAdminNetworkPolicy,
    ) {
        let p = model::from_baseline_admin_network_policy(banp);
        self.cluster_policies.insert(p.source.clone(), p);
    }

    /// Removes a BaselineAdminNetworkPolicy.
    pub fn delete_baseline_admin_network_policy(&mut self, name: &str) {
        self.cluster_policies
            .remove(&ObjectRef::cluster(Kind::BaselineAdminNetworkPolicy, name));
    }

    /// Every refusal of every policy in the index, ordered by object.
    pub fn problems(&self) -> Vec<Problem> {
        self.policies()
            .flat_map(|p| {
                p.refused.iter().map(|r| Problem {
                    object: p.source.clone(),
                    refusal: r.clone(),
                })
            })
            .collect()
    }

    /// Pods whose status or ports could not be read fully (reported, not refused: the usable
    /// parts are kept).
    pub fn pod_problems(&self) -> &BTreeMap<PodKey, Vec<String>> {
        &self.pod_problems
    }

    /// Every normalized policy.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.network_policies
            .values()
            .flat_map(|m| m.values())
            .chain(self.cluster_policies.values())
    }

    /// The NetworkPolicies of one namespace.
    pub fn network_policies_in(&self, namespace: &str) -> impl Iterator<Item = &Policy> {
        self.network_policies
            .get(namespace)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// The cluster-wide policies (CNP, ANP, BANP).
    pub fn cluster_policies(&self) -> impl Iterator<Item = &Policy> {
        self.cluster_policies.values()
    }

    /// Every pod, by namespace.
    pub fn pods(&self) -> impl Iterator<Item = (PodKey, &PodInfo)> {
        self.pods.iter().flat_map(|(ns, m)| {
            m.iter().map(move |(n, p)| {
                (
                    PodKey {
                        namespace: ns.clone(),
                        name: n.clone(),
                    },
                    p,
                )
            })
        })
    }

    /// The pods of one namespace, by name.
    pub fn pods_in(&self, namespace: &str) -> impl Iterator<Item = (&String, &PodInfo)> {
        self.pods.get(namespace).into_iter().flat_map(|m| m.iter())
    }

    /// One pod.
    pub fn pod(&self, key: &PodKey) -> Option<&PodInfo> {
        self.pods.get(&key.namespace)?.get(&key.name)
    }

    /// The pods holding `ip` in their status (live or not).
    pub fn pods_with_ip(&self, ip: &IpAddr) -> impl Iterator<Item = &PodKey> {
        self.by_ip.get(ip).into_iter().flatten()
    }

    /// A namespace's labels (none when its object has not arrived).
    pub fn namespace_labels(&self, name: &str) -> &Labels {
        self.namespaces.get(name).unwrap_or(&EMPTY_LABELS)
    }

    /// Every namespace known from a Namespace object or from its pods, with its labels (none for
    /// a namespace whose object has not arrived yet).
    pub fn namespaces(&self) -> impl Iterator<Item = (&String, &Labels)> {
        let mut names: Vec<&String> = self.namespaces.keys().chain(self.pods.keys()).collect();
        names.sort();
        names.dedup();
        names.into_iter().map(|n| (n, self.namespace_labels(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, app: &str, ips: &[&str]) -> Pod {
        let ips: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": name, "labels": {"app": app}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIPs": ips}
        }))
        .expect("pod")
    }

    fn key(name: &str) -> PodKey {
        PodKey {
            namespace: "x".into(),
            name: name.into(),
        }
    }

    fn holders(ix: &Index, ip: &str) -> Vec<String> {
        let ip: IpAddr = ip.parse().expect("ip");
        ix.pods_with_ip(&ip).map(|k| k.name.clone()).collect()
    }

    #[test]
    fn pods_share_one_copy_of_a_label_set_and_the_last_holder_takes_it_away() {
        let mut ix = Index::new();
        ix.apply_pod(&pod("a", "web", &["10.0.0.1"]));
        ix.apply_pod(&pod("b", "web", &["10.0.0.2"]));
        let (a, b) = (ix.pod(&key("a")).expect("a"), ix.pod(&key("b")).expect("b"));
        assert!(Arc::ptr_eq(&a.labels, &b.labels), "one copy for both");
        assert_eq!(a.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(ix.label_sets.len(), 1);

        ix.apply_pod(&pod("a", "db", &["10.0.0.1"]));
        assert_eq!(ix.label_sets.len(), 2, "web (b) and db (a)");
        ix.apply_pod(&pod("a", "db", &["10.0.0.1"]));
        assert_eq!(
            ix.label_sets.len(),
            2,
            "the same labels again change nothing"
        );
        ix.apply_pod(&pod("b", "db", &["10.0.0.2"]));
        assert_eq!(ix.label_sets.len(), 1, "nobody has web any more");

        ix.delete_pod("x", "a");
        assert_eq!(ix.label_sets.len(), 1, "b still has db");
        ix.delete_pod("x", "b");
        assert!(ix.label_sets.is_empty());
        assert!(ix.by_ip.is_empty());
        assert_eq!(ix.pods().count(), 0);
    }

    #[test]
    fn label_sets_whose_pods_went_while_a_copy_was_held_are_swept() {
        let mut ix = Index::new();
        ix.apply_pod(&pod("keep", "web", &["10.0.0.1"]));
        // As the engine does: the state before a change is kept until the change is applied.
        let mut held = Vec::new();
        for i in 0..200 {
            let name = format!("job-{i}");
            ix.apply_pod(&pod(&name, &format!("unique-{i}"), &["10.0.1.1"]));
            held.push(ix.pod(&key(&name)).cloned());
            ix.delete_pod("x", &name);
            if held.len() == 10 {
                held.clear();
            }
        }
        assert_eq!(ix.pods().count(), 1);
        assert!(
            ix.label_sets.len() <= 2 + 16 + 10,
            "{} label sets for 1 pod",
            ix.label_sets.len()
        );
        held.clear();
        ix.delete_pod("x", "keep");
        ix.apply_pod(&pod("last", "web", &["10.0.0.1"]));
        assert!(ix.label_sets.len() <= 2 + 16 + 1, "{}", ix.label_sets.len());
    }

    #[test]
    fn every_holder_of_an_address_is_listed_once_until_it_lets_go() {
        let mut ix = Index::new();
        ix.apply_pod(&pod("b", "web", &["10.0.0.1", "fd00::1"]));
        ix.apply_pod(&pod("a", "web", &["10.0.0.1"]));
        ix.apply_pod(&pod("a", "web", &["10.0.0.1"]));
        assert_eq!(holders(&ix, "10.0.0.1"), ["a", "b"], "sorted, no duplicate");
        assert_eq!(holders(&ix, "fd00::1"), ["b"]);

        ix.apply_pod(&pod("a", "web", &["10.0.0.2"]));
        assert_eq!(holders(&ix, "10.0.0.1"), ["b"]);
        assert_eq!(holders(&ix, "10.0.0.2"), ["a"]);

        ix.apply_pod(&pod("b", "web", &["fd00::1"]));
        assert!(holders(&ix, "10.0.0.1").is_empty());
        assert_eq!(ix.by_ip.len(), 2, "10.0.0.2 and fd00::1 only");

        ix.delete_pod("x", "missing");
        ix.delete_pod("x", "a");
        assert!(holders(&ix, "10.0.0.2").is_empty());
        assert_eq!(holders(&ix, "fd00::1"), ["b"]);
    }
}
