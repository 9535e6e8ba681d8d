//! Property test: on random clusters and policies, the compiled IR (every node's, combined as the
//! cluster combines them: the source's node judges egress, the destination's node ingress) and the
//! naive reference evaluator (`reference/`) give the same verdict for every pair of endpoints and
//! every probed port. Failures are kept in `agree.proptest-regressions` and replayed first.

mod reference;
mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};
use support::*;
use weft_policy::{Decision, Index, NodeInput, Proto, compile_node};

const PROBES: [(&str, Proto, i32); 6] = [
    ("TCP", Proto::Tcp, 80),
    ("TCP", Proto::Tcp, 81),
    ("TCP", Proto::Tcp, 8080),
    ("UDP", Proto::Udp, 53),
    ("UDP", Proto::Udp, 80),
    ("SCTP", Proto::Sctp, 80),
];

fn nodes() -> Vec<NodeInput> {
    vec![node1(), node2()]
}

fn selector() -> impl Strategy<Value = Value> {
    let key = prop_oneof![Just("app"), Just("tier"), Just("team")];
    let val = prop_oneof![Just("a"), Just("b"), Just("c")];
    prop_oneof![
        2 => Just(json!({})),
        3 => (key.clone(), val.clone()).prop_map(|(k, v)| json!({"matchLabels": {k: v}})),
        2 => (key.clone(), prop_oneof![Just("In"), Just("NotIn")], prop::collection::vec(val, 1..3))
            .prop_map(|(k, op, vs)| json!({"matchExpressions": [{"key": k, "operator": op, "values": vs}]})),
        1 => (key, prop_oneof![Just("Exists"), Just("DoesNotExist")])
            .prop_map(|(k, op)| json!({"matchExpressions": [{"key": k, "operator": op}]})),
    ]
}

fn labels() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![Just("a"), Just("b"), Just("c")]),
        prop::option::of(prop_oneof![Just("a"), Just("b")]),
    )
        .prop_map(|(app, tier)| {
            let mut l = serde_json::Map::new();
            if let Some(a) = app {
                l.insert("app".into(), a.into());
            }
            if let Some(t) = tier {
                l.insert("tier".into(), t.into());
            }
            Value::Object(l)
        })
}

/// CIDRs over the pod networks, the hosts and outside.
fn cidr() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("10.244.0.0/16"),
        Just("10.244.1.0/24"),
        Just("10.244.1.0/28"),
        Just("10.244.2.0/24"),
        Just("192.168.1.0/24"),
        Just("0.0.0.0/0"),
        Just("8.8.8.0/24"),
        Just("fd00:10:244:1::/64"),
        Just("::/0"),
    ]
}

fn np_peer() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => selector().prop_map(|s| json!({"podSelector": s})),
        2 => selector().prop_map(|s| json!({"namespaceSelector": s})),
        2 => (selector(), selector()).prop_map(|(n, p)| json!({"namespaceSelector": n, "podSelector": p})),
        2 => (cidr(), prop::collection::vec(cidr(), 0..2)).prop_map(|(c, ex)| {
            // Keep only excepts inside the block (the API server refuses others).
            let inside: Vec<&str> = ex.into_iter().filter(|e| contained(e, c)).collect();
            json!({"ipBlock": {"cidr": c, "except": inside}})
        }),
    ]
}

fn contained(inner: &str, outer: &str) -> bool {
    let a: weft_crds::IpCidr = inner.parse().expect("cidr");
    let b: weft_crds::IpCidr = outer.parse().expect("cidr");
    b.contains(&a) && a != b
}

