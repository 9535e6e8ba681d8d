//! The `NetworkFabric` custom resource (`weft.dev/v1alpha1`, cluster-scoped).
//!
//! One object of this kind describes the whole pod network of a cluster: the pod CIDRs, the overlay
//! backend, masquerading, the network-policy engine, where the CNI configuration goes, how the agent
//! DaemonSet runs, and flannel compatibility. The doc comments on the fields are the user
//! documentation: they become `kubectl explain networkfabric.spec...`.
//!
//! Invariants kept here:
//! - every field has a serde default *and* the same default in the schema (schemars derives the
//!   schema default from the serde default), so the API server and Rust agree on an omitted field;
//! - what a CEL rule or an OpenAPI constraint can express is in the schema, so the API server refuses
//!   the object; [`crate::validate`] repeats those checks in Rust for objects that were stored before a
//!   rule existed, and the operator adds what needs cluster facts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every weft resource.
pub const GROUP: &str = "weft.dev";
/// API version of `NetworkFabric`.
pub const VERSION: &str = "v1alpha1";
/// Default VXLAN network identifier (flannel's default).
pub const DEFAULT_VNI: i32 = 1;
/// Default VXLAN UDP port (the Linux kernel's and flannel's default, not IANA's 4789).
pub const DEFAULT_VXLAN_PORT: i32 = 8472;
/// Default node prefix length for IPv4 (flannel's and kube-controller-manager's default).
pub const DEFAULT_NODE_PREFIX_V4: i32 = 24;
/// Default node prefix length for IPv6 (kube-controller-manager's default).
pub const DEFAULT_NODE_PREFIX_V6: i32 = 64;
/// Default CNI configuration directory.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Default CNI plugin binary directory.
pub const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin";
/// Default name of the conflist the agent writes.
pub const DEFAULT_CNI_CONF_NAME: &str = "10-weft.conflist";
/// Default prefix of the node annotations (flannel's, so flannel and weft agents interoperate).
pub const DEFAULT_ANNOTATION_PREFIX: &str = "flannel.alpha.coreos.com";
/// Default path of the subnet file (flannel's, read by flannel's CNI plugin and tools).
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// Default port of the agent's Prometheus endpoint.
pub const DEFAULT_METRICS_PORT: i32 = 9641;
/// Default port of the agent's `/healthz` and `/readyz` endpoints.
pub const DEFAULT_HEALTH_PORT: i32 = 9642;
/// Smallest MTU accepted (the IPv4 minimum reassembly size).
pub const MIN_MTU: i32 = 576;
/// Largest MTU accepted (jumbo frames).
pub const MAX_MTU: i32 = 9000;
/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: i32 = 16_777_215;

