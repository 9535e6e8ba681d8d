//! The operator's error type: one variant per pipeline stage.
//!
//! The variant name is the `stage` label of the `weft_operator_reconcile_errors_total` metric, so
//! a dashboard shows where reconciles fail. Validation is not here: an invalid fabric is a status
//! (`Degraded/InvalidSpec`), not an error to retry.

use crate::build::BuildError;

/// Why a reconcile failed; every variant is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the fabric's cluster facts (nodes, service range, DaemonSet, pods) failed.
    #[error("failed to read {what}")]
    Gather {
        /// What was being read.
        what: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Building the agent objects failed.
    #[error("failed to build the agent objects")]
    Build(#[source] BuildError),
    /// Server-side apply of an agent object failed.
    #[error("failed to apply {kind} {name}")]
    Apply {
        /// Kind of the object.
        kind: &'static str,
        /// Name (namespace/name for namespaced objects).
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the fabric's status failed.
    #[error("failed to update the status of NetworkFabric {name}")]
    Status {
        /// The fabric.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the `weft.dev/cleanup` finalizer failed.
    #[error("failed to update the finalizer of NetworkFabric {name}")]
    Finalizer {
        /// The fabric.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting an agent object during cleanup failed.
    #[error("failed to delete {kind} {name}")]
    Cleanup {
        /// Kind of the object.
        kind: &'static str,
        /// Name of the object.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A fabric object without a name (never sent by the API server).
    #[error("a fabric without metadata.name cannot be reconciled")]
    Unnamed,
}

impl Error {
    /// The stage label for metrics: the variant name.
    pub fn stage(&self) -> &'static str {
        match self {
            Error::Gather { .. } => "Gather",
            Error::Build(_) => "Build",
            Error::Apply { .. } => "Apply",
            Error::Status { .. } => "Status",
            Error::Finalizer { .. } => "Finalizer",
            Error::Cleanup { .. } => "Cleanup",
            Error::Unnamed => "Unnamed",
        }
    }
}

/// The error and its causes on one line ("a: b: c"), for status messages and logs.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