fn np_port() -> impl Strategy<Value = Value> {
    let proto = prop::option::of(prop_oneof![Just("TCP"), Just("UDP"), Just("SCTP")]);
    prop_oneof![
        (proto.clone(), prop_oneof![Just(80), Just(53), Just(8080)])
            .prop_map(|(p, n)| json!({"protocol": p, "port": n})),
        (
            proto.clone(),
            prop_oneof![Just("http"), Just("dns"), Just("nope")]
        )
            .prop_map(|(p, n)| json!({"protocol": p, "port": n})),
        (
            proto.clone(),
            prop_oneof![Just((79, 81)), Just((1, 1024)), Just((8000, 9000))]
        )
            .prop_map(|(p, (a, b))| json!({"protocol": p, "port": a, "endPort": b})),
        proto.prop_map(|p| json!({"protocol": p})),
    ]
}

/// None = field missing, Some(empty) = empty list: both must mean "all".
fn maybe_list(item: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Vec<Value>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        3 => prop::collection::vec(item, 1..3).prop_map(Some),
    ]
}

fn network_policy_spec() -> impl Strategy<Value = Value> {
    let rule = |peer_field: &'static str| {
        (maybe_list(np_peer().boxed()), maybe_list(np_port().boxed())).prop_map(
            move |(peers, ports)| {
                let mut r = serde_json::Map::new();
                if let Some(p) = peers {
                    r.insert(peer_field.into(), p.into());
                }
                if let Some(p) = ports {
                    r.insert("ports".into(), p.into());
                }
                Value::Object(r)
            },
        )
    };
    (
        selector(),
        maybe_list(rule("from").boxed()),
        maybe_list(rule("to").boxed()),
        prop_oneof![
            Just(None),
            Just(Some(vec!["Ingress"])),
            Just(Some(vec!["Egress"])),
            Just(Some(vec!["Ingress", "Egress"])),
        ],
    )
        .prop_map(|(sel, ingress, egress, types)| {
            let mut s = serde_json::Map::new();
            s.insert("podSelector".into(), sel);
            if let Some(i) = ingress {
                s.insert("ingress".into(), i.into());
            }
            if let Some(e) = egress {
                s.insert("egress".into(), e.into());
            }
            if let Some(t) = types {
                s.insert("policyTypes".into(), json!(t));
            }
            Value::Object(s)
        })
}

fn cluster_peer(egress: bool) -> BoxedStrategy<Value> {
    let pods = (selector(), selector())
        .prop_map(|(n, p)| json!({"pods": {"namespaceSelector": n, "podSelector": p}}));
    let nss = selector().prop_map(|n| json!({"namespaces": n}));
    if egress {
        let nets = prop::collection::vec(cidr(), 1..3).prop_map(|c| json!({"networks": c}));
        let nodes = selector().prop_map(|n| json!({"nodes": n}));
        prop_oneof![3 => pods, 3 => nss, 3 => nets, 2 => nodes].boxed()
    } else {
        prop_oneof![pods, nss].boxed()
    }
}

fn subject() -> impl Strategy<Value = Value> {
    prop_oneof![
        selector().prop_map(|n| json!({"namespaces": n})),
        (selector(), selector())
            .prop_map(|(n, p)| json!({"pods": {"namespaceSelector": n, "podSelector": p}})),
    ]
}

fn cnp_protocol() -> impl Strategy<Value = Value> {
    let port = prop_oneof![
        prop_oneof![Just(80), Just(53), Just(8080)].prop_map(|n| json!({"number": n})),
        prop_oneof![Just((79, 81)), Just((1, 1024))]
            .prop_map(|(a, b)| json!({"range": {"start": a, "end": b}})),
    ];
    prop_oneof![
        (prop_oneof![Just("tcp"), Just("udp"), Just("sctp")], port)
            .prop_map(|(p, d)| json!({p: {"destinationPort": d}})),
        prop_oneof![Just("http"), Just("dns"), Just("nope")]
            .prop_map(|n| json!({"destinationNamedPort": n})),
    ]
}

