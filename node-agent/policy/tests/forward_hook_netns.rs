//! The forward hook in the kernel: a node namespace routing between pod namespaces. While the
//! cluster has no policy object, the ruleset is loaded whole but its `forward` chain is not
//! attached to the hook, so nothing is filtered, not even an address the ruleset has no profile
//! for. The first policy attaches it in one replacement, and from then on an unprogrammed address
//! is dropped; the last policy's removal detaches it again. Needs root, `nft` and `ping`; skipped
//! otherwise.

mod support;

use serde_json::json;
use support::netns::{NodeNs, ping, run, skip_unless_privileged};
use support::*;
use weft_policy::{Because, Decision, Proto, compile_node, render_ruleset, render_update};

/// Whether the node's `forward` chain is a base chain on the forward hook.
fn hooked(node: &NodeNs) -> bool {
    run(
        &node.node,
        &["nft", "list", "chain", "inet", "weft-policy", "forward"],
    )
    .contains("hook forward")
}

#[test]
fn the_forward_hook_is_attached_while_the_cluster_has_a_policy_and_only_then() {
    skip_unless_privileged!("nft", "ping");
    let mut node = NodeNs::new("fh");
    let _xa = node.pod("xa", &["10.244.1.10"]);
    let xb = node.pod("xb", &["10.244.1.11"]);
    // An address in the node's pod CIDR that the ruleset has no profile for.
    let stranger = node.pod("st", &["10.244.1.99"]);

    let open = cluster();
    let none = compile_node(&open, &node1());
    assert!(!none.enforcing, "no policy object in the index");
    node.load(&render_ruleset(&none));
    assert!(!hooked(&node), "no policy: forward is a regular chain");
    assert!(
        ping(&stranger, "10.244.1.11"),
        "no policy: an unprogrammed address is not filtered"
    );
    assert!(ping(&xb, "10.244.1.10"));
    let v = none.verdict(ip("10.244.1.99"), ip("10.244.1.11"), Proto::Tcp, 80);
    assert_eq!(
        (v.decision, &v.because[..]),
        (Decision::Allowed, &[Because::NoPolicy][..]),
        "the verdict says why"
    );

    // A policy in another namespace, selecting no pod of this node, still attaches the hook: a
    // pod created later is dropped until it is programmed, whatever it turns out to be.
    let mut elsewhere = open.clone();
    elsewhere.apply_network_policy(&network_policy(
        "z",
        "nothing-here",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    ));
    let far = compile_node(&elsewhere, &node1());
    assert!(far.enforcing);
    let update = render_update(&none, &far);
    assert!(update.full, "attaching the hook is a replacement");
    node.load(&update.script);
    assert!(hooked(&node));
    assert!(
        !ping(&stranger, "10.244.1.11"),
        "with a policy, an unprogrammed address is dropped"
    );
    assert!(
        ping(&xb, "10.244.1.10"),
        "pods no policy selects still talk"
    );

    // A policy isolating x/a, then pod churn: no replacement while the hook stays.
    let mut isolating = elsewhere.clone();
    isolating.apply_network_policy(&network_policy(
        "x",
        "deny-in",
        json!({"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"]}),
    ));
    let isolated = compile_node(&isolating, &node1());
    let update = render_update(&far, &isolated);
    assert!(!update.full, "a second policy is incremental");
    node.load(&update.script);
    assert!(!ping(&xb, "10.244.1.10"), "x/a is isolated for ingress");

    // The last policies go: detached again, in one replacement.
    let update = render_update(&isolated, &compile_node(&open, &node1()));
    assert!(update.full, "detaching the hook is a replacement");
    node.load(&update.script);
    assert!(!hooked(&node));
    assert!(ping(&xb, "10.244.1.10"));
    assert!(ping(&stranger, "10.244.1.11"));
}
