//! The pod-to-pod fast path (`weft_node_agent::fastpath`) in a real node, built from network
//! namespaces of its own (removed afterwards, also on failure); skipped unless root with `nft`
//! and `ip` installed. Run with `cargo test -p weft-node-agent --test fastpath_netns`.
//!
//! ```text
//!   pod a  eth0 10.244.1.2/32 ─── veth-a ┐ node: 10.244.1.1 on each host end (ptp), a /32 route
//!          fd00:10:244:1::2/128          │ per pod, weft's masquerade table (so conntrack is on),
//!   pod b  eth0 10.244.1.3/32 ─── veth-b ┘ and a kube-proxy-like DNAT 10.96.0.10 → pod b
//!          fd00:10:244:1::3/128
//! ```
//!
//! What must hold: pod to pod works with the path on and off, and on it is the program that
//! forwards (its counter moves, conntrack never sees the pair); a flow through the "Service" is
//! left to the stack on its way back (the reply comes from 10.96.0.10, un-DNATed), which is the
//! case that would break if the program took every pod-to-pod packet; and uninstall leaves no
//! filter behind.

mod cmd_support;
mod nft_support;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cmd_support::{Namespaces, ask, echo_server, in_netns, ip, run};
use nft_support::skip_reason;
use weft_crds::fabric::Masquerade;
use weft_node_agent::fastpath::kernel::{Counters, FastPath, SyncReport};
use weft_node_agent::fastpath::{Config, plan_devices};
use weft_node_agent::masquerade::{plan_masquerade, sync_masquerade};
use weft_node_agent::nft::Nftables;

/// Runs `f` with a fast path loaded in namespace `ns`, on a thread (and runtime) of its own there.
fn with_fast_path<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce(&FastPath, &tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let fp = rt.block_on(async { FastPath::load() }).expect("load");
        f(&fp, &rt)
    })
    .join()
    .expect("fast path thread")
}

fn conntrack_lists(ns: &str, addr: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "conntrack", "-L"])
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(addr))
}

/// Sends `bytes` over TCP from pod `client` to a listener in pod `server` (10.244.1.3:7400); the
/// bytes the server read.
fn tcp_transfer(server: &str, client: &str, bytes: usize) -> usize {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = in_netns(server, move || {
        let l = std::net::TcpListener::bind("10.244.1.3:7400").expect("listen");
        tx.send(()).expect("ready");
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0;
        loop {
            match s.read(&mut buf).expect("read") {
                0 => return n,
                k => n += k,
            }
        }
    });
    rx.recv().expect("listener");
    in_netns(client, move || {
        let mut s = std::net::TcpStream::connect("10.244.1.3:7400").expect("connect");
        s.write_all(&vec![7u8; bytes]).expect("write");
    })
    .join()
    .expect("client");
    reader.join().expect("server")
}

