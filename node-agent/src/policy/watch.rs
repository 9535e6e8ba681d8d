//! The watches of the policy engine, merged into one stream of index updates.
//!
//! Each kind's `watcher` stream is mapped to [`Update`]s; a (re-)list arrives as `ListStart`, its
//! objects one by one (`Listed`), then `ListDone`, after which the objects of that kind that were
//! not listed (deleted while the watch was down) are removed from the index too. The cluster-wide
//! policy APIs are watched only when the fabric honours them and the API server serves them (a CRD that is not installed is not an error: it is not watched).
//! Nodes are watched for `nodes` peers (labels and `status.addresses` only are kept: a Node's
//! status heartbeats change nothing the index holds, and [`Object::apply_to`] says so).

use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, NodeStatus, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ListParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use weft_crds::policy_api::{v1alpha1, v1alpha2, v1beta1};
use weft_policy::Index;

/// One watched object, typed.
#[derive(Debug, Clone)]
pub enum Object {
    /// A Pod (what the index needs only; see [`slim_pod`]).
    Pod(Box<Pod>),
    /// A Namespace.
    Namespace(Box<Namespace>),
    /// A Node (name, labels and `status.addresses` only; see [`slim_node`]).
    Node(Box<Node>),
    /// A NetworkPolicy.
    NetworkPolicy(Box<NetworkPolicy>),
    /// A ClusterNetworkPolicy, v1beta1.
    Cnp(Box<v1beta1::ClusterNetworkPolicy>),
    /// A ClusterNetworkPolicy, v1alpha2.
    CnpV1alpha2(Box<v1alpha2::ClusterNetworkPolicy>),
    /// An AdminNetworkPolicy.
    Anp(Box<v1alpha1::AdminNetworkPolicy>),
    /// A BaselineAdminNetworkPolicy.
    Banp(Box<v1alpha1::BaselineAdminNetworkPolicy>),
}

/// The kinds, as stream identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WatchKind {
    /// Pods.
    Pod,
    /// Namespaces.
    Namespace,
    /// Nodes.
    Node,
    /// NetworkPolicies.
    NetworkPolicy,
    /// ClusterNetworkPolicies (either version).
    Cnp,
    /// AdminNetworkPolicies.
    Anp,
    /// BaselineAdminNetworkPolicies.
    Banp,
}

/// What a watch reports.
#[derive(Debug)]
pub enum Update {
    /// An object was added or changed.
    Apply(Object),
    /// An object was deleted.
    Delete(Object),
    /// A (re-)list of a kind begins; its objects follow as [`Update::Listed`], one at a time.
    ListStart(WatchKind),
    /// One object of a (re-)list.
    Listed(Object),
    /// The (re-)list of a kind is complete: objects of that kind not listed since its
    /// [`Update::ListStart`] are gone.
    ListDone(WatchKind),
    /// A watch failed (it retries with backoff).
    Error(WatchKind, String),
}

fn key<K: Resource>(o: &K) -> (String, String) {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> WatchKind {
        match self {
            Object::Pod(_) => WatchKind::Pod,
            Object::Namespace(_) => WatchKind::Namespace,
            Object::Node(_) => WatchKind::Node,
            Object::NetworkPolicy(_) => WatchKind::NetworkPolicy,
            Object::Cnp(_) | Object::CnpV1alpha2(_) => WatchKind::Cnp,
            Object::Anp(_) => WatchKind::Anp,
            Object::Banp(_) => WatchKind::Banp,
        }
    }

    /// (namespace, name); the namespace is empty for cluster-scoped objects.
    pub fn key(&self) -> (String, String) {
        match self {
            Object::Pod(o) => key(o.as_ref()),
            Object::Namespace(o) => key(o.as_ref()),
            Object::Node(o) => key(o.as_ref()),
            Object::NetworkPolicy(o) => key(o.as_ref()),
            Object::Cnp(o) => key(o.as_ref()),
            Object::CnpV1alpha2(o) => key(o.as_ref()),
            Object::Anp(o) => key(o.as_ref()),
            Object::Banp(o) => key(o.as_ref()),
        }
    }

    /// Feeds the object into the index; returns whether the index may have changed (false only
    /// for a Node whose labels and addresses are what the index holds already).
    pub fn apply_to(&self, index: &mut Index) -> bool {
        match self {
            Object::Pod(o) => index.apply_pod(o),
            Object::Namespace(o) => index.apply_namespace(o),
            Object::Node(o) => return index.apply_node(o),
            Object::NetworkPolicy(o) => index.apply_network_policy(o),
            Object::Cnp(o) => index.apply_cluster_network_policy(o),
            Object::CnpV1alpha2(o) => index.apply_cluster_network_policy_v1alpha2(o),
            Object::Anp(o) => index.apply_admin_network_policy(o),
            Object::Banp(o) => index.apply_baseline_admin_network_policy(o),
        }
        true
    }
}