/// The desired pod network of the cluster. Only spec.podNetwork.cidrs is required; every other field
/// has a default.
// The printcolumn(...) helper attributes repeat keys by design; clippy mistakes them for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "NetworkFabric",
    plural = "networkfabrics",
    singular = "networkfabric",
    shortname = "nf",
    shortname = "fabric",
    category = "weft",
    status = "NetworkFabricStatus",
    derive = "PartialEq",
    doc = "NetworkFabric describes the cluster's pod network: pod CIDRs, overlay, masquerading, network policy, CNI configuration and the node agent. weft acts on exactly one NetworkFabric per cluster (the oldest); any other is reported Degraded with reason Conflict.",
    printcolumn(
        name = "Backend",
        type_ = "string",
        description = "Overlay backend",
        json_path = ".spec.overlay.backend"
    ),
    printcolumn(
        name = "CIDRs",
        type_ = "string",
        description = "Pod network CIDRs",
        json_path = ".spec.podNetwork.cidrs"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Whether the fabric is fully rolled out, available and not degraded (the Ready condition)",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        description = "Why (the Ready condition's reason: AgentsReady, RollingOut, AgentConfigInvalid, ...)",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        description = "Nodes whose agent is ready",
        json_path = ".status.nodes.ready"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        description = "Nodes that should run an agent",
        json_path = ".status.nodes.desired"
    ),
    printcolumn(
        name = "MTU",
        type_ = "integer",
        description = "Effective pod MTU",
        json_path = ".status.mtu",
        priority = 1
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        description = "Whether every agent is updated and ready",
        json_path = ".status.conditions[?(@.type==\"Available\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        description = "The Ready condition's message: what is rolling out or what needs fixing, naming the nodes",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkFabricSpec {
    /// The pod network: its CIDRs and how node subnets are carved from them.
    pub pod_network: PodNetwork,

    /// The overlay that carries pod traffic between nodes.
    #[serde(default)]
    pub overlay: Overlay,

    /// Source NAT of pod traffic that leaves the pod network.
    #[serde(default)]
    pub masquerade: Masquerade,

    /// The network-policy engine.
    #[serde(default)]
    pub policy: Policy,

    /// Where and how the agent writes the node's CNI configuration.
    #[serde(default)]
    pub cni: Cni,

    /// How the agent DaemonSet runs.
    #[serde(default)]
    pub agent: Agent,

    /// Settings that let weft and flannel agents share a cluster (e.g. during a migration).
    #[serde(default)]
    pub compatibility: Compatibility,
}

/// The pod network and how each node's subnet is obtained.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.cidrs.all(c, !isCIDR(c) || (cidr(c).ip().family() == 4 ? self.nodePrefixLength.ipv4 > cidr(c).prefixLength() : self.nodePrefixLength.ipv6 > cidr(c).prefixLength()))"
).message("nodePrefixLength must be longer than the prefix of the pod CIDR of the same family, e.g. nodePrefixLength.ipv4: 24 for a /16").field_path(".nodePrefixLength"))]
pub struct PodNetwork {
    /// The pod CIDRs: one IPv4 CIDR, one IPv6 CIDR, or one of each (dual-stack), written as network
    /// addresses, e.g. 10.244.0.0/16 and fd00:10:244::/56. They must match kube-controller-manager's
    /// --cluster-cidr, because node subnets come from Node.spec.podCIDRs.
    #[schemars(length(min = 1, max = 2), inner(length(max = 64)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("every entry of cidrs must be a CIDR such as 10.244.0.0/16 or fd00:10:244::/56"))]
    #[x_kube(validation = Rule::new("self.all(c, !isCIDR(c) || cidr(c).masked() == cidr(c))").message("every CIDR must be a network address without host bits, e.g. 10.244.0.0/16 rather than 10.244.1.0/16"))]
    #[x_kube(validation = Rule::new("self.filter(c, isCIDR(c) && cidr(c).ip().family() == 4).size() <= 1 && self.filter(c, isCIDR(c) && cidr(c).ip().family() == 6).size() <= 1").message("cidrs may hold at most one IPv4 and at most one IPv6 CIDR"))]
    pub cidrs: Vec<String>,

    /// The prefix length of each node's pod subnet, per IP family. It must be longer than the
    /// prefix of the pod CIDR of that family and should equal kube-controller-manager's
    /// --node-cidr-mask-size(-ipv4/-ipv6).
    #[serde(default)]
    pub node_prefix_length: NodePrefixLength,

    /// Where node subnets come from. NodePodCIDR (the only source so far) uses Node.spec.podCIDRs as
    /// kube-controller-manager allocates them, like flannel's kube subnet manager and Canal's
    /// usePodCidr.
    #[serde(default)]
    pub subnet_source: SubnetSource,
}

/// Node subnet prefix lengths per IP family.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodePrefixLength {
    /// Prefix length of each node's IPv4 pod subnet (1-32).
    #[serde(default = "default_node_prefix_v4")]
    #[schemars(range(min = 1, max = 32))]
    pub ipv4: i32,

    /// Prefix length of each node's IPv6 pod subnet (1-128).
    #[serde(default = "default_node_prefix_v6")]
    #[schemars(range(min = 1, max = 128))]
    pub ipv6: i32,
}

