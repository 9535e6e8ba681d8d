//! The overlay's kernel edge: reading weft's objects through netlink dumps and executing a
//! [`Changes`] value, with rtnetlink (the rust-netlink family, as netavark and youki use).
//!
//! Invariants: [`Kernel::observe`] returns only objects weft owns (see [`super`]); [`Kernel::apply`]
//! executes every operation even when some fail (one peer's error never stops the others) and
//! reports each failure with the object it concerns. No shelling out to `ip`, `bridge` or
//! `ethtool`: TX checksum offload is set with the `SIOCETHTOOL` ioctl, as ethtool itself does.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use tracing::{debug, trace};
use weft_crds::IpCidr;

use super::diff::{Changes, DeviceUpdate};
use super::{
    Datapath, FdbEntry, Neighbour, ROUTE_PROTOCOL, Route, VxlanDevice, is_vxlan_device_name,
};
use crate::Error;
use crate::flannel::Mac;

/// One failed kernel operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpFailure {
    /// The operation, e.g. `add_route` (a metric label).
    pub op: &'static str,
    /// The object, e.g. `10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink`.
    pub object: String,
    /// The kernel's answer.
    pub error: String,
}

impl std::fmt::Display for OpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.op, self.object, self.error)
    }
}

/// What an [`Kernel::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Successful operations by kind.
    pub done: BTreeMap<&'static str, u64>,
    /// Failed operations.
    pub failures: Vec<OpFailure>,
}

impl ApplyReport {
    fn record(&mut self, op: &'static str, object: impl std::fmt::Display, r: Result<(), String>) {
        match r {
            Ok(()) => *self.done.entry(op).or_default() += 1,
            Err(error) => self.failures.push(OpFailure {
                op,
                object: object.to_string(),
                error,
            }),
        }
    }
}

/// The kernel as the overlay sees it (the real one is [`Netlink`]; tests can fake it).
pub trait Kernel {
    /// The weft-owned overlay state the kernel holds now.
    fn observe(&self) -> impl Future<Output = Result<Datapath, Error>> + Send;
    /// Which of `addrs` the kernel reaches without a gateway (same L2 segment).
    fn on_link(&self, addrs: &[IpAddr]) -> impl Future<Output = BTreeSet<IpAddr>> + Send;
    /// Executes `changes` in their order, every operation even when some fail.
    fn apply(&self, changes: &Changes) -> impl Future<Output = ApplyReport> + Send;
}

/// The real kernel, over one rtnetlink socket of the agent's network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the netlink socket and spawns its connection task on the current tokio runtime.
    pub fn connect() -> Result<Netlink, Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::NetlinkSocket)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    async fn links(&self) -> Result<Vec<LinkMessage>, Error> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| netlink_error("dump links", source))
    }

    async fn index_of(&self, name: &str) -> Result<u32, String> {
        let links = self.links().await.map_err(|e| e.to_string())?;
        links
            .iter()
            .find(|l| link_name(l) == Some(name))
            .map(|l| l.header.index)
            .ok_or_else(|| format!("no interface {name}"))
    }
}

fn netlink_error(what: &'static str, source: rtnetlink::Error) -> Error {
    Error::Netlink { what, source }
}

pub(crate) fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(bytes).ok().map(Mac)
}

/// The VXLAN settings of a link, if it is a VXLAN device.
fn vxlan_info(l: &LinkMessage) -> Option<&[InfoVxlan]> {
    let infos = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(i) => Some(i),
        _ => None,
    })?;
    if !infos
        .iter()
        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)))
    {
        return None;
    }
    infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.as_slice()),
        _ => None,
    })
}

pub(crate) fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn neigh_addr(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        // AF_BRIDGE (FDB) messages carry the VXLAN remote untyped: 4 or 16 bytes.
        NeighbourAddress::Other(b) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

fn neigh_parts(m: &NeighbourMessage) -> (Option<IpAddr>, Option<Mac>) {
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(d) => ip = neigh_addr(d),
            NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
            _ => {}
        }
    }
    (ip, mac)
}