fn cnp_spec(priority: i32) -> impl Strategy<Value = Value> {
    let rule = |egress: bool| {
        (
            prop_oneof![Just("Accept"), Just("Deny"), Just("Pass")],
            prop::collection::vec(cluster_peer(egress), 1..3),
            prop::collection::vec(cnp_protocol(), 0..3),
        )
            .prop_map(move |(a, peers, protos)| {
                let mut r = json!({"action": a});
                r[if egress { "to" } else { "from" }] = peers.into();
                if !protos.is_empty() {
                    r["protocols"] = protos.into();
                }
                r
            })
    };
    (
        prop_oneof![Just("Admin"), Just("Baseline")],
        subject(),
        prop::collection::vec(rule(false), 0..3),
        prop::collection::vec(rule(true), 0..3),
    )
        .prop_map(move |(tier, subject, ingress, egress)| {
            json!({"tier": tier, "priority": priority, "subject": subject, "ingress": ingress, "egress": egress})
        })
}

fn anp_port() -> impl Strategy<Value = Value> {
    let proto = prop_oneof![Just("TCP"), Just("UDP"), Just("SCTP")];
    prop_oneof![
        (proto.clone(), prop_oneof![Just(80), Just(53)])
            .prop_map(|(p, n)| json!({"portNumber": {"protocol": p, "port": n}})),
        (proto, prop_oneof![Just((79, 81)), Just((1, 1024))])
            .prop_map(|(p, (a, b))| json!({"portRange": {"protocol": p, "start": a, "end": b}})),
        prop_oneof![Just("http"), Just("dns")].prop_map(|n| json!({"namedPort": n})),
    ]
}

fn anp_spec(baseline: bool, priority: i32) -> impl Strategy<Value = Value> {
    let rule = move |egress: bool| {
        (
            if baseline {
                prop_oneof![Just("Allow"), Just("Deny")].boxed()
            } else {
                prop_oneof![Just("Allow"), Just("Deny"), Just("Pass")].boxed()
            },
            prop::collection::vec(cluster_peer(egress), 1..3),
            prop::option::of(prop::collection::vec(anp_port(), 1..3)),
        )
            .prop_map(move |(a, peers, ports)| {
                let mut r = json!({"action": a});
                r[if egress { "to" } else { "from" }] = peers.into();
                if let Some(p) = ports {
                    r["ports"] = p.into();
                }
                r
            })
    };
    (
        subject(),
        prop::collection::vec(rule(false), 0..3),
        prop::collection::vec(rule(true), 0..3),
    )
        .prop_map(move |(subject, ingress, egress)| {
            let mut s = json!({"subject": subject, "ingress": ingress, "egress": egress});
            if !baseline {
                s["priority"] = priority.into();
            }
            s
        })
}

#[derive(Debug, Clone)]
struct PodSpec {
    ns: usize,
    node: usize,
    labels: Value,
    ports: Vec<(&'static str, &'static str, i32)>,
}

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    let port = prop_oneof![
        Just(("http", "TCP", 80)),
        Just(("http", "TCP", 8080)),
        Just(("dns", "UDP", 53)),
        Just(("http", "SCTP", 80)),
    ];
    (
        0..3usize,
        0..2usize,
        labels(),
        prop::collection::vec(port, 0..2),
    )
        .prop_map(|(ns, node, labels, mut ports)| {
            ports.sort();
            ports.dedup_by_key(|p| p.0);
            PodSpec {
                ns,
                node,
                labels,
                ports,
            }
        })
}

