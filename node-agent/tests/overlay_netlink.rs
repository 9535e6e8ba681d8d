//! The overlay's netlink layer against the real kernel, inside a private network namespace per
//! test (skipped unless root). Each namespace gets an uplink `eth0` (one end of a veth pair whose
//! other end stays in the namespace) with 10.99.0.10/24 and fd00:99::a/64, and is deleted when the
//! test ends, also when it fails.

mod cmd_support;

use cmd_support::run;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

use weft_crds::IpCidr;
use weft_node_agent::flannel::Mac;
use weft_node_agent::overlay::diff::diff_datapath;
use weft_node_agent::overlay::netlink::{Kernel, Netlink, ethtool};
use weft_node_agent::overlay::{Datapath, FdbEntry, Neighbour, ROUTE_PROTOCOL, Route, VxlanDevice};

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A network namespace that is deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("weft-t-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        for cmd in [
            "ip link set lo up",
            "ip link add eth0 type veth peer name eth0p",
            "ip link set eth0 up",
            "ip link set eth0p up",
            "ip addr add 10.99.0.10/24 dev eth0",
            "ip -6 addr add fd00:99::a/64 dev eth0 nodad",
        ] {
            ns.exec(cmd);
        }
        ns
    }

    fn exec(&self, cmd: &str) -> String {
        let mut args = vec!["ip", "netns", "exec", &self.0];
        args.extend(cmd.split_whitespace());
        run(&args)
    }

    /// Runs `f` with a Netlink handle opened inside this namespace (on a thread of its own that
    /// entered the namespace; the socket stays bound to it).
    fn with_kernel<T: Send + 'static>(
        &self,
        f: impl FnOnce(Netlink) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
        + Send
        + 'static,
    ) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let k = Netlink::connect().expect("netlink");
                f(k).await
            })
        })
        .join()
        .expect("thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}
fn cidr(s: &str) -> IpCidr {
    s.parse().expect("cidr")
}

fn device(name: &str, vni: u32, local: &str, addr: &str, mac: u8) -> VxlanDevice {
    VxlanDevice {
        name: name.into(),
        vni,
        port: 8472,
        local: ip(local),
        uplink: "eth0".into(),
        mtu: if local.contains(':') { 1430 } else { 1450 },
        mac: Mac([0x0a, 0x58, 0, 0, 0, mac]),
        addresses: vec![cidr(addr)],
        up: true,
        tx_checksum_offload: true,
    }
}

/// flannel's state toward two peers, over IPv4 and IPv6.
fn desired(peers: &[(u8, &str)]) -> Datapath {
    let mut d = Datapath {
        devices: vec![
            device("flannel-v6.1", 1, "fd00:99::a", "fd00:10:244::/128", 2),
            device("flannel.1", 1, "10.99.0.10", "10.244.0.0/32", 1),
        ],
        ..Datapath::default()
    };
    for (n, remote) in peers {
        let mac = Mac([0x0a, 0x58, 0, 0, 1, *n]);
        let mac6 = Mac([0x0a, 0x58, 0, 0, 2, *n]);
        let sub = cidr(&format!("10.244.{n}.0/24"));
        let sub6 = cidr(&format!("fd00:10:244:{n}::/64"));
        d.neighbours.insert(Neighbour {
            device: "flannel.1".into(),
            ip: sub.addr(),
            mac,
        });
        d.neighbours.insert(Neighbour {
            device: "flannel-v6.1".into(),
            ip: sub6.addr(),
            mac: mac6,
        });
        d.fdb.insert(FdbEntry {
            device: "flannel.1".into(),
            mac,
            remote: ip(remote),
        });
        d.fdb.insert(FdbEntry {
            device: "flannel-v6.1".into(),
            mac: mac6,
            remote: ip(&format!("fd00:99::{n}")),
        });
        d.routes.insert(Route {
            destination: sub,
            gateway: sub.addr(),
            device: "flannel.1".into(),
            onlink: true,
        });
        d.routes.insert(Route {
            destination: sub6,
            gateway: sub6.addr(),
            device: "flannel-v6.1".into(),
            onlink: true,
        });
    }
    d
}

/// Applies `want` until the kernel holds it, and returns (the first diff's size, the second's).
async fn converge(k: &Netlink, want: &Datapath) -> (usize, usize) {
    let before = k.observe().await.expect("observe");
    let changes = diff_datapath(want, &before);
    let report = k.apply(&changes).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let after = k.observe().await.expect("observe");
    assert_eq!(&after, want, "the kernel holds what was planned");
    (changes.len(), diff_datapath(want, &after).len())
}

#[test]
fn creates_from_scratch_and_reapplies_without_a_write() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = Netns::new("scratch");
    ns.with_kernel(|k| {
        Box::pin(async move {
            let want = desired(&[(1, "10.99.0.11"), (2, "10.99.0.12")]);
            let (first, second) = converge(&k, &want).await;
            assert_eq!(first, 2 + 12);
            assert_eq!(second, 0, "re-applying writes nothing");
        })
    });
    let routes = ns.exec("ip route show dev flannel.1");
    assert!(
        routes.contains("10.244.1.0/24 via 10.244.1.0 proto 87 onlink"),
        "{routes}"
    );
    let link = ns.exec("ip -d link show flannel.1");
    assert!(
        link.contains("vxlan id 1 local 10.99.0.10 dev eth0"),
        "{link}"
    );
    assert!(link.contains("dstport 8472 nolearning"), "{link}");
    assert!(link.contains("mtu 1450"), "{link}");
    let fdb = ns.exec("bridge fdb show dev flannel.1");
    assert!(
        fdb.contains("0a:58:00:00:01:02 dst 10.99.0.12 self permanent"),
        "{fdb}"
    );
    let neigh = ns.exec("ip neigh show dev flannel.1");
    assert!(
        neigh.contains("10.244.2.0 lladdr 0a:58:00:00:01:02 PERMANENT"),
        "{neigh}"
    );
}

