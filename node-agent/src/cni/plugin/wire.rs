//! The plugin's kernel side: a routed veth between the node and a pod, over rtnetlink.
//!
//! The layout is the reference `ptp` plugin's (what Canal's and Calico's routed pod interfaces look
//! like), so that pods wired by either plugin look the same and either can delete them:
//!
//! ```text
//!  node netns                                 pod netns
//!  veth<8 hex>  up, mtu M                     <ifname> (eth0)  up, mtu M
//!    <gw>/32 (/128)                             <ip>/<subnet prefix>   (no prefix route)
//!    route <ip>/32 (/128) scope host            route <gw>/32 scope link src <ip>
//!                                               route <subnet> via <gw> src <ip>
//!                                               routes of the IPAM result (0.0.0.0/0 via <gw>)
//! ```
//!
//! Differences from ptp, none visible to the pod: the veth is created from the node's side with its
//! peer placed straight into the pod (one request); addresses carry `noprefixroute` instead of
//! having their prefix route deleted afterwards; IPv6 addresses carry `nodad` (the veth has exactly
//! one neighbour, so duplicate detection can find nothing, and ptp's wait for it costs up to 5 s);
//! the host end's name is a hash of the attachment (container ID and interface), so it is the same
//! on every retry and says which pod it belongs to.
//!
//! Invariant: [`add`] either returns with every object in place or removes the veth pair it
//! created (the pod's addresses and routes go with it); [`del`] succeeds when the netns or the
//! interface is already gone.

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use nix::sched::CloneFlags;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use weft_crds::IpCidr;

use super::{Interface, IpConfig, Route};

/// Errors of the kernel side.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The pod's network namespace cannot be opened.
    #[error("failed to open the network namespace {path}")]
    OpenNetns {
        /// `CNI_NETNS`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Switching the thread's network namespace failed.
    #[error("failed to enter the network namespace {what}")]
    Setns {
        /// Which one.
        what: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The netlink socket or its runtime cannot be created.
    #[error("failed to open a netlink socket")]
    Socket(#[source] std::io::Error),
    /// A netlink request failed.
    #[error("failed to {what}")]
    Netlink {
        /// The operation and its object.
        what: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A sysctl cannot be read or written.
    #[error("failed to set {path} to {value}")]
    Sysctl {
        /// The /proc/sys path.
        path: String,
        /// The value.
        value: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The pod already has an interface of that name.
    #[error(
        "interface {ifname:?} already exists in {netns}; was ADD called twice for one attachment?"
    )]
    Exists {
        /// `CNI_IFNAME`.
        ifname: String,
        /// `CNI_NETNS`.
        netns: PathBuf,
    },
    /// CHECK found the attachment not as ADD left it.
    #[error("{0}")]
    Mismatch(String),
}

/// What [`add`] wires.
#[derive(Clone, Debug)]
pub struct Attachment<'a> {
    /// `CNI_NETNS`.
    pub netns: &'a Path,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// The host end's name ([`host_veth_name`]).
    pub host_ifname: String,
    /// MTU of both ends; 0 leaves the kernel's default.
    pub mtu: u32,
    /// The pod's addresses, each with its gateway.
    pub ips: &'a [IpConfig],
    /// Routes in the pod besides the two per address.
    pub routes: &'a [Route],
}

/// The host end's name for an attachment: `veth` and 8 hex digits of an FNV-1a hash of the
/// container ID and interface name (`veth*` is what NetworkManager leaves alone). Pure.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([b'/']).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("veth{:08x}", (h ^ (h >> 32)) as u32)
}

/// The two network namespaces and a netlink handle in each.
struct Sides {
    node: Handle,
    pod: Handle,
    node_ns: File,
    pod_ns: File,
    pod_path: PathBuf,
}