#[derive(Debug, Clone)]
struct Scenario {
    ns_labels: Vec<Value>,
    node_labels: Vec<Value>,
    pods: Vec<PodSpec>,
    nps: Vec<(usize, Value)>,
    cnps: Vec<Value>,
    anps: Vec<Value>,
    banp: Option<Value>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(
            prop::option::of(prop_oneof![Just("a"), Just("b")]).prop_map(|t| match t {
                Some(t) => json!({"team": t}),
                None => json!({}),
            }),
            3,
        ),
        prop::collection::vec(pod_spec(), 2..7),
        prop::collection::vec((0..3usize, network_policy_spec()), 0..4),
        // Distinct priorities: ties are implementation-defined by the API.
        prop::collection::vec(cnp_spec(0), 0..3).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, mut s)| {
                    s["priority"] = json!(10 * i as i32 + 5);
                    s
                })
                .collect::<Vec<_>>()
        }),
        prop::collection::vec(anp_spec(false, 0), 0..2).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, mut s)| {
                    s["priority"] = json!(10 * i as i32 + 7);
                    s
                })
                .collect::<Vec<_>>()
        }),
        prop::option::of(anp_spec(true, 0)),
        prop::collection::vec(labels(), 2),
    )
        .prop_map(
            |(ns_labels, pods, nps, cnps, anps, banp, node_labels)| Scenario {
                ns_labels,
                node_labels,
                pods,
                nps,
                cnps,
                anps,
                banp,
            },
        )
}

const NAMESPACES: [&str; 3] = ["x", "y", "z"];

/// Builds the same objects for the engine and the reference.
fn build(s: &Scenario) -> (Index, reference::World) {
    let mut world = reference::World::default();
    for (i, l) in s.ns_labels.iter().enumerate() {
        world.namespaces.push(namespace(NAMESPACES[i], l.clone()));
    }
    let mut next = [10u8, 10u8];
    for (i, p) in s.pods.iter().enumerate() {
        let n = p.node;
        let last = next[n];
        next[n] += 1;
        let v4 = format!("10.244.{}.{last}", n + 1);
        let v6 = format!("fd00:10:244:1::{last}");
        let ips: Vec<&str> = if n == 0 { vec![&v4, &v6] } else { vec![&v4] };
        world.pods.push(pod(
            NAMESPACES[p.ns],
            &format!("p{i}"),
            &format!("n{}", n + 1),
            p.labels.clone(),
            &ips,
            &p.ports,
        ));
    }
    for (i, (ns, spec)) in s.nps.iter().enumerate() {
        world.network_policies.push(network_policy(
            NAMESPACES[*ns],
            &format!("np{i}"),
            spec.clone(),
        ));
    }
    for (i, spec) in s.cnps.iter().enumerate() {
        world.cnps.push(cnp(&format!("cnp{i}"), spec.clone()));
    }
    for (i, spec) in s.anps.iter().enumerate() {
        world.anps.push(anp(&format!("anp{i}"), spec.clone()));
    }
    world.banp = s.banp.clone().map(banp);
    for n in nodes() {
        world
            .hosts
            .insert(n.node_name.clone(), n.host_addrs.clone());
    }
    // The Node objects: n1's InternalIPs are its host addresses; n2 also has an ExternalIP that is
    // no host address of the node input (every IP of `status.addresses` counts for `nodes` peers).
    world.nodes = vec![
        node(
            "n1",
            s.node_labels[0].clone(),
            &[
                ("InternalIP", "192.168.1.1"),
                ("InternalIP", "fd00:1::1"),
                ("Hostname", "n1"),
            ],
        ),
        node(
            "n2",
            s.node_labels[1].clone(),
            &[
                ("InternalIP", "192.168.1.2"),
                ("ExternalIP", "10.9.9.9"),
                ("Hostname", "n2"),
            ],
        ),
    ];
    let mut ix = Index::new();
    for o in &world.nodes {
        ix.apply_node(o);
    }
    for o in &world.namespaces {
        ix.apply_namespace(o);
    }
    for o in &world.pods {
        ix.apply_pod(o);
    }
    for o in &world.network_policies {
        ix.apply_network_policy(o);
    }
    for o in &world.cnps {
        ix.apply_cluster_network_policy(o);
    }
    for o in &world.anps {
        ix.apply_admin_network_policy(o);
    }
    if let Some(b) = &world.banp {
        ix.apply_baseline_admin_network_policy(b);
    }
    (ix, world)
}

