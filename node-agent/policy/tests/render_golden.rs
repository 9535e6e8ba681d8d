//! Golden rendered rulesets (reviewed like code) and the privileged check that nftables accepts
//! them: `nft -c -f` inside a fresh network namespace, skipped unless root.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::*;
use weft_policy::{Index, compile_node, render_elem_ops, render_ruleset, render_update};

const REGENERATE: &str = "cargo test -p weft-policy --test render_golden";

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Every feature of the IR in one small cluster: tiers, Pass, named ports both ways, ipBlock with
/// except, endPort, SCTP, a refused policy, dual stack.
fn showcase() -> Index {
    let mut ix = cluster();
    ix.apply_network_policy(&network_policy("x", "web", json!({
        "podSelector": {"matchLabels": {"app": "a"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "b"}}},
                      {"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {}}],
             "ports": [{"port": "http"}, {"protocol": "UDP", "port": 53}, {"port": 9000, "endPort": 9100}]},
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.2.0/24", "10.244.3.0/24"]}}],
             "ports": [{"protocol": "SCTP", "port": 3868}]}
        ],
        "egress": [
            {"to": [{"podSelector": {"matchLabels": {"app": "c"}}}], "ports": [{"port": "http"}]},
            {"to": [{"ipBlock": {"cidr": "fd00::/8"}}]}
        ]
    })));
    ix.apply_cluster_network_policy(&cnp("admin-10", json!({
        "tier": "Admin", "priority": 10,
        "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
        "ingress": [
            {"name": "pass-same-team", "action": "Pass", "from": [{"namespaces": {"matchLabels": {"team": "a"}}}]},
            {"name": "deny-z", "action": "Deny", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}
        ],
        "egress": [
            {"name": "accept-dns", "action": "Accept", "to": [{"networks": ["10.96.0.10/32"]}],
             "protocols": [{"udp": {"destinationPort": {"number": 53}}}]}
        ]
    })));
    ix.apply_admin_network_policy(&anp("anp-20", json!({
        "priority": 20,
        "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "b"}}}},
        "egress": [{"name": "deny-metadata", "action": "Deny", "to": [{"networks": ["169.254.169.254/32"]}]}]
    })));
    ix.apply_baseline_admin_network_policy(&banp(json!({
        "subject": {"namespaces": {}},
        "ingress": [{"name": "deny-from-z", "action": "Deny",
                     "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}],
                     "ports": [{"portRange": {"protocol": "TCP", "start": 1, "end": 1024}}]}]
    })));
    ix.apply_network_policy(&network_policy(
        "y",
        "broken",
        json!({
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]
        }),
    ));
    ix
}

