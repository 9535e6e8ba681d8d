//! Table-driven tests of the API semantics, one row per defaulting rule or tier behaviour, judged
//! through the compiled IR of both nodes (the source's node judges egress, the destination's
//! ingress). The fixture (`support::cluster`): namespaces x (team=a), y (team=b), z; on n1 x/a
//! (.1.10, http=TCP/8080, dns=UDP/53), x/b (.1.11), y/a (.1.20, same ports), y/b (.1.21); on n2
//! x/c (.2.10, http=TCP/9090) and z/c (.2.30).

mod support;

use serde_json::{Value, json};
use support::*;
use weft_policy::{Because, Decision, Index, Proto, compile_node};

const XA: &str = "10.244.1.10";
const XB: &str = "10.244.1.11";
const YA: &str = "10.244.1.20";
const YB: &str = "10.244.1.21";
const XC: &str = "10.244.2.10";
const ZC: &str = "10.244.2.30";
const OUTSIDE: &str = "8.8.8.8";
/// n1's InternalIP (zone=a).
const N1: &str = "192.168.1.1";
/// n2's InternalIP and ExternalIP (zone=b).
const N2: &str = "192.168.1.2";
const N2_EXT: &str = "203.0.113.2";

use Decision::{Allowed as A, Denied as D};

fn judge(ix: &Index, src: &str, dst: &str, proto: Proto, port: u16) -> Decision {
    let all = [node1(), node2()]
        .iter()
        .map(|n| compile_node(ix, n).verdict(ip(src), ip(dst), proto, port))
        .all(|v| v.decision == A);
    if all { A } else { D }
}