fn endpoints(world: &reference::World) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = world
        .pods
        .iter()
        .flat_map(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ips.clone())
                .unwrap_or_default()
        })
        .map(|i| ip(&i.ip))
        .collect();
    v.extend(
        [
            "192.168.1.1",
            "192.168.1.2",
            "fd00:1::1",
            "8.8.8.8",
            "10.9.9.9",
            "2001:db8::1",
        ]
        .map(ip),
    );
    v
}

fn check(s: &Scenario) -> Result<(), TestCaseError> {
    let (ix, world) = build(s);
    prop_assert!(
        ix.problems().is_empty(),
        "the generator makes valid objects: {:?}",
        ix.problems()
    );
    let irs: Vec<_> = nodes().iter().map(|n| compile_node(&ix, n)).collect();
    let eps = endpoints(&world);
    let mut checked = 0;
    for &src in &eps {
        for &dst in &eps {
            if src.is_ipv4() != dst.is_ipv4()
                || (world.pod_at(src).is_none() && world.pod_at(dst).is_none())
            {
                continue;
            }
            for (pname, proto, port) in PROBES {
                let want = world.allowed(src, dst, pname, port);
                let verdicts: Vec<_> = irs
                    .iter()
                    .map(|ir| ir.verdict(src, dst, proto, port as u16))
                    .collect();
                let got = verdicts.iter().all(|v| v.decision == Decision::Allowed);
                prop_assert_eq!(
                    got,
                    want,
                    "{} -> {} {}/{}: engine says {:?}, reference says allowed={}",
                    src,
                    dst,
                    pname,
                    port,
                    verdicts.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
                    want
                );
                checked += 1;
            }
        }
    }
    prop_assert!(checked > 0);
    Ok(())
}

/// `cases` random cases; failures are kept in `agree.proptest-regressions` and replayed first.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn compiled_ir_agrees_with_the_reference(s in scenario()) {
        check(&s)?;
    }
}

/// The number of distinct verdicts the generator reaches, so that a generator that only makes
/// "allow everything" cannot pass unnoticed.
#[test]
fn the_generator_reaches_denials_and_allows() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen: BTreeMap<bool, usize> = BTreeMap::new();
    for _ in 0..40 {
        let s = scenario().new_tree(&mut runner).expect("tree").current();
        let (_, world) = build(&s);
        let eps = endpoints(&world);
        for &a in &eps {
            for &b in &eps {
                if a.is_ipv4() == b.is_ipv4() {
                    *seen.entry(world.allowed(a, b, "TCP", 80)).or_default() += 1;
                }
            }
        }
    }
    assert!(
        seen.get(&true).copied().unwrap_or(0) > 50 && seen.get(&false).copied().unwrap_or(0) > 50,
        "{seen:?}"
    );
}

/// A change to one pod: what the incremental compiler follows.
#[derive(Debug, Clone)]
enum PodEvent {
    /// New labels.
    Relabel(usize, Value),
    /// Deleted.
    Delete(usize),
    /// Phase Succeeded: it keeps its address in status but policy forgets it.
    Terminate(usize),
    /// A new address on the same node.
    Readdress(usize),
    /// The address of another pod (that one may still hold it).
    TakeAddress(usize, usize),
    /// A new pod.
    Add(PodSpec),
}

fn pod_event() -> impl Strategy<Value = PodEvent> {
    prop_oneof![
        3 => (0..8usize, labels()).prop_map(|(i, l)| PodEvent::Relabel(i, l)),
        2 => (0..8usize).prop_map(PodEvent::Delete),
        1 => (0..8usize).prop_map(PodEvent::Terminate),
        2 => (0..8usize).prop_map(PodEvent::Readdress),
        1 => (0..8usize, 0..8usize).prop_map(|(a, b)| PodEvent::TakeAddress(a, b)),
        3 => pod_spec().prop_map(PodEvent::Add),
    ]
}

