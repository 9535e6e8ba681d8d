//! The names and labels of the agent's objects: a leaf module shared by the builder (which sets
//! them), RBAC (which grants on them), the status (which recognises the agent pods of a fabric) and
//! the controller (which watches them).
//!
//! Invariant: every name the operator gives or looks for is written here once.

/// Name of the agent's ServiceAccount, ClusterRole, ClusterRoleBinding, DaemonSet and container.
pub const AGENT_NAME: &str = "weft-agent";
/// Name of the agent's ConfigMap.
pub const AGENT_CONFIG_MAP: &str = "weft-agent-config";
/// Pod-template annotation holding the hash of the rendered agent configuration.
pub const CONFIG_HASH_ANNOTATION: &str = "weft.dev/config-hash";
/// Label naming the fabric an object belongs to.
pub const FABRIC_LABEL: &str = "weft.dev/fabric";
/// `app.kubernetes.io/managed-by` value on everything the operator creates.
pub const MANAGED_BY: &str = "weft-operator";
/// Label selector matching every object the operator creates.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=weft-operator";
/// Label selector matching agent pods.
pub const AGENT_POD_SELECTOR: &str = "app.kubernetes.io/name=weft-agent";
