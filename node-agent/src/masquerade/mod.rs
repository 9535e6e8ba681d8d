//! Masquerade: pod traffic that leaves the pod network goes out with the node's address; pod-to-pod
//! and pod-to-node traffic keeps its source. One nftables table that weft owns,
//! `table inet weft-nat` ([`crate::nft::TABLE_NAT`]), IPv4 and IPv6 in one chain.
//!
//! ```text
//!   fabric (pod CIDRs, masquerade.enabled/randomFully) ─┐
//!   the node's lease (its pod subnets)                  ├─ plan_masquerade ─► MasqueradePlan
//!   the cluster's node addresses                        ┘        (pure)            │
//!                                                                 render_masquerade │ (pure)
//!                                          sync_masquerade ◄── table text or None ◄─┘
//!                                 (list, compare, one transaction or nothing; nft/)
//! ```
//!
//! # The rules, and which of flannel's they mirror
//!
//! flannel v0.28.x `pkg/trafficmngr/iptables/iptables.go` (`masqRules`/`masqIP6Rules`, chain
//! `FLANNEL-POSTRTG` in the `nat` table) is mirrored rule for rule and in its order, per family, with
//! `NETWORK` the fabric's pod CIDR and `SUBNET` this node's lease:
//!
//! | # | flannel (iptables) | weft (nftables) |
//! |---|---|---|
//! | 1 | `-m mark --mark 0x4000/0x4000 -j RETURN` | `meta mark & 0x00004000 == 0x00004000 return` (kube-proxy masquerades what it marked) |
//! | 2 | `-s SUBNET -d NETWORK -j RETURN` | `ip saddr SUBNET ip daddr NETWORK return` (this node's pods to the pod network) |
//! | 3 | `-s NETWORK -d SUBNET -j RETURN` | `ip saddr NETWORK ip daddr SUBNET return` (the pod network to this node's pods) |
//! | 4 | `! -s NETWORK -d SUBNET -j RETURN` | `ip saddr != NETWORK ip daddr SUBNET return` (anyone else to this node's pods keeps its source) |
//! | – | (none) | `ip saddr NETWORK ip daddr { NODE ADDRESSES } return` (pod to node, see below) |
//! | 5 | `-s NETWORK ! -d 224.0.0.0/4 -j MASQUERADE [--random-fully]` | `ip saddr NETWORK ip daddr != 224.0.0.0/4 masquerade [fully-random]` |
//! | 6 | `! -s NETWORK -d NETWORK -j MASQUERADE [--random-fully]` | `ip saddr != NETWORK ip daddr NETWORK masquerade [fully-random]` (the host or a forwarded client to remote pods: replies come back through this node) |
//!
//! IPv6 is the same with `ip6` and `ff00::/8` for multicast, as in flannel's `masqIP6Rules`. The
//! chain hooks `postrouting` at priority `srcnat` (100), where flannel's `POSTROUTING` jump sits.
//!
//! Not mirrored, on purpose:
//! - flannel's nftables mode (`pkg/trafficmngr/nftables`) writes rule 4 as
//!   `saddr != SUBNET daddr NETWORK return`, which also returns every non-pod source headed for a
//!   remote pod and so makes rule 6 unreachable; weft follows the iptables rules, flannel's default
//!   for years and what a node migrating from flannel has in its kernel.
//! - flannel turns `--random-fully` on whenever the kernel supports it; weft only when the fabric's
//!   `masquerade.randomFully` asks for it.
//! - Pod to node: with flannel's rules a pod reaching *another* node's address (its kubelet, a
//!   host-network pod, a NodePort) matches rule 5 and arrives masqueraded as its own node. Traffic to
//!   the pod's *own* node is delivered locally (`input`) and never reaches `postrouting`, so it kept
//!   its source already. weft adds the return rule for every node address of the cluster before
//!   rule 5, so pod-to-node traffic is never masqueraded on any node. The reply comes back through
//!   the overlay route to the pod's subnet, so the receiving node must not drop it with strict
//!   reverse-path filtering (`rp_filter=1`) on its uplink; loose (2, systemd's default) or off is fine.
//!
//! Invariants: planning and rendering are pure; the rendered text is nft's own listing format
//! (checked against the kernel by the privileged tests), so [`sync_masquerade`] writes nothing when
//! the kernel holds the table already; with masquerade disabled the table is removed.