#[test]
fn converges_from_a_wrong_state_and_leaves_others_alone() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = Netns::new("converge");
    // An old flannel device with another VNI and port, a stale peer on it, a stale weft route, and
    // routes that are not weft's.
    for cmd in [
        "ip link add flannel.1 type vxlan id 7 dstport 4789 local 10.99.0.10 dev eth0 nolearning",
        "ip link set flannel.1 up",
        "ip addr add 10.244.0.0/32 dev flannel.1",
        "ip route add 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink",
        "ip route add 10.244.8.0/24 via 10.99.0.18 dev eth0 proto 87",
        "ip route add 10.244.50.0/24 via 10.99.0.50 dev eth0 proto static",
        "ip route add 192.168.77.0/24 via 10.99.0.77 dev eth0",
        "ip link add flannel.5 type vxlan id 5 dstport 8472 local 10.99.0.10 dev eth0",
        "ip link add vxlan0 type vxlan id 9 dstport 4789 local 10.99.0.10 dev eth0",
    ] {
        ns.exec(cmd);
    }
    ns.with_kernel(|k| {
        Box::pin(async move {
            let mut want = desired(&[(1, "10.99.0.11")]);
            want.devices.retain(|d| d.name == "flannel.1");
            want.routes.retain(|r| r.device == "flannel.1");
            want.neighbours.retain(|n| n.device == "flannel.1");
            want.fdb.retain(|f| f.device == "flannel.1");
            let have = k.observe().await.expect("observe");
            let changes = diff_datapath(&want, &have);
            assert!(
                changes
                    .delete_devices
                    .iter()
                    .any(|(n, why)| n == "flannel.1" && why.contains("VNI 7 (want 1)")),
                "{changes:?}"
            );
            assert!(changes.delete_devices.iter().any(|(n, _)| n == "flannel.5"));
            assert_eq!(
                changes.del_routes.len(),
                1,
                "the proto 87 route: {changes:?}"
            );
            let (_, second) = converge(&k, &want).await;
            assert_eq!(second, 0);
        })
    });
    let link = ns.exec("ip -d link show flannel.1");
    assert!(
        link.contains("vxlan id 1 ") && link.contains("dstport 8472"),
        "{link}"
    );
    let all = ns.exec("ip route show");
    assert!(
        !all.contains("10.244.9.0"),
        "stale route on the device: {all}"
    );
    assert!(!all.contains("10.244.8.0"), "stale weft route: {all}");
    assert!(
        all.contains("10.244.50.0/24 via 10.99.0.50"),
        "foreign route kept: {all}"
    );
    assert!(all.contains("192.168.77.0/24"), "foreign route kept: {all}");
    assert!(
        ns.exec("ip link show").contains("vxlan0"),
        "foreign device kept"
    );
}

#[test]
fn garbage_collects_a_gone_peer_and_keeps_offload_off() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = Netns::new("gc");
    ns.with_kernel(|k| {
        Box::pin(async move {
            let mut want = desired(&[(1, "10.99.0.11"), (2, "10.99.0.12")]);
            for d in &mut want.devices {
                d.tx_checksum_offload = false;
            }
            converge(&k, &want).await;
            assert!(!ethtool::tx_checksum("flannel.1").expect("ethtool"));
            // Node 2 is deleted; a host-gw style route of weft's appears for a direct peer.
            let mut fewer = desired(&[(1, "10.99.0.11")]);
            for d in &mut fewer.devices {
                d.tx_checksum_offload = false;
            }
            fewer.routes.insert(Route {
                destination: cidr("10.244.3.0/24"),
                gateway: ip("10.99.0.13"),
                device: "eth0".into(),
                onlink: false,
            });
            let before = k.observe().await.expect("observe");
            let changes = diff_datapath(&fewer, &before);
            assert_eq!(
                (
                    changes.del_routes.len(),
                    changes.del_neighbours.len(),
                    changes.del_fdb.len()
                ),
                (2, 2, 2),
                "{changes:?}"
            );
            let (_, second) = converge(&k, &fewer).await;
            assert_eq!(second, 0);
            let on_link: BTreeSet<IpAddr> = k
                .on_link(&[ip("10.99.0.13"), ip("192.0.2.1"), ip("fd00:99::b")])
                .await;
            assert_eq!(
                on_link,
                [ip("10.99.0.13"), ip("fd00:99::b")].into_iter().collect()
            );
        })
    });
    let routes = ns.exec("ip route show proto 87");
    assert!(
        routes.contains("10.244.3.0/24 via 10.99.0.13 dev eth0"),
        "{routes}"
    );
    assert_eq!(ROUTE_PROTOCOL, 87);
    // A device recreated by hand with offload on is put back to off.
    ns.exec("ip link del flannel.1");
    ns.with_kernel(|k| {
        Box::pin(async move {
            let mut want = desired(&[(1, "10.99.0.11")]);
            for d in &mut want.devices {
                d.tx_checksum_offload = false;
            }
            converge(&k, &want).await;
            assert!(!ethtool::tx_checksum("flannel.1").expect("ethtool"));
        })
    });
}
