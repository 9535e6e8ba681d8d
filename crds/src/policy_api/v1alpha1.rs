//! `AdminNetworkPolicy` and `BaselineAdminNetworkPolicy`, `policy.networking.k8s.io/v1alpha1`
//! (sigs.k8s.io/network-policy-api v0.1.7, `apis/v1alpha1/*_types.go`), the predecessors of
//! `ClusterNetworkPolicy` that many clusters still run.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// AdminNetworkPolicySpec defines the desired state of AdminNetworkPolicy.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha1",
    kind = "AdminNetworkPolicy",
    shortname = "anp",
    status = "AdminNetworkPolicyStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicySpec {
    /// 0-1000; lower values are evaluated first. All ANP rules come before NetworkPolicy.
    #[serde(default)]
    pub priority: i32,
    /// The pods this policy applies to (exactly one field set).
    #[serde(default)]
    pub subject: AdminNetworkPolicySubject,
    /// Ingress rules, in precedence order (first match wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<AdminNetworkPolicyIngressRule>,
    /// Egress rules, in precedence order (first match wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<AdminNetworkPolicyEgressRule>,
}

/// AdminNetworkPolicyStatus defines the observed state of AdminNetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct AdminNetworkPolicyStatus {
    /// Conditions reported by implementations.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// An ANP action on traffic destined for the subject's pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicyIngressRule {
    /// Identifier for observability (at most 100 characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Allow, Deny or Pass.
    #[serde(default)]
    pub action: AdminNetworkPolicyRuleAction,
    /// Sources this rule applies to (at least one).
    #[serde(default)]
    pub from: Vec<AdminNetworkPolicyIngressPeer>,
    /// Destination ports on the subject; unset (`None`) means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminNetworkPolicyPort>>,
}

/// An ANP action on traffic originating from the subject's pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicyEgressRule {
    /// Identifier for observability (at most 100 characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Allow, Deny or Pass.
    #[serde(default)]
    pub action: AdminNetworkPolicyRuleAction,
    /// Destinations this rule applies to (at least one).
    #[serde(default)]
    pub to: Vec<AdminNetworkPolicyEgressPeer>,
    /// Destination ports; unset (`None`) means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminNetworkPolicyPort>>,
}

/// The action of an AdminNetworkPolicy rule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AdminNetworkPolicyRuleAction {
    /// Allowed regardless of NetworkPolicy and BaselineAdminNetworkPolicy.
    Allow,
    /// Denied before NetworkPolicy and BaselineAdminNetworkPolicy are consulted.
    Deny,
    /// Skips the remaining ANP rules; NetworkPolicy, then BANP decide.
    Pass,
    /// Missing or a value this version does not know (the engine refuses the policy).
    #[default]
    #[serde(other)]
    Unknown,
}

/// A destination of ANP egress traffic. Exactly one field must be set; with none set the API says
/// to fail closed (an Allow rule matches nothing, a Deny or Pass rule matches everything).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicyEgressPeer {
    /// All pods in the selected namespaces (not host-networked pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods matching a namespace AND a pod selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// Nodes by label (experimental channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// CIDR blocks; cluster-internal traffic is matched too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Domain names (experimental channel; Allow rules only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain_names: Vec<String>,
}

/// BaselineAdminNetworkPolicySpec defines the desired state of BaselineAdminNetworkPolicy (a
/// singleton named `default`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha1",
    kind = "BaselineAdminNetworkPolicy",
    shortname = "banp",
    status = "BaselineAdminNetworkPolicyStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicySpec {
    /// The pods this policy applies to (exactly one field set).
    #[serde(default)]
    pub subject: AdminNetworkPolicySubject,
    /// Ingress rules for traffic no ANP or NetworkPolicy decided, in precedence order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<BaselineAdminNetworkPolicyIngressRule>,
    /// Egress rules for traffic no ANP or NetworkPolicy decided, in precedence order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<BaselineAdminNetworkPolicyEgressRule>,
}

/// BaselineAdminNetworkPolicyStatus defines the observed state of BaselineAdminNetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct BaselineAdminNetworkPolicyStatus {
    /// Conditions reported by implementations.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A BANP action on traffic destined for the subject's pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicyIngressRule {
    /// Identifier for observability (at most 100 characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Allow or Deny.
    #[serde(default)]
    pub action: BaselineAdminNetworkPolicyRuleAction,
    /// Sources this rule applies to (at least one).
    #[serde(default)]
    pub from: Vec<AdminNetworkPolicyIngressPeer>,
    /// Destination ports on the subject; unset (`None`) means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminNetworkPolicyPort>>,
}

/// A BANP action on traffic originating from the subject's pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicyEgressRule {
    /// Identifier for observability (at most 100 characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Allow or Deny.
    #[serde(default)]
    pub action: BaselineAdminNetworkPolicyRuleAction,
    /// Destinations this rule applies to (at least one).
    #[serde(default)]
    pub to: Vec<BaselineAdminNetworkPolicyEgressPeer>,
    /// Destination ports; unset (`None`) means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminNetworkPolicyPort>>,
}

/// The action of a BaselineAdminNetworkPolicy rule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BaselineAdminNetworkPolicyRuleAction {
    /// Allows the traffic.
    Allow,
    /// Denies the traffic.
    Deny,
    /// Missing or a value this version does not know (the engine refuses the policy).
    #[default]
    #[serde(other)]
    Unknown,
}

/// A destination of BANP egress traffic (no domain names). Exactly one field must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicyEgressPeer {
    /// All pods in the selected namespaces (not host-networked pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods matching a namespace AND a pod selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// Nodes by label (experimental channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// CIDR blocks; cluster-internal traffic is matched too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
}

/// The pods an ANP or BANP applies to. Exactly one field must be set; host-networked pods are never
/// subjects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicySubject {
    /// All pods in the namespaces this selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods matching a namespace AND a pod selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
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

/// One port match; exactly one field must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicyPort {
    /// A protocol and port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<Port>,
    /// A container port name on the destination pod (experimental channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_port: Option<String>,
    /// A protocol and an inclusive port range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRange>,
}

/// A protocol and a port number.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Port {
    /// TCP, UDP or SCTP; the CRD defaults it to TCP.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// 1-65535.
    #[serde(default)]
    pub port: i32,
}

/// A protocol and an inclusive port range, `start < end`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PortRange {
    /// TCP, UDP or SCTP; the CRD defaults it to TCP.
    #[serde(default = "tcp", skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// First port of the range.
    #[serde(default)]
    pub start: i32,
    /// Last port of the range.
    #[serde(default)]
    pub end: i32,
}

/// A source of ANP/BANP ingress traffic. Exactly one field must be set (same fail-closed rule as
/// the egress peer).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicyIngressPeer {
    /// All pods in the selected namespaces (not host-networked pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods matching a namespace AND a pod selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

fn tcp() -> String {
    "TCP".to_owned()
}