#[test]
fn pod_to_pod_skips_the_stack_and_service_replies_do_not() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let nss = Namespaces::create("weft-fp", &["a", "b", "node"]);
    let node = nss.name("node");
    let pods = [
        (nss.name("a"), "veth-a", "10.244.1.2", "fd00:10:244:1::2"),
        (nss.name("b"), "veth-b", "10.244.1.3", "fd00:10:244:1::3"),
    ];
    ip(&node, "link set lo up");
    for (pod, host, v4, v6) in &pods {
        ip(
            &node,
            &format!("link add {host} type veth peer name eth0 netns {pod}"),
        );
        ip(pod, "link set lo up");
        ip(pod, &format!("addr add {v4}/32 dev eth0"));
        ip(pod, &format!("addr add {v6}/128 dev eth0 nodad"));
        ip(pod, "link set eth0 up");
        ip(&node, &format!("addr add 10.244.1.1/32 dev {host}"));
        ip(
            &node,
            &format!("addr add fd00:10:244:1::1/128 dev {host} nodad"),
        );
        ip(&node, &format!("link set {host} up"));
        ip(&node, &format!("route add {v4}/32 dev {host}"));
        ip(&node, &format!("route add {v6}/128 dev {host}"));
        ip(pod, "route add 10.244.1.1/32 dev eth0");
        ip(pod, "route add default via 10.244.1.1");
        ip(pod, "route add fd00:10:244:1::1/128 dev eth0");
        ip(pod, "route add default via fd00:10:244:1::1");
    }
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
    let (networks, lease) = nft_support::dual_stack();
    let settings = Masquerade {
        enabled: true,
        random_fully: false,
    };
    let plan = plan_masquerade(&networks, &lease, &settings, &[]).expect("plan");
    in_netns(&node, move || sync_masquerade(&plan, &Nftables::new()))
        .join()
        .expect("nft thread")
        .expect("masquerade");
    // kube-proxy's part: a Service address DNATed to pod b.
    run(&[
        "ip",
        "netns",
        "exec",
        &node,
        "nft",
        "add table ip svc; add chain ip svc pre { type nat hook prerouting priority dstnat; }; \
         add rule ip svc pre ip daddr 10.96.0.10 udp dport 7399 dnat to 10.244.1.3",
    ]);

    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = [(&pods[1].0, pods[1].2), (&pods[1].0, pods[1].3)]
        .into_iter()
        .map(|(ns, addr)| echo_server(ns, addr, stop.clone()))
        .collect();
    let (a, a4, a6) = (pods[0].0.clone(), pods[0].2, pods[0].3);

    let node2 = node.clone();
    let a2 = a.clone();
    let b2 = pods[1].0.clone();
    let (report, first, after_direct, after_service, off, after_off) =
        with_fast_path(&node, move |fp, rt| {
            let devices = plan_devices(
                weft_crds::fabric::Backend::HostGw,
                false,
                1,
                &networks,
                &Default::default(),
            );
            fp.set_plan(devices, lease, true);
            let report: SyncReport = rt.block_on(fp.sync()).expect("sync");
            // The neighbours first (a packet whose next hop is unresolved takes the stack, which
            // would track its flow), then an empty conntrack table.
            for b in ["10.244.1.3", "fd00:10:244:1::3"] {
                run(&[
                    "ip", "netns", "exec", &a2, "ping", "-c", "1", "-i", "0.2", "-w", "5", b,
                ]);
            }
            run(&["ip", "netns", "exec", &node2, "conntrack", "-F"]);
            fp.set_config(Config::of(&networks, true)).expect("on");
            let first = fp.counters();
            for _ in 0..3 {
                let b4: IpAddr = "10.244.1.3".parse().expect("ip");
                assert_eq!(ask(&a2, a4, "10.244.1.3"), (a4.to_owned(), b4));
                assert_eq!(ask(&a2, a6, "fd00:10:244:1::3").0, a6);
            }
            // With the neighbours forgotten, the kernel's neighbour code resolves them for the
            // program; nothing is left to the stack (which would track the flow).
            run(&["ip", "-n", &node2, "neigh", "flush", "all"]);
            let before_flush = fp.counters();
            let b4: IpAddr = "10.244.1.3".parse().expect("ip");
            assert_eq!(ask(&a2, a4, "10.244.1.3"), (a4.to_owned(), b4));
            let after_flush = fp.counters();
            assert_eq!(
                after_flush.to_stack, before_flush.to_stack,
                "{after_flush:?}"
            );
            assert!(
                after_flush.forwarded >= before_flush.forwarded + 2,
                "{after_flush:?}"
            );
            // A TCP transfer: the pod's segments come as GSO packets of up to 64 KiB, which
            // must take the path too (not be left to the stack for the MTU, which would track
            // the whole flow).
            let sent = tcp_transfer(&b2, &a2, 4 << 20);
            assert_eq!(sent, 4 << 20);
            let after_direct = fp.counters();
            assert_eq!(
                after_direct.tracked, after_flush.tracked,
                "{after_direct:?}"
            );
            assert_eq!(
                after_direct.to_stack, after_flush.to_stack,
                "{after_direct:?}"
            );
            assert!(
                !conntrack_lists(&node2, "src=10.244.1.2 dst=10.244.1.3"),
                "the fast-pathed pair is in conntrack"
            );
            // A path narrower than the pods' MTU: segments too big for it go to the stack,
            // whose ICMP error lowers the sender's path MTU; the transfer completes.
            run(&["ip", "-n", &node2, "link", "set", "veth-b", "mtu", "1300"]);
            assert_eq!(tcp_transfer(&b2, &a2, 1 << 20), 1 << 20);
            let narrow = fp.counters();
            assert!(narrow.to_stack > after_direct.to_stack, "{narrow:?}");
            run(&["ip", "-n", &node2, "link", "set", "veth-b", "mtu", "1500"]);
            let after_direct = fp.counters();
            // through the Service: the reply must come back from the Service's address
            let (seen, from) = ask(&a2, a4, "10.96.0.10");
            assert_eq!(seen, a4);
            assert_eq!(
                from,
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "the reply was not un-DNATed"
            );
            let after_service = fp.counters();
            // off: everything takes the stack, and still arrives
            fp.set_config(Config::of(&networks, false)).expect("off");
            let off = fp.counters();
            assert_eq!(ask(&a2, a4, "10.244.1.3").0, a4);
            let after_off = fp.counters();
            // The fabric no longer wants it: its filters go; wanted again: back.
            fp.set_plan(Vec::new(), lease, false);
            let mut gone = rt.block_on(fp.sync()).expect("sync").detached;
            gone.sort();
            assert_eq!(gone, vec!["veth-a", "veth-b"]);
            fp.set_plan(Vec::new(), lease, true);
            assert_eq!(rt.block_on(fp.sync()).expect("sync").attached.len(), 2);
            (report, first, after_direct, after_service, off, after_off)
        });
    let mut attached = report.attached.clone();
    attached.sort();
    assert_eq!(attached, vec!["veth-a", "veth-b"], "{report:?}");
    assert_eq!(report.pods, 2);
    let delta = |x: Counters, y: Counters| (y.forwarded - x.forwarded, y.tracked - x.tracked);
    let (fwd, _) = delta(first, after_direct);
    // six asks, each at least one datagram each way
    assert!(
        fwd >= 8,
        "the program forwarded {fwd} packets of pod-to-pod traffic"
    );
    let (_, tracked) = delta(after_direct, after_service);
    assert!(
        tracked >= 1,
        "the Service reply was not left to conntrack ({first:?} → {after_service:?})"
    );
    assert_eq!(delta(off, after_off), (0, 0), "the program acted while off");

    // Uninstall (by another agent process, as after a restart): no filter left.
    let removed = with_fast_path(&node, |fp, rt| {
        rt.block_on(fp.detach_all()).expect("detach")
    });
    assert_eq!(removed, 2);
    for host in ["veth-a", "veth-b"] {
        let shown = run(&[
            "ip", "netns", "exec", &node, "tc", "filter", "show", "dev", host, "ingress",
        ]);
        assert!(shown.trim().is_empty(), "{host} still has {shown}");
    }
    stop.store(true, Ordering::SeqCst);
    for s in servers {
        s.join().expect("server");
    }
}
