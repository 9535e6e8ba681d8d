//! Privileged tests of the native netlink element writer (`nft::apply_set_elements`, used by
//! `Nftables::apply_elements`) against the kernel: every set kind of the policy table, written
//! through netlink and read back with `nft list`, compared element by element with what the ops
//! say (and with what `nft -f` makes of the same ops). Each test runs in a network namespace of its
//! own (gone with its thread, also on failure); they skip unless run as root with `nft` installed.
//! Run them with `cargo test -p weft-node-agent --test nft_netlink_netns`.

mod nft_support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nft_support::{in_fresh_netns, skip_reason};
use weft_node_agent::Error;
use weft_node_agent::nft::{
    Family, NftApplier, Nftables, TABLE_POLICY, apply_set_elements, render_replace_table,
};
use weft_policy::{Elem, ElemOp, Proto};

macro_rules! require_privileges {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Every kind of set and map pod churn touches, both families, and two chains to go to.
const TABLE: &str = "table inet weft-policy {
	set host-v4 { type ipv4_addr; }
	set host-v6 { type ipv6_addr; }
	set self-v4 { type ipv4_addr . ipv4_addr; }
	set self-v6 { type ipv6_addr . ipv6_addr; }
	set np-v4 { type ipv4_addr . inet_proto . inet_service; }
	set np-v6 { type ipv6_addr . inet_proto . inet_service; }
	map to-pod-v4 { type ipv4_addr : verdict; }
	map to-pod-v6 { type ipv6_addr : verdict; }
	chain in-a { accept; }
	chain in-b { drop; }
}
";

const SETS: [&str; 8] = [
    "host-v4",
    "host-v6",
    "self-v4",
    "self-v6",
    "np-v4",
    "np-v6",
    "to-pod-v4",
    "to-pod-v6",
];

fn load_table(nft: &Nftables) {
    nft.apply(&render_replace_table(Family::Inet, TABLE_POLICY, TABLE))
        .expect("load the test table with nft -f");
}

fn op(add: bool, set: &str, elem: Elem) -> ElemOp {
    ElemOp {
        add,
        set: set.to_owned(),
        elem,
    }
}

fn v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))
}

fn v6(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        0xfd00_0010_0244_0000_0000_0000_0000_0000_u128 | i as u128,
    ))
}

/// The elements of every set and map of a listing, each set's sorted (a hash set lists in hash
/// order): `set NAME {` / `map NAME {` … `elements = { a, b,\n c }`.
fn elements_of(listing: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut rest = listing;
    while let Some(line_end) = rest.find('\n').or((!rest.is_empty()).then_some(rest.len())) {
        let line = rest[..line_end].trim();
        rest = &rest[(line_end + 1).min(rest.len())..];
        if let Some(name) = line
            .strip_prefix("set ")
            .or_else(|| line.strip_prefix("map "))
            .and_then(|l| l.strip_suffix(" {"))
        {
            out.insert(name.to_owned(), Vec::new());
            current = Some(name.to_owned());
        } else if let Some(start) = line.strip_prefix("elements = {") {
            // The list may wrap over several lines; it ends at the first '}'.
            let mut text = start.to_owned();
            while !text.contains('}') {
                let next = rest.find('\n').unwrap_or(rest.len());
                text.push(' ');
                text.push_str(&rest[..next]);
                rest = &rest[(next + 1).min(rest.len())..];
            }
            let text = &text[..text.find('}').expect("closing brace")];
            let mut elems: Vec<String> = text
                .split(',')
                .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|e| !e.is_empty())
                .collect();
            elems.sort();
            let name = current.clone().expect("elements outside a set");
            out.insert(name, elems);
        }
    }
    out
}

fn kernel_elements(nft: &Nftables) -> BTreeMap<String, Vec<String>> {
    let listing = nft
        .list_table(Family::Inet, TABLE_POLICY)
        .expect("list")
        .expect("the table exists");
    elements_of(&listing)
}

/// What the sets hold after `ops` applied in order to empty sets, in nft's listing syntax.
fn expected(ops: &[ElemOp]) -> BTreeMap<String, Vec<String>> {
    let mut sets: BTreeMap<String, BTreeMap<IpAddr, String>> = SETS
        .iter()
        .map(|s| ((*s).to_owned(), BTreeMap::new()))
        .collect();
    for op in ops {
        let set = sets.entry(op.set.clone()).or_default();
        // Keyed by the whole key: within one test a set never holds two ports of one address.
        if op.add {
            set.insert(op.elem.addr(), op.elem.render(true));
        } else {
            set.remove(&op.elem.addr());
        }
    }
    sets.into_iter()
        .map(|(name, elems)| {
            let mut v: Vec<String> = elems.into_values().collect();
            v.sort();
            (name, v)
        })
        .collect()
}

