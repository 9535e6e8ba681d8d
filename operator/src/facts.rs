//! The cluster facts the operator reads: a leaf module shared by validation (pod CIDRs, node
//! addresses), the manifest builder (the MTU agents report) and the status (what each agent says
//! about its node in the `WeftAgentReady` condition).
//!
//! Invariant: [`node_facts`] is the only place that reads a Node, and [`node_facts_hash`] hashes
//! exactly what it reads, so a Node change triggers a reconcile if and only if it changes a fact the
//! operator uses (heartbeats and other controllers' conditions do not).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use weft_crds::POD_MTU_ANNOTATION;
use weft_crds::agent_config::AGENT_CONDITION_TYPE;
use weft_crds::cidr::IpCidr;

/// Facts about the cluster that a fabric must agree with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// The service IP ranges, each with where it came from (e.g. `ServiceCIDR kubernetes`).
    pub service_ranges: Vec<(IpCidr, String)>,
    /// The nodes.
    pub nodes: Vec<NodeFacts>,
}

/// What the operator needs to know about one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// The node's InternalIP addresses.
    pub internal_ips: Vec<IpAddr>,
    /// `spec.podCIDRs` as allocated by kube-controller-manager (may be empty before allocation).
    pub pod_cidrs: Vec<String>,
    /// The pod MTU the node's agent reports (`weft.dev/pod-mtu`), once it runs.
    pub pod_mtu: Option<i32>,
    /// The node's `WeftAgentReady` condition, once an agent has written it.
    pub agent: Option<AgentCondition>,
}

/// The `WeftAgentReady` condition an agent writes on its Node (see
/// [`weft_crds::AGENT_CONDITION_TYPE`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AgentCondition {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One of `weft_crds::AGENT_REASON_*` (an unknown reason is kept as is).
    pub reason: String,
    /// The agent's own words.
    pub message: String,
    /// `lastTransitionTime` in seconds since the epoch, when set.
    pub since: Option<i64>,
}

/// The facts of one Node.
pub fn node_facts(node: &Node) -> NodeFacts {
    let status = node.status.as_ref();
    NodeFacts {
        name: node.metadata.name.clone().unwrap_or_default(),
        internal_ips: status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse::<IpAddr>().ok())
            .collect(),
        pod_cidrs: node
            .spec
            .as_ref()
            .map(|s| match (&s.pod_cidrs, &s.pod_cidr) {
                (Some(list), _) if !list.is_empty() => list.clone(),
                (_, Some(one)) => vec![one.clone()],
                _ => Vec::new(),
            })
            .unwrap_or_default(),
        pod_mtu: node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POD_MTU_ANNOTATION))
            .and_then(|v| v.parse().ok()),
        agent: status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == AGENT_CONDITION_TYPE)
            .map(|c| AgentCondition {
                status: c.status.clone(),
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
                since: c.last_transition_time.as_ref().map(|t| t.0.as_second()),
            }),
    }
}

/// A hash of [`node_facts`]: the predicate that decides whether a Node event is worth a reconcile.
pub fn node_facts_hash(node: &Node) -> Option<u64> {
    let mut h = DefaultHasher::new();
    node_facts(node).hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn cond(type_: &str, status: &str, reason: &str, heartbeat: i64) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(format!("{reason} message")),
            last_heartbeat_time: Some(Time(
                Timestamp::from_second(1_800_000_000 + heartbeat).expect("ts"),
            )),
            last_transition_time: Some(Time(Timestamp::from_second(1_800_000_000).expect("ts"))),
        }
    }

    fn node(conditions: Vec<NodeCondition>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("node-1".into());
        n.metadata.annotations = Some([(POD_MTU_ANNOTATION.to_owned(), "1450".to_owned())].into());
        n.spec = Some(NodeSpec {
            pod_cidr: Some("10.244.0.0/24".into()),
            ..NodeSpec::default()
        });
        n.status = Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "192.168.0.11".into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: "node-1".into(),
                },
            ]),
            conditions: Some(conditions),
            ..NodeStatus::default()
        });
        n
    }

    #[test]
    fn reads_every_fact_of_a_node() {
        let n = node(vec![
            cond("Ready", "True", "KubeletReady", 0),
            cond(AGENT_CONDITION_TYPE, "False", "AgentConfigInvalid", 0),
        ]);
        let f = node_facts(&n);
        assert_eq!(f.name, "node-1");
        assert_eq!(
            f.internal_ips,
            vec!["192.168.0.11".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(f.pod_cidrs, ["10.244.0.0/24"]);
        assert_eq!(f.pod_mtu, Some(1450));
        assert_eq!(
            f.agent,
            Some(AgentCondition {
                status: "False".into(),
                reason: "AgentConfigInvalid".into(),
                message: "AgentConfigInvalid message".into(),
                since: Some(1_800_000_000),
            })
        );
        assert_eq!(node_facts(&node(vec![])).agent, None);
    }

    /// (change, whether it must trigger a reconcile)
    #[test]
    fn only_facts_the_operator_reads_change_the_hash() {
        let base = || {
            node(vec![
                cond("Ready", "True", "KubeletReady", 0),
                cond(AGENT_CONDITION_TYPE, "True", "AgentReady", 0),
            ])
        };
        type Change = fn(&mut Node);
        let cases: &[(&str, Change, bool)] = &[
            (
                "kubelet heartbeat",
                |n| {
                    n.status.as_mut().expect("status").conditions = Some(vec![
                        cond("Ready", "True", "KubeletReady", 40),
                        cond(AGENT_CONDITION_TYPE, "True", "AgentReady", 40),
                    ])
                },
                false,
            ),
            (
                "another controller's condition",
                |n| {
                    if let Some(cs) = n.status.as_mut().and_then(|s| s.conditions.as_mut()) {
                        cs.push(cond("MemoryPressure", "True", "Pressure", 0));
                    }
                },
                false,
            ),
            (
                "a label",
                |n| n.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into()),
                false,
            ),
            (
                "the agent refuses",
                |n| {
                    n.status.as_mut().expect("status").conditions = Some(vec![
                        cond("Ready", "True", "KubeletReady", 0),
                        cond(AGENT_CONDITION_TYPE, "False", "AgentConfigInvalid", 0),
                    ])
                },
                true,
            ),
            (
                "the agent's condition is removed",
                |n| {
                    n.status.as_mut().expect("status").conditions =
                        Some(vec![cond("Ready", "True", "KubeletReady", 0)])
                },
                true,
            ),
            (
                "the reported MTU",
                |n| {
                    n.metadata.annotations =
                        Some([(POD_MTU_ANNOTATION.to_owned(), "1400".to_owned())].into())
                },
                true,
            ),
            (
                "a pod CIDR is allocated",
                |n| n.spec.as_mut().expect("spec").pod_cidrs = Some(vec!["10.244.7.0/24".into()]),
                true,
            ),
        ];
        let before = node_facts_hash(&base());
        for (name, change, triggers) in cases {
            let mut n = base();
            change(&mut n);
            assert_eq!(node_facts_hash(&n) != before, *triggers, "{name}");
        }
    }
}
