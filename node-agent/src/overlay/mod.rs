//! The overlay: how pod traffic reaches the pods of other nodes.
//!
//! ```text
//!   peers (Nodes: podCIDRs + flannel annotations) ──► plan (pure) ──► Datapath (desired)
//!                                                                        │
//!   kernel (netlink dump, weft-owned objects only) ──► Datapath (observed) ┤
//!                                                                        ▼
//!                                                     diff (pure) ──► Changes ──► netlink (apply)
//! ```
//!
//! The backends are flannel's, wire-compatible, so flannel and weft nodes share one cluster:
//! - `vxlan`: device `flannel.<VNI>` (`flannel-v6.<VNI>` for IPv6), learning off, local address the
//!   node's, UDP port the fabric's, address `<subnet>.0/32` (`<subnet>::/128`); per remote node a
//!   permanent neighbour `<remote subnet>.0 → remote VtepMAC`, an FDB entry `remote VtepMAC →
//!   remote node IP` and a route `<remote subnet> via <remote subnet>.0 dev flannel.<VNI> onlink`.
//!   With `directRouting`, a peer on the same L2 segment gets a plain route via its node address.
//! - `host-gw`: a route `<remote subnet> via <remote node IP>`; a peer that is not on the same
//!   segment is reported, never half-routed.
//!
//! Where flannel decides and installs routes in one function, weft computes the whole desired
//! state as a value ([`plan::plan_datapath`]), diffs it against what the kernel holds
//! ([`diff::diff_datapath`]) and the netlink layer only executes the difference. So a re-sync of an
//! unchanged world writes nothing, start-up never flushes (an agent restart drops no packet), and
//! whatever belongs to a node that is gone, also from before a restart, is removed.
//!
//! With `vxlan`, the encapsulating packets skip connection tracking ([`untracked`], ADR 0305).
//!
//! Ownership (weft only touches what it can prove is its own): VXLAN devices named
//! `flannel.<n>`/`flannel-v6.<n>` (flannel's names: weft takes over a flannel node in place), the
//! neighbours and FDB entries on those devices, routes out of those devices, and routes anywhere
//! else that carry weft's route protocol [`ROUTE_PROTOCOL`].

pub mod diff;
pub mod fake;
pub mod netlink;
pub mod plan;
pub mod untracked;

use std::fmt;
use std::net::IpAddr;

use weft_crds::{IpCidr, IpFamily};

use crate::flannel::Mac;

/// Prefix of the IPv4 VXLAN device name (flannel's): `flannel.<VNI>`.
pub const VXLAN_DEVICE_PREFIX_V4: &str = "flannel.";
/// Prefix of the IPv6 VXLAN device name (flannel's): `flannel-v6.<VNI>`.
pub const VXLAN_DEVICE_PREFIX_V6: &str = "flannel-v6.";
/// The route protocol (`rtm_protocol`) of weft's routes that do not leave through a weft device
/// (host-gw and direct routes). `ip route` shows it as `proto 87` ("W"); unassigned in the
/// kernel's and iproute2's tables. Routes of other protocols there are never removed.
pub const ROUTE_PROTOCOL: u8 = 87;

/// The VXLAN device name of `family` for `vni`.
pub fn vxlan_device_name(family: IpFamily, vni: u32) -> String {
    match family {
        IpFamily::V4 => format!("{VXLAN_DEVICE_PREFIX_V4}{vni}"),
        IpFamily::V6 => format!("{VXLAN_DEVICE_PREFIX_V6}{vni}"),
    }
}

/// Whether `name` is one of weft's (flannel's) VXLAN device names, whatever the VNI.
pub fn is_vxlan_device_name(name: &str) -> bool {
    [VXLAN_DEVICE_PREFIX_V6, VXLAN_DEVICE_PREFIX_V4]
        .iter()
        .any(|p| {
            name.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// A VXLAN device as weft wants it (and as it reads one back from the kernel).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VxlanDevice {
    /// `flannel.<VNI>` or `flannel-v6.<VNI>`.
    pub name: String,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The UDP destination port.
    pub port: u16,
    /// The local (source) address: the node's underlay address of the device's family.
    pub local: IpAddr,
    /// The underlay interface the device is bound to.
    pub uplink: String,
    /// The device MTU.
    pub mtu: u32,
    /// The device's MAC: the node's VTEP MAC, which peers hold in their FDB.
    pub mac: Mac,
    /// The device's addresses: desired, exactly `<subnet>.0/32` or `<subnet>::/128`.
    pub addresses: Vec<IpCidr>,
    /// Whether the device is up.
    pub up: bool,
    /// Whether transmit checksum offload stays on (`overlay.txChecksumOffload`).
    pub tx_checksum_offload: bool,
}

/// A permanent neighbour: the remote VTEP's address `<remote subnet>.0` answers at its MAC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    /// The VXLAN device.
    pub device: String,
    /// `<remote subnet>.0`.
    pub ip: IpAddr,
    /// The remote VTEP MAC.
    pub mac: Mac,
}

/// A forwarding-database entry: frames for `mac` go to the node at `remote`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    /// The VXLAN device.
    pub device: String,
    /// The remote VTEP MAC.
    pub mac: Mac,
    /// The remote node's underlay address.
    pub remote: IpAddr,
}

/// A route to a remote node's pod subnet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The remote pod subnet.
    pub destination: IpCidr,
    /// The next hop: `<remote subnet>.0` (vxlan) or the remote node address (host-gw, direct).
    pub gateway: IpAddr,
    /// The outgoing device.
    pub device: String,
    /// `onlink`: the gateway is not in a subnet of the device (vxlan's `<subnet>.0`).
    pub onlink: bool,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} via {} dev {}{}",
            self.destination,
            self.gateway,
            self.device,
            if self.onlink { " onlink" } else { "" }
        )
    }
}

/// The overlay's kernel state on one node: what weft wants, or what weft owns in the kernel.
/// Sorted collections, so equal states compare equal and plans print deterministically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Datapath {
    /// VXLAN devices (none for host-gw).
    pub devices: Vec<VxlanDevice>,
    /// Permanent neighbours on the VXLAN devices.
    pub neighbours: std::collections::BTreeSet<Neighbour>,
    /// FDB entries on the VXLAN devices.
    pub fdb: std::collections::BTreeSet<FdbEntry>,
    /// Routes to remote pod subnets.
    pub routes: std::collections::BTreeSet<Route>,
}
