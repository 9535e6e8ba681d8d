//! Privileged tests of the nftables applier against the kernel. Each test runs in a network
//! namespace of its own (`unshare(CLONE_NEWNET)` on a dedicated thread, gone when the thread ends,
//! also on failure); they skip unless run as root with `nft` installed. Run them with
//! `cargo test -p weft-node-agent --test nft_netns`.

mod nft_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nft_support::{CASES, in_fresh_netns, skip_reason};
use weft_node_agent::Error;
use weft_node_agent::masquerade::{render_masquerade, sync_masquerade, teardown_masquerade};
use weft_node_agent::nft::{
    Family, LIBNFTABLES, NFT_BINARY, NftApplier, Nftables, TABLE_NAT, TableChange,
    render_replace_table, same_ruleset, sync_table,
};

macro_rules! require_privileges {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// The real applier, counting kernel writes.
#[derive(Default)]
struct Counting {
    inner: Nftables,
    applies: AtomicUsize,
}

impl Counting {
    fn writes(&self) -> usize {
        self.applies.load(Ordering::SeqCst)
    }
}

impl NftApplier for Counting {
    fn apply(&self, script: &str) -> Result<(), Error> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        self.inner.apply(script)
    }

    fn list_table(&self, family: Family, name: &str) -> Result<Option<String>, Error> {
        self.inner.list_table(family, name)
    }

    fn list_counters(
        &self,
        family: Family,
        name: &str,
    ) -> Result<Option<weft_node_agent::nft::Counters>, Error> {
        self.inner.list_counters(family, name)
    }
}

fn listing(nft: &dyn NftApplier) -> Option<String> {
    nft.list_table(Family::Inet, TABLE_NAT).expect("list")
}

fn table(i: usize) -> String {
    render_masquerade(&CASES[i].plan()).expect("enabled")
}

#[test]
fn apply_from_scratch_then_reapply_without_a_write() {
    require_privileges!();
    in_fresh_netns(|| {
        for case in CASES {
            let nft = Counting::default();
            let plan = case.plan();
            let rendered = render_masquerade(&plan).expect("enabled");
            assert_eq!(
                listing(&nft),
                None,
                "{}: a fresh namespace has no table",
                case.name
            );

            assert_eq!(
                sync_masquerade(&plan, &nft).expect("sync"),
                TableChange::Created
            );
            assert_eq!(nft.writes(), 1);
            let kernel = listing(&nft).expect("present");
            assert!(
                same_ruleset(&kernel, &rendered),
                "{}: the kernel lists the table differently from what weft renders, so every sync would write.\nrendered:\n{rendered}\nkernel:\n{kernel}",
                case.name
            );

            assert_eq!(
                sync_masquerade(&plan, &nft).expect("sync"),
                TableChange::Unchanged
            );
            assert_eq!(
                nft.writes(),
                1,
                "{}: an unchanged table was written",
                case.name
            );
            teardown_masquerade(&nft).expect("teardown");
        }
    });
}

#[test]
fn replace_is_atomic_for_a_concurrent_reader() {
    require_privileges!();
    in_fresh_netns(|| {
        let nft = Nftables::new();
        let (a, b) = (table(0), table(1));
        nft.apply(&render_replace_table(Family::Inet, TABLE_NAT, &a))
            .expect("apply a");

        // A reader in the same namespace (threads inherit it) lists the table while it is replaced
        // back and forth: every listing must be all of A or all of B, never absent or mixed. It
        // lists through `nft` processes, each with its own socket: the in-process applier would
        // wait for the writer's transaction on their shared context, which proves nothing.
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (done, a, b) = (done.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let nft = Nftables::with_binary(NFT_BINARY);
                let mut seen = 0usize;
                while !done.load(Ordering::SeqCst) {
                    let l = nft
                        .list_table(Family::Inet, TABLE_NAT)
                        .expect("list")
                        .unwrap_or_else(|| panic!("the table was absent during a replacement"));
                    assert!(
                        same_ruleset(&l, &a) || same_ruleset(&l, &b),
                        "a reader saw a table that is neither A nor B:\n{l}"
                    );
                    seen += 1;
                }
                seen
            })
        };
        for i in 0..40 {
            let next = if i % 2 == 0 { &b } else { &a };
            let change = sync_table(&nft, Family::Inet, TABLE_NAT, Some(next)).expect("replace");
            assert_eq!(change, TableChange::Replaced);
            assert!(same_ruleset(&listing(&nft).expect("present"), next));
        }
        done.store(true, Ordering::SeqCst);
        let seen = reader.join().expect("reader");
        assert!(seen > 0, "the reader never listed the table");
    });
}

