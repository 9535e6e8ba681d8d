//! weft-operator: reconciles the cluster's `NetworkFabric` into the node agent's ServiceAccount,
//! RBAC, ConfigMap and DaemonSet, and reports the rollout in the fabric's status.
//!
//! The pipeline (after the Stackable operators) is gather → [`validate`] (pure) → [`build`] (pure)
//! → apply → [`status`] (pure computation, then a write); [`controller`] holds the I/O. Invariant:
//! the pure stages are functions of their inputs only and carry most of the tests; the I/O stages
//! only execute what those computed.

pub mod build;
pub mod controller;
pub mod error;
pub mod facts;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod rbac;
pub mod status;
pub mod validate;

pub use error::Error;
