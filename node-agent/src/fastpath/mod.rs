//! The pod-to-pod fast path (ADR 0306): a tc ingress program (`bpf/fastpath.bpf.c`) on the host
//! end of every pod veth and on the devices that bring other nodes' pod traffic in (the VXLAN
//! device, or the uplink with host-gw and direct routing). A packet from the pod network to the
//! pod network that conntrack does not know is forwarded by the kernel's own FIB straight to its
//! next device, past the node's netfilter hooks; everything else takes the stack as before.
//!
//! Why: masquerade needs conntrack, and conntrack once on takes every forwarded packet, pod to
//! pod included, although pod-to-pod traffic is never NATed by weft (docs/benchmarks.md, "What the
//! tables cost"). This kernel has no nftables flowtables to offload established flows.
//!
//! What stays with the stack, so nothing changes for it:
//! - any flow conntrack knows: a Service's DNAT by kube-proxy (its replies must be un-DNATed on
//!   the client's node), hostPorts, masqueraded flows, flows that began while the path was off;
//! - anything the FIB will not forward here (local addresses, unresolved neighbours, packets over
//!   the next device's MTU, which need the stack's ICMP error), fragments, IP options, TTL 1,
//!   protocols other than TCP and UDP;
//! - everything while any policy object exists: network policy is enforced in the forward hook
//!   this path skips, so [`enabled`] is false then, and the policy engine turns the path off
//!   before it puts the first policy in force (and back on only after the last one is gone).
//!
//! The plan here is pure ([`Config`], [`plan_devices`]); [`kernel`] loads the program through
//! libbpf, attaches it and keeps the pod veths in step.

pub mod kernel;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_crds::IpFamily;
use weft_crds::fabric::Backend;

use crate::overlay::vxlan_device_name;
use crate::subnet::Networks;
use crate::uplink::Uplinks;

/// What the program is told: the BPF `struct config` of `bpf/fastpath.bpf.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// Forward pod-to-pod packets (false: every packet goes to the stack).
    pub enabled: bool,
    /// The IPv4 pod network.
    pub v4: Option<(Ipv4Addr, u8)>,
    /// The IPv6 pod network.
    pub v6: Option<(Ipv6Addr, u8)>,
}

/// The size of the BPF `struct config`.
pub const CONFIG_SIZE: usize = 52;

impl Config {
    /// The fabric's pod network, with `enabled`.
    pub fn of(networks: &Networks, enabled: bool) -> Config {
        let v4 = networks.v4.and_then(|c| match c.addr() {
            IpAddr::V4(a) => Some((a, c.prefix_len())),
            IpAddr::V6(_) => None,
        });
        let v6 = networks.v6.and_then(|c| match c.addr() {
            IpAddr::V6(a) => Some((a, c.prefix_len())),
            IpAddr::V4(_) => None,
        });
        Config { enabled, v4, v6 }
    }

    /// The map value, in the program's layout: `enabled`, `has_v4`, `has_v6` (host order), then
    /// the networks and masks (network order).
    pub fn encode(&self) -> [u8; CONFIG_SIZE] {
        let mut out = [0u8; CONFIG_SIZE];
        out[0..4].copy_from_slice(&u32::from(self.enabled).to_ne_bytes());
        out[4..8].copy_from_slice(&u32::from(self.v4.is_some()).to_ne_bytes());
        out[8..12].copy_from_slice(&u32::from(self.v6.is_some()).to_ne_bytes());
        if let Some((net, len)) = self.v4 {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            out[12..16].copy_from_slice(&(u32::from(net) & mask).to_be_bytes());
            out[16..20].copy_from_slice(&mask.to_be_bytes());
        }
        if let Some((net, len)) = self.v6 {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            out[20..36].copy_from_slice(&(u128::from(net) & mask).to_be_bytes());
            out[36..52].copy_from_slice(&mask.to_be_bytes());
        }
        out
    }
}

/// Whether the program forwards: the fabric asks for it and no policy object exists (`policy_clear`:
/// the policy engine has a ruleset in force without any policy, or policy is off in the fabric).
pub fn enabled(wanted: bool, policy_clear: bool) -> bool {
    wanted && policy_clear
}