/// Applies `e` to the world's pods and the index; returns the pod it changed.
fn apply_event(
    world: &mut reference::World,
    ix: &mut Index,
    e: &PodEvent,
    serial: &mut u8,
) -> Option<weft_policy::PodKey> {
    let key = |p: &k8s_openapi::api::core::v1::Pod| weft_policy::PodKey {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
    };
    let n = world.pods.len();
    *serial += 1;
    match e {
        PodEvent::Add(p) => {
            let node = p.node;
            let v4 = format!("10.244.{}.{}", node + 1, 100 + *serial);
            let v6 = format!("fd00:10:244:1::{:x}", 100 + *serial);
            let ips: Vec<&str> = if node == 0 { vec![&v4, &v6] } else { vec![&v4] };
            let pod = pod(
                NAMESPACES[p.ns],
                &format!("q{serial}"),
                &format!("n{}", node + 1),
                p.labels.clone(),
                &ips,
                &p.ports,
            );
            ix.apply_pod(&pod);
            let k = key(&pod);
            world.pods.push(pod);
            Some(k)
        }
        _ if n == 0 => None,
        PodEvent::Delete(i) => {
            let pod = world.pods.remove(i % n);
            let k = key(&pod);
            ix.delete_pod(&k.namespace, &k.name);
            Some(k)
        }
        PodEvent::Relabel(i, l) => {
            let pod = &mut world.pods[i % n];
            pod.metadata.labels = serde_json::from_value(l.clone()).ok();
            ix.apply_pod(pod);
            Some(key(pod))
        }
        PodEvent::Terminate(i) => {
            let pod = &mut world.pods[i % n];
            if let Some(s) = pod.status.as_mut() {
                s.phase = Some("Succeeded".into());
            }
            ix.apply_pod(pod);
            Some(key(pod))
        }
        PodEvent::Readdress(i) => {
            let pod = &mut world.pods[i % n];
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let octet = if node == "n1" { 1 } else { 2 };
            let ip = format!("10.244.{octet}.{}", 150 + *serial);
            if let Some(s) = pod.status.as_mut() {
                s.pod_ip = Some(ip.clone());
                s.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP { ip }]);
            }
            ix.apply_pod(pod);
            Some(key(pod))
        }
        PodEvent::TakeAddress(a, b) => {
            let from = world.pods[b % n].status.clone();
            let pod = &mut world.pods[a % n];
            if let (Some(s), Some(f)) = (pod.status.as_mut(), from) {
                s.pod_ip = f.pod_ip;
                s.pod_ips = f.pod_ips;
            }
            ix.apply_pod(pod);
            Some(key(pod))
        }
    }
}

/// The kernel's view of the elements: set → key → element (`addr : goto c` is keyed by `addr`).
type Kernel = BTreeMap<String, BTreeMap<String, String>>;

fn kernel_of(ir: &weft_policy::Ir) -> Kernel {
    weft_policy::ruleset_elements(ir)
        .into_iter()
        .map(|(set, elems)| {
            let m = elems
                .into_iter()
                .map(|e| (e.split(" : ").next().unwrap_or_default().to_owned(), e))
                .collect();
            (set, m)
        })
        .collect()
}

