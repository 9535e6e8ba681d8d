//! Reading a Node the way every part of weft must read it: one place for the rule.

use k8s_openapi::api::core::v1::Node;

/// The pod CIDRs of a Node as kube-controller-manager assigned them: `spec.podCIDRs`, or the older
/// singular `spec.podCIDR` when the list is empty. Unparsed: callers report bad entries in their
/// own terms.
pub fn node_pod_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.as_ref();
    let many = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if !many.is_empty() {
        return many;
    }
    spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect()
}
