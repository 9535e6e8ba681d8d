//! The node's uplink: which local interface and address carry overlay traffic, and the pod MTU.
//!
//! Selection (spec.overlay.interface):
//! - empty: the node's `InternalIP` of each family from `Node.status.addresses`, on whichever local
//!   interface holds it (that is what peers reach us at, and what flannel's kube subnet manager
//!   publishes as public-ip);
//! - a CIDR: the first local address inside it (for the other family, as if empty);
//! - an interface name: that interface; the `InternalIP` when it sits there, else the interface's
//!   first global address of the family.
//!
//! MTU: `overlay.mtu` when non-zero, else the smallest uplink MTU minus the backend's overhead
//! (vxlan: 50 over IPv4, 70 over IPv6; host-gw: 0). With dual-stack one MTU serves both families, so
//! the larger IPv6 overhead applies.
//!
//! Invariant: [`plan_uplink`] and [`plan_mtu`] are pure (tested with tables);
//! [`interfaces::read_interfaces`] is the only I/O of this room.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::NodeAddress;
use weft_crds::fabric::{Backend, MIN_MTU};
use weft_crds::{IpCidr, IpFamily};

use crate::Error;

pub mod interfaces;
pub use interfaces::{SYS_CLASS_NET, read_interfaces};

/// A local network interface with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The interface name, e.g. eth0.
    pub name: String,
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses, in the kernel's order.
    pub addrs: Vec<IpAddr>,
}

/// The uplink of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// The interface name.
    pub interface: String,
    /// The interface MTU.
    pub mtu: u32,
    /// The node's underlay address (published as public-ip / public-ipv6).
    pub addr: IpAddr,
}

/// The uplinks per family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uplinks {
    /// IPv4 uplink.
    pub v4: Option<Uplink>,
    /// IPv6 uplink.
    pub v6: Option<Uplink>,
}

impl Uplinks {
    /// The uplink of `family`.
    pub fn get(&self, family: IpFamily) -> Option<&Uplink> {
        match family {
            IpFamily::V4 => self.v4.as_ref(),
            IpFamily::V6 => self.v6.as_ref(),
        }
    }
}

fn family_of(ip: IpAddr) -> IpFamily {
    weft_crds::cidr::family_of(ip)
}