use std::net::IpAddr;

use weft_crds::fabric::Masquerade;
use weft_crds::{IpCidr, IpFamily};

use crate::Error;
use crate::nft::{Family, NftApplier, TABLE_NAT, TableChange, sync_table};
use crate::subnet::{Lease, Networks};

/// The family of weft's nat table.
pub const FAMILY: Family = Family::Inet;
/// The chain that holds the rules.
pub const CHAIN: &str = "postrouting";
/// kube-proxy's masquerade mark (`--masquerade-bit` 14), as flannel's `KubeProxyMark`.
pub const KUBE_PROXY_MARK: u32 = 0x4000;
/// IPv4 multicast, never masqueraded (flannel rule 5).
pub const MULTICAST_V4: &str = "224.0.0.0/4";
/// IPv6 multicast, never masqueraded.
pub const MULTICAST_V6: &str = "ff00::/8";
/// The table's comment, visible in `nft list ruleset`.
pub const TABLE_COMMENT: &str = "weft: masquerade of pod traffic leaving the pod network";

/// The masquerade rules of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyNat {
    /// The family.
    pub family: IpFamily,
    /// The fabric's pod CIDR of this family.
    pub network: IpCidr,
    /// This node's pod subnet of this family.
    pub subnet: IpCidr,
    /// The cluster's node addresses of this family, sorted and without duplicates.
    pub nodes: Vec<IpAddr>,
}

/// weft's nat table, as a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatTable {
    /// One entry per family of the fabric, IPv4 first.
    pub families: Vec<FamilyNat>,
    /// `masquerade fully-random` instead of `masquerade`.
    pub random_fully: bool,
}

/// What the kernel should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasqueradePlan {
    /// `masquerade.enabled: false`: no nat table.
    Disabled,
    /// The table to hold.
    Enabled(NatTable),
}

/// Plans the nat table from the fabric's pod networks, the node's lease, the fabric's masquerade
/// settings and the cluster's node addresses (this node's and its peers'; those of other families
/// than the fabric's are ignored).
///
/// Fails when the lease lacks a family of the fabric or lies outside it (the subnet planner refuses
/// such a lease already; this keeps a wrong table from ever being rendered).
pub fn plan_masquerade(
    networks: &Networks,
    lease: &Lease,
    masquerade: &Masquerade,
    node_addresses: &[IpAddr],
) -> Result<MasqueradePlan, Error> {
    if !masquerade.enabled {
        return Ok(MasqueradePlan::Disabled);
    }
    let mut families = Vec::new();
    for family in networks.families() {
        let (Some(network), subnet) = (networks.get(family), lease.get(family)) else {
            continue;
        };
        let subnet = subnet.ok_or_else(|| {
            Error::MasqueradePlan(format!(
                "the node has no {family} pod subnet but the fabric's pod network {network} needs one"
            ))
        })?;
        if !network.contains(&subnet) {
            return Err(Error::MasqueradePlan(format!(
                "the node's pod subnet {subnet} is not inside the fabric's pod network {network}"
            )));
        }
        let mut nodes: Vec<IpAddr> = node_addresses
            .iter()
            .copied()
            .filter(|a| weft_crds::cidr::family_of(*a) == family)
            .collect();
        nodes.sort();
        nodes.dedup();
        families.push(FamilyNat {
            family,
            network,
            subnet,
            nodes,
        });
    }
    Ok(MasqueradePlan::Enabled(NatTable {
        families,
        random_fully: masquerade.random_fully,
    }))
}

/// The table definition for the plan, or `None` when the table must not exist.
pub fn render_masquerade(plan: &MasqueradePlan) -> Option<String> {
    match plan {
        MasqueradePlan::Disabled => None,
        MasqueradePlan::Enabled(table) => Some(render_nat_table(table)),
    }
}