/// Where node subnets come from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SubnetSource {
    /// Node.spec.podCIDRs, as allocated by kube-controller-manager (--allocate-node-cidrs).
    #[default]
    NodePodCIDR,
}

/// The overlay that carries pod traffic between nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.backend == 'vxlan' || !self.directRouting").message("directRouting only applies to the vxlan backend; host-gw always routes directly").field_path(".directRouting"))]
pub struct Overlay {
    /// The backend: vxlan (encapsulation, works across L3 boundaries) or host-gw (plain routes via
    /// the peer node's address; all nodes must share one L2 segment).
    #[serde(default)]
    pub backend: Backend,

    /// VXLAN network identifier (1-16777215). The VXLAN device is named flannel.<vni>.
    #[serde(default = "default_vni")]
    #[schemars(range(min = 1, max = 16_777_215))]
    pub vni: i32,

    /// UDP port of VXLAN traffic (1-65535). 8472 is the Linux and flannel default.
    #[serde(default = "default_vxlan_port")]
    #[schemars(range(min = 1, max = 65_535))]
    pub port: i32,

    /// With vxlan: route directly (without encapsulation) to peers on the same L2 segment, like
    /// flannel's DirectRouting.
    #[serde(default)]
    pub direct_routing: bool,

    /// With vxlan: keep TX checksum offload on the VXLAN device (true, the kernel's default, and
    /// what flannel leaves in place). Set false where VXLAN packets are dropped for bad UDP
    /// checksums (behind some NATs, on VMware vmxnet3 NICs): the agent then turns offload off on
    /// the device, the equivalent of `ethtool -K flannel.1 tx off`, and keeps it off when the
    /// device is recreated.
    #[serde(default = "default_true")]
    pub tx_checksum_offload: bool,

    /// Forward pod-to-pod packets with weft's eBPF fast path (a tc program on the host end of each
    /// pod veth and on the overlay's device) instead of through the node's netfilter hooks, where
    /// masquerade's conntrack otherwise takes every forwarded packet. Only packets of flows that
    /// conntrack does not know take it: a Service's replies, hostPorts and masqueraded flows stay
    /// with the stack. It is off while the cluster has any policy object (policy is enforced in
    /// the forward hook this path skips): the agent turns it off before the first policy is put
    /// in force. Where the kernel cannot run it (no BTF, Linux before 6.0) packets take the stack
    /// and the agent logs why. Default true.
    #[serde(default = "default_true")]
    pub fast_path: bool,

    /// MTU of pod interfaces. 0 means automatic: the MTU of the node's uplink minus the backend's
    /// overhead (50 bytes for vxlan over IPv4, 70 over IPv6, 0 for host-gw). Otherwise 576-9000.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == 0 || (self >= 576 && self <= 9000)").message("mtu must be 0 (automatic) or between 576 and 9000"))]
    pub mtu: i32,

    /// The node's interface for overlay traffic: an interface name (e.g. eth1) or a CIDR that the
    /// chosen node address must lie in (e.g. 192.168.10.0/24). Empty: the interface of the default
    /// route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isCIDR(self) || self.matches('^[A-Za-z0-9_.@-]{1,15}$')").message("interface must be an interface name of at most 15 characters (letters, digits, '_', '.', '@', '-') or a CIDR such as 192.168.10.0/24"))]
    pub interface: Option<String>,
}

/// Overlay backends.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Backend {
    /// VXLAN encapsulation, flannel-compatible (device flannel.<vni>).
    #[default]
    #[serde(rename = "vxlan")]
    Vxlan,
    /// Direct routes via the peer node's address; nodes must share an L2 segment.
    #[serde(rename = "host-gw")]
    HostGw,
}

impl Backend {
    /// The name used in the API and in flannel's `backend-type` node annotation.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }

    /// Bytes the backend adds to every pod packet over an underlay of `family`: the one table of
    /// overheads that the operator's MTU assumption and the agent's MTU detection both use.
    /// VXLAN: outer IP (20, or 40 for IPv6) + UDP 8 + VXLAN 8 + inner Ethernet 14.
    pub fn overhead(self, family: crate::IpFamily) -> u32 {
        match (self, family) {
            (Backend::Vxlan, crate::IpFamily::V4) => VXLAN_OVERHEAD_V4,
            (Backend::Vxlan, crate::IpFamily::V6) => VXLAN_OVERHEAD_V6,
            (Backend::HostGw, _) => 0,
        }
    }
}

/// VXLAN overhead over an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// VXLAN overhead over an IPv6 underlay: outer IPv6 (40) + UDP + VXLAN + inner Ethernet.
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// Source NAT of pod traffic that leaves the pod network.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Masquerade {
    /// Masquerade pod traffic to destinations outside the pod network (flannel's --ip-masq).
    /// Pod-to-pod traffic is never masqueraded.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Use fully randomised source ports (nftables random-fully), which avoids conntrack races
    /// on busy nodes.
    #[serde(default)]
    pub random_fully: bool,
}

/// The network-policy engine. NetworkPolicy (networking.k8s.io/v1) is always honoured while the
/// engine is enabled.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Enforce network policy on every node. When false, all pod traffic is allowed.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Also honour ClusterNetworkPolicy (policy.networking.k8s.io v1beta1, or v1alpha2) when its
    /// CRD is installed.
    #[serde(default = "default_true")]
    pub cluster_network_policy: bool,

    /// Also honour AdminNetworkPolicy and BaselineAdminNetworkPolicy
    /// (policy.networking.k8s.io/v1alpha1) when their CRDs are installed.
    #[serde(default = "default_true")]
    pub admin_network_policy: bool,
}

/// Where and how the agent writes the node's CNI configuration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Cni {
    /// Directory the container runtime reads CNI configuration from (absolute path).
    #[serde(default = "default_cni_conf_dir")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("confDir must be an absolute path"))]
    pub conf_dir: String,

    /// Directory that holds the CNI plugin binaries (absolute path).
    #[serde(default = "default_cni_bin_dir")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("binDir must be an absolute path"))]
    pub bin_dir: String,

    /// File name of the conflist the agent writes into confDir. Runtimes pick the first file in
    /// lexical order, so keep the numeric prefix low.
    #[serde(default = "default_cni_conf_name")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.endsWith('.conflist') && !self.contains('/')").message("confName must be a file name ending in .conflist, e.g. 10-weft.conflist"))]
    pub conf_name: String,

    /// The plugin that wires pods: `weft` (weft's own, installed by the agent into binDir) or
    /// `ptp` (the reference plugins ptp + host-local, which must be installed on the nodes).
    /// Both give a pod the same routed veth and share host-local's address store, so the
    /// switch is safe with pods running.
    #[serde(default)]
    pub plugin: CniPlugin,

    /// Reference plugins chained after weft's network plugin: portmap (hostPort) and bandwidth
    /// (kubernetes.io/ingress-bandwidth and egress-bandwidth annotations).
    #[serde(default = "default_chained_plugins")]
    #[schemars(length(max = 2))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub chained_plugins: Vec<ChainedPlugin>,
}

/// The plugin that wires pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum CniPlugin {
    /// weft's own plugin (`weft-cni`, one process per ADD).
    #[default]
    Weft,
    /// The reference plugins ptp and host-local (containernetworking-plugins).
    Ptp,
}

/// CNI plugins that can be chained after weft's.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum ChainedPlugin {
    /// The portmap plugin: hostPort support.
    Portmap,
    /// The bandwidth plugin: traffic shaping from pod annotations.
    Bandwidth,
}