/// Removes the object `kind` (namespace, name) from the index.
pub fn delete_from(index: &mut Index, kind: WatchKind, (ns, name): &(String, String)) {
    match kind {
        WatchKind::Pod => index.delete_pod(ns, name),
        WatchKind::Namespace => index.delete_namespace(name),
        WatchKind::Node => index.delete_node(name),
        WatchKind::NetworkPolicy => index.delete_network_policy(ns, name),
        WatchKind::Cnp => index.delete_cluster_network_policy(name),
        WatchKind::Anp => index.delete_admin_network_policy(name),
        WatchKind::Banp => index.delete_baseline_admin_network_policy(name),
    }
}

/// What the index needs of a Pod: name, namespace, labels, `spec.nodeName`, `hostNetwork`, the
/// containers' ports, `status.phase` and its addresses. The rest (managed fields, annotations,
/// volumes, env, conditions, container statuses: most of a Pod's bytes) is not kept, neither in
/// the index nor in the list of a relist that waits for its last page.
pub fn slim_pod(p: Pod) -> Pod {
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    Pod {
        metadata: kube::api::ObjectMeta {
            name: p.metadata.name,
            namespace: p.metadata.namespace,
            labels: p.metadata.labels,
            ..Default::default()
        },
        spec: p.spec.map(|s| PodSpec {
            node_name: s.node_name,
            host_network: s.host_network,
            containers: s
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    ports: c.ports,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        status: p.status.map(|s| PodStatus {
            phase: s.phase,
            pod_ip: s.pod_ip,
            pod_ips: s.pod_ips,
            ..Default::default()
        }),
    }
}

/// What the index needs of a Node (name, labels, `status.addresses`): the rest of a Node (images,
/// conditions, capacity) is not kept in memory.
pub fn slim_node(n: Node) -> Node {
    Node {
        metadata: kube::api::ObjectMeta {
            name: n.metadata.name,
            labels: n.metadata.labels,
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            addresses: n.status.and_then(|s| s.addresses),
            ..Default::default()
        }),
    }
}

/// Objects per page of a list.
const LIST_PAGE: u32 = 100;

fn watch<K>(api: Api<K>, kind: WatchKind, wrap: fn(K) -> Object) -> BoxStream<'static, Update>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    // A list is passed on object by object, not gathered: at 10,000 pods a gathered list held
    // tens of MiB of API objects at once (the agent's peak at a restart went to 116 MiB). Pages
    // of LIST_PAGE objects, not kube's 500: a page is held whole, response and objects, until
    // its last object is passed on.
    watcher::watcher(api, watcher::Config::default().page_size(LIST_PAGE))
        .default_backoff()
        .map(move |e| match e {
            Ok(Event::Apply(o)) => Update::Apply(wrap(o)),
            Ok(Event::Delete(o)) => Update::Delete(wrap(o)),
            Ok(Event::Init) => Update::ListStart(kind),
            Ok(Event::InitApply(o)) => Update::Listed(wrap(o)),
            Ok(Event::InitDone) => Update::ListDone(kind),
            Err(e) => Update::Error(kind, e.to_string()),
        })
        .boxed()
}

/// Whether the API server serves `K` (a list of one object succeeds).
async fn served<K>(api: &Api<K>) -> bool
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.list_metadata(&ListParams::default().limit(1))
        .await
        .is_ok()
}

/// Which APIs are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watched {
    /// ClusterNetworkPolicy v1beta1 (preferred) or v1alpha2.
    pub cnp: Option<&'static str>,
    /// AdminNetworkPolicy and BaselineAdminNetworkPolicy v1alpha1.
    pub anp: bool,
}