/// Follows `events` (in batches of `batch`) with the incremental compiler from a full compile of
/// `s`, on both nodes; after every batch, whenever it did not ask for a full compile, its IR must
/// equal a full compile's and its operations must take the previous elements to the new ones.
/// Returns how many batches it followed without a compile.
fn check_incremental(
    s: &Scenario,
    events: &[PodEvent],
    batch: usize,
) -> Result<usize, TestCaseError> {
    let (mut ix, mut world) = build(s);
    let mut state: Vec<_> = nodes()
        .iter()
        .map(|n| weft_policy::compile_node_memo(&ix, n))
        .collect();
    let mut followed = 0;
    let mut serial = 0u8;
    for chunk in events.chunks(batch.max(1)) {
        let mut changed: BTreeMap<weft_policy::PodKey, Option<weft_policy::index::PodInfo>> =
            BTreeMap::new();
        for e in chunk {
            let before = ix.clone();
            if let Some(k) = apply_event(&mut world, &mut ix, e, &mut serial) {
                changed
                    .entry(k.clone())
                    .or_insert_with(|| before.pod(&k).cloned());
            }
        }
        for (node, (ir, memo)) in nodes().iter().zip(state.iter_mut()) {
            let full = weft_policy::compile_node_memo(&ix, node);
            let mut next = ir.clone();
            match weft_policy::apply_pod_changes(&mut next, memo, &ix, node, &changed) {
                None => {
                    prop_assert_eq!(&next, &*ir, "a refusal changed nothing");
                }
                Some(ops) => {
                    prop_assert_eq!(&next, &full.0, "after {:?} on {}", chunk, node.node_name);
                    let mut k = kernel_of(ir);
                    for op in &ops {
                        let set = k.entry(op.set.clone()).or_default();
                        let key = op.elem.render(false);
                        if op.add {
                            prop_assert!(
                                !set.contains_key(&key),
                                "{:?} adds an element the kernel holds",
                                op
                            );
                            set.insert(key, op.elem.render(true));
                        } else {
                            prop_assert!(
                                set.remove(&key).is_some(),
                                "{:?} deletes an element the kernel does not hold",
                                op
                            );
                        }
                    }
                    prop_assert_eq!(k, kernel_of(&full.0), "elements after {:?}", chunk);
                    followed += 1;
                }
            }
            *ir = full.0;
            *memo = full.1;
        }
    }
    Ok(followed)
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn pod_churn_followed_without_a_compile_equals_a_full_compile(
        s in scenario(),
        events in prop::collection::vec(pod_event(), 1..12),
        batch in 1..4usize,
    ) {
        check_incremental(&s, &events, batch)?;
    }
}

/// The incremental path is taken, not just refused every time (which would pass the property
/// vacuously).
#[test]
fn most_pod_churn_is_followed_without_a_compile() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut followed, mut batches) = (0, 0);
    for _ in 0..60 {
        let s = scenario().new_tree(&mut runner).expect("tree").current();
        let events = prop::collection::vec(pod_event(), 6)
            .new_tree(&mut runner)
            .expect("tree")
            .current();
        followed += check_incremental(&s, &events, 1).expect("agrees");
        batches += 2 * events.len();
    }
    assert!(followed * 2 > batches, "{followed} of {batches}");
}

proptest! {
    #![proptest_config(config(200))]

    /// After a change of policies only (the pods, namespaces and nodes of `a`, the policies of
    /// `b`), a compile that reuses the sets of the last one equals a compile from scratch.
    #[test]
    fn a_compile_reusing_the_last_ones_sets_equals_a_full_compile(
        a in scenario(),
        nps in prop::collection::vec((0..3usize, network_policy_spec()), 0..4),
        cnps in prop::collection::vec(cnp_spec(0), 0..2),
    ) {
        let cnps = cnps
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                s["priority"] = json!(10 * i as i32 + 5);
                s
            })
            .collect();
        let changed = Scenario {
            nps,
            cnps,
            ..a.clone()
        };
        let (before, _) = build(&a);
        let (after, _) = build(&changed);
        // The policies whose content differs (same kind, namespace and name, other rules).
        let old: BTreeMap<_, _> = before.policies().map(|p| (p.source.clone(), p)).collect();
        let differ: std::collections::BTreeSet<weft_policy::ObjectRef> = after
            .policies()
            .filter(|p| old.get(&p.source).is_some_and(|o| *o != *p))
            .map(|p| p.source.clone())
            .collect();
        for node in nodes() {
            let (prev, memo) = weft_policy::compile_node_memo(&before, &node);
            let reuse = weft_policy::Reuse { ir: &prev, memo: &memo, changed: &differ };
            let reused = weft_policy::compile_node_reusing(&after, &node, reuse);
            prop_assert_eq!(reused, weft_policy::compile_node_memo(&after, &node));
        }
    }
}