/// How the agent DaemonSet runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.metricsPort != self.healthPort").message("metricsPort and healthPort must differ").field_path(".healthPort"))]
pub struct Agent {
    /// Container image of the agent. Empty: the image the operator was built with
    /// (its --agent-image flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Image pull policy of the agent container. Empty: the Kubernetes default for the image tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Compute resources of the agent container. Empty: requests of 100m CPU and 64Mi memory,
    /// no limits (a throttled network agent hurts every pod on its node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Tolerations of the agent pods. Empty: tolerate every taint, so that every node gets a
    /// network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Extra node labels the agent pods select on (kubernetes.io/os: linux is always added).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// How many agent pods may be unavailable during a rolling update: a number (at least 1) or a
    /// percentage of the nodes (e.g. "10%").
    #[serde(default = "default_max_unavailable")]
    #[x_kube(validation = Rule::new("string(self).matches('^([1-9][0-9]*|(100|[1-9][0-9]?)%)$')").message("maxUnavailable must be a number of at least 1 or a percentage from 1% to 100%, e.g. 1 or \"10%\""))]
    pub max_unavailable: IntOrString,

    /// Log level of the agent.
    #[serde(default)]
    pub log_level: LogLevel,

    /// Port of the agent's Prometheus /metrics endpoint on the node (host network).
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65_535))]
    pub metrics_port: i32,

    /// Port of the agent's /healthz and /readyz endpoints on the node (host network).
    #[serde(default = "default_health_port")]
    #[schemars(range(min = 1, max = 65_535))]
    pub health_port: i32,
}

/// Image pull policy of the agent container: Always, IfNotPresent or Never. Empty: the Kubernetes
/// default for the image's tag.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the image is not present on the node.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Log levels of the agent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// State transitions (the default).
    #[default]
    Info,
    /// Computed plans and diffs.
    Debug,
    /// Raw netlink and nftables payloads.
    Trace,
}

impl LogLevel {
    /// The spelling used by `tracing`'s env filter.
    pub fn as_str(&self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Settings that let weft and flannel agents share a cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Compatibility {
    /// Prefix of the node annotations the agent publishes and reads (backend-type, backend-data,
    /// public-ip, ...). Keep flannel's prefix to interoperate with flannel agents.
    #[serde(default = "default_annotation_prefix")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("annotationPrefix must be a DNS subdomain such as flannel.alpha.coreos.com"))]
    pub annotation_prefix: String,

    /// Path of the flannel-format subnet file (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU,
    /// FLANNEL_IPMASQ) the agent writes on every node. Its directory is mounted from the host.
    #[serde(default = "default_subnet_file")]
    #[schemars(length(min = 2, max = 256))]
    #[x_kube(validation = Rule::new("self.startsWith('/') && !self.endsWith('/') && self.lastIndexOf('/') > 0").message("subnetFile must be an absolute file path below a directory, e.g. /run/flannel/subnet.env"))]
    pub subnet_file: String,
}

/// Observed state of a NetworkFabric, written by weft-operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkFabricStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Available (every desired agent is updated and ready), Progressing (a rollout is under
    /// way) and Degraded (something needs attention: Conflict, InvalidSpec, ApplyFailed, an
    /// agent's refusal such as AgentConfigInvalid or AgentDatapathFailed naming the nodes,
    /// AgentCrashLooping, AgentImagePullFailed), each with a reason and a message. For kstatus
    /// (Flux, kubectl wait): Ready (True exactly when Available and neither Progressing nor
    /// Degraded), Reconciling (present, True, while rolling out) and Stalled (present, True,
    /// while Degraded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Agent counts across the nodes, from the agent DaemonSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,

    /// The effective pod MTU: spec.overlay.mtu, or when that is 0 the smallest MTU the agents
    /// report (their uplink's MTU minus the backend's overhead), assuming a 1500-byte uplink until
    /// the first agent reports.
    pub mtu: Option<i32>,

    /// Hash of the rendered agent configuration; agent pods carry it in the weft.dev/config-hash
    /// annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// Agent counts across the nodes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    /// Nodes that should run an agent.
    #[serde(default)]
    pub desired: i32,
    /// Nodes whose agent runs the current configuration.
    #[serde(default)]
    pub updated: i32,
    /// Nodes whose agent is ready.
    #[serde(default)]
    pub ready: i32,
}

impl Default for NodePrefixLength {
    fn default() -> Self {
        NodePrefixLength {
            ipv4: DEFAULT_NODE_PREFIX_V4,
            ipv6: DEFAULT_NODE_PREFIX_V6,
        }
    }
}

impl Default for Overlay {
    fn default() -> Self {
        Overlay {
            backend: Backend::default(),
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
            direct_routing: false,
            tx_checksum_offload: true,
            fast_path: true,
            mtu: 0,
            interface: None,
        }
    }
}

impl Default for Masquerade {
    fn default() -> Self {
        Masquerade {
            enabled: true,
            random_fully: false,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: true,
            cluster_network_policy: true,
            admin_network_policy: true,
        }
    }
}

impl Default for Cni {
    fn default() -> Self {
        Cni {
            conf_dir: default_cni_conf_dir(),
            bin_dir: default_cni_bin_dir(),
            conf_name: default_cni_conf_name(),
            plugin: CniPlugin::default(),
            chained_plugins: default_chained_plugins(),
        }
    }
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            image: None,
            image_pull_policy: None,
            resources: None,
            tolerations: None,
            node_selector: BTreeMap::new(),
            max_unavailable: default_max_unavailable(),
            log_level: LogLevel::default(),
            metrics_port: DEFAULT_METRICS_PORT,
            health_port: DEFAULT_HEALTH_PORT,
        }
    }
}

