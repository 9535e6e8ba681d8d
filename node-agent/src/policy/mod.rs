//! The policy room of the agent: the kube watches that feed `weft-policy`'s index, and applying its
//! compiled output to the kernel through [`crate::nft`].
//!
//! ```text
//!   watch Pods, Namespaces, NetworkPolicies, ClusterNetworkPolicies, ANP, BANP
//!        │ (one merged stream; a re-list replaces that kind's objects)
//!        ▼
//!   weft_policy::Index ──► compile_node (this node) ──► Ir ──► render_update(kernel's Ir, new Ir)
//!                                                              │ one nft transaction
//!                                                              ▼
//!                                                  table inet weft-policy
//! ```
//!
//! Invariants: nothing is applied before every watch has listed once (a partial view would drop
//! traffic that a not-yet-seen policy allows, or allow what it denies); every change is one atomic
//! transaction, incremental (set elements) when the table's shape is unchanged; a failed
//! transaction leaves the previous ruleset in force, is reported, and is retried with backoff as a
//! full replacement; a restart replaces the table in one transaction, so there is no gap; the drop
//! counters keep counting across a replacement (`drops`).

pub mod drops;
pub mod engine;
pub mod watch;

pub use engine::{PolicyEngine, PolicyStatus};
pub mod explain;