impl Sides {
    /// Opens both sides; the thread stays in the node's namespace. Needs a tokio runtime.
    fn open(pod_path: &Path) -> Result<Sides, WireError> {
        let pod_ns = File::open(pod_path).map_err(|source| WireError::OpenNetns {
            path: pod_path.to_path_buf(),
            source,
        })?;
        let node_ns =
            File::open("/proc/thread-self/ns/net").map_err(|source| WireError::OpenNetns {
                path: "/proc/thread-self/ns/net".into(),
                source,
            })?;
        let node = connect()?;
        let pod = in_netns(&pod_ns, pod_path, &node_ns, connect)??;
        Ok(Sides {
            node,
            pod,
            node_ns,
            pod_ns,
            pod_path: pod_path.to_path_buf(),
        })
    }

    /// Runs `f` with the thread in the pod's namespace (for its /proc/sys/net).
    fn in_pod<T>(&self, f: impl FnOnce() -> T) -> Result<T, WireError> {
        in_netns(&self.pod_ns, &self.pod_path, &self.node_ns, f)
    }
}

fn connect() -> Result<Handle, WireError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(WireError::Socket)?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Runs `f` with the calling thread in `ns`, then returns it to `back` (also when `f` fails).
fn in_netns<T>(ns: &File, path: &Path, back: &File, f: impl FnOnce() -> T) -> Result<T, WireError> {
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(|source| WireError::Setns {
        what: path.display().to_string(),
        source,
    })?;
    let out = f();
    nix::sched::setns(back, CloneFlags::CLONE_NEWNET).map_err(|source| WireError::Setns {
        what: "of the node (returning from the pod's)".into(),
        source,
    })?;
    Ok(out)
}

/// A current-thread runtime: the plugin is one short process, and namespace switches are
/// per thread.
fn block_on<T>(f: impl Future<Output = Result<T, WireError>>) -> Result<T, WireError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(WireError::Socket)?
        .block_on(f)
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> WireError {
    let what = what.into();
    move |source| WireError::Netlink { what, source }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// Wires the attachment; returns the host end and the pod end, in the result's order.
pub fn add(a: &Attachment<'_>) -> Result<(Interface, Interface), WireError> {
    block_on(async {
        let sides = Sides::open(a.netns)?;
        if link_by_name(&sides.pod, a.ifname).await?.is_some() {
            return Err(WireError::Exists {
                ifname: a.ifname.to_string(),
                netns: a.netns.to_path_buf(),
            });
        }
        let host_name = create_veth(&sides, a).await?;
        match configure(&sides, a, &host_name).await {
            Ok(ends) => Ok(ends),
            Err(e) => {
                // Deleting either end removes the pair, and the pod's addresses and routes with it.
                if let Ok(Some(l)) = link_by_name(&sides.node, &host_name).await {
                    let _ = sides.node.link().del(l.header.index).execute().await;
                }
                Err(e)
            }
        }
    })
}

/// Creates the pair from the node's side, the peer straight in the pod; returns the host end's
/// name (the hashed one, or a random one if that is taken, as ptp retries).
async fn create_veth(sides: &Sides, a: &Attachment<'_>) -> Result<String, WireError> {
    let mut name = a.host_ifname.clone();
    for attempt in 0..10 {
        // One TX and one RX queue on each end, asked for: the kernel would otherwise make one
        // per possible CPU and then cut the registered devices back to one each
        // (`veth_init_queues`), and each cut waits for an expedited RCU grace period with
        // rtnl_lock held, which every other ADD (and the agent) waits behind. The devices are
        // the same either way: one queue in use on each end, as ptp's.
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(a.ifname)
            .setns_by_fd(sides.pod_ns.as_raw_fd())
            .append_extra_attribute(LinkAttribute::NumTxQueues(1))
            .append_extra_attribute(LinkAttribute::NumRxQueues(1));
        let mut veth = LinkVeth::new(&name, a.ifname)
            .append_extra_attribute(LinkAttribute::NumTxQueues(1))
            .append_extra_attribute(LinkAttribute::NumRxQueues(1));
        if a.mtu > 0 {
            peer = peer.mtu(a.mtu);
            veth = veth.mtu(a.mtu);
        }
        let msg = veth
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        match sides.node.link().add(msg).execute().await {
            Ok(()) => return Ok(name),
            Err(e) if errno(&e) == Some(libc::EEXIST) && attempt < 9 => {
                if link_by_name(&sides.pod, a.ifname).await?.is_some() {
                    return Err(WireError::Exists {
                        ifname: a.ifname.to_string(),
                        netns: a.netns.to_path_buf(),
                    });
                }
                name = format!("veth{:08x}", random_u32());
            }
            Err(e) => return Err(nl(format!("create veth pair {name} / {}", a.ifname))(e)),
        }
    }
    unreachable!("the loop returns on its last attempt")
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most `b.len()` bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default())
    }
}

