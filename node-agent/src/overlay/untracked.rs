//! VXLAN packets between nodes skip connection tracking: `table inet weft-raw`
//! ([`crate::nft::TABLE_RAW`]), present while the backend is `vxlan`.
//!
//! Once anything in a node's network namespace uses conntrack (weft's masquerade and policy
//! tables, kube-proxy), every packet is tracked, the encapsulating UDP packets of the overlay too.
//! Tracking them buys nothing: VXLAN's source port is a hash of the inner flow and its
//! destination port is the same both ways, so each inner flow becomes a one-way UDP "connection"
//! that never sees a reply (`[UNREPLIED]` in `conntrack -L`). They fill the conntrack table (half
//! of it in calico#8934), the first packet of each walks every nat chain (kube-proxy's included),
//! and each packet pays a conntrack lookup on the way out and on the way in, beside the lookup
//! its inner packet pays. Calico (felix), Antrea and OpenShift SDN mark the same
//! packets `notrack` for the same reasons; flannel does not.
//!
//! ```text
//! table inet weft-raw {
//!     chain prerouting  { type filter hook prerouting priority raw; …
//!         udp dport PORT fib daddr type local notrack }   VXLAN addressed to this node
//!     chain output      { type filter hook output priority raw; …
//!         udp dport PORT notrack }                        VXLAN this node sends
//! }
//! ```
//!
//! Only the outer packets are affected: the kernel resets the conntrack state of a packet when it
//! encapsulates or decapsulates it (`skb_scrub_packet`), so the inner pod traffic is tracked,
//! masqueraded and policed as before. VXLAN forwarded through this node to someone else
//! (`fib daddr type local` does not match) is left alone. A host firewall that accepts the
//! overlay's port explicitly (it must: each side opens its own flows) keeps working; one that
//! matches `ct state` for it sees `untracked`.

use crate::Error;
use crate::nft::{Family, NftApplier, TABLE_RAW, TableChange, sync_table};

/// The family of the table: one rule for an IPv4 and an IPv6 underlay.
pub const FAMILY: Family = Family::Inet;
/// The table's comment, visible in `nft list ruleset`.
pub const TABLE_COMMENT: &str = "weft: the overlay's VXLAN packets skip connection tracking";

/// The table for the VXLAN port `port`, in nft's listing format (so that an unchanged table
/// compares equal to the kernel's and is not written again), or `None` (no VXLAN: no table).
pub fn render_untracked(vxlan_port: Option<u16>) -> Option<String> {
    let port = vxlan_port?;
    Some(format!(
        "table {FAMILY} {TABLE_RAW} {{\n\tcomment \"{TABLE_COMMENT}\"\n\
         \tchain prerouting {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n\
         \t\tudp dport {port} fib daddr type local notrack comment \"VXLAN to this node\"\n\t}}\n\n\
         \tchain output {{\n\t\ttype filter hook output priority raw; policy accept;\n\
         \t\tudp dport {port} notrack comment \"VXLAN from this node\"\n\t}}\n}}\n"
    ))
}

/// Brings the kernel to the table for `vxlan_port` (none: removed); writes nothing when the
/// kernel holds it already.
pub fn sync_untracked(vxlan_port: Option<u16>, nft: &dyn NftApplier) -> Result<TableChange, Error> {
    sync_table(
        nft,
        FAMILY,
        TABLE_RAW,
        render_untracked(vxlan_port).as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::FakeNft;

    #[test]
    fn the_table_follows_the_port_and_goes_without_vxlan() {
        let text = render_untracked(Some(4789)).expect("a table for vxlan");
        assert!(text.starts_with("table inet weft-raw {\n"), "{text}");
        assert_eq!(text.matches("udp dport 4789 ").count(), 2, "{text}");
        assert!(text.contains("fib daddr type local notrack"), "{text}");
        assert!(
            text.contains("type filter hook output priority raw;"),
            "{text}"
        );
        assert_eq!(render_untracked(None), None);
    }

    #[test]
    fn sync_writes_once_then_nothing_and_removes_without_vxlan() {
        let nft = FakeNft::default();
        let sync = |port| sync_untracked(port, &nft).expect("sync");
        assert_eq!(sync(Some(8472)), TableChange::Created);
        assert_eq!(sync(Some(8472)), TableChange::Unchanged);
        assert_eq!(sync(Some(4789)), TableChange::Replaced);
        assert_eq!(sync(None), TableChange::Deleted);
        assert_eq!(nft.list_table(FAMILY, TABLE_RAW).expect("list"), None);
        assert_eq!(sync(None), TableChange::Unchanged);
        assert_eq!(nft.writes(), 3);
    }
}