/// Whether an address can carry overlay traffic (not loopback, link-local or unspecified).
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
        IpAddr::V6(a) => {
            !a.is_loopback() && !a.is_unspecified() && (a.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// The first `InternalIP` of `family` in the Node's status.
fn internal_ip(addresses: &[NodeAddress], family: IpFamily) -> Option<IpAddr> {
    addresses
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse::<IpAddr>().ok())
        .find(|ip| family_of(*ip) == family)
}

fn holder(interfaces: &[Interface], ip: IpAddr) -> Option<&Interface> {
    interfaces.iter().find(|i| i.addrs.contains(&ip))
}

fn uplink(interface: &Interface, addr: IpAddr) -> Uplink {
    Uplink {
        interface: interface.name.clone(),
        mtu: interface.mtu,
        addr,
    }
}

fn by_internal_ip(
    interfaces: &[Interface],
    addresses: &[NodeAddress],
    family: IpFamily,
) -> Result<Uplink, Error> {
    let ip = internal_ip(addresses, family).ok_or_else(|| Error::NoNodeAddress {
        family,
        hint: format!(
            "Node.status.addresses has no {family} InternalIP; set spec.overlay.interface to an interface name or a CIDR"
        ),
    })?;
    let iface = holder(interfaces, ip).ok_or_else(|| Error::NoNodeAddress {
        family,
        hint: format!(
            "the node's InternalIP {ip} is on no local interface (is the agent running with hostNetwork, with the node's /sys?); set spec.overlay.interface"
        ),
    })?;
    Ok(uplink(iface, ip))
}

/// Chooses the uplink of every family in `families` (see the module docs).
pub fn plan_uplink(
    interfaces: &[Interface],
    addresses: &[NodeAddress],
    selector: Option<&str>,
    families: &[IpFamily],
) -> Result<Uplinks, Error> {
    let selector = selector.map(str::trim).filter(|s| !s.is_empty());
    let mut out = Uplinks::default();
    for &family in families {
        let chosen = match selector {
            None => by_internal_ip(interfaces, addresses, family)?,
            Some(s) if s.contains('/') => {
                let cidr = IpCidr::parse_lenient(s).map_err(|source| Error::BadCidr {
                    what: "overlay.interface",
                    value: s.to_owned(),
                    source,
                })?;
                if cidr.family() != family {
                    by_internal_ip(interfaces, addresses, family)?
                } else {
                    interfaces
                        .iter()
                        .find_map(|i| {
                            i.addrs
                                .iter()
                                .find(|a| cidr.contains_addr(**a))
                                .map(|a| uplink(i, *a))
                        })
                        .ok_or_else(|| Error::NoNodeAddress {
                            family,
                            hint: format!(
                                "no local interface has an address inside overlay.interface {cidr}"
                            ),
                        })?
                }
            }
            Some(name) => {
                let iface = interfaces.iter().find(|i| i.name == name).ok_or_else(|| {
                    Error::NoNodeAddress {
                        family,
                        hint: format!(
                            "interface {name:?} not found (spec.overlay.interface); this node has {}",
                            interfaces
                                .iter()
                                .map(|i| i.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                })?;
                let addr = internal_ip(addresses, family)
                    .filter(|ip| iface.addrs.contains(ip))
                    .or_else(|| {
                        iface
                            .addrs
                            .iter()
                            .copied()
                            .find(|a| family_of(*a) == family && is_global(*a))
                    })
                    .ok_or_else(|| Error::NoNodeAddress {
                        family,
                        hint: format!("interface {name} has no global {family} address"),
                    })?;
                uplink(iface, addr)
            }
        };
        match family {
            IpFamily::V4 => out.v4 = Some(chosen),
            IpFamily::V6 => out.v6 = Some(chosen),
        }
    }
    Ok(out)
}

/// The backend's per-packet overhead over an underlay of `family`.
pub fn overhead(backend: Backend, family: IpFamily) -> u32 {
    backend.overhead(family)
}

/// The pod MTU: `configured` when non-zero, else the smallest (uplink MTU − overhead) over the
/// families in use.
pub fn plan_mtu(backend: Backend, configured: i32, uplinks: &Uplinks) -> Result<u32, Error> {
    if let Ok(mtu) = u32::try_from(configured)
        && mtu > 0
    {
        return Ok(mtu);
    }
    let mut best: Option<(i64, u32, u32)> = None;
    for family in [IpFamily::V4, IpFamily::V6] {
        let Some(up) = uplinks.get(family) else {
            continue;
        };
        let over = overhead(backend, family);
        let mtu = i64::from(up.mtu) - i64::from(over);
        if best.is_none_or(|(b, _, _)| mtu < b) {
            best = Some((mtu, up.mtu, over));
        }
    }
    let (mtu, uplink, overhead) = best.ok_or_else(|| Error::NoNodeAddress {
        family: IpFamily::V4,
        hint: "no uplink to derive the MTU from".to_owned(),
    })?;
    if mtu < i64::from(MIN_MTU) {
        return Err(Error::MtuTooSmall {
            mtu,
            uplink,
            overhead,
            backend: backend.as_str(),
            min: MIN_MTU,
        });
    }
    u32::try_from(mtu).map_err(|_| Error::MtuTooSmall {
        mtu,
        uplink,
        overhead,
        backend: backend.as_str(),
        min: MIN_MTU,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, mtu: u32, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            mtu,
            addrs: addrs.iter().map(|a| a.parse().expect("ip")).collect(),
        }
    }

    fn internal(ips: &[&str]) -> Vec<NodeAddress> {
        let mut out: Vec<NodeAddress> = ips
            .iter()
            .map(|ip| NodeAddress {
                type_: "InternalIP".into(),
                address: (*ip).into(),
            })
            .collect();
        out.push(NodeAddress {
            type_: "Hostname".into(),
            address: "node-1".into(),
        });
        out
    }

    fn host() -> Vec<Interface> {
        vec![
            iface("lo", 65536, &["127.0.0.1", "::1"]),
            iface("eth0", 1500, &["192.168.0.2", "fd00::2", "fe80::1"]),
            iface("eth1", 9000, &["10.10.0.2", "fe80::2"]),
        ]
    }

    const V4: &[IpFamily] = &[IpFamily::V4];
    const DUAL: &[IpFamily] = &[IpFamily::V4, IpFamily::V6];

    /// Expected (interface, address) of one family.
    type Want = Option<(&'static str, &'static str)>;
    type MtuCase<'a> = (&'a str, Backend, i32, &'a Uplinks, Result<u32, &'a str>);

    #[test]
    fn chooses_uplinks() {
        struct Case {
            name: &'static str,
            addresses: Vec<NodeAddress>,
            selector: Option<&'static str>,
            families: &'static [IpFamily],
            want: Result<(Want, Want), &'static str>,
        }
        let cases = [
            Case {
                name: "internal ip",
                addresses: internal(&["192.168.0.2"]),
                selector: None,
                families: V4,
                want: Ok((Some(("eth0", "192.168.0.2")), None)),
            },
            Case {
                name: "internal ip dual-stack",
                addresses: internal(&["192.168.0.2", "fd00::2"]),
                selector: None,
                families: DUAL,
                want: Ok((Some(("eth0", "192.168.0.2")), Some(("eth0", "fd00::2")))),
            },
            Case {
                name: "empty selector is no selector",
                addresses: internal(&["10.10.0.2"]),
                selector: Some(""),
                families: V4,
                want: Ok((Some(("eth1", "10.10.0.2")), None)),
            },
            Case {
                name: "cidr",
                addresses: internal(&["192.168.0.2"]),
                selector: Some("10.10.0.0/16"),
                families: V4,
                want: Ok((Some(("eth1", "10.10.0.2")), None)),
            },
            Case {
                name: "ipv4 cidr, ipv6 by internal ip",
                addresses: internal(&["192.168.0.2", "fd00::2"]),
                selector: Some("10.10.0.0/16"),
                families: DUAL,
                want: Ok((Some(("eth1", "10.10.0.2")), Some(("eth0", "fd00::2")))),
            },
            Case {
                name: "name",
                addresses: internal(&["192.168.0.2"]),
                selector: Some("eth1"),
                families: V4,
                want: Ok((Some(("eth1", "10.10.0.2")), None)),
            },
            Case {
                name: "name without global ipv6",
                addresses: internal(&["192.168.0.2"]),
                selector: Some("eth1"),
                families: DUAL,
                want: Err("interface eth1 has no global IPv6 address"),
            },
            Case {
                name: "unknown name",
                addresses: internal(&["192.168.0.2"]),
                selector: Some("eth9"),
                families: V4,
                want: Err(
                    "interface \"eth9\" not found (spec.overlay.interface); this node has lo, eth0, eth1",
                ),
            },
            Case {
                name: "cidr matching nothing",
                addresses: internal(&["192.168.0.2"]),
                selector: Some("172.16.0.0/12"),
                families: V4,
                want: Err("inside overlay.interface 172.16.0.0/12"),
            },
            Case {
                name: "no internal ip",
                addresses: vec![],
                selector: None,
                families: V4,
                want: Err("has no IPv4 InternalIP"),
            },
            Case {
                name: "internal ip not local",
                addresses: internal(&["192.168.7.7"]),
                selector: None,
                families: V4,
                want: Err("192.168.7.7 is on no local interface"),
            },
        ];
        for c in cases {
            let got = plan_uplink(&host(), &c.addresses, c.selector, c.families);
            match (c.want, got) {
                (Ok((v4, v6)), Ok(up)) => {
                    let pick = |u: &Option<Uplink>| {
                        u.as_ref()
                            .map(|u| (u.interface.clone(), u.addr.to_string()))
                    };
                    let want =
                        |w: Option<(&str, &str)>| w.map(|(i, a)| (i.to_owned(), a.to_owned()));
                    assert_eq!(pick(&up.v4), want(v4), "{}", c.name);
                    assert_eq!(pick(&up.v6), want(v6), "{}", c.name);
                }
                (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{}: {e}", c.name),
                (w, g) => panic!("{}: want {w:?}, got {g:?}", c.name),
            }
        }
    }

    #[test]
    fn computes_mtu() {
        let up = |mtu: u32, addr: &str| Uplink {
            interface: "eth0".into(),
            mtu,
            addr: addr.parse().expect("ip"),
        };
        let v4 = Uplinks {
            v4: Some(up(1500, "192.168.0.2")),
            v6: None,
        };
        let v6 = Uplinks {
            v4: None,
            v6: Some(up(1500, "fd00::2")),
        };
        let dual = Uplinks {
            v4: Some(up(9000, "192.168.0.2")),
            v6: Some(up(1500, "fd00::2")),
        };
        let tiny = Uplinks {
            v4: Some(up(600, "192.168.0.2")),
            v6: None,
        };
        let cases: &[MtuCase<'_>] = &[
            ("vxlan over ipv4", Backend::Vxlan, 0, &v4, Ok(1450)),
            ("vxlan over ipv6", Backend::Vxlan, 0, &v6, Ok(1430)),
            (
                "vxlan dual-stack takes the smallest",
                Backend::Vxlan,
                0,
                &dual,
                Ok(1430),
            ),
            ("host-gw", Backend::HostGw, 0, &v4, Ok(1500)),
            ("host-gw dual-stack", Backend::HostGw, 0, &dual, Ok(1500)),
            ("configured wins", Backend::Vxlan, 1400, &v4, Ok(1400)),
            (
                "too small",
                Backend::Vxlan,
                0,
                &tiny,
                Err("the pod MTU would be 550"),
            ),
            (
                "no uplink",
                Backend::Vxlan,
                0,
                &Uplinks::default(),
                Err("no uplink"),
            ),
        ];
        for (name, backend, configured, uplinks, want) in cases {
            let got = plan_mtu(*backend, *configured, uplinks);
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(g, *w, "{name}"),
                (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{name}: {e}"),
                (w, g) => panic!("{name}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn reads_loopback() {
        // getifaddrs works unprivileged; every namespace has lo.
        let ifaces = read_interfaces(std::path::Path::new(SYS_CLASS_NET)).expect("interfaces");
        let lo = ifaces.iter().find(|i| i.name == "lo").expect("lo");
        assert!(lo.mtu > 0);
        // Interfaces without an MTU file (vanished, or another namespace's sysfs) are skipped.
        let none = read_interfaces(std::path::Path::new("/nonexistent-sysfs")).expect("interfaces");
        assert!(none.is_empty(), "{none:?}");
    }
}