async fn configure(
    sides: &Sides,
    a: &Attachment<'_>,
    host_name: &str,
) -> Result<(Interface, Interface), WireError> {
    let has_v6 = a.ips.iter().any(|ip| ip.address.is_ipv6());
    let pod_link = link_by_name(&sides.pod, a.ifname).await?.ok_or_else(|| {
        WireError::Mismatch(format!("{} vanished after it was created", a.ifname))
    })?;
    let host_link = link_by_name(&sides.node, host_name)
        .await?
        .ok_or_else(|| WireError::Mismatch(format!("{host_name} vanished after it was created")))?;
    let (pod_ix, host_ix) = (pod_link.header.index, host_link.header.index);

    // Pod side.
    if has_v6 {
        sides.in_pod(|| {
            for iface in ["lo", a.ifname] {
                sysctl_at_least(&format!("net/ipv6/conf/{iface}/disable_ipv6"), "0", false)?;
            }
            sysctl_at_least(
                &format!("net/ipv6/conf/{}/keep_addr_on_down", a.ifname),
                "1",
                true,
            )
        })??;
    }
    set_up(&sides.pod, pod_ix, a.ifname).await?;
    for ip in a.ips {
        add_address(&sides.pod, pod_ix, ip.address, ip.prefix_len, a.ifname).await?;
    }
    for ip in a.ips {
        let Some(gw) = ip.gateway else { continue };
        let host_len = if gw.is_ipv4() { 32 } else { 128 };
        let to_gw = route(
            gw,
            host_len,
            pod_ix,
            Some(RouteScope::Link),
            None,
            Some(ip.address),
        )?;
        add_route(
            &sides.pod,
            to_gw,
            format!("add route {gw}/{host_len} dev {}", a.ifname),
        )
        .await?;
        let net = IpCidr::parse_lenient(&format!("{}/{}", ip.address, ip.prefix_len))
            .map_err(|e| WireError::Mismatch(format!("address {}: {e}", ip.address)))?
            .addr();
        let subnet = route(net, ip.prefix_len, pod_ix, None, Some(gw), Some(ip.address))?;
        add_route(
            &sides.pod,
            subnet,
            format!(
                "add route {net}/{} via {gw} dev {}",
                ip.prefix_len, a.ifname
            ),
        )
        .await?;
    }
    for r in a.routes {
        let dst_cidr: IpCidr = r
            .dst
            .parse()
            .map_err(|e| WireError::Mismatch(format!("route destination {:?}: {e}", r.dst)))?;
        let (dst, len) = (dst_cidr.addr(), dst_cidr.prefix_len());
        let gw = match r.gw.as_deref() {
            Some(g) => Some(g.parse::<IpAddr>().map_err(|_| {
                WireError::Mismatch(format!("route {}: gw {g:?} is not an IP address", r.dst))
            })?),
            None => None,
        };
        let gw = gw.or_else(|| {
            a.ips
                .iter()
                .find(|ip| ip.address.is_ipv4() == dst.is_ipv4())
                .and_then(|ip| ip.gateway)
        });
        let msg = route(dst, len, pod_ix, None, gw, None)?;
        add_route(
            &sides.pod,
            msg,
            format!("add route {} dev {}", r.dst, a.ifname),
        )
        .await?;
    }

    // Node side.
    set_up(&sides.node, host_ix, host_name).await?;
    if has_v6 {
        // We own this interface's routes (ptp does the same); best effort, as ptp.
        let _ = sysctl_at_least(&format!("net/ipv6/conf/{host_name}/accept_ra"), "0", true);
    }
    for ip in a.ips {
        let Some(gw) = ip.gateway else { continue };
        let host_len = if gw.is_ipv4() { 32 } else { 128 };
        add_address(&sides.node, host_ix, gw, host_len, host_name).await?;
        let to_pod = route(
            ip.address,
            host_len,
            host_ix,
            Some(RouteScope::Host),
            None,
            None,
        )?;
        match sides.node.route().add(to_pod).execute().await {
            Err(e) if errno(&e) != Some(libc::EEXIST) => {
                return Err(nl(format!(
                    "add route {}/{host_len} dev {host_name}",
                    ip.address
                ))(e));
            }
            _ => {}
        }
    }
    enable_forwarding(a.ips)?;

    let host = Interface {
        name: host_name.to_string(),
        mac: mac_of(&host_link),
        sandbox: None,
    };
    let pod = Interface {
        name: a.ifname.to_string(),
        mac: mac_of(&pod_link),
        sandbox: Some(a.netns.display().to_string()),
    };
    Ok((host, pod))
}