/// The devices other nodes' pod traffic arrives on, besides the pod veths: the VXLAN devices,
/// and the uplinks where packets come unencapsulated (host-gw, direct routing).
pub fn plan_devices(
    backend: Backend,
    direct_routing: bool,
    vni: u32,
    networks: &Networks,
    uplinks: &Uplinks,
) -> Vec<String> {
    let mut out = Vec::new();
    if backend == Backend::Vxlan {
        for family in [IpFamily::V4, IpFamily::V6] {
            if networks.get(family).is_some() {
                out.push(vxlan_device_name(family, vni));
            }
        }
    }
    if backend == Backend::HostGw || direct_routing {
        for u in [uplinks.v4.as_ref(), uplinks.v6.as_ref()]
            .into_iter()
            .flatten()
        {
            if !out.contains(&u.interface) {
                out.push(u.interface.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::Uplink;
    use weft_crds::IpCidr;

    fn networks(v4: Option<&str>, v6: Option<&str>) -> Networks {
        Networks {
            v4: v4.map(|c| IpCidr::parse_lenient(c).unwrap()),
            v6: v6.map(|c| IpCidr::parse_lenient(c).unwrap()),
        }
    }

    fn uplink(name: &str, addr: &str) -> Option<Uplink> {
        Some(Uplink {
            interface: name.to_owned(),
            mtu: 1500,
            addr: addr.parse().unwrap(),
        })
    }

    #[test]
    fn config_encodes_the_programs_layout() {
        let c = Config::of(&networks(Some("10.244.0.0/16"), None), true);
        let b = c.encode();
        assert_eq!(&b[0..12], &[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[12..20], &[10, 244, 0, 0, 255, 255, 0, 0]);
        assert!(b[20..].iter().all(|x| *x == 0));

        let c = Config::of(&networks(None, Some("fd00:10:244::/56")), false);
        let b = c.encode();
        assert_eq!(&b[0..12], &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&b[20..28], &[0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 0]);
        assert_eq!(&b[36..44], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
        assert!(b[44..52].iter().all(|x| *x == 0));
        assert!(b[12..20].iter().all(|x| *x == 0));
    }

    #[test]
    fn config_masks_host_bits_and_takes_any_prefix() {
        let c = Config {
            enabled: true,
            v4: Some(("10.244.1.7".parse().unwrap(), 12)),
            v6: None,
        };
        assert_eq!(&c.encode()[12..20], &[10, 240, 0, 0, 255, 240, 0, 0]);
        let all = Config {
            enabled: true,
            v4: Some(("10.0.0.0".parse().unwrap(), 0)),
            v6: Some(("::".parse().unwrap(), 0)),
        };
        assert!(all.encode()[12..52].iter().all(|x| *x == 0));
    }

    #[test]
    fn enabled_only_without_policy() {
        assert!(enabled(true, true));
        assert!(!enabled(true, false));
        assert!(!enabled(false, true));
    }

    #[test]
    fn devices_per_backend() {
        let dual = networks(Some("10.244.0.0/16"), Some("fd00::/56"));
        let ups = Uplinks {
            v4: uplink("eth0", "192.0.2.1"),
            v6: uplink("eth0", "2001:db8::1"),
        };
        let cases: Vec<(Backend, bool, &Networks, Vec<&str>)> = vec![
            (
                Backend::Vxlan,
                false,
                &dual,
                vec!["flannel.1", "flannel-v6.1"],
            ),
            (
                Backend::Vxlan,
                true,
                &dual,
                vec!["flannel.1", "flannel-v6.1", "eth0"],
            ),
            (Backend::HostGw, false, &dual, vec!["eth0"]),
        ];
        for (backend, direct, nets, want) in cases {
            assert_eq!(
                plan_devices(backend, direct, 1, nets, &ups),
                want,
                "{backend:?} {direct}"
            );
        }
        let v4 = networks(Some("10.244.0.0/16"), None);
        assert_eq!(
            plan_devices(Backend::Vxlan, false, 7, &v4, &Uplinks::default()),
            vec!["flannel.7"]
        );
    }
}