/// Every node sync lists the masquerade and untracked tables in-process; the comparison with the
/// rendered table relies on that listing being the one `nft --stateless list` prints, counters
/// without their values included.
#[test]
fn an_in_process_listing_is_the_binarys() {
    require_privileges!();
    in_fresh_netns(|| {
        let library = Nftables::new();
        assert!(library.in_process(), "{LIBNFTABLES} did not load");
        let binary = Nftables::with_binary(NFT_BINARY);
        for (lister, how) in [(&library, "in-process"), (&binary, "nft")] {
            assert_eq!(
                lister.list_table(Family::Inet, TABLE_NAT).expect("list"),
                None,
                "{how}: an absent table"
            );
        }
        let table = format!(
            "{}\n{}",
            table(0),
            "table inet weft-nat {\n chain counted {\n counter\n ip daddr 10.0.0.1 counter accept\n }\n}"
        );
        library.apply(&table).expect("apply");
        // A stateful listing would print `counter packets 0 bytes 0`.
        let in_process = library
            .list_table(Family::Inet, TABLE_NAT)
            .expect("list")
            .expect("present");
        let by_binary = binary
            .list_table(Family::Inet, TABLE_NAT)
            .expect("list")
            .expect("present");
        assert_eq!(in_process, by_binary);
        assert!(
            in_process.contains("counter") && !in_process.contains("packets"),
            "the in-process listing is not stateless:\n{in_process}"
        );
        // A change made by someone else (an `nft` process: an admin, another agent version) is
        // seen by the next in-process listing: the context's cache is not the kernel's state.
        binary
            .apply("add rule inet weft-nat counted ip daddr 10.0.0.2 drop\n")
            .expect("a foreign change");
        let after = library
            .list_table(Family::Inet, TABLE_NAT)
            .expect("list")
            .expect("present");
        assert!(
            after.contains("10.0.0.2"),
            "the in-process listing missed a change made by another process:\n{after}"
        );
        assert_eq!(
            after,
            binary
                .list_table(Family::Inet, TABLE_NAT)
                .expect("list")
                .expect("present")
        );
        // A table weft does not list in-process (the policy table's size grows with the cluster)
        // is read by the binary, which gives the same answer for an absent one.
        assert_eq!(
            library
                .list_table(Family::Inet, weft_node_agent::nft::TABLE_POLICY)
                .expect("list"),
            None
        );
    });
}

#[test]
fn a_failed_transaction_leaves_the_previous_ruleset_in_force() {
    require_privileges!();
    // The library in-process (where the agent's transactions run) and the binary (its fallback)
    // must fail, report and recover alike.
    let library = Nftables::new();
    assert!(
        library.in_process(),
        "{LIBNFTABLES} is installed with nft and must load"
    );
    for inner in [library, Nftables::with_binary(NFT_BINARY)] {
        failed_transaction_case(inner);
    }
}

fn failed_transaction_case(inner: Nftables) {
    let way = if inner.in_process() {
        "library"
    } else {
        "binary"
    };
    in_fresh_netns(move || {
        let nft = Counting {
            inner,
            applies: AtomicUsize::new(0),
        };
        let (a, b) = (table(0), table(1));
        sync_table(&nft, Family::Inet, TABLE_NAT, Some(&a)).expect("a");

        // Refused by the kernel after the delete and the new table were already in the batch:
        // creating an element that exists is EEXIST, so the whole batch is aborted.
        let kernel_refusal = render_replace_table(Family::Inet, TABLE_NAT, &b)
            + "table inet weft-nat {\n\tset probe {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.1 }\n\t}\n}\n"
            + "create element inet weft-nat probe { 10.0.0.1 }\n";
        let err = nft.apply(&kernel_refusal).expect_err("EEXIST");
        assert!(
            matches!(&err, Error::NftFailed { stderr, .. } if stderr.contains("File exists")),
            "{way}: {err:?}"
        );
        assert!(
            same_ruleset(&listing(&nft).expect("A still there"), &a),
            "a failed transaction changed the ruleset"
        );

        // Refused by nft's parser: nothing reaches the kernel.
        let syntax = render_replace_table(Family::Inet, TABLE_NAT, &b) + "this is not nftables\n";
        let err = nft.apply(&syntax).expect_err("syntax error");
        assert!(
            matches!(&err, Error::NftFailed { stderr, .. } if stderr.contains("syntax error")),
            "{way}: {err:?}"
        );
        assert!(same_ruleset(&listing(&nft).expect("A still there"), &a));

        // And the applier still works afterwards.
        assert_eq!(
            sync_table(&nft, Family::Inet, TABLE_NAT, Some(&b)).expect("b"),
            TableChange::Replaced
        );
    });
}