impl Kernel for Netlink {
    async fn observe(&self) -> Result<Datapath, Error> {
        let links = self.links().await?;
        let names: BTreeMap<u32, String> = links
            .iter()
            .filter_map(|l| link_name(l).map(|n| (l.header.index, n.to_owned())))
            .collect();
        let mut out = Datapath::default();
        let mut ours: BTreeMap<u32, String> = BTreeMap::new();
        for l in &links {
            let Some(name) = link_name(l) else { continue };
            let Some(info) = vxlan_info(l) else { continue };
            if !is_vxlan_device_name(name) {
                continue;
            }
            let mut dev = VxlanDevice {
                name: name.to_owned(),
                vni: 0,
                port: 0,
                local: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                uplink: String::new(),
                mtu: 0,
                mac: Mac([0; 6]),
                addresses: Vec::new(),
                up: l.header.flags.contains(LinkFlags::Up),
                tx_checksum_offload: ethtool::tx_checksum(name).unwrap_or(true),
            };
            for i in info {
                match i {
                    InfoVxlan::Id(v) => dev.vni = *v,
                    InfoVxlan::Port(p) => dev.port = *p,
                    InfoVxlan::Local(a) => dev.local = IpAddr::V4(*a),
                    InfoVxlan::Local6(a) => dev.local = IpAddr::V6(*a),
                    InfoVxlan::Link(idx) => {
                        dev.uplink = names.get(idx).cloned().unwrap_or_default()
                    }
                    _ => {}
                }
            }
            for a in &l.attributes {
                match a {
                    LinkAttribute::Mtu(m) => dev.mtu = *m,
                    LinkAttribute::Address(b) => dev.mac = mac_of(b).unwrap_or(Mac([0; 6])),
                    _ => {}
                }
            }
            let addrs: Vec<_> = self
                .handle
                .address()
                .get()
                .set_link_index_filter(l.header.index)
                .execute()
                .try_collect()
                .await
                .map_err(|source| netlink_error("dump addresses", source))?;
            for a in addrs {
                // The kernel's own link-local IPv6 address is not weft's to manage.
                let Some(ip) = a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                }) else {
                    continue;
                };
                if let IpAddr::V6(v6) = ip
                    && v6.is_unicast_link_local()
                {
                    continue;
                }
                // As a host prefix: removal goes by address, whatever prefix it was added with.
                dev.addresses.push(IpCidr::host(ip));
            }
            dev.addresses.sort();
            ours.insert(l.header.index, name.to_owned());
            out.devices.push(dev);
        }
        out.devices.sort();

        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let neigh: Vec<NeighbourMessage> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_collect()
                .await
                .map_err(|source| netlink_error("dump neighbours", source))?;
            for n in neigh {
                let Some(device) = ours.get(&n.header.ifindex) else {
                    continue;
                };
                if n.header.state != NeighbourState::Permanent {
                    continue;
                }
                if let (Some(ip), Some(mac)) = neigh_parts(&n) {
                    out.neighbours.insert(Neighbour {
                        device: device.clone(),
                        ip,
                        mac,
                    });
                }
            }
        }
        let fdb: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|source| netlink_error("dump fdb", source))?;
        for f in fdb {
            let Some(device) = ours.get(&f.header.ifindex) else {
                continue;
            };
            if let (Some(remote), Some(mac)) = neigh_parts(&f) {
                out.fdb.insert(FdbEntry {
                    device: device.clone(),
                    mac,
                    remote,
                });
            }
        }

        for builder in [RouteMessageBuilder::<IpAddr>::new().build(), {
            let mut m = RouteMessageBuilder::<IpAddr>::new().build();
            m.header.address_family = AddressFamily::Inet6;
            m
        }] {
            let mut req = builder;
            if req.header.address_family == AddressFamily::Unspec {
                req.header.address_family = AddressFamily::Inet;
            }
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(req)
                .execute()
                .try_collect()
                .await
                .map_err(|source| netlink_error("dump routes", source))?;
            for r in routes {
                if let Some(route) = owned_route(&r, &names, &ours) {
                    out.routes.insert(route);
                }
            }
        }
        trace!(?out, "observed overlay state");
        Ok(out)
    }

    async fn on_link(&self, addrs: &[IpAddr]) -> BTreeSet<IpAddr> {
        let mut out = BTreeSet::new();
        for &ip in addrs {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            let Ok(b) = RouteMessageBuilder::<IpAddr>::new().destination_prefix(ip, prefix) else {
                continue;
            };
            let answer: Result<Vec<RouteMessage>, _> = self
                .handle
                .route()
                .get(b.build())
                .execute()
                .try_collect()
                .await;
            if let Ok(routes) = answer
                && let Some(r) = routes.first()
                && !r
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Gateway(_) | RouteAttribute::Via(_)))
            {
                out.insert(ip);
            }
        }
        out
    }

    async fn apply(&self, changes: &Changes) -> ApplyReport {
        let mut report = ApplyReport::default();
        debug!(%changes, "applying overlay changes");
        for (name, reason) in &changes.delete_devices {
            let r = async {
                let idx = self.index_of(name).await?;
                self.handle
                    .link()
                    .del(idx)
                    .execute()
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            debug!(device = %name, %reason, "deleting device");
            report.record("delete_device", name, r);
        }
        for dev in &changes.create_devices {
            let r = self.create_device(dev).await;
            report.record("create_device", &dev.name, r);
        }
        for u in &changes.update_devices {
            self.update_device(u, &mut report).await;
        }
        let mut index: BTreeMap<String, u32> = BTreeMap::new();
        if let Ok(links) = self.links().await {
            for l in &links {
                if let Some(n) = link_name(l) {
                    index.insert(n.to_owned(), l.header.index);
                }
            }
        }
        let idx = |name: &str| {
            index
                .get(name)
                .copied()
                .ok_or_else(|| format!("no interface {name}"))
        };
        for f in &changes.add_fdb {
            let r = async {
                let i = idx(&f.device)?;
                self.handle
                    .neighbours()
                    .add_bridge(i, &f.mac.0)
                    .flags(NeighbourFlags::Own)
                    .destination(f.remote)
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            report.record(
                "add_fdb",
                format_args!("{} dst {} dev {}", f.mac, f.remote, f.device),
                r,
            );
        }
        for n in &changes.add_neighbours {
            let r = async {
                let i = idx(&n.device)?;
                self.handle
                    .neighbours()
                    .add(i, n.ip)
                    .link_layer_address(&n.mac.0)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            report.record(
                "add_neighbour",
                format_args!("{} lladdr {} dev {}", n.ip, n.mac, n.device),
                r,
            );
        }
        for route in &changes.add_routes {
            let r = async {
                let msg = route_message(route, idx(&route.device)?)?;
                self.handle
                    .route()
                    .add(msg)
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            report.record("add_route", route, r);
        }
        for route in &changes.del_routes {
            let r = async {
                let msg = route_message(route, idx(&route.device)?)?;
                self.handle
                    .route()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            report.record("del_route", route, r);
        }
        for n in &changes.del_neighbours {
            let r = async {
                let i = idx(&n.device)?;
                let mut m = NeighbourMessage::default();
                m.header.family = if n.ip.is_ipv4() {
                    AddressFamily::Inet
                } else {
                    AddressFamily::Inet6
                };
                m.header.ifindex = i;
                m.attributes
                    .push(NeighbourAttribute::Destination(neighbour_address(n.ip)));
                self.handle
                    .neighbours()
                    .del(m)
                    .execute()
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            report.record(
                "del_neighbour",
                format_args!("{} dev {}", n.ip, n.device),
                r,
            );
        }
        for f in &changes.del_fdb {
            let r = async {
                let i = idx(&f.device)?;
                let mut m = NeighbourMessage::default();
                m.header.family = AddressFamily::Bridge;
                m.header.ifindex = i;
                m.header.flags = NeighbourFlags::Own;
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
                m.attributes
                    .push(NeighbourAttribute::Destination(neighbour_address(f.remote)));
                self.handle
                    .neighbours()
                    .del(m)
                    .execute()
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            report.record(
                "del_fdb",
                format_args!("{} dst {} dev {}", f.mac, f.remote, f.device),
                r,
            );
        }
        report
    }
}

impl Netlink {
    async fn create_device(&self, dev: &VxlanDevice) -> Result<(), String> {
        let uplink = self.index_of(&dev.uplink).await?;
        let mut b = LinkVxlan::new(&dev.name, dev.vni)
            .dev(uplink)
            .port(dev.port)
            .learning(false)
            .mtu(dev.mtu)
            .address(dev.mac.0.to_vec());
        b = match dev.local {
            IpAddr::V4(a) => b.local(a),
            IpAddr::V6(a) => b.local6(a),
        };
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(|e| e.to_string())?;
        let idx = self.index_of(&dev.name).await?;
        if !dev.tx_checksum_offload {
            ethtool::set_tx_checksum(&dev.name, false).map_err(|e| e.to_string())?;
        }
        for a in &dev.addresses {
            self.handle
                .address()
                .add(idx, a.addr(), a.prefix_len())
                .execute()
                .await
                .map_err(|e| format!("address {a}: {e}"))?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(|e| e.to_string())
    }

    async fn update_device(&self, u: &DeviceUpdate, report: &mut ApplyReport) {
        let idx = match self.index_of(&u.name).await {
            Ok(i) => i,
            Err(e) => {
                report.record("update_device", &u.name, Err(e));
                return;
            }
        };
        if u.mtu.is_some() || u.mac.is_some() {
            let mut b = LinkUnspec::new_with_index(idx);
            if let Some(mtu) = u.mtu {
                b = b.mtu(mtu);
            }
            if let Some(mac) = u.mac {
                b = b.address(mac.0.to_vec());
            }
            let r = self
                .handle
                .link()
                .set(b.build())
                .execute()
                .await
                .map_err(|e| e.to_string());
            report.record("update_device", &u.name, r);
        }
        if let Some(on) = u.tx_checksum_offload {
            let r = ethtool::set_tx_checksum(&u.name, on).map_err(|e| e.to_string());
            report.record("set_tx_checksum", &u.name, r);
        }
        for a in &u.add_addresses {
            let r = self
                .handle
                .address()
                .add(idx, a.addr(), a.prefix_len())
                .execute()
                .await
                .map_err(|e| e.to_string());
            report.record("add_address", format_args!("{a} dev {}", u.name), r);
        }
        for a in &u.del_addresses {
            let r = async {
                let found: Vec<_> = self
                    .handle
                    .address()
                    .get()
                    .set_link_index_filter(idx)
                    .set_address_filter(a.addr())
                    .execute()
                    .try_collect()
                    .await
                    .map_err(|e| e.to_string())?;
                for m in found {
                    self.handle
                        .address()
                        .del(m)
                        .execute()
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            .await;
            report.record("del_address", format_args!("{a} dev {}", u.name), r);
        }
        if u.up {
            let r = self
                .handle
                .link()
                .set(LinkUnspec::new_with_index(idx).up().build())
                .execute()
                .await
                .map_err(|e| e.to_string());
            report.record("set_up", &u.name, r);
        }
    }
}

/// A route of the main table that weft owns: out of one of its devices (not the kernel's own), or
/// with weft's route protocol.
fn owned_route(
    r: &RouteMessage,
    names: &BTreeMap<u32, String>,
    ours: &BTreeMap<u32, String>,
) -> Option<Route> {
    if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.kind != RouteType::Unicast {
        return None;
    }
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = route_addr(d),
            RouteAttribute::Gateway(g) => gateway = route_addr(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) if *t != u32::from(RouteHeader::RT_TABLE_MAIN) => return None,
            _ => {}
        }
    }
    let oif = oif?;
    let on_our_device = ours.contains_key(&oif) && r.header.protocol != RouteProtocol::Kernel;
    let our_protocol = r.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL);
    if !on_our_device && !our_protocol {
        return None;
    }
    let destination =
        IpCidr::parse_lenient(&format!("{}/{}", dst?, r.header.destination_prefix_length)).ok()?;
    Some(Route {
        destination,
        gateway: gateway?,
        device: names.get(&oif)?.clone(),
        onlink: r.header.flags.contains(RouteFlags::Onlink),
    })
}

fn route_message(route: &Route, oif: u32) -> Result<RouteMessage, String> {
    let b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.destination.addr(), route.destination.prefix_len())
        .and_then(|b| b.gateway(route.gateway))
        .map_err(|e| e.to_string())?;
    let b = b
        .output_interface(oif)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
    let b = if route.onlink { b.onlink() } else { b };
    Ok(b.build())
}

/// TX checksum offload through the `SIOCETHTOOL` ioctl (`ETHTOOL_GTXCSUM`/`ETHTOOL_STXCSUM`), the
/// calls behind `ethtool -K <dev> tx on|off`.
pub mod ethtool {
    use std::io;

    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GTXCSUM: u32 = 0x16;
    const ETHTOOL_STXCSUM: u32 = 0x17;

    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }

    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }

    fn call(device: &str, cmd: u32, data: u32) -> io::Result<u32> {
        if device.len() >= libc::IFNAMSIZ || device.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{device:?} is not an interface name"),
            ));
        }
        let mut value = EthtoolValue { cmd, data };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: &mut value,
            _pad: [0; 16],
        };
        for (slot, b) in req.name.iter_mut().zip(device.bytes()) {
            *slot = b as libc::c_char;
        }
        // SAFETY: a plain datagram socket, closed below; the ioctl reads `req` (a NUL-terminated
        // name and a pointer to `value`, both alive for the call) and writes only into `value`.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: see above.
        let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReq) };
        let err = io::Error::last_os_error();
        // SAFETY: `fd` is the socket opened above and not used afterwards.
        unsafe { libc::close(fd) };
        if rc < 0 {
            return Err(err);
        }
        Ok(value.data)
    }

    /// Whether TX checksum offload is on for `device`.
    pub fn tx_checksum(device: &str) -> io::Result<bool> {
        call(device, ETHTOOL_GTXCSUM, 0).map(|v| v != 0)
    }

    /// Turns TX checksum offload on or off for `device`.
    pub fn set_tx_checksum(device: &str, on: bool) -> io::Result<()> {
        call(device, ETHTOOL_STXCSUM, u32::from(on)).map(|_| ())
    }
}
