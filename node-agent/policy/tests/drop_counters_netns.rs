//! The ruleset's drop counters in the kernel: a node namespace routing between pod namespaces with
//! the rendered ruleset loaded; one ICMP echo request at a time is sent into a drop, and exactly
//! the counter of that drop's direction and reason must grow, by one packet of 84 bytes. The
//! counters keep their values across incremental updates (pod churn, a policy removed) and across
//! a full replacement seeded with what was read, and restart from zero without a seed. Needs root,
//! `nft` and `ping`; skipped otherwise.

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use support::netns::{NodeNs, ping, skip_unless_privileged};
use support::*;
use weft_policy::{
    CounterSeed, DROP_COUNTERS, compile_node, render_ruleset, render_ruleset_seeded, render_update,
};

/// One IPv4 echo request: 20 bytes of IP header, 8 of ICMP, 56 of payload.
const PING_BYTES: u64 = 84;

fn zero() -> BTreeMap<String, (u64, u64)> {
    DROP_COUNTERS
        .iter()
        .map(|c| (c.name.to_owned(), (0, 0)))
        .collect()
}

#[test]
fn a_dropped_packet_counts_into_its_directions_counter_and_counters_survive_updates() {
    skip_unless_privileged!("nft", "ping");
    let mut node = NodeNs::new("dc");
    let xa = node.pod("xa", &["10.244.1.10"]);
    let xb = node.pod("xb", &["10.244.1.11"]);
    let ya = node.pod("ya", &["10.244.1.20"]);
    let yb = node.pod("yb", &["10.244.1.21"]);
    // An address in the node's pod CIDR that the ruleset has no profile for.
    let stranger = node.pod("st", &["10.244.1.99"]);

    let mut ix = cluster();
    ix.apply_network_policy(&network_policy(
        "x",
        "deny-in",
        json!({"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"]}),
    ));
    ix.apply_network_policy(&network_policy(
        "y",
        "deny-out",
        json!({"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Egress"]}),
    ));
    let ir = compile_node(&ix, &node1());
    node.load(&render_ruleset(&ir));
    assert_eq!(node.counters(), zero(), "a fresh ruleset counts nothing");

    // Allowed traffic counts nothing.
    assert!(ping(&ya, "10.244.1.11"), "y/a -> x/b is allowed");
    assert!(ping(&xa, "10.244.1.20"), "x/a -> y/a is allowed");
    assert_eq!(
        node.counters(),
        zero(),
        "allowed traffic counted as dropped"
    );

    let mut want = zero();
    let cases = [
        (
            &ya,
            "10.244.1.10",
            "dropped-ingress",
            "x/a isolated for ingress",
        ),
        (
            &yb,
            "10.244.1.11",
            "dropped-egress",
            "y/b isolated for egress",
        ),
        (
            &stranger,
            "10.244.1.11",
            "unprogrammed-egress",
            "source not programmed",
        ),
        (
            &xb,
            "10.244.1.99",
            "unprogrammed-ingress",
            "destination not programmed",
        ),
    ];
    for (from, to, counter, why) in cases {
        assert!(!ping(from, to), "{from} -> {to} must be dropped ({why})");
        let e = want.get_mut(counter).expect("known counter");
        *e = (e.0 + 1, e.1 + PING_BYTES);
        assert_eq!(node.counters(), want, "after {from} -> {to} ({why})");
    }

    // Incremental updates (a new pod of an existing profile; a policy removed, so chains go) leave
    // the counters alone.
    let mut churn = ix.clone();
    churn.apply_pod(&pod(
        "x",
        "a2",
        "n1",
        json!({"app": "a"}),
        &["10.244.1.12"],
        &[],
    ));
    let next = compile_node(&churn, &node1());
    let update = render_update(&ir, &next);
    assert!(!update.full, "pod churn is an element update");
    node.load(&update.script);
    assert_eq!(node.counters(), want, "after pod churn");
    let mut open = churn.clone();
    open.delete_network_policy("y", "deny-out");
    let after = compile_node(&open, &node1());
    let update = render_update(&next, &after);
    assert!(!update.full, "a policy removal is incremental");
    assert!(update.script.contains("delete chain"), "{}", update.script);
    node.load(&update.script);
    assert_eq!(node.counters(), want, "after a policy was removed");
    assert!(ping(&yb, "10.244.1.11"), "y/b may send again");

    // A full replacement seeded with what was read keeps the values; the next drop adds to them.
    let seed: CounterSeed = node.counters();
    node.load(&render_ruleset_seeded(&after, &seed));
    assert_eq!(node.counters(), want, "after a seeded full replacement");
    assert!(!ping(&ya, "10.244.1.10"));
    let e = want.get_mut("dropped-ingress").expect("known counter");
    *e = (e.0 + 1, e.1 + PING_BYTES);
    assert_eq!(node.counters(), want, "a drop after the seeded replacement");

    // Without a seed, a replacement starts the counters at zero (why the agent seeds them).
    node.load(&render_ruleset(&after));
    assert_eq!(node.counters(), zero(), "an unseeded replacement");

    // A policy added incrementally whose prefix sets are new and overlap (nested excepts): the
    // sets are declared with their elements inline, outermost prefixes only (no auto-merge), the
    // kernel takes them, and they judge as the policy says.
    let mut nested = open.clone();
    nested.apply_network_policy(&network_policy(
        "x",
        "nested",
        json!({"podSelector": {"matchLabels": {"app": "a"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16",
                   "except": ["10.244.1.16/28", "10.244.1.0/24", "10.244.1.20/32"]}}]}]}),
    ));
    nested.apply_network_policy(&network_policy(
        "x",
        "from-y-a",
        json!({"podSelector": {"matchLabels": {"app": "a"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.1.20/32"}}]}]}),
    ));
    let with_nested = compile_node(&nested, &node1());
    let update = render_update(&after, &with_nested);
    assert!(!update.full, "a policy added is incremental");
    assert!(
        update.script.contains("elements = { 10.244.1.0/24 }")
            && !update.script.contains("add element inet weft-policy c-"),
        "new prefix sets carry their elements, outermost only:\n{}",
        update.script
    );
    node.load(&update.script);
    assert!(
        !ping(&xb, "10.244.1.10"),
        "x/b is in an except of the only policy admitting it"
    );
    assert!(ping(&ya, "10.244.1.10"), "y/a is admitted by from-y-a");
}
