//! Masquerade in a real datapath, built from network namespaces of its own (removed afterwards,
//! also on failure); skipped unless root with `nft` and `ip` installed. Run with
//! `cargo test -p weft-node-agent --test masquerade_netns`.
//!
//! ```text
//!   pod                          node (weft-nat applied here)        external
//!   eth0 10.244.1.2/24 ──── vpod 10.244.1.1/24                      lo  10.244.2.2/32 (a remote pod)
//!        fd00:10:244:1::2/64     fd00:10:244:1::1/64
//!                                vext 192.168.50.1/24 ────────────── eth0 192.168.50.2/24 (outside)
//!                                     fd00:50::1/64                       192.168.50.3/24 (another node)
//!                                                                         fd00:50::2/64, fd00:50::3/64
//! ```
//!
//! UDP echo servers answer each datagram with the source address it saw. From the pod, the
//! outside address must see the node's address; the remote pod and another node must see the
//! pod's own; and a client outside reaching the pod keeps its address too.

mod nft_support;

mod cmd_support;

use cmd_support::{Namespaces, echo_server, in_netns, ip, run, seen_by};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nft_support::skip_reason;
use weft_crds::fabric::Masquerade;
use weft_node_agent::masquerade::{plan_masquerade, sync_masquerade, teardown_masquerade};
use weft_node_agent::nft::{Nftables, TableChange};

#[test]
fn pod_traffic_leaves_with_the_node_address_and_stays_unmasqueraded_inside() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let nss = Namespaces::create("weft-masq", &["pod", "node", "ext"]);
    let (pod, node, ext) = (nss.name("pod"), nss.name("node"), nss.name("ext"));

    ip(
        &node,
        &format!("link add vpod type veth peer name eth0 netns {pod}"),
    );
    ip(
        &node,
        &format!("link add vext type veth peer name eth0 netns {ext}"),
    );
    for (ns, addrs) in [
        (&pod, vec!["10.244.1.2/24", "fd00:10:244:1::2/64"]),
        (&node, vec![]),
        (
            &ext,
            vec![
                "192.168.50.2/24",
                "192.168.50.3/24",
                "fd00:50::2/64",
                "fd00:50::3/64",
            ],
        ),
    ] {
        ip(ns, "link set lo up");
        for a in addrs {
            ip(ns, &format!("addr add {a} dev eth0 nodad"));
        }
    }
    ip(&pod, "link set eth0 up");
    ip(&ext, "link set eth0 up");
    for a in [
        "10.244.1.1/24 dev vpod",
        "fd00:10:244:1::1/64 dev vpod nodad",
    ] {
        ip(&node, &format!("addr add {a}"));
    }
    for a in ["192.168.50.1/24 dev vext", "fd00:50::1/64 dev vext nodad"] {
        ip(&node, &format!("addr add {a}"));
    }
    ip(&node, "link set vpod up");
    ip(&node, "link set vext up");
    ip(&ext, "addr add 10.244.2.2/32 dev lo");
    ip(&ext, "addr add fd00:10:244:2::2/128 dev lo");
    ip(&pod, "route add default via 10.244.1.1");
    ip(&pod, "route add default via fd00:10:244:1::1");
    // The remote pod subnet behind "ext" (as host-gw would route it), and the pod network back.
    ip(&node, "route add 10.244.2.0/24 via 192.168.50.2");
    ip(&node, "route add fd00:10:244:2::/64 via fd00:50::2");
    ip(&ext, "route add 10.244.0.0/16 via 192.168.50.1");
    ip(&ext, "route add fd00:10:244::/56 via fd00:50::1");
    run(&[
        "ip",
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
    ]);

    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for (ns, addr) in [
        (&ext, "192.168.50.2"),
        (&ext, "192.168.50.3"),
        (&ext, "fd00:50::2"),
        (&ext, "fd00:50::3"),
        (&ext, "10.244.2.2"),
        (&ext, "fd00:10:244:2::2"),
        (&pod, "10.244.1.2"),
        (&pod, "fd00:10:244:1::2"),
    ] {
        servers.push(echo_server(ns, addr, stop.clone()));
    }

    // Without the table nothing is masqueraded: the control that makes the next checks mean
    // something.
    assert_eq!(seen_by(&pod, "10.244.1.2", "192.168.50.2"), "10.244.1.2");

    let (networks, lease) = nft_support::dual_stack();
    let nodes: Vec<IpAddr> = ["192.168.50.1", "192.168.50.3", "fd00:50::1", "fd00:50::3"]
        .iter()
        .map(|a| a.parse().expect("ip"))
        .collect();
    let settings = Masquerade {
        enabled: true,
        random_fully: true,
    };
    let plan = plan_masquerade(&networks, &lease, &settings, &nodes).expect("plan");
    let change = in_netns(&node, move || sync_masquerade(&plan, &Nftables::new()))
        .join()
        .expect("apply thread")
        .expect("sync");
    assert_eq!(change, TableChange::Created);

    let (pod4, pod6) = ("10.244.1.2", "fd00:10:244:1::2");
    let (ext4, ext6) = ("192.168.50.2", "fd00:50::2");
    // (what, from namespace, source, target, the source the target must see)
    let checks = [
        ("pod to outside, IPv4", &pod, pod4, ext4, "192.168.50.1"),
        ("pod to outside, IPv6", &pod, pod6, ext6, "fd00:50::1"),
        ("pod to a remote pod, IPv4", &pod, pod4, "10.244.2.2", pod4),
        (
            "pod to a remote pod, IPv6",
            &pod,
            pod6,
            "fd00:10:244:2::2",
            pod6,
        ),
        (
            "pod to another node, IPv4",
            &pod,
            pod4,
            "192.168.50.3",
            pod4,
        ),
        ("pod to another node, IPv6", &pod, pod6, "fd00:50::3", pod6),
        ("outside to the pod, IPv4", &ext, ext4, pod4, ext4),
        ("outside to the pod, IPv6", &ext, ext6, pod6, ext6),
    ];
    let mut wrong = Vec::new();
    for (what, ns, source, target, expected) in checks {
        let seen = seen_by(ns, source, target);
        if seen != expected {
            wrong.push(format!("{what}: {target} saw {seen}, expected {expected}"));
        }
    }

    let removed = in_netns(&node, || teardown_masquerade(&Nftables::new()))
        .join()
        .expect("teardown thread")
        .expect("teardown");
    assert_eq!(removed, TableChange::Deleted);
    stop.store(true, Ordering::SeqCst);
    for s in servers {
        s.join().expect("echo server");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