#[test]
fn uninstall_deletes_the_table_and_only_it() {
    require_privileges!();
    in_fresh_netns(|| {
        let nft = Counting::default();
        let foreign = "table inet someone-else {\n\tchain c {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n";
        nft.apply(foreign).expect("foreign table");
        sync_masquerade(&CASES[1].plan(), &nft).expect("sync");

        assert_eq!(
            teardown_masquerade(&nft).expect("teardown"),
            TableChange::Deleted
        );
        assert_eq!(listing(&nft), None);
        let writes = nft.writes();
        assert_eq!(
            teardown_masquerade(&nft).expect("again"),
            TableChange::Unchanged
        );
        assert_eq!(nft.writes(), writes, "removing an absent table wrote");
        nft.delete_table(Family::Inet, TABLE_NAT)
            .expect("deleting an absent table is not an error");
        assert!(
            nft.list_table(Family::Inet, "someone-else")
                .expect("list")
                .is_some_and(|l| same_ruleset(&l, foreign)),
            "another owner's table was touched"
        );
    });
}

/// The policy table's drop counters as the agent reads them from the kernel: absent before the
/// table, seeded values after a full replacement, untouched by an element update; the exported
/// totals follow and never count a packet twice.
#[test]
fn policy_drop_counters_are_read_from_the_kernel_and_survive_a_replacement() {
    use weft_node_agent::nft::TABLE_POLICY;
    use weft_node_agent::observe::Metrics;
    use weft_node_agent::policy::drops::DropCounters;
    require_privileges!();
    in_fresh_netns(|| {
        let nft = Arc::new(Nftables::new());
        assert_eq!(
            nft.list_counters(Family::Inet, TABLE_POLICY).expect("list"),
            None
        );
        let metrics = Arc::new(Metrics::new());
        let drops = DropCounters::new(nft.clone(), metrics.clone());
        let ir = weft_policy::compile_node(
            &weft_policy::Index::new(),
            &weft_policy::NodeInput {
                node_name: "n1".into(),
                host_addrs: vec!["192.168.1.1".parse().expect("ip")],
                pod_cidrs: vec!["10.244.1.0/24".parse().expect("cidr")],
            },
        );
        // A table left by an earlier agent, whose counters already counted drops.
        let seed: weft_policy::CounterSeed = [
            ("dropped-ingress".to_owned(), (3, 252)),
            ("unprogrammed-egress".to_owned(), (1, 60)),
        ]
        .into();
        nft.apply(&weft_policy::render_ruleset_seeded(&ir, &seed))
            .expect("load");
        let read = nft
            .list_counters(Family::Inet, TABLE_POLICY)
            .expect("list")
            .expect("table present");
        assert_eq!(read.len(), weft_policy::DROP_COUNTERS.len(), "{read:?}");
        assert_eq!(read["dropped-ingress"], (3, 252));
        assert_eq!(read["dropped-egress"], (0, 0));
        // The agent's replacement keeps them; an element update leaves them alone.
        drops
            .apply_full(|seed| weft_policy::render_ruleset_seeded(&ir, seed))
            .expect("replace");
        nft.apply("add element inet weft-policy host-v4 { 192.168.1.2 }\n")
            .expect("element update");
        let after = nft
            .list_counters(Family::Inet, TABLE_POLICY)
            .expect("list")
            .expect("table present");
        assert_eq!(after, read, "a seeded replacement keeps the counters");
        // The netlink dump reads what nft itself lists.
        let json = std::process::Command::new(NFT_BINARY)
            .args(["-j", "list", "counters", "table", "inet", TABLE_POLICY])
            .output()
            .expect("nft -j");
        let listed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
        let by_nft: weft_node_agent::nft::Counters = listed["nftables"]
            .as_array()
            .expect("nftables")
            .iter()
            .filter_map(|o| o.get("counter"))
            .map(|c| {
                (
                    c["name"].as_str().expect("name").to_owned(),
                    (
                        c["packets"].as_u64().expect("packets"),
                        c["bytes"].as_u64().expect("bytes"),
                    ),
                )
            })
            .collect();
        assert_eq!(after, by_nft);
        // A table without counters is a table (empty), not an absent one.
        nft.apply(&table(0)).expect("a masquerade table");
        assert_eq!(
            nft.list_counters(Family::Inet, TABLE_NAT).expect("list"),
            Some(Default::default())
        );
        drops.sample().expect("sample");
        let text = metrics.render();
        for want in [
            "weft_agent_policy_dropped_packets_total{direction=\"ingress\",reason=\"policy\"} 3",
            "weft_agent_policy_dropped_bytes_total{direction=\"ingress\",reason=\"policy\"} 252",
            "weft_agent_policy_dropped_packets_total{direction=\"egress\",reason=\"unprogrammed\"} 1",
            "weft_agent_policy_dropped_packets_total{direction=\"egress\",reason=\"policy\"} 0",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
    });
}
