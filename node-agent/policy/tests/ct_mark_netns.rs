//! One-way flows and the conntrack mark (`render::ALLOWED_CT_MARK`): a UDP flow that never sees a
//! reply stays in conntrack state `new`, so the ruleset remembers an allowed flow in its conntrack
//! mark and accepts its next packets on that, as it accepts established traffic, without walking
//! the profiles again. A node namespace routes between pod namespaces with weft's rendered ruleset
//! for "x/a admits UDP/9000 from x/b only". Checked in the kernel: the allowed flow's conntrack
//! entry is unreplied and carries the mark; a denied flow leaves no entry and counts as dropped;
//! after the policy is replaced by one that isolates x/a completely, the marked flow still passes
//! (as an established one would) while a new flow from the same pod is dropped. Needs root, `nft`,
//! `conntrack` and `python3`; skipped otherwise.

mod support;

use std::time::Duration;

use serde_json::json;
use support::netns::{NodeNs, exec, run, skip_unless_privileged};
use support::*;
use weft_policy::render::ALLOWED_CT_MARK;
use weft_policy::{compile_node, render_ruleset};

const RECEIVER: &str = "
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 9000))
print('ready', flush=True)
while True:
    data, (src, port) = s.recvfrom(2048)
    print(src, port, data.decode(), flush=True)
";

/// Sends datagrams `argv[3..]` from (`argv[1]`, port `argv[2]`) to x/a's UDP/9000, no reply read.
const SENDER: &str = "
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
for m in sys.argv[3:]:
    s.sendto(m.encode(), ('10.244.1.10', 9000))
";

#[test]
fn an_allowed_one_way_flow_is_marked_and_accepted_on_its_mark() {
    skip_unless_privileged!("nft", "python3", "conntrack");
    let mut node = NodeNs::new("ct");
    let xa = node.pod("xa", &["10.244.1.10"]);
    let xb = node.pod("xb", &["10.244.1.11"]);
    let ya = node.pod("ya", &["10.244.1.20"]);

    let mut ix = cluster();
    ix.apply_network_policy(&network_policy(
        "x",
        "udp-from-b",
        json!({"podSelector": {"matchLabels": {"app": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}],
                            "ports": [{"protocol": "UDP", "port": 9000}]}]}),
    ));
    node.load(&render_ruleset(&compile_node(&ix, &node1())));

    let rx = node.listen(&xa, &["python3", "-u", "-c", RECEIVER]);
    let arrivals = || -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(700)) {
            out.push(line);
        }
        out
    };
    let send = |ns: &str, from: &str, port: &str, msgs: &[&str]| {
        let mut args = vec!["python3", "-c", SENDER, from, port];
        args.extend_from_slice(msgs);
        let out = exec(ns, &args);
        assert!(
            out.status.success(),
            "send from {from}:{port}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The node's conntrack entries for UDP to x/a's port 9000.
    let entries = || -> Vec<String> {
        run(
            &node.node,
            &["conntrack", "-L", "-p", "udp", "--dport", "9000"],
        )
        .lines()
        .map(str::to_owned)
        .collect()
    };
    let mark = u32::from_str_radix(ALLOWED_CT_MARK.trim_start_matches("0x"), 16).expect("hex");

    // Allowed, one way: all three arrive; one unreplied entry, marked.
    send(&xb, "10.244.1.11", "40000", &["a1", "a2", "a3"]);
    assert_eq!(
        arrivals(),
        [
            "10.244.1.11 40000 a1",
            "10.244.1.11 40000 a2",
            "10.244.1.11 40000 a3"
        ]
    );
    let e = entries();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("[UNREPLIED]") && e[0].contains(&format!("mark={mark} ")),
        "the allowed flow's entry: {}",
        e[0]
    );

    // Denied: nothing arrives, no entry is made, one drop per datagram.
    let before = node.counters()["dropped-ingress"].0;
    send(&ya, "10.244.1.20", "40000", &["d1", "d2"]);
    assert_eq!(arrivals(), Vec::<String>::new());
    assert_eq!(node.counters()["dropped-ingress"].0, before + 2);
    assert!(
        entries().iter().all(|l| !l.contains("src=10.244.1.20")),
        "{:?}",
        entries()
    );

    // x/a isolated completely: the marked flow passes, as an established one would; a new flow
    // from the same pod is dropped.
    ix.apply_network_policy(&network_policy(
        "x",
        "udp-from-b",
        json!({"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"]}),
    ));
    node.load(&render_ruleset(&compile_node(&ix, &node1())));
    send(&xb, "10.244.1.11", "40000", &["m1"]);
    send(&xb, "10.244.1.11", "40001", &["n1"]);
    assert_eq!(arrivals(), ["10.244.1.11 40000 m1"]);
}
