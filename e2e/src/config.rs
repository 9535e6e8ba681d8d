//! The shape of one local cluster: its name, node count, addresses, ports and directories.
//!
//! Everything else derives names from here, so two clusters with different names (the demo and a test
//! run) never share a namespace, a port or a directory.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Where the Go-built binaries and other build products are cached, independent of the clone.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("WEFT_E2E_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weft-e2e")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/weft-e2e"))
}

/// Root of all runtime state of every local cluster.
pub const STATE_ROOT: &str = "/var/lib/weft-e2e";

/// Everything that identifies and sizes one local cluster.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ClusterConfig {
    /// Prefix of every network namespace and of the state directory.
    pub name: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Third octet of the underlay network `10.<octet>.0.0/24`.
    pub underlay_octet: u8,
    /// Port of kube-apiserver on the root namespace's loopback.
    pub api_port: u16,
    /// First of the loopback ports used by etcd (client, peer) and the controllers' secure ports.
    pub port_base: u16,
    /// Cluster CIDR from which kube-controller-manager allocates node pod CIDRs (IPv4, and IPv6 when
    /// dual-stack).
    pub cluster_cidrs: Vec<String>,
    /// Service CIDRs.
    pub service_cidrs: Vec<String>,
    /// Node prefix length for IPv4 pod CIDRs.
    pub node_mask_v4: u8,
    /// Node prefix length for IPv6 pod CIDRs.
    pub node_mask_v6: u8,
    /// Directory holding weft-e2e, weft-nodelet and the weft binaries that images map to.
    pub bin_dir: PathBuf,
    /// Cache of Go-built control-plane binaries.
    pub cache_dir: PathBuf,
    /// Run kube-proxy (nftables mode) on every node, as kubeadm does.
    #[serde(default)]
    pub kube_proxy: bool,
}

impl ClusterConfig {
    /// The default demo cluster: three nodes, IPv4.
    pub fn new(name: &str, nodes: usize, bin_dir: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            nodes,
            underlay_octet: 99,
            api_port: 16443,
            port_base: 12300,
            cluster_cidrs: vec!["10.244.0.0/16".into()],
            service_cidrs: vec!["10.96.0.0/16".into()],
            node_mask_v4: 24,
            node_mask_v6: 64,
            bin_dir,
            cache_dir: default_cache_dir(),
            kube_proxy: false,
        }
    }

    /// Adds the IPv6 family to the cluster and service CIDRs.
    pub fn dual_stack(mut self) -> Self {
        self.cluster_cidrs = vec!["10.244.0.0/16".into(), "fd00:10:244::/56".into()];
        self.service_cidrs = vec!["10.96.0.0/16".into(), "fd00:10:96::/112".into()];
        self
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(&self.name)
    }
    pub fn pki_dir(&self) -> PathBuf {
        self.state_dir().join("pki")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir().join("logs")
    }
    pub fn pid_dir(&self) -> PathBuf {
        self.state_dir().join("pids")
    }
    /// The admin kubeconfig, pointing at the API server on the root namespace's loopback.
    pub fn kubeconfig(&self) -> PathBuf {
        self.state_dir().join("kubeconfig")
    }
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.state_dir().join("nodes").join(node)
    }
    pub fn node_names(&self) -> Vec<String> {
        (1..=self.nodes).map(|i| format!("node-{i}")).collect()
    }
    pub fn underlay_ns(&self) -> String {
        format!("{}-underlay", self.name)
    }
    pub fn external_ns(&self) -> String {
        format!("{}-external", self.name)
    }
    pub fn node_ns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }
    /// Address of the underlay bridge, where the API server is reachable from the nodes.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.underlay_octet, 0, 1)
    }
    pub fn gateway_ip6(&self) -> String {
        format!("fd00:{}::1", self.underlay_octet)
    }
    /// The "external" host: a namespace on the underlay that stands for everything outside the cluster.
    pub fn external_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.underlay_octet, 0, 254)
    }
    pub fn external_ip6(&self) -> String {
        format!("fd00:{}::fe", self.underlay_octet)
    }
    /// Underlay address of node `index` (1-based).
    pub fn node_ip(&self, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.underlay_octet, 0, 10 + index as u8)
    }
    pub fn node_ip6(&self, index: usize) -> String {
        format!("fd00:{}::{:x}", self.underlay_octet, 10 + index)
    }
    /// Port on which the API server is reachable from the node namespaces.
    pub const API_PORT_IN_CLUSTER: u16 = 6443;
    pub fn api_url_in_cluster(&self) -> String {
        format!(
            "https://{}:{}",
            self.gateway_ip(),
            Self::API_PORT_IN_CLUSTER
        )
    }
    pub fn api_url_local(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }
    pub fn etcd_client_port(&self) -> u16 {
        self.port_base
    }
    pub fn etcd_peer_port(&self) -> u16 {
        self.port_base + 1
    }
    pub fn kcm_port(&self) -> u16 {
        self.port_base + 2
    }
    pub fn scheduler_port(&self) -> u16 {
        self.port_base + 3
    }
    pub fn is_dual_stack(&self) -> bool {
        self.cluster_cidrs.len() > 1
    }
}