enum Obj {
    Np(&'static str, Value),
    Cnp(Value),
    Anp(Value),
    Banp(Value),
}

fn apply(objs: Vec<Obj>) -> Index {
    let mut ix = cluster();
    for (i, o) in objs.into_iter().enumerate() {
        match o {
            Obj::Np(ns, spec) => {
                ix.apply_network_policy(&network_policy(ns, &format!("np{i}"), spec))
            }
            Obj::Cnp(spec) => ix.apply_cluster_network_policy(&cnp(&format!("cnp{i}"), spec)),
            Obj::Anp(spec) => ix.apply_admin_network_policy(&anp(&format!("anp{i}"), spec)),
            Obj::Banp(spec) => ix.apply_baseline_admin_network_policy(&banp(spec)),
        }
    }
    assert!(ix.problems().is_empty(), "{:?}", ix.problems());
    ix
}

type Probe = (&'static str, &'static str, Proto, u16, Decision);

fn check(name: &str, objs: Vec<Obj>, probes: &[Probe]) {
    let ix = apply(objs);
    for (src, dst, proto, port, want) in probes {
        assert_eq!(
            judge(&ix, src, dst, *proto, *port),
            *want,
            "{name}: {src} -> {dst} {proto}/{port}"
        );
    }
}

fn sel_a() -> Value {
    json!({"matchLabels": {"app": "a"}})
}

use Proto::{Sctp, Tcp, Udp};

#[test]
fn network_policy_defaulting() {
    let rows: Vec<(&str, Vec<Obj>, Vec<Probe>)> = vec![
        (
            "no policy: everything allowed",
            vec![],
            vec![(XB, XA, Tcp, 80, A), (XA, OUTSIDE, Udp, 53, A)],
        ),
        (
            "policyTypes unset, no egress: ingress only",
            vec![Obj::Np("x", json!({"podSelector": sel_a()}))],
            vec![
                (XB, XA, Tcp, 80, D),
                (XA, XB, Tcp, 80, A),
                (XA, OUTSIDE, Tcp, 443, A),
            ],
        ),
        (
            "policyTypes unset, egress: [] explicit: still ingress only",
            vec![Obj::Np("x", json!({"podSelector": sel_a(), "egress": []}))],
            vec![(XA, XB, Tcp, 80, A), (XB, XA, Tcp, 80, D)],
        ),
        (
            "policyTypes unset, an egress rule: egress isolated too",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]}),
            )],
            vec![
                (XA, XB, Tcp, 80, A),
                (XA, XC, Tcp, 80, D),
                (XB, XA, Tcp, 80, D),
            ],
        ),
        (
            "policyTypes [Egress] ignores ingress rules",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "policyTypes": ["Egress"], "ingress": [{"from": []}]}),
            )],
            vec![(XB, XA, Tcp, 80, A), (XA, XB, Tcp, 80, D)],
        ),
        (
            "ingress rule {} (from and ports missing) allows all",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{}]}),
            )],
            vec![(ZC, XA, Udp, 9, A), (OUTSIDE, XA, Sctp, 1, A)],
        ),
        (
            "from: [] allows every source; ports: [] every port",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"from": [], "ports": []}]}),
            )],
            vec![(ZC, XA, Tcp, 1, A)],
        ),
        (
            "port without protocol is TCP",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"ports": [{"port": 80}]}]}),
            )],
            vec![
                (XB, XA, Tcp, 80, A),
                (XB, XA, Udp, 80, D),
                (XB, XA, Tcp, 81, D),
            ],
        ),
        (
            "protocol without port is every port of it",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"ports": [{"protocol": "UDP"}]}]}),
            )],
            vec![
                (XB, XA, Udp, 1, A),
                (XB, XA, Udp, 65535, A),
                (XB, XA, Tcp, 53, D),
            ],
        ),
        (
            "endPort is an inclusive range",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"ports": [{"port": 8000, "endPort": 8010}]}]}),
            )],
            vec![
                (XB, XA, Tcp, 7999, D),
                (XB, XA, Tcp, 8000, A),
                (XB, XA, Tcp, 8010, A),
                (XB, XA, Tcp, 8011, D),
            ],
        ),
        (
            "SCTP ports",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"ports": [{"protocol": "SCTP", "port": 3868}]}]}),
            )],
            vec![(XB, XA, Sctp, 3868, A), (XB, XA, Tcp, 3868, D)],
        ),
        (
            "named port resolves on the destination pod (ingress)",
            vec![Obj::Np(
                "x",
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
            )],
            vec![
                (XB, XA, Tcp, 8080, A),
                (XB, XA, Tcp, 80, D),
                (ZC, XC, Tcp, 9090, A),
                (ZC, XC, Tcp, 8080, D),
            ],
        ),
        (
            "named port with the wrong protocol matches nothing",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"ports": [{"protocol": "UDP", "port": "http"}]}]}),
            )],
            vec![(XB, XA, Udp, 8080, D), (XB, XA, Tcp, 8080, D)],
        ),
        (
            "named port matching nothing matches nothing, the pod stays isolated",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"ports": [{"port": "nope"}]}]}),
            )],
            vec![(XB, XA, Tcp, 8080, D), (XB, XA, Tcp, 80, D)],
        ),
        (
            "named port resolves on the destination pod (egress)",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]}),
            )],
            vec![
                (XA, XC, Tcp, 9090, A),
                (XA, XC, Tcp, 8080, D),
                (XA, YA, Tcp, 8080, A),
                (XA, OUTSIDE, Tcp, 8080, D),
            ],
        ),
        (
            "podSelector peer is the policy's namespace only",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"from": [{"podSelector": {}}]}]}),
            )],
            vec![
                (XB, XA, Tcp, 80, A),
                (XC, XA, Tcp, 80, A),
                (YB, XA, Tcp, 80, D),
            ],
        ),
        (
            "namespaceSelector peer is every pod of those namespaces",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]}),
            )],
            vec![
                (YA, XA, Tcp, 80, A),
                (YB, XA, Tcp, 80, A),
                (XB, XA, Tcp, 80, D),
            ],
        ),
        (
            "namespaceSelector and podSelector in one peer: AND",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "b"}}}]}]}),
            )],
            vec![
                (YB, XA, Tcp, 80, A),
                (XB, XA, Tcp, 80, A),
                (YA, XA, Tcp, 80, D),
                (ZC, XA, Tcp, 80, D),
            ],
        ),
        (
            "two peers: OR",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}, {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}}]}]}),
            )],
            vec![
                (XB, XA, Tcp, 80, A),
                (ZC, XA, Tcp, 80, A),
                (YB, XA, Tcp, 80, D),
            ],
        ),
        (
            "ipBlock with except",
            vec![Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}}]}]}),
            )],
            vec![
                (XB, XA, Tcp, 80, A),
                (XC, XA, Tcp, 80, D),
                (OUTSIDE, XA, Tcp, 80, D),
            ],
        ),
        (
            "several policies: the union of their allows",
            vec![
                Obj::Np(
                    "x",
                    json!({"podSelector": sel_a(), "ingress": [{"ports": [{"port": 80}]}]}),
                ),
                Obj::Np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}),
                ),
            ],
            vec![
                (XB, XA, Tcp, 80, A),
                (XB, XA, Tcp, 81, A),
                (XB, XA, Tcp, 82, D),
                (XA, XB, Tcp, 80, D),
                (XA, XB, Tcp, 81, A),
            ],
        ),
        (
            "a connection needs the source's egress and the destination's ingress",
            vec![
                Obj::Np(
                    "x",
                    json!({"podSelector": sel_a(), "policyTypes": ["Egress"]}),
                ),
                Obj::Np("y", json!({"podSelector": {}, "ingress": [{}]})),
            ],
            vec![(XA, YA, Tcp, 80, D), (XB, YA, Tcp, 80, A)],
        ),
        (
            "a policy in another namespace does not select the pod",
            vec![Obj::Np("y", json!({"podSelector": sel_a()}))],
            vec![(XB, XA, Tcp, 80, A), (XB, YA, Tcp, 80, D)],
        ),
    ];
    for (name, objs, probes) in rows {
        check(name, objs, &probes);
    }
}