/// `table inet weft-nat { … }` in nft's listing format (tabs, the order and spelling
/// `nft --stateless list table` prints), so that an unchanged table compares equal to the kernel's.
pub fn render_nat_table(table: &NatTable) -> String {
    let masquerade = if table.random_fully {
        "masquerade fully-random"
    } else {
        "masquerade"
    };
    let mut rules = vec![format!(
        "meta mark & {KUBE_PROXY_MARK:#010x} == {KUBE_PROXY_MARK:#010x} return comment \"marked by kube-proxy, which masquerades it itself\""
    )];
    for f in &table.families {
        let (ip, multicast) = match f.family {
            IpFamily::V4 => ("ip", MULTICAST_V4),
            IpFamily::V6 => ("ip6", MULTICAST_V6),
        };
        let (net, sub) = (f.network, f.subnet);
        rules.push(format!(
            "{ip} saddr {sub} {ip} daddr {net} return comment \"this node's pods to the pod network\""
        ));
        rules.push(format!(
            "{ip} saddr {net} {ip} daddr {sub} return comment \"the pod network to this node's pods\""
        ));
        rules.push(format!(
            "{ip} saddr != {net} {ip} daddr {sub} return comment \"others to this node's pods keep their source\""
        ));
        if let Some(nodes) = render_addresses(&f.nodes) {
            rules.push(format!(
                "{ip} saddr {net} {ip} daddr {nodes} return comment \"pods to nodes\""
            ));
        }
        rules.push(format!(
            "{ip} saddr {net} {ip} daddr != {multicast} {masquerade} comment \"pods to outside the pod network\""
        ));
        rules.push(format!(
            "{ip} saddr != {net} {ip} daddr {net} {masquerade} comment \"others to remote pods, so that replies come back here\""
        ));
    }
    let mut out = format!(
        "table {FAMILY} {TABLE_NAT} {{\n\tcomment \"{TABLE_COMMENT}\"\n\tchain {CHAIN} {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
    );
    for rule in rules {
        out.push_str("\t\t");
        out.push_str(&rule);
        out.push('\n');
    }
    out.push_str("\t}\n}\n");
    out
}

