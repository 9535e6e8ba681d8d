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
//! The pure core ([`subnet`], [`cni`], the `plan_*` half of [`uplink`]) does no I/O and is tested
//! with tables and golden files; the edges ([`node`], [`files`], [`uplink::read_interfaces`],
//! [`health`]) only execute what the core computed.
//!
//! What this agent does not do yet, on purpose (each comes with its own issue, not as a stub): the
//! VXLAN and host-gw overlay (devices, neighbours, FDB, routes toward peers), masquerading, and the
//! network-policy engine. Until the overlay lands, pods on one node reach each other and their node,
//! and the node publishes everything a flannel-compatible peer needs (lease annotations, VtepMAC).

pub mod agent;
pub mod cni;
pub mod config;
pub mod error;
pub mod files;
pub mod health;
pub mod node;
pub mod subnet;
pub mod uplink;

pub use error::Error;