#[test]
fn showcase_ruleset_matches_golden() {
    let ix = showcase();
    let text = render_ruleset(&compile_node(&ix, &node1()));
    weft_crds::golden::check_golden(&golden("showcase-n1.nft"), &text, REGENERATE)
        .unwrap_or_else(|e| panic!("{e}"));
    let text = render_ruleset(&compile_node(&ix, &node2()));
    weft_crds::golden::check_golden(&golden("showcase-n2.nft"), &text, REGENERATE)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn no_policy_ruleset_matches_golden() {
    let text = render_ruleset(&compile_node(&cluster(), &node1()));
    weft_crds::golden::check_golden(&golden("no-policy-n1.nft"), &text, REGENERATE)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The showcase plus `nodes` peers: an Admin-tier CNP denying team=a egress to the nodes of zone
/// b (n2's InternalIP and ExternalIP) and an ANP allowing TCP/10250 to every node.
fn nodes_showcase() -> Index {
    let mut ix = showcase();
    ix.apply_cluster_network_policy(&cnp("deny-zone-b-nodes", json!({
        "tier": "Admin", "priority": 5,
        "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
        "egress": [{"name": "deny-zone-b", "action": "Deny", "to": [{"nodes": {"matchLabels": {"zone": "b"}}}]}]
    })));
    ix.apply_admin_network_policy(&anp(
        "kubelet-anywhere",
        json!({
            "priority": 1,
            "subject": {"namespaces": {}},
            "egress": [{"name": "kubelet", "action": "Allow", "to": [{"nodes": {}}],
                        "ports": [{"portNumber": {"protocol": "TCP", "port": 10250}}]}]
        }),
    ));
    ix
}

/// n2 moved to zone a, n1 to zone b.
fn nodes_swapped(mut ix: Index) -> Index {
    ix.apply_node(&node(
        "n1",
        json!({"kubernetes.io/os": "linux", "zone": "b"}),
        &[
            ("InternalIP", "192.168.1.1"),
            ("InternalIP", "fd00:1::1"),
            ("Hostname", "n1"),
        ],
    ));
    ix.apply_node(&node(
        "n2",
        json!({"kubernetes.io/os": "linux", "zone": "a"}),
        &[
            ("InternalIP", "192.168.1.2"),
            ("ExternalIP", "203.0.113.2"),
            ("Hostname", "n2"),
        ],
    ));
    ix
}

#[test]
fn nodes_peers_ruleset_and_node_churn_match_golden() {
    let ix = nodes_showcase();
    let before = compile_node(&ix, &node1());
    weft_crds::golden::check_golden(
        &golden("nodes-n1.nft"),
        &render_ruleset(&before),
        REGENERATE,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let after = compile_node(&nodes_swapped(ix), &node1());
    let update = render_update(&before, &after);
    assert!(
        !update.full,
        "node churn must not replace the table:\n{}",
        update.script
    );
    for word in ["chain", "table", " set "] {
        assert!(
            !update.script.contains(word),
            "{word} in a node churn update:\n{}",
            update.script
        );
    }
    weft_crds::golden::check_golden(&golden("nodes-n1-churn.nft"), &update.script, REGENERATE)
        .unwrap_or_else(|e| panic!("{e}"));
}

fn replica(name: &str, last: u8) -> k8s_openapi::api::core::v1::Pod {
    pod(
        "x",
        name,
        "n1",
        json!({"app": "a"}),
        &[
            &format!("10.244.1.{last}"),
            &format!("fd00:10:244:1::{last}"),
        ],
        &[("http", "TCP", 8080), ("dns", "UDP", 53)],
    )
}

#[test]
fn pod_churn_is_an_element_update_and_matches_golden() {
    let mut before = showcase();
    before.apply_pod(&replica("a2", 12));
    // a2 replaced by a3: the same profile, another address.
    let mut after = showcase();
    after.apply_pod(&replica("a3", 13));
    let update = render_update(
        &compile_node(&before, &node1()),
        &compile_node(&after, &node1()),
    );
    assert!(
        !update.full,
        "pod churn must not replace the table:\n{}",
        update.script
    );
    for word in ["chain", "table", " set "] {
        assert!(
            !update.script.contains(word),
            "{word} in an element update:\n{}",
            update.script
        );
    }
    weft_crds::golden::check_golden(&golden("showcase-n1-churn.nft"), &update.script, REGENERATE)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_policy_change_adds_and_removes_profiles_without_replacing_the_table() {
    let before = showcase();
    let mut after = before.clone();
    after.delete_network_policy("x", "web");
    let update = render_update(
        &compile_node(&before, &node1()),
        &compile_node(&after, &node1()),
    );
    assert!(!update.full);
    assert!(!update.script.contains("delete table"), "{}", update.script);
    assert!(
        update.script.contains("delete chain inet weft-policy in-"),
        "{}",
        update.script
    );
    assert!(
        update.script.contains("delete set inet weft-policy"),
        "{}",
        update.script
    );
    weft_crds::golden::check_golden(
        &golden("showcase-n1-delete-np.nft"),
        &update.script,
        REGENERATE,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let same = render_update(
        &compile_node(&before, &node1()),
        &compile_node(&before, &node1()),
    );
    assert_eq!((same.full, same.script.as_str()), (false, ""));
    // Another node's families: the base changes, the table is replaced.
    let other = render_update(
        &compile_node(&before, &node1()),
        &compile_node(&before, &node2()),
    );
    assert!(other.full && other.script.contains("delete table inet weft-policy"));
}

/// Runs `nft -c -f` on each file inside a network namespace of its own; skipped unless root and
/// nft is present. The namespace is removed also when the check fails.
#[test]
fn nft_accepts_the_rendered_rulesets() {
    if !nix_is_root() || Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and nft");
        return;
    }
    let ns = format!("weft-policy-test-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .map(|s| s.success());
    assert_eq!(ok.ok(), Some(true), "ip netns add {ns}");
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _cleanup = Cleanup(ns.clone());
    let ix = showcase();
    let full = render_ruleset(&compile_node(&ix, &node1()));
    let mut after = ix.clone();
    after.apply_pod(&pod(
        "x",
        "a2",
        "n1",
        json!({"app": "a"}),
        &["10.244.1.12"],
        &[],
    ));
    after.delete_network_policy("x", "web");
    let dir = std::env::temp_dir().join(&ns);
    std::fs::create_dir_all(&dir).expect("tmp");
    let nft = |file: &Path, check: bool| {
        let mut args = vec!["netns", "exec", &ns, "nft"];
        if check {
            args.push("-c");
        }
        let f = file.to_str().expect("utf8");
        args.extend(["-f", f]);
        let out = Command::new("ip").args(&args).output().expect("run nft");
        assert!(
            out.status.success(),
            "nft rejected {}:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for (name, text) in [
        ("full.nft", full.clone()),
        ("n2.nft", render_ruleset(&compile_node(&ix, &node2()))),
        (
            "none.nft",
            render_ruleset(&compile_node(&cluster(), &node1())),
        ),
    ] {
        let f = dir.join(name);
        std::fs::write(&f, text).expect("write");
        nft(&f, true);
    }
    // Load for real in the namespace, then apply the incremental update and a second full load
    // (replacing an existing table), as the agent will.
    let f = dir.join("load.nft");
    std::fs::write(&f, &full).expect("write");
    nft(&f, false);
    let update = render_update(
        &compile_node(&ix, &node1()),
        &compile_node(&after, &node1()),
    );
    assert!(!update.full);
    std::fs::write(&f, &update.script).expect("write");
    nft(&f, false);
    let listed = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "nft",
            "list",
            "table",
            "inet",
            "weft-policy",
        ])
        .output()
        .expect("list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("10.244.1.12") && !listed.contains("networkpolicy x/web"),
        "{listed}"
    );
    std::fs::write(&f, &full).expect("write");
    nft(&f, false);
    let listed = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "nft",
            "list",
            "map",
            "inet",
            "weft-policy",
            "to-pod-v4",
        ])
        .output()
        .expect("list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("10.244.1.10") && !listed.contains("10.244.1.12"),
        "{listed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Normalized `nft -j list ruleset`: objects by kind and name, handles dropped, set elements
/// sorted, rules keyed by chain and position (their order matters).
fn kernel_state(ns: &str) -> std::collections::BTreeMap<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-j", "list", "ruleset"])
        .output()
        .expect("nft -j");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut state = std::collections::BTreeMap::new();
    let mut positions: std::collections::BTreeMap<String, usize> =
        std::collections::BTreeMap::new();
    for item in v["nftables"].as_array().expect("array") {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        if kind == "metainfo" {
            continue;
        }
        let mut body = body.clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("handle");
            if let Some(elems) = o.get_mut("elem").and_then(|e| e.as_array_mut()) {
                elems.sort_by_key(|e| e.to_string());
            }
        }
        let key = match kind.as_str() {
            "rule" => {
                let chain = body["chain"].as_str().unwrap_or("").to_owned();
                let n = positions.entry(chain.clone()).or_default();
                *n += 1;
                format!("rule {chain} #{n}")
            }
            _ => format!("{kind} {}", body["name"].as_str().unwrap_or("")),
        };
        state.insert(key, body.to_string());
    }
    state
}

/// Applying `render_update(prev, next)` on top of `render_ruleset(prev)` leaves the kernel in the
/// same state as loading `render_ruleset(next)`, for churn, policy removal and addition, a label
/// change that moves a pod to another profile, and a new policy with a Pass rule.
#[test]
fn incremental_updates_leave_the_kernel_as_a_full_load_would() {
    if !nix_is_root() || Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and nft");
        return;
    }
    let ns = format!("weft-policy-inc-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .map(|s| s.success());
    assert_eq!(ok.ok(), Some(true), "ip netns add {ns}");
    struct Cleanup(String, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let dir = std::env::temp_dir().join(&ns);
    std::fs::create_dir_all(&dir).expect("tmp");
    let _cleanup = Cleanup(ns.clone(), dir.clone());
    let load = |text: &str| {
        let f = dir.join("script.nft");
        std::fs::write(&f, text).expect("write");
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", f.to_str().expect("utf8")])
            .output()
            .expect("nft");
        assert!(
            out.status.success(),
            "nft rejected:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let flush = || {
        let ok = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "flush", "ruleset"])
            .status();
        assert!(ok.map(|s| s.success()).unwrap_or(false));
    };
    let base = showcase();
    let mut churn = base.clone();
    churn.apply_pod(&replica("a2", 12));
    let mut no_np = base.clone();
    no_np.delete_network_policy("x", "web");
    let mut relabel = base.clone();
    relabel.apply_pod(&pod(
        "y",
        "a",
        "n1",
        json!({"app": "b"}),
        &["10.244.1.20", "fd00:10:244:1::20"],
        &[],
    ));
    let mut pass = base.clone();
    pass.apply_admin_network_policy(&anp("pass-y", json!({"priority": 1, "subject": {"namespaces": {"matchLabels": {"team": "b"}}},
        "ingress": [{"action": "Pass", "from": [{"namespaces": {}}], "ports": [{"namedPort": "http"}]}]})));
    let nodes = nodes_showcase();
    let swapped = nodes_swapped(nodes.clone());
    let cases = [
        ("nodes peers added", &base, &nodes),
        ("node churn", &nodes, &swapped),
        ("node churn back", &swapped, &nodes),
        ("churn", &base, &churn),
        ("churn back", &churn, &base),
        ("policy removed", &base, &no_np),
        ("policy added", &no_np, &base),
        ("label change", &base, &relabel),
        ("pass policy added", &base, &pass),
        ("pass policy removed", &pass, &base),
    ];
    for (name, prev, next) in cases {
        let (p, n) = (compile_node(prev, &node1()), compile_node(next, &node1()));
        let update = render_update(&p, &n);
        assert!(!update.full, "{name}: expected an incremental update");
        flush();
        load(&render_ruleset(&n));
        let full = kernel_state(&ns);
        // The one-transaction script, and the same change staged as the engine writes it (new
        // objects, the elements, the removals; the elements through `nft -f` here, their netlink
        // form is checked against `nft -f` by node-agent's nft_netlink_netns).
        let staged = update.staged.clone().expect("every case here is stageable");
        let steps = [
            ("one transaction", vec![update.script.clone()]),
            (
                "staged",
                vec![
                    staged.create,
                    render_elem_ops(&staged.elements),
                    staged.remove,
                ],
            ),
        ];
        for (way, scripts) in steps {
            flush();
            load(&render_ruleset(&p));
            for script in scripts.iter().filter(|s| !s.is_empty()) {
                load(script);
            }
            let incremental = kernel_state(&ns);
            for (k, v) in &full {
                assert_eq!(incremental.get(k), Some(v), "{name}, {way}: {k} differs");
            }
            assert_eq!(
                incremental.len(),
                full.len(),
                "{name}, {way}: extra objects {:?}",
                incremental
                    .keys()
                    .filter(|k| !full.contains_key(*k))
                    .collect::<Vec<_>>()
            );
        }
    }
}