/// A few elements of every kind, both families.
fn every_kind() -> Vec<ElemOp> {
    let mut ops = Vec::new();
    for i in 1..=3 {
        for ip in [v4(i), v6(i)] {
            let sfx = if ip.is_ipv4() { "v4" } else { "v6" };
            let proto = [Proto::Tcp, Proto::Udp, Proto::Sctp][i as usize - 1];
            let chain = if i == 2 { "in-b" } else { "in-a" };
            ops.push(op(true, &format!("host-{sfx}"), Elem::Addr(ip)));
            ops.push(op(true, &format!("self-{sfx}"), Elem::Pair(ip)));
            ops.push(op(
                true,
                &format!("np-{sfx}"),
                Elem::AddrPort(ip, proto, 8000 + i as u16 * 1001),
            ));
            ops.push(op(
                true,
                &format!("to-pod-{sfx}"),
                Elem::Goto(ip, chain.to_owned()),
            ));
        }
    }
    ops
}

fn refused(err: Error) -> (String, i32) {
    match err {
        Error::NftNetlink { errno, .. } => (err.to_string(), errno),
        other => panic!("expected the kernel's refusal, got {other:?}"),
    }
}

#[test]
fn every_set_kind_round_trips_through_netlink() {
    require_privileges!();
    in_fresh_netns(|| {
        let nft = Nftables::new();
        load_table(&nft);
        let adds = every_kind();
        nft.apply_elements(&adds).expect("additions");
        let got = kernel_elements(&nft);
        assert_eq!(got, expected(&adds));
        assert_eq!(got["np-v6"].len(), 3, "{got:?}");
        assert!(
            got["to-pod-v4"].contains(&"10.0.0.2 : goto in-b".to_owned()),
            "{got:?}"
        );

        // Deletions: the first element of every set (a map deletion carries only the key).
        let dels: Vec<ElemOp> = adds
            .iter()
            .filter(|o| o.elem.addr() == v4(1) || o.elem.addr() == v6(1))
            .map(|o| op(false, &o.set, o.elem.clone()))
            .collect();
        assert_eq!(dels.len(), 8);
        nft.apply_elements(&dels).expect("deletions");
        let all: Vec<ElemOp> = adds.iter().chain(&dels).cloned().collect();
        assert_eq!(kernel_elements(&nft), expected(&all));
    });
}

#[test]
fn netlink_writes_what_nft_writes_for_the_same_ops() {
    require_privileges!();
    let ops = every_kind();
    let through = |netlink: bool| {
        let ops = ops.clone();
        in_fresh_netns(move || {
            let nft = Nftables::new();
            load_table(&nft);
            if netlink {
                nft.apply_elements(&ops).expect("netlink");
            } else {
                nft.apply(&weft_policy::render_elem_ops(&ops))
                    .expect("nft -f");
            }
            kernel_elements(&nft)
        })
    };
    let text = through(false);
    assert_eq!(through(true), text);
    assert!(text.values().all(|v| !v.is_empty()), "{text:?}");
}

#[test]
fn a_goto_whose_verdict_changes_is_deleted_then_added_in_one_batch() {
    require_privileges!();
    in_fresh_netns(|| {
        let nft = Nftables::new();
        load_table(&nft);
        let ip = v4(5);
        nft.apply_elements(&[op(true, "to-pod-v4", Elem::Goto(ip, "in-a".into()))])
            .expect("add");
        // Adding the same key with another verdict is a clash (as nft: File exists), and the
        // map keeps its old verdict.
        let (msg, errno) = refused(
            nft.apply_elements(&[op(true, "to-pod-v4", Elem::Goto(ip, "in-b".into()))])
                .expect_err("clash"),
        );
        assert_eq!(errno, libc::EEXIST, "{msg}");
        assert!(
            msg.contains("10.0.0.5 : goto in-b") && msg.contains("to-pod-v4"),
            "{msg}"
        );
        assert_eq!(kernel_elements(&nft)["to-pod-v4"], ["10.0.0.5 : goto in-a"]);

        nft.apply_elements(&[
            op(false, "to-pod-v4", Elem::Goto(ip, "in-a".into())),
            op(true, "to-pod-v4", Elem::Goto(ip, "in-b".into())),
        ])
        .expect("delete then add");
        assert_eq!(kernel_elements(&nft)["to-pod-v4"], ["10.0.0.5 : goto in-b"]);

        // A chain that does not exist is named.
        let (msg, errno) = refused(
            nft.apply_elements(&[op(true, "to-pod-v4", Elem::Goto(v4(6), "in-gone".into()))])
                .expect_err("no chain"),
        );
        assert_eq!(errno, libc::ENOENT, "{msg}");
        assert!(msg.contains("in-gone"), "{msg}");
    });
}

