//! `ClusterNetworkPolicy`, `policy.networking.k8s.io/v1alpha2`: served beside `v1beta1` with the
//! same schema (module v0.3.0). Only the root type differs (the derive needs one per version); every
//! field type is [`super::v1beta1`]'s, and [`From`] converts to the storage version.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

pub use super::v1beta1::{
    ClusterNetworkPolicyEgressPeer, ClusterNetworkPolicyEgressRule,
    ClusterNetworkPolicyIngressPeer, ClusterNetworkPolicyIngressRule, ClusterNetworkPolicyProtocol,
    ClusterNetworkPolicyRuleAction, ClusterNetworkPolicyStatus, ClusterNetworkPolicySubject,
    NamespacedPod, Port, PortRange, ProtocolPort, Tier,
};

/// ClusterNetworkPolicySpec defines the desired state of ClusterNetworkPolicy.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha2",
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

impl From<ClusterNetworkPolicy> for super::v1beta1::ClusterNetworkPolicy {
    fn from(p: ClusterNetworkPolicy) -> Self {
        let s = p.spec;
        super::v1beta1::ClusterNetworkPolicy {
            metadata: p.metadata,
            spec: super::v1beta1::ClusterNetworkPolicySpec {
                tier: s.tier,
                priority: s.priority,
                subject: s.subject,
                ingress: s.ingress,
                egress: s.egress,
            },
            status: p.status,
        }
    }
}