/// The merged stream of every watch the fabric's `policy` settings and the cluster's APIs call for.
pub async fn watch_all(
    client: Client,
    cluster_network_policy: bool,
    admin_network_policy: bool,
) -> (BoxStream<'static, Update>, Watched, Vec<WatchKind>) {
    let mut streams = vec![
        watch(Api::<Pod>::all(client.clone()), WatchKind::Pod, |o| {
            Object::Pod(Box::new(slim_pod(o)))
        }),
        watch(
            Api::<Namespace>::all(client.clone()),
            WatchKind::Namespace,
            |o| Object::Namespace(Box::new(o)),
        ),
        watch(Api::<Node>::all(client.clone()), WatchKind::Node, |o| {
            Object::Node(Box::new(slim_node(o)))
        }),
        watch(
            Api::<NetworkPolicy>::all(client.clone()),
            WatchKind::NetworkPolicy,
            |o| Object::NetworkPolicy(Box::new(o)),
        ),
    ];
    let mut kinds = vec![
        WatchKind::Pod,
        WatchKind::Namespace,
        WatchKind::Node,
        WatchKind::NetworkPolicy,
    ];
    let mut watched = Watched::default();
    if cluster_network_policy {
        let beta = Api::<v1beta1::ClusterNetworkPolicy>::all(client.clone());
        let alpha = Api::<v1alpha2::ClusterNetworkPolicy>::all(client.clone());
        if served(&beta).await {
            streams.push(watch(beta, WatchKind::Cnp, |o| Object::Cnp(Box::new(o))));
            watched.cnp = Some("v1beta1");
            kinds.push(WatchKind::Cnp);
        } else if served(&alpha).await {
            streams.push(watch(alpha, WatchKind::Cnp, |o| {
                Object::CnpV1alpha2(Box::new(o))
            }));
            watched.cnp = Some("v1alpha2");
            kinds.push(WatchKind::Cnp);
        }
    }
    if admin_network_policy {
        let anp = Api::<v1alpha1::AdminNetworkPolicy>::all(client.clone());
        let banp = Api::<v1alpha1::BaselineAdminNetworkPolicy>::all(client.clone());
        if served(&anp).await && served(&banp).await {
            streams.push(watch(anp, WatchKind::Anp, |o| Object::Anp(Box::new(o))));
            streams.push(watch(banp, WatchKind::Banp, |o| Object::Banp(Box::new(o))));
            watched.anp = true;
            kinds.push(WatchKind::Anp);
            kinds.push(WatchKind::Banp);
        }
    }
    (futures::stream::select_all(streams).boxed(), watched, kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(zone: &str, heartbeat: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"zone": zone}, "resourceVersion": heartbeat},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}],
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-02T00:00:00Z"}]
            }
        }))
        .expect("node")
    }

    #[test]
    fn a_slim_pod_indexes_as_the_whole_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "x", "labels": {"app": "a"},
                         "annotations": {"big": "x".repeat(4096)},
                         "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "c", "image": "agnhost", "env": [{"name": "A", "value": "1"}],
                 "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]},
                {"name": "d", "image": "pause"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5",
                       "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}],
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("pod");
        let (mut whole, mut slim) = (Index::new(), Index::new());
        whole.apply_pod(&pod);
        let small = slim_pod(pod.clone());
        assert!(small.metadata.annotations.is_none() && small.metadata.managed_fields.is_none());
        assert!(
            serde_json::to_vec(&small).expect("json").len() * 4
                < serde_json::to_vec(&pod).expect("json").len()
        );
        slim.apply_pod(&small);
        let key = weft_policy::PodKey {
            namespace: "x".into(),
            name: "p".into(),
        };
        assert_eq!(slim.pod(&key), whole.pod(&key));
        assert!(
            whole
                .pod(&key)
                .is_some_and(|p| p.is_live() && p.named_ports.len() == 1)
        );
    }

    #[test]
    fn a_node_heartbeat_changes_nothing_and_a_relabel_does() {
        let mut index = Index::new();
        let slim = slim_node(node("a", "1"));
        assert_eq!(slim.metadata.labels, node("a", "1").metadata.labels);
        let status = slim.status.as_ref().expect("status");
        assert_eq!(status.addresses.as_ref().map(Vec::len), Some(2));
        assert!(status.conditions.is_none());
        assert!(Object::Node(Box::new(slim)).apply_to(&mut index));
        let again = Object::Node(Box::new(slim_node(node("a", "2"))));
        assert!(!again.apply_to(&mut index), "a heartbeat is no change");
        let relabelled = Object::Node(Box::new(slim_node(node("b", "3"))));
        assert!(relabelled.apply_to(&mut index));
        assert_eq!(relabelled.kind(), WatchKind::Node);
        delete_from(&mut index, WatchKind::Node, &relabelled.key());
        assert_eq!(index.nodes().count(), 0);
    }
}
