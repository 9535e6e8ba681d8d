//! Hostile input: policies whose fields hold arbitrary strings and numbers (bad operators, label
//! syntax, CIDRs, protocols, ports, actions, tiers, shapes). The engine must never panic, must
//! report every refused object as a problem, and must render a ruleset where each refused object's
//! pods fail closed. Failures are kept in `fuzz.proptest-regressions`.

mod support;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};
use support::*;
use weft_policy::{Decision, Proto, compile_node, render_ruleset};

const TABLE_OPEN: &str = "table inet weft-policy {";

fn nasty_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("")),
        Just(json!("In")),
        Just(json!("Exists")),
        Just(json!("a")),
        Just(json!("10.0.0.0/8")),
        Just(json!("10.0.0.0/33")),
        Just(json!("::/200")),
        Just(json!("not-a-cidr")),
        Just(json!("TCP")),
        Just(json!("ICMP")),
        Just(json!("Accept")),
        Just(json!("Allow")),
        Just(json!("Redirect")),
        Just(json!("Admin")),
        Just(json!("\"quoted\\\"")),
        "[ -~]{0,20}".prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ]
}

fn nasty_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(80)),
        Just(json!(65535)),
        Just(json!(65536)),
        Just(json!(i32::MAX)),
        any::<i32>().prop_map(Value::from),
    ]
}

/// A JSON value shaped loosely like policy fields, with nasty leaves.
fn nasty_value(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        nasty_string(),
        nasty_number(),
        Just(json!({})),
        Just(json!([]))
    ];
    leaf.prop_recursive(depth, 24, 4, |inner| {
        let keys = prop_oneof![
            Just("podSelector"),
            Just("namespaceSelector"),
            Just("matchLabels"),
            Just("matchExpressions"),
            Just("key"),
            Just("operator"),
            Just("values"),
            Just("ipBlock"),
            Just("cidr"),
            Just("except"),
            Just("ports"),
            Just("port"),
            Just("endPort"),
            Just("protocol"),
            Just("from"),
            Just("to"),
            Just("namespaces"),
            Just("pods"),
            Just("networks"),
            Just("nodes"),
            Just("action"),
            Just("protocols"),
            Just("tcp"),
            Just("destinationPort"),
            Just("number"),
            Just("range"),
            Just("start"),
            Just("end"),
            Just("destinationNamedPort"),
            Just("portNumber"),
            Just("namedPort"),
            Just("portRange"),
            Just("app")
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map(keys, inner, 0..4).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
    .boxed()
}

fn spec_of(kind: u8) -> BoxedStrategy<Value> {
    let rules = prop::collection::vec(nasty_value(3), 0..3);
    match kind {
        0 => (nasty_value(2), rules.clone(), rules, prop::option::of(prop::collection::vec(nasty_string(), 0..3)))
            .prop_map(|(sel, i, e, t)| json!({"podSelector": sel, "ingress": i, "egress": e, "policyTypes": t}))
            .boxed(),
        _ => (nasty_string(), nasty_number(), nasty_value(2), rules.clone(), rules)
            .prop_map(|(tier, prio, subject, i, e)| json!({"tier": tier, "priority": prio, "subject": subject, "ingress": i, "egress": e}))
            .boxed(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_policies_never_panic_and_refusals_fail_closed(kind in 0u8..4, spec in (0u8..4).prop_flat_map(spec_of)) {
        let mut ix = cluster();
        // Objects that do not even decode never reach the index (the watch reports them); the
        // rest must be handled whatever they hold.
        let applied = match kind {
            0 => serde_json::from_value(json!({"metadata": {"namespace": "x", "name": "f"}, "spec": spec}))
                .map(|np| ix.apply_network_policy(&np)).is_ok(),
            1 => serde_json::from_value(json!({"metadata": {"name": "f"}, "spec": spec}))
                .map(|c| ix.apply_cluster_network_policy(&c)).is_ok(),
            2 => serde_json::from_value(json!({"metadata": {"name": "f"}, "spec": spec}))
                .map(|a| ix.apply_admin_network_policy(&a)).is_ok(),
            _ => serde_json::from_value(json!({"metadata": {"name": "default"}, "spec": spec}))
                .map(|b| ix.apply_baseline_admin_network_policy(&b)).is_ok(),
        };
        let ir = compile_node(&ix, &node1());
        let text = render_ruleset(&ir);
        prop_assert!(text.contains(TABLE_OPEN), "no table");
        for line in text.lines().filter(|l| l.contains("comment \"")) {
            let inner = &line[line.find("comment \"").map_or(0, |i| i + 9)..];
            prop_assert_eq!(inner.matches('"').count(), 1, "unescaped quote in {}", line);
        }
        let problems = ix.problems();
        if applied && !problems.is_empty() {
            // Every local pod the refused object selects drops everything in its directions;
            // at least the chains say so.
            let failed: Vec<_> = ir.chains.values().filter(|c| !c.fail_closed.is_empty()).collect();
            for c in &failed {
                prop_assert!(c.admin.is_empty() && c.np.is_none() && c.baseline.is_empty());
            }
            for (key, pod) in &ir.pods {
                for (chain, dir_is_ingress) in [(&pod.ingress, true), (&pod.egress, false)] {
                    if !ir.chains[chain].fail_closed.is_empty() {
                        let (src, dst) = if dir_is_ingress { (ip("10.244.2.30"), pod.ips[0]) } else { (pod.ips[0], ip("10.244.2.30")) };
                        prop_assert_eq!(ir.verdict(src, dst, Proto::Tcp, 80).decision, Decision::Denied, "{}", key);
                    }
                }
            }
        }
    }
}