#[test]
fn a_batch_with_a_missing_set_at_the_end_applies_nothing() {
    require_privileges!();
    in_fresh_netns(|| {
        let nft = Nftables::new();
        load_table(&nft);
        let before = every_kind();
        nft.apply_elements(&before).expect("initial elements");
        let state = kernel_elements(&nft);

        let mut batch = vec![
            op(false, "host-v4", Elem::Addr(v4(1))),
            op(true, "host-v4", Elem::Addr(v4(40))),
            op(true, "np-v6", Elem::AddrPort(v6(40), Proto::Tcp, 443)),
            op(false, "to-pod-v6", Elem::Goto(v6(2), String::new())),
            op(true, "to-pod-v6", Elem::Goto(v6(41), "in-b".into())),
        ];
        batch.push(op(true, "p-0123456789abcdef-v4", Elem::Addr(v4(42))));
        let (msg, errno) = refused(nft.apply_elements(&batch).expect_err("missing set"));
        assert_eq!(errno, libc::ENOENT, "{msg}");
        assert!(
            msg.starts_with("adding 10.0.0.42 to set p-0123456789abcdef-v4 of inet weft-policy: No such file or directory (the set does not exist)"),
            "{msg}"
        );
        assert_eq!(
            kernel_elements(&nft),
            state,
            "nothing of the batch is in force"
        );

        // The same batch without its last op goes through entirely.
        batch.pop();
        nft.apply_elements(&batch).expect("valid batch");
        let all: Vec<ElemOp> = before.iter().chain(&batch).cloned().collect();
        assert_eq!(kernel_elements(&nft), expected(&all));

        // A missing table is named as such.
        let (msg, _) = refused(
            apply_set_elements(
                Family::Inet,
                "weft-absent",
                &[op(true, "host-v4", Elem::Addr(v4(1)))],
            )
            .expect_err("no table"),
        );
        assert!(msg.contains("the table does not exist"), "{msg}");
    });
}

#[test]
fn adding_a_present_element_is_fine_deleting_an_absent_one_is_not() {
    require_privileges!();
    in_fresh_netns(|| {
        let nft = Nftables::new();
        load_table(&nft);
        let ops = every_kind();
        nft.apply_elements(&ops).expect("first");
        nft.apply_elements(&ops)
            .expect("the same additions again, as `nft add element`");
        assert_eq!(kernel_elements(&nft), expected(&ops));

        let batch = [
            op(true, "host-v6", Elem::Addr(v6(50))),
            op(false, "self-v6", Elem::Pair(v6(51))),
        ];
        let (msg, errno) = refused(nft.apply_elements(&batch).expect_err("absent element"));
        assert_eq!(errno, libc::ENOENT, "{msg}");
        assert!(
            msg.starts_with(&format!(
                "deleting {0} . {0} from set self-v6 of inet weft-policy: No such file or directory (the element is not in the set)",
                v6(51)
            )),
            "{msg}"
        );
        assert_eq!(
            kernel_elements(&nft),
            expected(&ops),
            "the addition was not applied"
        );
        // nft refuses the same deletion.
        assert!(
            nft.apply(&weft_policy::render_elem_ops(&batch[1..]))
                .is_err()
        );
    });
}

#[test]
fn ten_thousand_additions_in_one_call() {
    require_privileges!();
    in_fresh_netns(|| {
        let nft = Nftables::new();
        load_table(&nft);
        // Alternating sets: every op is a message of its own, 10 000 acks to read.
        let alternating: Vec<ElemOp> = (0..10_000)
            .map(|i| {
                if i % 2 == 0 {
                    op(true, "host-v4", Elem::Addr(v4(1000 + i)))
                } else {
                    op(true, "to-pod-v6", Elem::Goto(v6(1000 + i), "in-a".into()))
                }
            })
            .collect();
        nft.apply_elements(&alternating).expect("10 000 messages");
        // One set: a few large messages.
        let one_set: Vec<ElemOp> = (0..10_000)
            .map(|i| op(true, "np-v6", Elem::AddrPort(v6(i), Proto::Udp, 53)))
            .collect();
        nft.apply_elements(&one_set)
            .expect("10 000 elements of one set");
        let all: Vec<ElemOp> = alternating.iter().chain(&one_set).cloned().collect();
        let got = kernel_elements(&nft);
        assert_eq!(got["host-v4"].len(), 5_000);
        assert_eq!(got["to-pod-v6"].len(), 5_000);
        assert_eq!(got["np-v6"].len(), 10_000);
        assert_eq!(got, expected(&all));

        // Large and failing: 10 000 deletions, the last of an absent element; nothing happens.
        let mut dels: Vec<ElemOp> = one_set
            .iter()
            .map(|o| op(false, &o.set, o.elem.clone()))
            .collect();
        dels.push(op(false, "host-v4", Elem::Addr(v4(1))));
        let (msg, _) = refused(nft.apply_elements(&dels).expect_err("absent element"));
        assert!(msg.contains("deleting 10.0.0.1 from set host-v4"), "{msg}");
        assert_eq!(kernel_elements(&nft)["np-v6"].len(), 10_000);
    });
}
