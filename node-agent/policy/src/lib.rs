//! weft's policy core: NetworkPolicy, ClusterNetworkPolicy and AdminNetworkPolicy /
//! BaselineAdminNetworkPolicy compiled to one nftables ruleset per node.
//!
//! ```text
//!   Pods, Namespaces,            ┌────────┐  normalized   ┌─────────┐   Ir (per node)   ┌──────────┐
//!   NetworkPolicy, CNP, ANP, ──► │ Index  │ ────────────► │ compile │ ────────────────► │ render   │ ─► nft -f
//!   BANP (apply / delete)        └────────┘  policies +   └─────────┘  sets, profile    └──────────┘   script
//!                                   │        problems                  chains, pod map        ▲
//!                                   ▼                                       │                 │ incremental
//!                               problems()                             Ir::verdict()     render_update()
//! ```
//!
//! Invariants kept here: no I/O, no clock, no kube client, no async; the same inputs give
//! byte-identical output (every collection is ordered, every name is a hash of content). A policy the
//! engine cannot honour is refused with a [`Problem`] and its pods fail closed in the directions it
//! affects; nothing is half-enforced and nothing panics on API input.

pub mod compile;
pub mod incremental;
pub mod index;
pub mod ir;
pub mod model;
pub mod render;
pub mod selector;

pub use compile::{Memo, NodeInput, Reuse, compile_node, compile_node_memo, compile_node_reusing};
pub use incremental::apply_pod_changes;
pub use index::{Index, NodeInfo, PodKey};
pub use ir::{Because, Decision, Direction, Ir, Size, Verdict};
pub use model::{Action, Kind, ObjectRef, Proto, TierKind};
pub use render::{
    CounterSeed, DROP_COUNTERS, DropCounter, DropReason, Elem, ElemOp, Staged, TABLE, Update,
    drop_counter, render_elem_ops, render_ruleset, render_ruleset_seeded, render_update,
    ruleset_elements,
};

/// Why the engine refuses (part of) an API object. The message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A label selector requirement has an operator other than In, NotIn, Exists, DoesNotExist.
    #[error(
        "{field}: unknown selector operator {operator:?}; use In, NotIn, Exists or DoesNotExist"
    )]
    SelectorOperator {
        /// Where in the object.
        field: String,
        /// The operator found.
        operator: String,
    },
    /// In/NotIn without values, or Exists/DoesNotExist with values.
    #[error("{field}: operator {operator} {what}")]
    SelectorValues {
        /// Where in the object.
        field: String,
        /// The operator.
        operator: String,
        /// What is wrong with the values.
        what: &'static str,
    },
    /// A label key or value that Kubernetes would not accept.
    #[error("{field}: {value:?} is not a valid label {what}")]
    LabelSyntax {
        /// Where in the object.
        field: String,
        /// The key or value.
        value: String,
        /// "key" or "value".
        what: &'static str,
    },
    /// A CIDR that does not parse.
    #[error("{field}: {value:?} is not a CIDR (expected e.g. 10.0.0.0/8 or fd00::/8)")]
    Cidr {
        /// Where in the object.
        field: String,
        /// The string found.
        value: String,
    },
    /// An `except` entry outside its ipBlock's CIDR or of the other family.
    #[error("{field}: except {except} is not inside {cidr}")]
    ExceptOutside {
        /// Where in the object.
        field: String,
        /// The ipBlock CIDR.
        cidr: String,
        /// The except entry.
        except: String,
    },
    /// A protocol other than TCP, UDP, SCTP.
    #[error("{field}: unknown protocol {value:?}; use TCP, UDP or SCTP")]
    Protocol {
        /// Where in the object.
        field: String,
        /// The protocol found.
        value: String,
    },
    /// A port number or range out of 1-65535, or a range whose end is before its start.
    #[error("{field}: {what}")]
    Port {
        /// Where in the object.
        field: String,
        /// What is wrong.
        what: String,
    },
    /// A missing or unknown tier or action (an API version this engine does not know).
    #[error("{field}: {value:?} is not a known {what}")]
    Enum {
        /// Where in the object.
        field: String,
        /// The value found.
        value: String,
        /// "tier" or "action".
        what: &'static str,
    },
    /// A subject, peer or port with none or more than one of its exclusive fields set.
    #[error("{field}: {what}")]
    Shape {
        /// Where in the object.
        field: String,
        /// What is wrong.
        what: String,
    },
    /// A valid API feature that weft does not implement yet (e.g. `nodes` or `domainNames` peers).
    #[error("{field}: {what} is not supported by weft yet")]
    Unsupported {
        /// Where in the object.
        field: String,
        /// The feature.
        what: &'static str,
    },
}

/// One refusal of one object, returned as data (for an Event on the object and a metric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The object refused.
    pub object: ObjectRef,
    /// Why.
    pub refusal: Refusal,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (its pods fail closed)",
            self.object, self.refusal
        )
    }
}