#[test]
fn tiers() {
    let deny_x_from_y = json!({"tier": "Admin", "priority": 10, "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"team": "b"}}}]}]});
    let rows: Vec<(&str, Vec<Obj>, Vec<Probe>)> = vec![
        (
            "Admin Deny wins over a NetworkPolicy allow",
            vec![
                Obj::Cnp(deny_x_from_y.clone()),
                Obj::Np("x", json!({"podSelector": {}, "ingress": [{}]})),
            ],
            vec![(YA, XA, Tcp, 80, D), (XB, XA, Tcp, 80, A)],
        ),
        (
            "Admin Accept wins over NetworkPolicy isolation",
            vec![
                Obj::Cnp(
                    json!({"tier": "Admin", "priority": 5, "subject": {"namespaces": {}},
               "ingress": [{"action": "Accept", "from": [{"namespaces": {"matchLabels": {"team": "b"}}}], "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}]}),
                ),
                Obj::Np("x", json!({"podSelector": {}})),
            ],
            vec![
                (YA, XA, Tcp, 80, A),
                (YA, XA, Tcp, 81, D),
                (XB, XA, Tcp, 80, D),
            ],
        ),
        (
            "Pass hands over to NetworkPolicy, skipping later Admin rules",
            vec![Obj::Cnp(
                json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
               "ingress": [{"action": "Pass", "from": [{"namespaces": {"matchLabels": {"team": "b"}}}]},
                           {"action": "Deny", "from": [{"namespaces": {}}]}]}),
            )],
            vec![(YA, XA, Tcp, 80, A), (XB, XA, Tcp, 80, D)],
        ),
        (
            "lower priority value first",
            vec![
                Obj::Cnp(
                    json!({"tier": "Admin", "priority": 20, "subject": {"namespaces": {}},
               "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}),
                ),
                Obj::Anp(json!({"priority": 10, "subject": {"namespaces": {}},
               "ingress": [{"action": "Allow", "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "b"}}}}]}]})),
            ],
            vec![
                (XB, XA, Tcp, 80, A),
                (YB, XA, Tcp, 80, A),
                (XA, YA, Tcp, 80, D),
            ],
        ),
        (
            "Baseline applies only where no NetworkPolicy isolates",
            vec![
                Obj::Cnp(
                    json!({"tier": "Baseline", "priority": 1, "subject": {"namespaces": {}},
               "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}),
                ),
                Obj::Np("x", json!({"podSelector": sel_a(), "ingress": [{}]})),
            ],
            vec![
                (YB, XA, Tcp, 80, A),
                (YA, XB, Tcp, 80, D),
                (XA, YA, Tcp, 80, D),
            ],
        ),
        (
            "Baseline Pass goes on to the default allow; BANP after Baseline CNPs",
            vec![
                Obj::Cnp(
                    json!({"tier": "Baseline", "priority": 1000, "subject": {"namespaces": {}},
               "ingress": [{"action": "Pass", "from": [{"namespaces": {"matchLabels": {"team": "a"}}}]}]}),
                ),
                Obj::Banp(
                    json!({"subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}),
                ),
            ],
            vec![(XB, YA, Tcp, 80, A), (YB, YA, Tcp, 80, D)],
        ),
        (
            "ANP ports unset: every port; portRange with protocol",
            vec![Obj::Anp(
                json!({"priority": 1, "subject": {"namespaces": {}},
               "egress": [{"action": "Deny", "to": [{"networks": ["8.8.8.0/24"]}], "ports": [{"portRange": {"protocol": "UDP", "start": 50, "end": 60}}]},
                          {"action": "Deny", "to": [{"namespaces": {"matchLabels": {"team": "b"}}}]}]}),
            )],
            vec![
                (XA, OUTSIDE, Udp, 53, D),
                (XA, OUTSIDE, Udp, 61, A),
                (XA, OUTSIDE, Tcp, 53, A),
                (XA, YA, Sctp, 9, D),
            ],
        ),
        (
            "CNP destinationNamedPort resolves on the destination pod, any protocol it declares",
            vec![Obj::Cnp(
                json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
               "egress": [{"action": "Accept", "to": [{"namespaces": {}}], "protocols": [{"destinationNamedPort": "dns"}]},
                          {"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}]}),
            )],
            vec![
                (XB, XA, Udp, 53, A),
                (XB, XA, Tcp, 53, D),
                (XB, XC, Udp, 53, D),
            ],
        ),
        (
            "a peer with no field set: Accept matches nothing, Deny denies all",
            vec![
                Obj::Cnp(
                    json!({"tier": "Admin", "priority": 1, "subject": {"pods": {"namespaceSelector": {}, "podSelector": sel_a()}},
               "ingress": [{"action": "Accept", "from": [{}]}],
               "egress": [{"action": "Deny", "to": [{}], "protocols": [{"tcp": {"destinationPort": {"number": 1}}}]}]}),
                ),
                Obj::Np("x", json!({"podSelector": sel_a()})),
            ],
            vec![
                (XB, XA, Tcp, 80, D),
                (XA, XB, Udp, 99, D),
                (XB, XC, Tcp, 80, A),
            ],
        ),
    ];
    for (name, objs, probes) in rows {
        check(name, objs, &probes);
    }
}

#[test]
fn always_allowed_and_unprogrammed() {
    let mut ix = apply(vec![Obj::Np(
        "x",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    let n1 = compile_node(&ix, &node1());
    // A pod reaches itself, and its node reaches it (kubelet probes), whatever the policy.
    assert_eq!(
        n1.verdict(ip(XA), ip(XA), Tcp, 80).because,
        vec![Because::SamePod]
    );
    assert_eq!(
        n1.verdict(ip("192.168.1.1"), ip(XA), Tcp, 80).because,
        vec![Because::OwnNode]
    );
    assert_eq!(
        n1.verdict(ip("fd00:1::1"), ip("fd00:10:244:1::10"), Tcp, 80)
            .decision,
        A
    );
    // Another node's host is an ordinary remote address.
    assert_eq!(n1.verdict(ip("192.168.1.2"), ip(XA), Tcp, 80).decision, D);
    // An address on the pod CIDR with no pod programmed yet is dropped, both ways.
    let v = n1.verdict(ip("10.244.1.99"), ip(YA), Tcp, 80);
    assert_eq!(
        (v.decision, &v.because[..]),
        (
            D,
            &[Because::Unprogrammed(weft_policy::Direction::Egress)][..]
        )
    );
    assert_eq!(n1.verdict(ip(YA), ip("10.244.1.99"), Tcp, 80).decision, D);
    // Neither end local: not this node's call.
    assert_eq!(
        n1.verdict(ip(XC), ip(ZC), Tcp, 80).because,
        vec![Because::NotEnforcedHere]
    );
    // A terminated pod's address is no longer a pod: dropped as unprogrammed on its node.
    let mut done = pod("y", "a", "n1", json!({"app": "a"}), &["10.244.1.20"], &[]);
    done.status.as_mut().expect("status").phase = Some("Succeeded".into());
    ix.apply_pod(&done);
    assert_eq!(
        compile_node(&ix, &node1())
            .verdict(ip(YA), ip(YB), Tcp, 80)
            .decision,
        D
    );
    // Host-network pods are neither enforced nor selected.
    let mut host = pod("x", "h", "n1", json!({"app": "a"}), &["192.168.1.1"], &[]);
    host.spec.as_mut().expect("spec").host_network = Some(true);
    ix.apply_pod(&host);
    assert!(
        !compile_node(&ix, &node1())
            .pods
            .keys()
            .any(|k| k.name == "h")
    );
}

#[test]
fn malformed_policies_are_refused_with_a_message_and_fail_closed() {
    let rows: Vec<(&str, Obj, &str, Vec<Probe>)> = vec![
        (
            "bad operator in a peer",
            Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["b"]}]}}]}]}),
            ),
            "spec.ingress[0].from[0].podSelector.matchExpressions[0]: unknown selector operator \"Equals\"",
            vec![
                (XB, XA, Tcp, 80, D),
                (XA, XB, Tcp, 80, A),
                (XB, YA, Tcp, 80, A),
            ],
        ),
        (
            "bad CIDR",
            Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/40"}}]}]}),
            ),
            "spec.egress[0].to[0].ipBlock.cidr: \"10.0.0.0/40\" is not a CIDR",
            vec![(XA, XB, Tcp, 80, D), (XB, XA, Tcp, 80, A)],
        ),
        (
            "bad subject selector: every pod of the namespace fails closed",
            Obj::Np(
                "x",
                json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}, "ingress": [{}]}),
            ),
            "needs at least one value",
            vec![
                (YA, XA, Tcp, 80, D),
                (YA, XB, Tcp, 80, D),
                (XA, YA, Tcp, 80, A),
            ],
        ),
        (
            "except outside its block",
            Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]}),
            ),
            "except 192.168.0.0/16 is not inside 10.0.0.0/8",
            vec![(XB, XA, Tcp, 80, D)],
        ),
        (
            "endPort before port",
            Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
            ),
            "range end 80 is before its start 90",
            vec![(XB, XA, Tcp, 85, D)],
        ),
        (
            "unknown protocol",
            Obj::Np(
                "x",
                json!({"podSelector": sel_a(), "ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]}),
            ),
            "unknown protocol \"ICMP\"",
            vec![(XB, XA, Tcp, 1, D)],
        ),
        (
            "unknown CNP action (a newer API)",
            Obj::Cnp(
                json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {"matchLabels": {"team": "b"}}},
               "egress": [{"action": "Redirect", "to": [{"namespaces": {}}]}]}),
            ),
            "spec.egress[0].action: \"(missing or unknown)\" is not a known action",
            vec![(YA, XA, Tcp, 80, D), (XA, YA, Tcp, 80, A)],
        ),
        (
            "unknown ANP action (a newer API)",
            Obj::Anp(
                json!({"priority": 1, "subject": {"namespaces": {"matchLabels": {"team": "b"}}},
               "ingress": [{"action": "Redirect", "from": [{"namespaces": {}}]}]}),
            ),
            "spec.ingress[0].action: \"(missing or unknown)\" is not a known action (Allow, Deny or Pass)",
            vec![(XB, YA, Tcp, 80, D), (YA, XB, Tcp, 80, A)],
        ),
        (
            "Pass is not a BANP action",
            Obj::Banp(
                json!({"subject": {"namespaces": {"matchLabels": {"team": "b"}}},
               "egress": [{"action": "Pass", "to": [{"namespaces": {}}]}]}),
            ),
            "spec.egress[0].action: \"(missing or unknown)\" is not a known action (Allow or Deny)",
            vec![(YA, XB, Tcp, 80, D), (XB, YA, Tcp, 80, A)],
        ),
        (
            "unsupported domainNames peer",
            Obj::Anp(
                json!({"priority": 1, "subject": {"namespaces": {"matchLabels": {"team": "b"}}},
               "egress": [{"action": "Allow", "to": [{"domainNames": ["example.com"]}]}]}),
            ),
            "spec.egress[0].to[0].domainNames: a domainNames peer is not supported by weft yet",
            vec![(YB, XB, Tcp, 80, D), (XB, YB, Tcp, 80, A)],
        ),
        (
            "malformed nodes selector",
            Obj::Cnp(
                json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {"matchLabels": {"team": "b"}}},
               "egress": [{"action": "Deny", "to": [{"nodes": {"matchExpressions": [{"key": "zone", "operator": "Near", "values": ["a"]}]}}]}]}),
            ),
            "spec.egress[0].to[0].nodes.matchExpressions[0]: unknown selector operator \"Near\"",
            vec![
                (YB, XB, Tcp, 80, D),
                (YB, N2, Tcp, 80, D),
                (XB, YB, Tcp, 80, A),
            ],
        ),
        (
            "subject with both fields",
            Obj::Banp(
                json!({"subject": {"namespaces": {}, "pods": {"namespaceSelector": {}, "podSelector": {}}},
               "ingress": [{"action": "Allow", "from": [{"namespaces": {}}]}]}),
            ),
            "spec.subject: exactly one of namespaces and pods must be set",
            vec![(XB, ZC, Tcp, 80, D), (XB, XA, Tcp, 80, D)],
        ),
    ];
    for (name, obj, msg, probes) in rows {
        let mut ix = cluster();
        match obj {
            Obj::Np(ns, spec) => ix.apply_network_policy(&network_policy(ns, "bad", spec)),
            Obj::Cnp(spec) => ix.apply_cluster_network_policy(&cnp("bad", spec)),
            Obj::Anp(spec) => ix.apply_admin_network_policy(&anp("bad", spec)),
            Obj::Banp(spec) => ix.apply_baseline_admin_network_policy(&banp(spec)),
        }
        let problems = ix.problems();
        assert_eq!(problems.len(), 1, "{name}: {problems:?}");
        let text = problems[0].to_string();
        assert!(
            text.contains(msg) && text.contains("fail closed"),
            "{name}: {text}"
        );
        for (src, dst, proto, port, want) in &probes {
            assert_eq!(
                judge(&ix, src, dst, *proto, *port),
                *want,
                "{name}: {src} -> {dst}"
            );
        }
    }
}

