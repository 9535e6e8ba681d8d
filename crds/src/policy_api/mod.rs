//! The cluster-wide policy APIs of sigs.k8s.io/network-policy-api that weft reads (but does not
//! install): `ClusterNetworkPolicy` (`policy.networking.k8s.io/v1beta1`, and `v1alpha2` with the same
//! schema, module v0.3.0) and its predecessors `AdminNetworkPolicy` / `BaselineAdminNetworkPolicy`
//! (`policy.networking.k8s.io/v1alpha1`, module v0.1.7).
//!
//! Invariant: the types mirror the upstream Go types field for field (JSON names, optionality), and
//! they decode the way Go's `encoding/json` does: a missing field becomes its zero value instead of
//! an error, so that one odd object never breaks a watch. Enumerations keep an `Unknown` variant for
//! values this version does not know; the policy engine refuses those instead of guessing.
//!
//! These CRDs belong to the cluster (installed from the upstream modules), never to weft: they are
//! deliberately absent from weft's generated CRD YAML.

pub mod v1alpha1;
pub mod v1alpha2;
pub mod v1beta1;

/// The API group of all three kinds.
pub const GROUP: &str = "policy.networking.k8s.io";