/// Removes the pod's interface (and so the pair). Fine when the netns or the interface is gone.
pub fn del(netns: &Path, ifname: &str) -> Result<(), WireError> {
    if !netns.exists() {
        return Ok(());
    }
    block_on(async {
        let sides = match Sides::open(netns) {
            Ok(s) => s,
            // Removed between the check and the open.
            Err(WireError::OpenNetns { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Some(l) = link_by_name(&sides.pod, ifname).await? else {
            return Ok(());
        };
        match sides.pod.link().del(l.header.index).execute().await {
            Err(e) if errno(&e) != Some(libc::ENODEV) => Err(nl(format!("delete {ifname}"))(e)),
            _ => Ok(()),
        }
    })
}

/// Verifies an attachment against the result ADD returned: the pod's interface up with each
/// address, its routes, and the host end with the gateways and the host routes.
pub fn check(
    netns: &Path,
    ifname: &str,
    host_ifname: &str,
    ips: &[IpConfig],
) -> Result<(), WireError> {
    block_on(async {
        let sides = Sides::open(netns)?;
        let missing = |what: String| WireError::Mismatch(what);
        let pod_link = link_by_name(&sides.pod, ifname).await?.ok_or_else(|| {
            missing(format!(
                "interface {ifname} is missing in {}",
                netns.display()
            ))
        })?;
        if !pod_link.header.flags.contains(LinkFlags::Up) {
            return Err(missing(format!("interface {ifname} is down")));
        }
        let host_link = link_by_name(&sides.node, host_ifname)
            .await?
            .ok_or_else(|| missing(format!("host interface {host_ifname} is missing")))?;
        let pod_addrs = addresses(&sides.pod, pod_link.header.index).await?;
        let host_addrs = addresses(&sides.node, host_link.header.index).await?;
        let pod_routes = routes(&sides.pod, pod_link.header.index).await?;
        let host_routes = routes(&sides.node, host_link.header.index).await?;
        for ip in ips {
            if !pod_addrs.contains(&(ip.address, ip.prefix_len)) {
                return Err(missing(format!(
                    "{ifname} lacks {}/{}",
                    ip.address, ip.prefix_len
                )));
            }
            let host_len = if ip.address.is_ipv4() { 32 } else { 128 };
            // The gateway first: without an address the kernel drops the device's routes too.
            if let Some(gw) = ip.gateway {
                if !host_addrs.contains(&(gw, host_len)) {
                    return Err(missing(format!(
                        "{host_ifname} lacks the gateway {gw}/{host_len}"
                    )));
                }
                if !pod_routes.contains(&(gw, host_len)) {
                    return Err(missing(format!(
                        "{ifname} has no route to the gateway {gw}"
                    )));
                }
            }
            if !host_routes.contains(&(ip.address, host_len)) {
                return Err(missing(format!(
                    "the node has no route to {}/{host_len} on {host_ifname}",
                    ip.address
                )));
            }
        }
        Ok(())
    })
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, WireError> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("look up {name}"))(e)),
    }
}

async fn set_up(h: &Handle, index: u32, name: &str) -> Result<(), WireError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {name} up")))
}