#[test]
fn the_index_is_a_function_of_the_objects_applied() {
    let np = network_policy(
        "x",
        "web",
        json!({"podSelector": sel_a(), "ingress": [{"ports": [{"port": 80}]}]}),
    );
    let mut a = cluster();
    a.apply_network_policy(&np);
    a.apply_network_policy(&np);
    // Same objects in another order (policy first, then namespaces, pods in reverse).
    let mut b2 = Index::new();
    b2.apply_network_policy(&np);
    b2.apply_namespace(&namespace("x", json!({"team": "a"})));
    b2.apply_namespace(&namespace("y", json!({"team": "b"})));
    b2.apply_namespace(&namespace("z", json!({})));
    let web = [("http", "TCP", 8080), ("dns", "UDP", 53)];
    b2.apply_pod(&pod(
        "z",
        "c",
        "n2",
        json!({"app": "c"}),
        &["10.244.2.30"],
        &[],
    ));
    b2.apply_pod(&pod(
        "x",
        "c",
        "n2",
        json!({"app": "c"}),
        &["10.244.2.10"],
        &[("http", "TCP", 9090)],
    ));
    b2.apply_pod(&pod(
        "y",
        "b",
        "n1",
        json!({"app": "b"}),
        &["10.244.1.21", "fd00:10:244:1::21"],
        &[],
    ));
    b2.apply_pod(&pod(
        "y",
        "a",
        "n1",
        json!({"app": "a"}),
        &["10.244.1.20", "fd00:10:244:1::20"],
        &web,
    ));
    b2.apply_pod(&pod(
        "x",
        "b",
        "n1",
        json!({"app": "b"}),
        &["10.244.1.11", "fd00:10:244:1::11"],
        &[],
    ));
    b2.apply_pod(&pod(
        "x",
        "a",
        "n1",
        json!({"app": "a"}),
        &["10.244.1.10", "fd00:10:244:1::10"],
        &web,
    ));
    assert_eq!(compile_node(&a, &node1()), compile_node(&b2, &node1()));
    // Deleting undoes applying.
    a.delete_network_policy("x", "web");
    assert_eq!(
        compile_node(&a, &node1()),
        compile_node(&cluster(), &node1())
    );
    assert_eq!(judge(&a, XB, XA, Tcp, 81), A);
    // A label change moves a pod between sets without touching the profiles of others.
    let mut c2 = cluster();
    c2.apply_network_policy(&network_policy("x", "from-b", json!({"podSelector": sel_a(), "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]})));
    assert_eq!(judge(&c2, XB, XA, Tcp, 80), A);
    c2.apply_pod(&pod(
        "x",
        "b",
        "n1",
        json!({"app": "other"}),
        &["10.244.1.11", "fd00:10:244:1::11"],
        &[],
    ));
    assert_eq!(judge(&c2, XB, XA, Tcp, 80), D);
    c2.delete_pod("x", "b");
    assert_eq!(
        judge(&c2, XB, XA, Tcp, 80),
        D,
        "a deleted pod's address is unprogrammed on its node"
    );
}

#[test]
fn v1alpha2_cluster_network_policy_is_the_same_object() {
    let spec = json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"team": "b"}}}]}]});
    let mut a = cluster();
    a.apply_cluster_network_policy(&cnp("p", spec.clone()));
    let mut b = cluster();
    let old: weft_crds::policy_api::v1alpha2::ClusterNetworkPolicy =
        serde_json::from_value(json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "p"}, "spec": spec}))
        .expect("v1alpha2");
    b.apply_cluster_network_policy_v1alpha2(&old);
    assert_eq!(compile_node(&a, &node1()), compile_node(&b, &node1()));
    assert_eq!(judge(&b, YA, XA, Tcp, 80), D);
    b.delete_cluster_network_policy("p");
    assert_eq!(judge(&b, YA, XA, Tcp, 80), A);
}