/// One address as itself, several as an anonymous set (nft lists a one-element set as its element,
/// and sorts elements, which `nodes` already is).
fn render_addresses(nodes: &[IpAddr]) -> Option<String> {
    match nodes {
        [] => None,
        [one] => Some(one.to_string()),
        many => Some(format!(
            "{{ {} }}",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Brings the kernel to the plan: creates, replaces (one transaction) or removes `table inet
/// weft-nat`, and writes nothing when the kernel already holds exactly the rendered table.
pub fn sync_masquerade(plan: &MasqueradePlan, nft: &dyn NftApplier) -> Result<TableChange, Error> {
    sync_table(nft, FAMILY, TABLE_NAT, render_masquerade(plan).as_deref())
}

/// Removes weft's nat table (uninstall); nothing to do when it is absent.
pub fn teardown_masquerade(nft: &dyn NftApplier) -> Result<TableChange, Error> {
    sync_table(nft, FAMILY, TABLE_NAT, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::FakeNft;

    fn cidr(s: &str) -> IpCidr {
        s.parse().expect("cidr")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn dual() -> (Networks, Lease) {
        (
            Networks {
                v4: Some(cidr("10.244.0.0/16")),
                v6: Some(cidr("fd00:10:244::/56")),
            },
            Lease {
                v4: Some(cidr("10.244.1.0/24")),
                v6: Some(cidr("fd00:10:244:1::/64")),
            },
        )
    }

    fn on(random_fully: bool) -> Masquerade {
        Masquerade {
            enabled: true,
            random_fully,
        }
    }

    #[test]
    fn plan_sorts_and_splits_node_addresses_by_family() {
        let (networks, lease) = dual();
        let nodes = [
            ip("192.168.0.3"),
            ip("fd00::2"),
            ip("192.168.0.2"),
            ip("192.168.0.3"),
        ];
        let MasqueradePlan::Enabled(table) =
            plan_masquerade(&networks, &lease, &on(false), &nodes).expect("plan")
        else {
            panic!("enabled");
        };
        assert_eq!(table.families.len(), 2);
        assert_eq!(
            table.families[0].nodes,
            vec![ip("192.168.0.2"), ip("192.168.0.3")]
        );
        assert_eq!(table.families[1].nodes, vec![ip("fd00::2")]);
        assert_eq!(table.families[1].subnet, cidr("fd00:10:244:1::/64"));
    }

    #[test]
    fn disabled_plans_no_table() {
        let (networks, lease) = dual();
        let off = Masquerade {
            enabled: false,
            random_fully: true,
        };
        let plan = plan_masquerade(&networks, &lease, &off, &[]).expect("plan");
        assert_eq!(plan, MasqueradePlan::Disabled);
        assert_eq!(render_masquerade(&plan), None);
    }

    #[test]
    fn a_lease_outside_the_network_or_missing_a_family_is_refused() {
        let (networks, _) = dual();
        let outside = Lease {
            v4: Some(cidr("10.245.1.0/24")),
            v6: Some(cidr("fd00:10:244:1::/64")),
        };
        let err = plan_masquerade(&networks, &outside, &on(false), &[]).expect_err("outside");
        assert!(err.to_string().contains("10.245.1.0/24"), "{err}");
        let missing = Lease {
            v4: Some(cidr("10.244.1.0/24")),
            v6: None,
        };
        let err = plan_masquerade(&networks, &missing, &on(false), &[]).expect_err("missing");
        assert!(err.to_string().contains("IPv6"), "{err}");
    }

    #[test]
    fn rules_follow_flannels_order_and_random_fully_only_when_asked() {
        let (networks, lease) = dual();
        let text = |rf| {
            render_masquerade(
                &plan_masquerade(&networks, &lease, &on(rf), &[ip("192.168.0.2")]).expect("plan"),
            )
            .expect("enabled")
        };
        let plain = text(false);
        let pos = |needle: &str| {
            plain
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from\n{plain}"))
        };
        let order = [
            "meta mark & 0x00004000 == 0x00004000 return",
            "ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return",
            "ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return",
            "ip saddr != 10.244.0.0/16 ip daddr 10.244.1.0/24 return",
            "ip saddr 10.244.0.0/16 ip daddr 192.168.0.2 return",
            "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade comment",
            "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade comment",
            "ip6 saddr fd00:10:244:1::/64 ip6 daddr fd00:10:244::/56 return",
            "ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade comment",
        ];
        for pair in order.windows(2) {
            assert!(pos(pair[0]) < pos(pair[1]), "{pair:?} out of order");
        }
        assert!(!plain.contains("fully-random"));
        assert!(
            !plain.contains("ip6 daddr 192.168") && !plain.contains("pods to nodes\"\n\t\tip6"),
            "no IPv6 node rule without IPv6 node addresses:\n{plain}"
        );
        let random = text(true);
        assert_eq!(
            random.matches("masquerade fully-random").count(),
            4,
            "{random}"
        );
    }

    #[test]
    fn several_node_addresses_render_as_one_sorted_set() {
        let networks = Networks {
            v4: Some(cidr("10.244.0.0/16")),
            v6: None,
        };
        let lease = Lease {
            v4: Some(cidr("10.244.1.0/24")),
            v6: None,
        };
        let nodes = [ip("192.168.0.10"), ip("192.168.0.9")];
        let text = render_masquerade(
            &plan_masquerade(&networks, &lease, &on(false), &nodes).expect("plan"),
        )
        .expect("enabled");
        assert!(
            text.contains("ip daddr { 192.168.0.9, 192.168.0.10 } return"),
            "{text}"
        );
    }

    #[test]
    fn sync_writes_once_then_nothing_and_removes_when_disabled() {
        let (networks, lease) = dual();
        let nft = FakeNft::default();
        let plan = plan_masquerade(&networks, &lease, &on(false), &[]).expect("plan");
        assert_eq!(
            sync_masquerade(&plan, &nft).expect("sync"),
            TableChange::Created
        );
        assert_eq!(
            sync_masquerade(&plan, &nft).expect("sync"),
            TableChange::Unchanged
        );
        assert_eq!(nft.writes(), 1);

        let more =
            plan_masquerade(&networks, &lease, &on(false), &[ip("192.168.0.5")]).expect("plan");
        assert_eq!(
            sync_masquerade(&more, &nft).expect("sync"),
            TableChange::Replaced
        );

        let off = Masquerade {
            enabled: false,
            random_fully: false,
        };
        let disabled = plan_masquerade(&networks, &lease, &off, &[]).expect("plan");
        assert_eq!(
            sync_masquerade(&disabled, &nft).expect("sync"),
            TableChange::Deleted
        );
        assert_eq!(nft.list_table(FAMILY, TABLE_NAT).expect("list"), None);
        assert_eq!(
            teardown_masquerade(&nft).expect("teardown"),
            TableChange::Unchanged
        );
        assert_eq!(nft.writes(), 3);
    }
}
