//! Shared by the masquerade golden tests and the privileged nftables tests: the example fabrics of
//! the golden files, and running code inside a network namespace of its own.

#![allow(dead_code)] // each test crate uses a part

use std::net::IpAddr;
use std::path::PathBuf;

use weft_crds::IpCidr;
use weft_crds::fabric::Masquerade;
use weft_node_agent::masquerade::{MasqueradePlan, plan_masquerade};
use weft_node_agent::subnet::{Lease, Networks};

/// One golden case: a fabric's pod networks, a node's lease, the settings and the node addresses.
pub struct Case {
    pub name: &'static str,
    pub networks: [Option<&'static str>; 2],
    pub lease: [Option<&'static str>; 2],
    pub random_fully: bool,
    pub nodes: &'static [&'static str],
}

pub const CASES: &[Case] = &[
    Case {
        name: "ipv4",
        networks: [Some("10.244.0.0/16"), None],
        lease: [Some("10.244.1.0/24"), None],
        random_fully: false,
        nodes: &["192.168.0.3", "192.168.0.2", "192.168.0.4"],
    },
    Case {
        name: "dual-stack-random-fully",
        networks: [Some("10.244.0.0/16"), Some("fd00:10:244::/56")],
        lease: [Some("10.244.2.0/24"), Some("fd00:10:244:2::/64")],
        random_fully: true,
        nodes: &[
            "192.168.0.2",
            "192.168.0.3",
            "fd00:192:168::3",
            "fd00:192:168::2",
        ],
    },
    Case {
        name: "ipv6-single-node",
        networks: [None, Some("fd00:10:244::/56")],
        lease: [None, Some("fd00:10:244:5::/64")],
        random_fully: false,
        nodes: &["fd00:192:168::2"],
    },
];

/// The pod network and node 1's lease that the privileged datapath tests build (dual-stack).
#[allow(dead_code)] // not every test crate uses it
pub fn dual_stack() -> (Networks, Lease) {
    (
        Networks {
            v4: cidr(Some("10.244.0.0/16")),
            v6: cidr(Some("fd00:10:244::/56")),
        },
        Lease {
            v4: cidr(Some("10.244.1.0/24")),
            v6: cidr(Some("fd00:10:244:1::/64")),
        },
    )
}

fn cidr(s: Option<&str>) -> Option<IpCidr> {
    s.map(|s| s.parse().expect("cidr"))
}

impl Case {
    pub fn plan(&self) -> MasqueradePlan {
        let networks = Networks {
            v4: cidr(self.networks[0]),
            v6: cidr(self.networks[1]),
        };
        let lease = Lease {
            v4: cidr(self.lease[0]),
            v6: cidr(self.lease[1]),
        };
        let nodes: Vec<IpAddr> = self.nodes.iter().map(|a| a.parse().expect("ip")).collect();
        let settings = Masquerade {
            enabled: true,
            random_fully: self.random_fully,
        };
        plan_masquerade(&networks, &lease, &settings, &nodes).expect("plan")
    }

    pub fn golden(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("masquerade-{}", self.name))
            .join("weft-nat.nft")
    }
}

/// Why privileged tests cannot run here, or `None` when they can (root and `nft` present).
pub fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root");
    }
    let nft = std::process::Command::new("nft").arg("--version").output();
    if !nft.is_ok_and(|o| o.status.success()) {
        return Some("needs the nft binary (Debian package nftables)");
    }
    None
}

/// Runs `f` on a thread of its own that first moves into a fresh network namespace
/// (`unshare(CLONE_NEWNET)` affects only the calling thread). Processes it spawns (nft) inherit the
/// namespace; the namespace disappears with the thread, also when `f` panics. The root namespace's
/// firewall is never touched.
pub fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
