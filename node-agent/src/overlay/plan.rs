//! The desired overlay state of one node as a pure function of (own lease, peers' leases, fabric).
//!
//! Invariant: no I/O. Which peers are on this node's L2 segment (for `directRouting` and
//! `host-gw`) is a fact the caller gathers from the kernel's routing table and passes in, the way
//! flannel asks the kernel (a peer is on-link when the route to it has no gateway).

use std::collections::BTreeSet;
use std::net::IpAddr;

use weft_crds::IpCidr;
use weft_crds::fabric::Backend;

use super::{Datapath, FdbEntry, Neighbour, Route, VxlanDevice, vxlan_device_name};
use crate::flannel::{Peer, PeerProblem, VtepMacs};
use crate::subnet::Lease;
use crate::uplink::Uplinks;

/// Everything the overlay plan is computed from.
#[derive(Debug, Clone)]
pub struct OverlayInput<'a> {
    /// The fabric's backend.
    pub backend: Backend,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The VXLAN UDP port.
    pub port: u16,
    /// vxlan: plain routes to peers on the same segment.
    pub direct_routing: bool,
    /// `overlay.mtu` when non-zero; else each device gets its uplink's MTU minus the overhead.
    pub configured_mtu: Option<u32>,
    /// Keep TX checksum offload on the VXLAN devices.
    pub tx_checksum_offload: bool,
    /// This node's lease.
    pub lease: &'a Lease,
    /// This node's uplinks.
    pub uplinks: &'a Uplinks,
    /// This node's VTEP MACs.
    pub macs: &'a VtepMacs,
    /// The peers (every other node with a lease), sorted by name.
    pub peers: &'a [Peer],
    /// Peer underlay addresses that the kernel reaches without a gateway (same L2 segment).
    pub on_link: &'a BTreeSet<IpAddr>,
}

/// The desired state and what could not be planned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayPlan {
    /// The desired kernel state.
    pub datapath: Datapath,
    /// Peers (or families of peers) that are not routed, with the reason.
    pub problems: Vec<PeerProblem>,
    /// How many peers have at least one family routed.
    pub programmed_peers: usize,
}

/// The VTEP address of a subnet: its network address (`10.244.1.0`, `fd00:10:244:1::`), as flannel
/// assigns it to the VXLAN device and uses as the next hop toward that subnet.
pub fn vtep_address(subnet: IpCidr) -> IpAddr {
    subnet.addr()
}

fn host_cidr(ip: IpAddr) -> IpCidr {
    IpCidr::host(ip)
}

