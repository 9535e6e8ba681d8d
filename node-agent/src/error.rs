//! The agent's one error type.
//!
//! Each variant belongs to one stage of the sync pipeline ([`Error::stage`]); the stage names double
//! as the `stage` label of the `weft_agent_sync_errors_total` metric, so a dashboard shows where
//! syncs fail without parsing messages.

use std::path::PathBuf;

/// Errors of the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file cannot be read.
    #[error("failed to read the agent configuration {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file does not parse or is for another API.
    #[error("invalid agent configuration {path}")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: weft_crds::Error,
    },
    /// The configuration parses but breaks the API's rules (the same checks as the CRD's).
    #[error("invalid agent configuration {path}: {violations}")]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// Every violation, `field: message`, separated by "; ".
        violations: String,
    },
    /// A CIDR in the configuration or on the Node does not parse.
    #[error("invalid {what} {value:?}")]
    BadCidr {
        /// Where the CIDR comes from (e.g. "podNetwork.cidrs entry").
        what: &'static str,
        /// The value as found.
        value: String,
        /// Why it does not parse.
        #[source]
        source: weft_crds::Error,
    },
    /// The pod network configuration cannot be used (e.g. two IPv4 CIDRs).
    #[error("invalid podNetwork: {0}")]
    PodNetwork(String),
    /// The Node's podCIDRs do not fit the fabric's pod network.
    #[error(
        "node {node} has podCIDR {pod_cidr}, which is not inside the fabric's podNetwork.cidrs {network}; make kube-controller-manager's --cluster-cidr match the NetworkFabric's spec.podNetwork.cidrs"
    )]
    PodCidrOutsideNetwork {
        /// The Node.
        node: String,
        /// The offending podCIDR.
        pod_cidr: String,
        /// The fabric's CIDRs, comma-separated.
        network: String,
    },
    /// The Node lacks a podCIDR for a family the fabric needs.
    #[error(
        "node {node} has no {family} podCIDR but the fabric's pod network {network} needs one; enable dual-stack node CIDR allocation in kube-controller-manager (--cluster-cidr with both families)"
    )]
    MissingPodCidr {
        /// The Node.
        node: String,
        /// The missing family.
        family: weft_crds::IpFamily,
        /// The fabric CIDR of that family.
        network: String,
    },
    /// No usable node address was found for a family.
    #[error("no {family} node address found: {hint}")]
    NoNodeAddress {
        /// The family.
        family: weft_crds::IpFamily,
        /// What was looked at and what to fix.
        hint: String,
    },
    /// Listing the local interfaces failed.
    #[error("failed to list the node's network interfaces")]
    ListInterfaces(#[source] nix::Error),
    /// Reading an interface MTU failed.
    #[error("failed to read the MTU of interface {interface} from {path}")]
    ReadMtu {
        /// The interface.
        interface: String,
        /// The sysfs file.
        path: PathBuf,
        /// The I/O or parse error.
        #[source]
        source: std::io::Error,
    },
    /// The computed MTU is unusable.
    #[error(
        "the pod MTU would be {mtu} (uplink {uplink} minus {overhead} bytes of {backend} overhead), below the minimum of {min}; set spec.overlay.mtu or use a larger uplink MTU"
    )]
    MtuTooSmall {
        /// The result.
        mtu: i64,
        /// The uplink MTU.
        uplink: u32,
        /// The backend overhead.
        overhead: u32,
        /// The backend.
        backend: &'static str,
        /// The smallest accepted MTU.
        min: i32,
    },
    /// Reading the Node failed.
    #[error("failed to get node {node}")]
    GetNode {
        /// The Node.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Patching the Node's annotations failed.
    #[error("failed to patch the annotations of node {node}")]
    PatchAnnotations {
        /// The Node.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Patching the Node's NetworkUnavailable condition failed.
    #[error("failed to set the NetworkUnavailable condition of node {node}")]
    PatchCondition {
        /// The Node.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing a file failed.
    #[error("failed to write {path}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the state file or the random source failed.
    #[error("failed to read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// weft's CNI plugin binary is not where the agent installs it from.
    #[error(
        "weft's CNI plugin {path} cannot be read; it ships beside weft-agent (or name it with --cni-plugin), and pods cannot start on this node until it is installed"
    )]
    PluginMissing {
        /// Where the agent looked.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Serialising JSON failed (a bug: every rendered type is plain data).
    #[error("failed to render {what} as JSON")]
    RenderJson {
        /// What was being rendered.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The `nft` binary is not installed or not on PATH.
    #[error(
        "the nftables command {binary:?} was not found; install the Debian package `nftables` (apt-get install nftables) or put nft on PATH"
    )]
    NftMissing {
        /// The binary that was looked for.
        binary: PathBuf,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// Running `nft` failed before it could report (spawn, pipe or wait error).
    #[error("failed to run {binary:?} to {what}")]
    NftRun {
        /// The binary.
        binary: PathBuf,
        /// What it was run for (e.g. "list table inet weft-nat").
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `nft` ran and refused: the transaction was not committed, the previous ruleset stands.
    #[error("nft failed to {what} ({status}): {stderr}")]
    NftFailed {
        /// What it was run for.
        what: String,
        /// The exit status.
        status: String,
        /// nft's own message (its stderr, trimmed).
        stderr: String,
    },
    /// The kernel refused a batch of set element changes sent through nf_tables netlink
    /// ([`crate::nft::apply_set_elements`]); the batch was aborted, nothing of it is in force.
    #[error("{what}: {reason}; the batch of {ops} element changes was not applied")]
    NftNetlink {
        /// The first refused operation, e.g. "adding 10.0.0.5 to set p-…-v4 of inet weft-policy".
        what: String,
        /// The kernel's errno (positive).
        errno: i32,
        /// The errno's text and what it means here, e.g. "No such file or directory (the set
        /// does not exist)".
        reason: String,
        /// How many operations the batch held.
        ops: usize,
    },
    /// The nf_tables netlink socket failed before the kernel could answer (open, send, receive).
    #[error("failed to {what} (nf_tables netlink)")]
    NftNetlinkIo {
        /// What was being done.
        what: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The blocking task that ran an nftables transaction ended without an answer (it panicked
    /// or the runtime is shutting down).
    #[error("the nftables task failed: {0}")]
    NftTask(String),
    /// The masquerade table cannot be planned from the fabric and the lease.
    #[error("cannot plan masquerade: {0}")]
    MasqueradePlan(String),
    /// The netlink socket could not be opened.
    #[error("failed to open a netlink socket (is this a Linux network namespace?)")]
    NetlinkSocket(#[source] std::io::Error),
    /// A netlink dump or request failed.
    #[error("failed to {what} through netlink")]
    Netlink {
        /// What was being done, e.g. "dump routes".
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Some overlay operations failed; the others were applied.
    #[error("{failed} of {total} overlay operations failed: {first}")]
    OverlayApply {
        /// How many failed.
        failed: usize,
        /// How many were attempted.
        total: usize,
        /// The failures, each with its object and the kernel's answer.
        first: String,
    },
}

impl Error {
    /// The reason an agent reports in its Node's `WeftAgentReady` condition for this error:
    /// configuration a person must fix, a datapath failure, or any other failed sync (retried).
    pub fn agent_reason(&self) -> &'static str {
        match self.stage() {
            "Config" | "Plan" => weft_crds::agent_config::AGENT_REASON_CONFIG_INVALID,
            "ApplyOverlay" | "ApplyNft" => weft_crds::agent_config::AGENT_REASON_DATAPATH_FAILED,
            _ => weft_crds::agent_config::AGENT_REASON_SYNC_FAILED,
        }
    }

    /// The pipeline stage the error belongs to; used as a metric label.
    pub fn stage(&self) -> &'static str {
        match self {
            Error::ReadConfig { .. } | Error::ParseConfig { .. } | Error::InvalidConfig { .. } => {
                "Config"
            }
            Error::BadCidr { .. }
            | Error::PodNetwork(_)
            | Error::PodCidrOutsideNetwork { .. }
            | Error::MissingPodCidr { .. }
            | Error::NoNodeAddress { .. }
            | Error::MtuTooSmall { .. }
            | Error::RenderJson { .. }
            | Error::MasqueradePlan(_) => "Plan",
            Error::ListInterfaces(_) | Error::ReadMtu { .. } | Error::GetNode { .. } => "Gather",
            Error::PatchAnnotations { .. } | Error::PatchCondition { .. } => "ApplyNode",
            Error::WriteFile { .. } | Error::ReadFile { .. } | Error::PluginMissing { .. } => {
                "ApplyFiles"
            }
            Error::NetlinkSocket(_) | Error::Netlink { .. } | Error::OverlayApply { .. } => {
                "ApplyOverlay"
            }
            Error::NftMissing { .. }
            | Error::NftRun { .. }
            | Error::NftFailed { .. }
            | Error::NftNetlink { .. }
            | Error::NftNetlinkIo { .. }
            | Error::NftTask(_) => "ApplyNft",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_crds::agent_config::{
        AGENT_REASON_CONFIG_INVALID, AGENT_REASON_DATAPATH_FAILED, AGENT_REASON_SYNC_FAILED,
    };

    /// Every way an agent refuses its configuration or fails to program its node maps to the
    /// WeftAgentReady reason the operator turns into the fabric's Degraded reason.
    #[test]
    fn each_failure_has_the_agent_reason_the_operator_reads() {
        let cases: Vec<(Error, &str)> = vec![
            (
                Error::NoNodeAddress {
                    family: weft_crds::IpFamily::V4,
                    hint: "interface \"nosuch0\" not found (spec.overlay.interface)".into(),
                },
                AGENT_REASON_CONFIG_INVALID,
            ),
            (
                Error::PodCidrOutsideNetwork {
                    node: "node-1".into(),
                    pod_cidr: "10.99.1.0/24".into(),
                    network: "10.244.0.0/16".into(),
                },
                AGENT_REASON_CONFIG_INVALID,
            ),
            (
                Error::OverlayApply {
                    failed: 1,
                    total: 3,
                    first: "add_route 10.244.1.0/24: File exists".into(),
                },
                AGENT_REASON_DATAPATH_FAILED,
            ),
            (
                Error::NftFailed {
                    what: "apply".into(),
                    status: "exit status: 1".into(),
                    stderr: "Error: Could not process rule".into(),
                },
                AGENT_REASON_DATAPATH_FAILED,
            ),
            (
                Error::PluginMissing {
                    path: "/usr/local/bin/weft-cni".into(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                },
                AGENT_REASON_SYNC_FAILED,
            ),
            (
                Error::ReadFile {
                    path: "/dev/urandom".into(),
                    source: std::io::Error::other("gone"),
                },
                AGENT_REASON_SYNC_FAILED,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.agent_reason(), want, "{e}");
        }
    }
}