#[test]
fn verdicts_name_the_deciding_policy_and_rule() {
    let ix = apply(vec![
        Obj::Cnp(
            json!({"tier": "Admin", "priority": 3, "subject": {"namespaces": {}},
            "ingress": [{"name": "no-z", "action": "Deny", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}]}),
        ),
        Obj::Np(
            "x",
            json!({"podSelector": sel_a(), "ingress": [{"ports": [{"port": 80}]}]}),
        ),
    ]);
    let n1 = compile_node(&ix, &node1());
    let v = n1.verdict(ip(ZC), ip(XA), Tcp, 80).to_string();
    assert_eq!(
        v,
        "Denied; ingress: Deny by clusternetworkpolicy cnp0 ingress[0] (no-z), Admin tier"
    );
    let v = n1.verdict(ip(XB), ip(XA), Tcp, 81).to_string();
    assert_eq!(
        v,
        "Denied; egress: no policy decided (default allow); ingress: isolated by networkpolicy x/np1 and no rule matched"
    );
    let v = n1.verdict(ip(XB), ip(XA), Tcp, 80).to_string();
    assert!(
        v.starts_with("Allowed;") && v.contains("Allow by networkpolicy x/np1 ingress[0]"),
        "{v}"
    );
}

#[test]
fn size_counts_what_the_ruleset_holds() {
    let ix = apply(vec![Obj::Np(
        "x",
        json!({"podSelector": sel_a(), "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}, {"protocol": "UDP", "port": 53}]}]}),
    )]);
    let size = compile_node(&ix, &node1()).size();
    // 4 local pods; x/a's ingress profile, a shared default ingress and a shared default egress.
    assert_eq!(
        (size.pods, size.chains, size.rules, size.sets),
        (4, 3, 2, 1)
    );
    // The set of x's pods (x/a, x/b dual-stack, x/c) plus 3 map entries per local address.
    assert_eq!(size.elements, 5 + 3 * 8);
}

/// `nodes` egress peers (CNP v1beta1, ANP/BANP v1alpha1): the IPs in the selected Nodes'
/// `status.addresses` (InternalIP and ExternalIP alike), an empty selector selecting every Node; a
/// pod's own node stays reachable (it is never filtered).
#[test]
fn nodes_peers() {
    let zone_b = json!({"matchLabels": {"zone": "b"}});
    let team_a = json!({"namespaces": {"matchLabels": {"team": "a"}}});
    let rows: Vec<(&str, Vec<Obj>, Vec<Probe>)> = vec![
        (
            "Admin CNP Deny to nodes zone=b from team=a",
            vec![Obj::Cnp(
                json!({"tier": "Admin", "priority": 5, "subject": team_a,
                "egress": [{"action": "Deny", "to": [{"nodes": zone_b}]}]}),
            )],
            vec![
                (XA, N2, Tcp, 80, D),
                (XB, N2, Udp, 53, D),
                (XA, N2_EXT, Tcp, 80, D),
                (XA, N1, Tcp, 80, A),
                (XC, N1, Tcp, 80, A),
                (XC, N2, Tcp, 80, A),
                (YA, N2, Tcp, 80, A),
                (XA, XC, Tcp, 80, A),
                (XA, OUTSIDE, Tcp, 80, A),
            ],
        ),
        (
            "ANP Deny to every node (empty selector)",
            vec![Obj::Anp(json!({"priority": 5, "subject": team_a,
                "egress": [{"action": "Deny", "to": [{"nodes": {}}]}]}))],
            vec![
                (XC, N1, Tcp, 80, D),
                (XA, N2, Tcp, 80, D),
                (XA, N2_EXT, Tcp, 80, D),
                (XA, XC, Tcp, 80, A),
                (XA, OUTSIDE, Tcp, 80, A),
                (ZC, N1, Tcp, 80, A),
            ],
        ),
        (
            "Baseline Deny to nodes loses to a NetworkPolicy allow",
            vec![
                Obj::Banp(json!({"subject": team_a,
                    "egress": [{"action": "Deny", "to": [{"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}}]}]})),
                Obj::Np(
                    "x",
                    json!({"podSelector": sel_a(), "policyTypes": ["Egress"],
                        "egress": [{"to": [{"ipBlock": {"cidr": "192.168.1.0/24"}}]}]}),
                ),
            ],
            vec![
                (XA, N2, Tcp, 80, A),
                (XB, N2, Tcp, 80, D),
                (XB, N2_EXT, Tcp, 80, D),
                (XA, XC, Tcp, 80, D),
                (YB, N2, Tcp, 80, A),
            ],
        ),
        (
            "the upstream shape: Accept nodes TCP/36363, Pass nodes UDP/34345, Deny nodes and 0.0.0.0/0",
            vec![Obj::Cnp(
                json!({"tier": "Admin", "priority": 75, "subject": team_a, "egress": [
                {"action": "Accept", "to": [{"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}}],
                 "protocols": [{"tcp": {"destinationPort": {"number": 36363}}}]},
                {"action": "Pass", "to": [{"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}}],
                 "protocols": [{"udp": {"destinationPort": {"number": 34345}}}]},
                {"action": "Deny", "to": [{"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}},
                                          {"networks": ["0.0.0.0/0"]}]}]}),
            )],
            vec![
                (XA, N2, Tcp, 36363, A),
                (XA, N2, Udp, 34345, A),
                (XA, N2, Tcp, 36364, D),
                (XA, N2, Udp, 34346, D),
                (XA, N2, Sctp, 9003, D),
                (XA, OUTSIDE, Tcp, 36363, D),
                (XA, XC, Tcp, 80, D),
            ],
        ),
    ];
    for (name, objs, probes) in rows {
        check(name, objs, &probes);
    }
}

/// Node churn (a label or address change, a Node gone) changes the elements of the nodes set only:
/// no chain changes, no table replacement. Re-applying an unchanged Node (a status heartbeat) is
/// reported as no change.
#[test]
fn node_churn_is_set_elements_only() {
    use weft_policy::{Index, render_update};
    let policy = cnp(
        "deny-zone-b",
        json!({"tier": "Admin", "priority": 5, "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
            "egress": [{"action": "Deny", "to": [{"nodes": {"matchLabels": {"zone": "b"}}}]}]}),
    );
    let mut ix: Index = cluster();
    ix.apply_cluster_network_policy(&policy);
    let before = compile_node(&ix, &node1());
    assert!(
        !ix.apply_node(&nodes()[1]),
        "an unchanged Node is no change"
    );
    // n1 joins zone b with a new address; n2 leaves it.
    let mut n1 = nodes()[0].clone();
    n1.metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("zone".into(), "b".into());
    n1.status
        .as_mut()
        .expect("status")
        .addresses
        .as_mut()
        .expect("addresses")
        .push(
            serde_json::from_value(json!({"type": "ExternalIP", "address": "203.0.113.1"}))
                .expect("addr"),
        );
    assert!(ix.apply_node(&n1));
    ix.delete_node("n2");
    let after = compile_node(&ix, &node1());
    assert_eq!(before.chains, after.chains, "profiles do not change");
    assert_eq!(
        before.addr_sets.keys().collect::<Vec<_>>(),
        after.addr_sets.keys().collect::<Vec<_>>(),
        "the same sets"
    );
    let set = |ir: &weft_policy::Ir| {
        ir.addr_sets
            .values()
            .find(|s| s.what == "nodes zone=b")
            .map(|s| format!("{:?}", s.elems))
            .expect("the nodes set")
    };
    assert!(set(&before).contains("192.168.1.2") && set(&before).contains("203.0.113.2"));
    assert!(set(&after).contains("192.168.1.1") && set(&after).contains("fd00:1::1"));
    assert!(set(&after).contains("203.0.113.1") && !set(&after).contains("192.168.1.2"));
    let u = render_update(&before, &after);
    assert!(!u.full, "{}", u.script);
    for line in u.script.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains(" element "),
            "only element changes, got: {line}\n{}",
            u.script
        );
    }
    // XA (on n1) may still reach its own node; XC (n2) may not reach n1 any more.
    let ix_ref = &ix;
    assert_eq!(judge(ix_ref, XA, N1, Tcp, 80), A);
    assert_eq!(judge(ix_ref, XC, N1, Tcp, 80), D);
    assert_eq!(judge(ix_ref, XC, "203.0.113.1", Tcp, 80), D);
    assert_eq!(judge(ix_ref, XA, N2, Tcp, 80), A);
}
