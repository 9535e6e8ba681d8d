//! weft-agent, the per-node agent of weft, as a library (the binary is `src/main.rs`).
//!
//! ```text
//!   /etc/weft/agent.yaml ──┐          own Node (watch, field selector metadata.name=NODE_NAME)
//!                          ▼                       │
//!                    ┌───────────┐  gather         ▼
//!                    │  agent    │◄──────── spec.podCIDRs, status.addresses, annotations
//!                    │ (sync)    │◄──────── local interfaces (getifaddrs, /sys/class/net/*/mtu)
//!                    └─────┬─────┘
//!          plan (pure)     │  subnet::plan_lease → uplink::plan_uplink → uplink::plan_mtu
//!                          │  subnet::plan_vtep_macs → subnet::render_annotations
//!                          │  subnet::render_subnet_env → cni::render_conflist
//!          apply (effects) ▼
//!   node annotations (patch) · NetworkUnavailable=False (status patch) · subnet.env · conflist
//! ```
//!
//! Rooms (DESIGN §4, "Where each part lives"), each with its pure plan apart from its effects:
//!
//! | room | what |
//! |---|---|
//! | [`agent`] | the event loop, the pure node [`agent::plan()`], and the order one sync applies its steps |
//! | [`subnet`] | the lease from `Node.spec.podCIDRs`, `subnet.env`, the `NetworkUnavailable` condition |
//! | [`flannel`] | flannel's annotations: render our own, parse our peers'; the stable VTEP MAC |
//! | [`uplink`] | which interface and address carry the overlay, the MTU (plan) · reading interfaces (I/O) |
//! | [`cni`] | the conflist · installing the plugin · the `weft` plugin itself ([`cni::plugin`]: veth wiring and host-local-compatible IPAM, the `weft-cni` binary) |
//! | [`overlay`] | VXLAN / directRouting / host-gw to the peers: plan (pure), diff, netlink applier, GC of weft-owned state · the untracked table (`weft-raw`) |
//! | [`fastpath`] | the pod-to-pod eBPF fast path (`bpf/fastpath.bpf.c`): its configuration and devices (pure) · loading, tc filters, pod veths (libbpf) · on only while no policy exists |
//! | [`masquerade`] | weft's nat table: plan and render (pure) · sync through [`nft`] |
//! | [`policy`] | the policy watches feeding the `weft-policy` crate (index → compile → render), the engine applying its output through [`nft`], drop counters, `explain` |
//! | [`nft`] | one nftables transaction applier (trait, `nft` binary, in-process libnftables, text fake), shared by masquerade and policy; pod churn as native netlink element batches |
//! | [`observe`] | health, readiness, metrics and their HTTP servers (and the policy verdict endpoint) |
//! | [`files`], [`config`] | atomic file writes; loading and watching the configuration |
//!
//! The pure parts are tested with tables and golden files; the edges only execute what they computed.

pub mod agent;
pub mod cni;
pub mod config;
pub mod error;
pub mod fastpath;
pub mod files;
pub mod flannel;
pub mod masquerade;
pub mod nft;
pub mod observe;
pub mod overlay;
pub mod policy;
pub mod subnet;
pub mod uplink;

pub use error::Error;