/// Computes the desired overlay state.
pub fn plan_datapath(input: &OverlayInput<'_>) -> OverlayPlan {
    let mut out = OverlayPlan::default();
    let mut programmed = BTreeSet::new();
    for family in input.lease.families() {
        let Some(own_subnet) = input.lease.get(family) else {
            continue;
        };
        let Some(uplink) = input.uplinks.get(family) else {
            continue;
        };
        let device = match input.backend {
            Backend::Vxlan => {
                let Some(mac) = input.macs.get(family) else {
                    continue;
                };
                let name = vxlan_device_name(family, input.vni);
                let mtu = input
                    .configured_mtu
                    .unwrap_or_else(|| uplink.mtu.saturating_sub(input.backend.overhead(family)));
                out.datapath.devices.push(VxlanDevice {
                    name: name.clone(),
                    vni: input.vni,
                    port: input.port,
                    local: uplink.addr,
                    uplink: uplink.interface.clone(),
                    mtu,
                    mac,
                    addresses: vec![host_cidr(vtep_address(own_subnet))],
                    up: true,
                    tx_checksum_offload: input.tx_checksum_offload,
                });
                Some(name)
            }
            Backend::HostGw => None,
        };
        for peer in input.peers {
            let (Some(subnet), Some(public)) = (peer.subnets.get(family), peer.public.get(family))
            else {
                continue;
            };
            let direct = match input.backend {
                Backend::HostGw => true,
                Backend::Vxlan => input.direct_routing && input.on_link.contains(&public),
            };
            if direct {
                if !input.on_link.contains(&public) {
                    out.problems.push(PeerProblem {
                        node: peer.node.clone(),
                        reason: format!(
                            "host-gw needs every node on one L2 segment, but {public} is reached through a gateway; its {family} pods ({subnet}) are not routed (use the vxlan backend)"
                        ),
                    });
                    continue;
                }
                out.datapath.routes.insert(Route {
                    destination: subnet,
                    gateway: public,
                    device: uplink.interface.clone(),
                    onlink: false,
                });
                programmed.insert(peer.node.clone());
                continue;
            }
            let Some(device) = &device else { continue };
            if peer.backend != Backend::Vxlan {
                out.problems.push(PeerProblem {
                    node: peer.node.clone(),
                    reason: format!(
                        "it runs the {} backend and this node vxlan; its pods are not routed until both use one backend",
                        peer.backend.as_str()
                    ),
                });
                continue;
            }
            let Some(mac) = peer.vtep.get(family) else {
                continue;
            };
            let gateway = vtep_address(subnet);
            out.datapath.neighbours.insert(Neighbour {
                device: device.clone(),
                ip: gateway,
                mac,
            });
            out.datapath.fdb.insert(FdbEntry {
                device: device.clone(),
                mac,
                remote: public,
            });
            out.datapath.routes.insert(Route {
                destination: subnet,
                gateway,
                device: device.clone(),
                onlink: true,
            });
            programmed.insert(peer.node.clone());
        }
    }
    out.programmed_peers = programmed.len();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flannel::Mac;
    use crate::uplink::Uplink;
    use weft_crds::PerFamily;

    fn cidr(s: &str) -> IpCidr {
        s.parse().expect("cidr")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }
    fn mac(last: u8) -> Mac {
        Mac([0x0a, 0, 0, 0, 0, last])
    }

    fn peer(name: &str, v4: Option<(&str, &str)>, v6: Option<(&str, &str)>, m: u8) -> Peer {
        let mut p = Peer {
            node: name.into(),
            backend: Backend::Vxlan,
            subnets: PerFamily::default(),
            public: PerFamily::default(),
            vtep: PerFamily::default(),
        };
        if let Some((s, a)) = v4 {
            p.subnets.v4 = Some(cidr(s));
            p.public.v4 = Some(ip(a));
            p.vtep.v4 = Some(mac(m));
        }
        if let Some((s, a)) = v6 {
            p.subnets.v6 = Some(cidr(s));
            p.public.v6 = Some(ip(a));
            p.vtep.v6 = Some(mac(m + 100));
        }
        p
    }

    struct World {
        lease: Lease,
        uplinks: Uplinks,
        macs: VtepMacs,
        peers: Vec<Peer>,
        on_link: BTreeSet<IpAddr>,
    }

    fn world(dual: bool) -> World {
        let mut lease = Lease {
            v4: Some(cidr("10.244.0.0/24")),
            v6: None,
        };
        let mut uplinks = Uplinks {
            v4: Some(Uplink {
                interface: "eth0".into(),
                mtu: 1500,
                addr: ip("10.99.0.10"),
            }),
            v6: None,
        };
        let mut macs = VtepMacs {
            v4: Some(mac(1)),
            v6: None,
        };
        let mut peers = vec![
            peer("b", Some(("10.244.1.0/24", "10.99.0.11")), None, 2),
            peer("c", Some(("10.244.2.0/24", "10.1.0.12")), None, 3),
        ];
        if dual {
            lease.v6 = Some(cidr("fd00:10:244::/64"));
            uplinks.v6 = Some(Uplink {
                interface: "eth0".into(),
                mtu: 1500,
                addr: ip("fd00:99::a"),
            });
            macs.v6 = Some(mac(101));
            peers = vec![peer(
                "b",
                Some(("10.244.1.0/24", "10.99.0.11")),
                Some(("fd00:10:244:1::/64", "fd00:99::b")),
                2,
            )];
        }
        World {
            lease,
            uplinks,
            macs,
            peers,
            on_link: [ip("10.99.0.11"), ip("fd00:99::b")].into_iter().collect(),
        }
    }

    fn input<'a>(w: &'a World, backend: Backend, direct: bool) -> OverlayInput<'a> {
        OverlayInput {
            backend,
            vni: 1,
            port: 8472,
            direct_routing: direct,
            configured_mtu: None,
            tx_checksum_offload: true,
            lease: &w.lease,
            uplinks: &w.uplinks,
            macs: &w.macs,
            peers: &w.peers,
            on_link: &w.on_link,
        }
    }

    fn routes(p: &OverlayPlan) -> Vec<String> {
        p.datapath.routes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn vxlan_is_flannels() {
        let w = world(false);
        let p = plan_datapath(&input(&w, Backend::Vxlan, false));
        assert_eq!(p.datapath.devices.len(), 1);
        let d = &p.datapath.devices[0];
        assert_eq!(
            (d.name.as_str(), d.vni, d.port, d.mtu, d.uplink.as_str()),
            ("flannel.1", 1, 8472, 1450, "eth0")
        );
        assert_eq!(d.local, ip("10.99.0.10"));
        assert_eq!(d.addresses, [cidr("10.244.0.0/32")]);
        assert_eq!(
            routes(&p),
            [
                "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink",
                "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"
            ]
        );
        let neigh: Vec<_> = p
            .datapath
            .neighbours
            .iter()
            .map(|n| (n.ip, n.mac))
            .collect();
        assert_eq!(
            neigh,
            [(ip("10.244.1.0"), mac(2)), (ip("10.244.2.0"), mac(3))]
        );
        let fdb: Vec<_> = p.datapath.fdb.iter().map(|f| (f.mac, f.remote)).collect();
        assert_eq!(fdb, [(mac(2), ip("10.99.0.11")), (mac(3), ip("10.1.0.12"))]);
        assert!(p.problems.is_empty());
        assert_eq!(p.programmed_peers, 2);
    }

    #[test]
    fn direct_routing_only_for_peers_on_the_segment() {
        let w = world(false);
        let p = plan_datapath(&input(&w, Backend::Vxlan, true));
        assert_eq!(
            routes(&p),
            [
                "10.244.1.0/24 via 10.99.0.11 dev eth0",
                "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"
            ]
        );
        // The on-link peer needs no FDB entry or neighbour.
        assert_eq!(p.datapath.fdb.len(), 1);
        assert_eq!(p.datapath.neighbours.len(), 1);
    }

    #[test]
    fn host_gw_reports_peers_behind_a_gateway() {
        let w = world(false);
        let p = plan_datapath(&input(&w, Backend::HostGw, false));
        assert!(p.datapath.devices.is_empty());
        assert_eq!(routes(&p), ["10.244.1.0/24 via 10.99.0.11 dev eth0"]);
        assert_eq!(p.problems.len(), 1);
        assert_eq!(p.problems[0].node, "c");
        assert!(
            p.problems[0].reason.contains("not routed"),
            "{}",
            p.problems[0]
        );
        assert_eq!(p.programmed_peers, 1);
    }

    #[test]
    fn dual_stack_uses_flannels_v6_device() {
        let w = world(true);
        let p = plan_datapath(&input(&w, Backend::Vxlan, false));
        let names: Vec<_> = p
            .datapath
            .devices
            .iter()
            .map(|d| (d.name.as_str(), d.mtu, d.addresses[0].to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("flannel.1", 1450, "10.244.0.0/32".to_owned()),
                ("flannel-v6.1", 1430, "fd00:10:244::/128".to_owned())
            ]
        );
        assert!(routes(&p).contains(
            &"fd00:10:244:1::/64 via fd00:10:244:1:: dev flannel-v6.1 onlink".to_owned()
        ));
        assert_eq!(p.programmed_peers, 1);
    }

    #[test]
    fn configured_mtu_wins_and_mixed_backends_are_reported() {
        let mut w = world(false);
        w.peers[1].backend = Backend::HostGw;
        let mut i = input(&w, Backend::Vxlan, false);
        i.configured_mtu = Some(1400);
        let p = plan_datapath(&i);
        assert_eq!(p.datapath.devices[0].mtu, 1400);
        assert_eq!(routes(&p).len(), 1);
        assert_eq!(p.problems.len(), 1);
        assert!(p.problems[0].reason.contains("host-gw backend"));
    }

    #[test]
    fn no_peers_no_routes() {
        let mut w = world(false);
        w.peers.clear();
        let p = plan_datapath(&input(&w, Backend::Vxlan, false));
        assert_eq!(p.datapath.devices.len(), 1);
        assert!(p.datapath.routes.is_empty() && p.datapath.fdb.is_empty());
    }
}