impl Default for Compatibility {
    fn default() -> Self {
        Compatibility {
            annotation_prefix: default_annotation_prefix(),
            subnet_file: default_subnet_file(),
        }
    }
}

impl PodNetwork {
    /// A pod network over `cidrs` with default node prefixes and subnet source.
    pub fn new(cidrs: impl IntoIterator<Item = impl Into<String>>) -> Self {
        PodNetwork {
            cidrs: cidrs.into_iter().map(Into::into).collect(),
            node_prefix_length: NodePrefixLength::default(),
            subnet_source: SubnetSource::default(),
        }
    }
}

impl NetworkFabricSpec {
    /// A spec with every field defaulted except the pod CIDRs.
    pub fn with_cidrs(cidrs: impl IntoIterator<Item = impl Into<String>>) -> Self {
        NetworkFabricSpec {
            pod_network: PodNetwork::new(cidrs),
            overlay: Overlay::default(),
            masquerade: Masquerade::default(),
            policy: Policy::default(),
            cni: Cni::default(),
            agent: Agent::default(),
            compatibility: Compatibility::default(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_vni() -> i32 {
    DEFAULT_VNI
}
fn default_vxlan_port() -> i32 {
    DEFAULT_VXLAN_PORT
}
fn default_node_prefix_v4() -> i32 {
    DEFAULT_NODE_PREFIX_V4
}
fn default_node_prefix_v6() -> i32 {
    DEFAULT_NODE_PREFIX_V6
}
fn default_cni_conf_dir() -> String {
    DEFAULT_CNI_CONF_DIR.to_owned()
}
fn default_cni_bin_dir() -> String {
    DEFAULT_CNI_BIN_DIR.to_owned()
}
fn default_cni_conf_name() -> String {
    DEFAULT_CNI_CONF_NAME.to_owned()
}
fn default_chained_plugins() -> Vec<ChainedPlugin> {
    vec![ChainedPlugin::Portmap]
}
fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(1)
}
fn default_metrics_port() -> i32 {
    DEFAULT_METRICS_PORT
}
fn default_health_port() -> i32 {
    DEFAULT_HEALTH_PORT
}
fn default_annotation_prefix() -> String {
    DEFAULT_ANNOTATION_PREFIX.to_owned()
}
fn default_subnet_file() -> String {
    DEFAULT_SUBNET_FILE.to_owned()
}
