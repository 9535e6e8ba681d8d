//! `ClusterNetworkPolicy`, `policy.networking.k8s.io/v1beta1` (sigs.k8s.io/network-policy-api
//! v0.3.0, `apis/v1beta1/clusternetworkpolicy_types.go`), the storage version. `v1alpha2` is served
//! beside it with the same schema and reuses these field types (see [`super::v1alpha2`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// ClusterNetworkPolicySpec defines the desired state of ClusterNetworkPolicy.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1beta1",
    kind = "ClusterNetworkPolicy",
    shortname = "cnp",
    status = "ClusterNetworkPolicyStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    /// Tier: Admin (before NetworkPolicy) or Baseline (after it).
    #[serde(default)]
    pub tier: Tier,
    /// 0-1000; lower values are evaluated first within the tier.
    #[serde(default)]
    pub priority: i32,
    /// The pods this policy applies to (exactly one field set).
    #[serde(default)]
    pub subject: ClusterNetworkPolicySubject,
    /// Ingress rules, in precedence order (first match wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<ClusterNetworkPolicyIngressRule>,
    /// Egress rules, in precedence order (first match wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<ClusterNetworkPolicyEgressRule>,
}

/// Tier of a ClusterNetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Evaluated before NetworkPolicy; Accept and Deny are final.
    Admin,
    /// Evaluated after NetworkPolicy, for pods it does not isolate.
    Baseline,
    /// Missing or a value this version does not know (the engine refuses the policy).
    #[default]
    #[serde(other)]
    Unknown,
}

/// ClusterNetworkPolicyStatus defines the observed state of ClusterNetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ClusterNetworkPolicyStatus {
    /// Conditions reported by implementations.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// ClusterNetworkPolicySubject defines what resources the policy applies to. Exactly one field must
/// be set; host-networked pods are never subjects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySubject {
    /// All pods in the namespaces this selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods matching a namespace AND a pod selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// An action on traffic destined for the subject's pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyIngressRule {
    /// Identifier for observability (at most 100 characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Accept, Deny or Pass.
    #[serde(default)]
    pub action: ClusterNetworkPolicyRuleAction,
    /// Sources this rule applies to (at least one).
    #[serde(default)]
    pub from: Vec<ClusterNetworkPolicyIngressPeer>,
    /// Protocol and port matches; unset means every protocol and port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<ClusterNetworkPolicyProtocol>,
}

/// An action on traffic originating from the subject's pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyEgressRule {
    /// Identifier for observability (at most 100 characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Accept, Deny or Pass.
    #[serde(default)]
    pub action: ClusterNetworkPolicyRuleAction,
    /// Destinations this rule applies to (at least one).
    #[serde(default)]
    pub to: Vec<ClusterNetworkPolicyEgressPeer>,
    /// Protocol and port matches; unset means every protocol and port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<ClusterNetworkPolicyProtocol>,
}

/// The action of a ClusterNetworkPolicy rule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClusterNetworkPolicyRuleAction {
    /// Accepts the traffic; no further ClusterNetworkPolicy or NetworkPolicy rule is processed.
    Accept,
    /// Drops the traffic; no further rule is processed.
    Deny,
    /// Skips the rest of the current tier and continues with the next tier.
    Pass,
    /// Missing or a value this version does not know (the engine refuses the policy).
    #[default]
    #[serde(other)]
    Unknown,
}

/// A source of ingress traffic. Exactly one field must be set; with none set, the API says to fail
/// closed (an Accept rule matches nothing, a Deny or Pass rule matches everything).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyIngressPeer {
    /// All pods in the selected namespaces (not host-networked pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods matching a namespace AND a pod selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// A destination of egress traffic. Exactly one field must be set (same fail-closed rule as the
/// ingress peer).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyEgressPeer {
    /// All pods in the selected namespaces (not host-networked pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods matching a namespace AND a pod selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// Nodes by label (experimental channel); their `status.addresses` are the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// CIDR blocks (IPv4 or IPv6); cluster-internal traffic is matched too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Domain names (experimental channel; Accept rules only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain_names: Vec<String>,
}

/// Pods selected by a namespace selector AND a pod selector (empty selectors select all).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    /// Selects namespaces; empty selects all.
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    /// Selects pods within those namespaces; empty selects all.
    #[serde(default)]
    pub pod_selector: LabelSelector,
}

/// Protocol-specific matches. Exactly one field must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyProtocol {
    /// TCP matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolPort>,
    /// UDP matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolPort>,
    /// SCTP matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolPort>,
    /// A container port name on the destination pod (experimental channel).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination_named_port: String,
}

/// The attributes of one protocol to match (upstream has one identical struct per protocol:
/// `ClusterNetworkPolicyProtocolTCP`, `…UDP`, `…SCTP`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolPort {
    /// The destination port or range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<Port>,
}

/// A port number or a range; exactly one must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// A port, 1-65535 (Go's zero value 0 means unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i32>,
    /// An inclusive range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRange>,
}

/// An inclusive port range, `start < end`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PortRange {
    /// First port of the range.
    #[serde(default)]
    pub start: i32,
    /// Last port of the range.
    #[serde(default)]
    pub end: i32,
}