async fn add_address(
    h: &Handle,
    index: u32,
    addr: IpAddr,
    len: u8,
    name: &str,
) -> Result<(), WireError> {
    let mut req = h.address().add(index, addr, len);
    let mut flags = AddressFlags::Noprefixroute;
    if addr.is_ipv6() {
        flags |= AddressFlags::Nodad;
    }
    req.message_mut()
        .attributes
        .push(AddressAttribute::Flags(flags));
    req.execute()
        .await
        .map_err(nl(format!("add {addr}/{len} to {name}")))
}

async fn add_route(h: &Handle, r: RouteMessage, what: String) -> Result<(), WireError> {
    h.route().add(r).execute().await.map_err(nl(what))
}

/// A main-table route to `dst`/`len` out of `oif`.
fn route(
    dst: IpAddr,
    len: u8,
    oif: u32,
    scope: Option<RouteScope>,
    gw: Option<IpAddr>,
    src: Option<IpAddr>,
) -> Result<RouteMessage, WireError> {
    let bad = |e: String| WireError::Mismatch(format!("invalid route to {dst}/{len}: {e}"));
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst, len)
        .map_err(|e| bad(e.to_string()))?
        .output_interface(oif)
        // `boot`, as `ip route add` and ptp write them (rtnetlink's default is `static`).
        .protocol(RouteProtocol::Boot);
    if let Some(scope) = scope {
        b = b.scope(scope);
    }
    if let Some(gw) = gw {
        b = b.gateway(gw).map_err(|e| bad(e.to_string()))?;
    }
    if let Some(src) = src {
        b = b.pref_source(src).map_err(|e| bad(e.to_string()))?;
    }
    Ok(b.build())
}

/// `(address, prefix)` of every address on `index`.
async fn addresses(h: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, WireError> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses"))?;
    Ok(msgs
        .iter()
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some((*ip, m.header.prefix_len)),
                _ => None,
            })
        })
        .collect())
}

/// `(destination, prefix)` of every main-table route out of `index`, both families.
async fn routes(h: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, WireError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut q = RouteMessageBuilder::<IpAddr>::new().build();
        q.header.address_family = family;
        let msgs: Vec<RouteMessage> = h
            .route()
            .get(q)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list routes"))?;
        for m in msgs {
            let oif = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            let dst = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                _ => None,
            });
            if oif == Some(index)
                && let Some(dst) = dst
            {
                out.push((dst, m.header.destination_prefix_length));
            }
        }
    }
    Ok(out)
}

fn mac_of(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(b) => Some(
                b.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// Writes `value` to `/proc/sys/<key>` unless it already holds it; `strict`: a missing key is an
/// error (else it is skipped, e.g. IPv6 sysctls of a kernel booted without IPv6).
fn sysctl_at_least(key: &str, value: &'static str, strict: bool) -> Result<(), WireError> {
    let path = format!("/proc/sys/{key}");
    let err = |source| WireError::Sysctl {
        path: path.clone(),
        value,
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == value => Ok(()),
        Ok(_) => std::fs::write(&path, value).map_err(err),
        Err(e) if !strict && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Forwarding on in the node's namespace for the families in use (ptp does the same).
fn enable_forwarding(ips: &[IpConfig]) -> Result<(), WireError> {
    if ips.iter().any(|ip| ip.address.is_ipv4()) {
        sysctl_at_least("net/ipv4/ip_forward", "1", true)?;
    }
    if ips.iter().any(|ip| ip.address.is_ipv6()) {
        sysctl_at_least("net/ipv6/conf/all/forwarding", "1", true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("0123456789abcdef", "eth0");
        assert_eq!(a, host_veth_name("0123456789abcdef", "eth0"));
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth"));
        assert_ne!(a, host_veth_name("0123456789abcdef", "eth1"));
        assert_ne!(a, host_veth_name("0123456789abcdeg", "eth0"));
        let names: std::collections::BTreeSet<String> = (0..10_000)
            .map(|i| host_veth_name(&format!("pod-{i}"), "eth0"))
            .collect();
        assert_eq!(names.len(), 10_000);
    }
}
