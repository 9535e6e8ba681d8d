//! The Kubernetes edge: patches on the agent's own Node.
//!
//! Invariant: the agent only ever touches its own annotations (a JSON merge patch that names
//! exactly the keys it owns, so other annotations are untouched) and the one `NetworkUnavailable`
//! condition (a strategic-merge status patch; Node conditions merge on `type`, so the kubelet's
//! conditions are untouched). Both are sent only when [`crate::subnet`] found a difference.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::Error;
use crate::subnet::render_condition_patch;

/// Field manager of the agent's patches.
pub const FIELD_MANAGER: &str = "weft-agent";

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// Sets (`Some`) or removes (`None`) `annotations` on Node `node`; returns the patched Node.
pub async fn apply_annotations(
    api: &Api<Node>,
    node: &str,
    annotations: &BTreeMap<String, Option<String>>,
) -> Result<Node, Error> {
    let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
    api.patch(node, &params(), &Patch::Merge(patch))
        .await
        .map_err(|source| Error::PatchAnnotations {
            node: node.to_owned(),
            source,
        })
}

/// Sets `condition` in the status of Node `node`, leaving every other condition alone; returns
/// the patched Node.
pub async fn apply_node_condition(
    api: &Api<Node>,
    node: &str,
    condition: &NodeCondition,
) -> Result<Node, Error> {
    let patch = render_condition_patch(condition);
    api.patch_status(node, &params(), &Patch::Strategic(patch))
        .await
        .map_err(|source| Error::PatchCondition {
            node: node.to_owned(),
            source,
        })
}
