//! `table inet weft-raw` against the real kernel: two "nodes" in network namespaces of their own
//! (removed afterwards, also on failure), joined by a veth underlay and a VXLAN device each;
//! skipped unless root with `nft` and `ip` installed. Run with
//! `cargo test -p weft-node-agent --test untracked_netns`.
//!
//! ```text
//!   node a                                       node b
//!   vx 10.240.0.1/24 (VXLAN, VNI 7, port 8472)   vx 10.240.0.2/24
//!   eth0 10.98.0.1/24 ────────── veth ────────── eth0 10.98.0.2/24
//! ```
//!
//! Both nodes track connections (a `ct state` rule, as weft's policy table has). Node a pings node
//! b through the VXLAN device; then each node's conntrack table (`/proc/net/nf_conntrack`, per
//! namespace) must hold the inner ICMP flow and no entry for the VXLAN port. The same without
//! the table shows the entries it removes, so the check can fail.

mod cmd_support;
mod nft_support;

use cmd_support::{Namespaces, in_netns, ip, run};
use nft_support::skip_reason;
use weft_node_agent::nft::{Family, NftApplier, Nftables, TABLE_RAW, TableChange};
use weft_node_agent::overlay::untracked::{render_untracked, sync_untracked};

const PORT: u16 = 8472;

/// What one node's conntrack table holds after the ping.
#[derive(Debug)]
struct Tracked {
    /// Entries of the VXLAN port (the outer packets).
    vxlan: usize,
    /// Entries of the inner ICMP flow between the VXLAN addresses.
    inner: usize,
}

fn tracked(ns: &str) -> Tracked {
    let table = run(&["ip", "netns", "exec", ns, "cat", "/proc/net/nf_conntrack"]);
    Tracked {
        vxlan: table
            .lines()
            .filter(|l| l.contains(&format!("dport={PORT} ")))
            .count(),
        inner: table
            .lines()
            .filter(|l| l.contains("icmp") && l.contains("src=10.240.0.1 dst=10.240.0.2"))
            .count(),
    }
}

/// Builds the two nodes (prefix `tag`), with weft's table on both when `untracked`; pings b from
/// a through the VXLAN device; returns what each node tracked.
fn ping_across(tag: &str, untracked: bool) -> (Tracked, Tracked) {
    let mut nss = Namespaces {
        prefix: format!("weft-t-raw{tag}-{}", std::process::id()),
        created: Vec::new(),
    };
    nss.add("a");
    nss.add("b");
    let (a, b) = (nss.name("a"), nss.name("b"));
    ip(
        &a,
        &format!("link add eth0 type veth peer name eth0 netns {b}"),
    );
    for (ns, n) in [(&a, 1), (&b, 2)] {
        let peer = 3 - n;
        for cmd in [
            "link set lo up".to_owned(),
            format!("addr add 10.98.0.{n}/24 dev eth0"),
            "link set eth0 up".to_owned(),
            format!(
                "link add vx type vxlan id 7 local 10.98.0.{n} remote 10.98.0.{peer} dstport {PORT} nolearning"
            ),
            format!("addr add 10.240.0.{n}/24 dev vx"),
        ] {
            ip(ns, &cmd);
        }
        // Connection tracking on, as weft's masquerade and policy tables turn it on.
        let ct = "table inet weft-test-ct {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tct state new counter\n\t}\n}\n";
        in_netns(ns, move || Nftables::new().apply(ct))
            .join()
            .expect("thread")
            .expect("conntrack on");
        if untracked {
            let change = in_netns(ns, || sync_untracked(Some(PORT), &Nftables::new()))
                .join()
                .expect("thread")
                .expect("weft-raw");
            assert_eq!(change, TableChange::Created);
        }
    }
    // The VXLAN devices come up only now: up earlier, one node's IPv6 neighbour discovery could
    // reach the other before that one's tables are loaded, and be tracked there.
    for ns in [&a, &b] {
        ip(ns, "link set vx up");
    }
    run(&[
        "ip",
        "netns",
        "exec",
        &a,
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        "10.240.0.2",
    ]);
    (tracked(&a), tracked(&b))
}

#[test]
fn vxlan_packets_skip_conntrack_and_the_pod_traffic_inside_them_does_not() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let (a, b) = ping_across("0", false);
    assert!(
        a.vxlan > 0 && b.vxlan > 0,
        "without the table both nodes track the VXLAN packets: a {a:?}, b {b:?}"
    );
    let (a, b) = ping_across("1", true);
    assert_eq!(
        (a.vxlan, b.vxlan),
        (0, 0),
        "with weft-raw no VXLAN packet is tracked: a {a:?}, b {b:?}"
    );
    assert!(
        a.inner > 0 && b.inner > 0,
        "the inner flow is tracked on both nodes (policy and masquerade depend on it): a {a:?}, b {b:?}"
    );
}

#[test]
fn the_rendered_table_is_what_the_kernel_lists_so_a_resync_writes_nothing() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    nft_support::in_fresh_netns(|| {
        let nft = Nftables::new();
        let sync = |port| sync_untracked(port, &nft).expect("sync");
        assert_eq!(sync(Some(PORT)), TableChange::Created);
        assert_eq!(
            nft.list_table(Family::Inet, TABLE_RAW).expect("list"),
            render_untracked(Some(PORT))
        );
        assert_eq!(sync(Some(PORT)), TableChange::Unchanged);
        assert_eq!(sync(Some(4789)), TableChange::Replaced);
        assert_eq!(sync(None), TableChange::Deleted);
        assert_eq!(nft.list_table(Family::Inet, TABLE_RAW).expect("list"), None);
    });
}
