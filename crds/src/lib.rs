//! weft's API types: the `NetworkFabric` custom resource, the node agent's configuration file, and
//! the pure checks on both.
//!
//! This crate is the contract between the user (the CRD and its `kubectl explain` text), the operator
//! and the node agent. It does no I/O: it defines types, defaults, validation and rendering, so that
//! everything here is testable without a cluster. The generated CRD YAML is committed at
//! `crds/weft.dev_networkfabrics.yaml` and a test fails when regenerating it would change it.

pub mod agent_config;
pub mod cidr;
pub mod crd;
pub mod fabric;
pub mod family;
pub mod golden;
pub mod node;
pub mod policy_api;
pub mod validate;

pub use agent_config::{AgentConfig, POD_MTU_ANNOTATION};
pub use cidr::{IpCidr, IpFamily};
pub use fabric::{NetworkFabric, NetworkFabricSpec, NetworkFabricStatus};
pub use family::PerFamily;

/// Errors of the API crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CIDR string has no `/prefix` part.
    #[error("{0:?} is not a CIDR: expected ADDRESS/PREFIX, e.g. 10.244.0.0/16")]
    MissingPrefix(String),
    /// The address part of a CIDR does not parse.
    #[error("{0:?} is not a CIDR: the address part is not an IPv4 or IPv6 address")]
    BadAddress(String),
    /// The prefix length of a CIDR does not parse or is too long for the family.
    #[error("{0:?} is not a CIDR: the prefix length must be 0-32 for IPv4 and 0-128 for IPv6")]
    BadPrefix(String),
    /// Bits are set after the prefix (e.g. `10.244.1.0/16`).
    #[error("{given:?} has host bits set; use {canonical}")]
    HostBitsSet {
        /// The string as given.
        given: String,
        /// The canonical network the user probably meant.
        canonical: String,
    },
    /// An agent configuration file does not parse.
    #[error("failed to parse agent configuration")]
    ParseAgentConfig(#[source] yaml_serde::Error),
    /// An agent configuration file is for another API version or kind.
    #[error(
        "agent configuration has apiVersion {api_version:?} and kind {kind:?}; this agent reads weft.dev/v1alpha1 AgentConfig"
    )]
    WrongAgentConfigType {
        /// The `apiVersion` found.
        api_version: String,
        /// The `kind` found.
        kind: String,
    },
    /// Converting to JSON failed.
    #[error("failed to convert {what} to JSON")]
    RenderJson {
        /// What was being converted.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// Rendering YAML failed.
    #[error("failed to render {what} as YAML")]
    RenderYaml {
        /// What was being rendered.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: yaml_serde::Error,
    },
}
