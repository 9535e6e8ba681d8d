//! A node in network namespaces for the privileged tests: a node namespace that routes between pod
//! namespaces over veths (the way the ptp CNI wires pods), the rendered ruleset loaded into the
//! node namespace, and its drop counters read back. Every namespace and process it creates is
//! removed when it is dropped, also when the test fails.

use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};

/// Returns from the calling test, saying what it needs, unless it runs as root with every
/// given command present: `skip_unless_privileged!("nft", "ping");`. (Not every test crate that
/// includes this module is privileged, hence the allows, as `dead_code` for the rest of it.)
#[allow(unused_macros)]
macro_rules! skip_unless_privileged {
    ($($command:literal),+) => {
        if !$crate::support::netns::privileged_with(&[$($command),+]) {
            eprintln!("skipped: needs root and {}", [$($command),+].join(", "));
            return;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use skip_unless_privileged;

/// Whether the privileged tests can run here: root and the given commands present.
pub fn privileged_with(commands: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    root && commands
        .iter()
        .all(|c| Command::new(c).arg("--version").output().is_ok())
}

/// The node namespace and its pods.
pub struct NodeNs {
    /// The node namespace's name.
    pub node: String,
    tag: String,
    names: Vec<String>,
    children: Vec<Child>,
    links: usize,
}

impl Drop for NodeNs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `args` in namespace `ns`.
pub fn exec(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec")
}

/// Whether one ICMP echo from namespace `from_ns` to `to` is answered within a second.
pub fn ping(from_ns: &str, to: &str) -> bool {
    exec(from_ns, &["ping", "-c", "1", "-W", "1", "-q", to])
        .status
        .success()
}

/// Runs `args` in namespace `ns` and fails the test when it fails.
pub fn run(ns: &str, args: &[&str]) -> String {
    let out = exec(ns, args);
    assert!(
        out.status.success(),
        "{ns}: {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn add_netns(name: &str) {
    let ok = Command::new("ip")
        .args(["netns", "add", name])
        .status()
        .map(|s| s.success());
    assert_eq!(ok.ok(), Some(true), "ip netns add {name}");
}

impl NodeNs {
    /// A fresh node namespace that forwards IPv4; `tag` (a few letters) keeps names apart.
    pub fn new(tag: &str) -> Self {
        let tag = format!("{tag}-{}", std::process::id());
        let node = format!("wn{tag}");
        add_netns(&node);
        let n = NodeNs {
            node: node.clone(),
            tag,
            names: vec![node.clone()],
            children: Vec::new(),
            links: 0,
        };
        run(&node, &["ip", "link", "set", "lo", "up"]);
        run(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        n
    }

    /// A pod namespace `short` with `addrs` (IPv4, /32) on `eth0`, a routed veth to the node
    /// (gateway 169.254.1.1, as the ptp CNI does); returns the namespace's name.
    pub fn pod(&mut self, short: &str, addrs: &[&str]) -> String {
        let ns = format!("wp{short}{}", self.tag);
        add_netns(&ns);
        self.names.push(ns.clone());
        let dev = format!("vp{}", self.links);
        self.links += 1;
        run(
            &self.node,
            &[
                "ip", "link", "add", &dev, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        run(
            &self.node,
            &["ip", "addr", "add", "169.254.1.1/32", "dev", &dev],
        );
        run(&self.node, &["ip", "link", "set", &dev, "up"]);
        run(&ns, &["ip", "link", "set", "lo", "up"]);
        run(&ns, &["ip", "link", "set", "eth0", "up"]);
        for a in addrs {
            run(
                &ns,
                &["ip", "addr", "add", &format!("{a}/32"), "dev", "eth0"],
            );
            run(
                &self.node,
                &["ip", "route", "add", &format!("{a}/32"), "dev", &dev],
            );
        }
        run(&ns, &["ip", "route", "add", "169.254.1.1", "dev", "eth0"]);
        run(
            &ns,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ],
        );
        ns
    }

    /// Starts `args` in namespace `ns` in the background; it is killed when the node goes.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> &mut Child {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        self.children.push(child);
        let last = self.children.len() - 1;
        &mut self.children[last]
    }

    /// Starts a receiver `args` in namespace `ns` that prints `ready` once it listens, then one
    /// line per arrival; returns its lines after `ready` (it is killed when the node goes).
    pub fn listen(&mut self, ns: &str, args: &[&str]) -> std::sync::mpsc::Receiver<String> {
        use std::io::{BufRead, BufReader};
        let child = self.spawn(ns, args);
        let stdout = child.stdout.take().expect("receiver stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10))
                .as_deref(),
            Ok("ready"),
            "the receiver {args:?} in {ns} did not start"
        );
        rx
    }

    /// Loads an nft script into the node namespace (one transaction).
    pub fn load(&self, script: &str) {
        let file = std::env::temp_dir().join(format!("weft-{}-{}.nft", self.node, self.links));
        std::fs::write(&file, script).expect("write script");
        let out = exec(
            &self.node,
            &["nft", "-f", file.to_str().expect("utf8 path")],
        );
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "nft rejected the script:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The named counters of table `inet weft-policy`: name → (packets, bytes).
    pub fn counters(&self) -> BTreeMap<String, (u64, u64)> {
        let json = run(
            &self.node,
            &[
                "nft",
                "-j",
                "list",
                "counters",
                "table",
                "inet",
                "weft-policy",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&json).expect("nft -j");
        v["nftables"]
            .as_array()
            .expect("nftables array")
            .iter()
            .filter_map(|o| o.get("counter"))
            .map(|c| {
                (
                    c["name"].as_str().expect("name").to_owned(),
                    (
                        c["packets"].as_u64().expect("packets"),
                        c["bytes"].as_u64().expect("bytes"),
                    ),
                )
            })
            .collect()
    }
}
