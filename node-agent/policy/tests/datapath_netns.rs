//! The rendered ruleset does in the kernel what `Ir::verdict` says: a node namespace with routed
//! veths to four pod namespaces and to a "remote node" namespace, the showcase ruleset loaded, TCP
//! connections probed between every pair on several ports and compared with the verdict of the
//! compiled IR. Needs root, `nft` and `python3`; skipped otherwise. Everything lives in namespaces
//! this test creates and removes (also when it fails).

mod support;

use std::process::{Child, Command, Stdio};

use serde_json::json;
use support::netns::skip_unless_privileged;
use support::*;
use weft_policy::{Decision, Proto, compile_node, render_ruleset};

const PORTS: [u16; 4] = [80, 8080, 9050, 3868];

struct Topology {
    names: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn run(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{ns}: {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const SERVER: &str = "
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port)); s.listen(64)
    while True:
        c, _ = s.accept(); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
threading.Event().wait()
";

const CLIENT: &str = "
import socket, sys
s = socket.socket(); s.settimeout(0.25)
s.bind((sys.argv[1], 0))
try:
    s.connect((sys.argv[2], int(sys.argv[3]))); sys.exit(0)
except Exception:
    sys.exit(1)
";

#[test]
fn the_kernel_agrees_with_the_compiled_verdicts() {
    skip_unless_privileged!("nft", "python3");
    let pid = std::process::id();
    let node = format!("wpn-{pid}");
    // Local pods of n1 (IPv4 side of the showcase) and the remote node holding x/c and z/c.
    let pods = [
        ("xa", "10.244.1.10"),
        ("xb", "10.244.1.11"),
        ("ya", "10.244.1.20"),
        ("yb", "10.244.1.21"),
    ];
    let remote = format!("wpr-{pid}");
    let mut topo = Topology {
        names: vec![node.clone()],
        children: Vec::new(),
    };
    let ok = Command::new("ip")
        .args(["netns", "add", &node])
        .status()
        .map(|s| s.success());
    assert_eq!(ok.ok(), Some(true));
    run(&node, &["ip", "link", "set", "lo", "up"]);
    run(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let mut attach = |ns: &str, dev: &str, addrs: &[&str]| {
        let ok = Command::new("ip")
            .args(["netns", "add", ns])
            .status()
            .map(|s| s.success());
        assert_eq!(ok.ok(), Some(true));
        topo.names.push(ns.to_owned());
        run(
            &node,
            &[
                "ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        );
        run(&node, &["ip", "addr", "add", "169.254.1.1/32", "dev", dev]);
        run(&node, &["ip", "link", "set", dev, "up"]);
        run(ns, &["ip", "link", "set", "lo", "up"]);
        run(ns, &["ip", "link", "set", "eth0", "up"]);
        for a in addrs {
            run(
                ns,
                &["ip", "addr", "add", &format!("{a}/32"), "dev", "eth0"],
            );
        }
        run(ns, &["ip", "route", "add", "169.254.1.1", "dev", "eth0"]);
        run(
            ns,
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
    };
    for (i, (name, addr)) in pods.iter().enumerate() {
        let ns = format!("wp{name}-{pid}");
        let dev = format!("vp{i}");
        attach(&ns, &dev, &[addr]);
        run(
            &node,
            &["ip", "route", "add", &format!("{addr}/32"), "dev", &dev],
        );
    }
    attach(&remote, "vr", &["10.244.2.10", "10.244.2.30"]);
    run(&node, &["ip", "route", "add", "10.244.2.0/24", "dev", "vr"]);
    // Listeners everywhere.
    let mut spaces: Vec<(String, Vec<&str>)> = pods
        .iter()
        .map(|(n, a)| (format!("wp{n}-{pid}"), vec![*a]))
        .collect();
    spaces.push((remote.clone(), vec!["10.244.2.10", "10.244.2.30"]));
    let ports: Vec<String> = PORTS.iter().map(|p| p.to_string()).collect();
    for (ns, _) in &spaces {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", SERVER])
            .args(&ports)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server");
        topo.children.push(child);
    }
    // The ruleset of n1, loaded into the node namespace.
    let ix = {
        let mut ix = cluster();
        ix.apply_network_policy(&network_policy("x", "web", json!({
            "podSelector": {"matchLabels": {"app": "a"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}, {"namespaceSelector": {"matchLabels": {"team": "b"}}}],
                         "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]}],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "c"}}}], "ports": [{"port": "http"}]},
                       {"to": [{"namespaceSelector": {}}], "ports": [{"port": 80}]}]
        })));
        ix.apply_cluster_network_policy(&cnp("deny-z", json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
            "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}]})));
        ix.apply_baseline_admin_network_policy(&banp(json!({"subject": {"namespaces": {"matchLabels": {"team": "b"}}},
            "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"team": "a"}}}], "ports": [{"portNumber": {"protocol": "TCP", "port": 8080}}]}]})));
        ix
    };
    let ir = compile_node(&ix, &node1());
    let file = std::env::temp_dir().join(format!("weft-datapath-{pid}.nft"));
    std::fs::write(&file, render_ruleset(&ir)).expect("write");
    run(&node, &["nft", "-f", file.to_str().expect("utf8")]);
    let _ = std::fs::remove_file(&file);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (mut allowed, mut denied, mut wrong) = (0, 0, Vec::new());
    for (sns, saddrs) in &spaces {
        for (dns, daddrs) in &spaces {
            if sns == dns {
                continue;
            }
            for s in saddrs {
                for d in daddrs {
                    for port in PORTS {
                        let want = ir.verdict(ip(s), ip(d), Proto::Tcp, port);
                        let got = Command::new("ip")
                            .args([
                                "netns",
                                "exec",
                                sns,
                                "python3",
                                "-c",
                                CLIENT,
                                s,
                                d,
                                &port.to_string(),
                            ])
                            .status()
                            .map(|st| st.success())
                            .unwrap_or(false);
                        match (got, want.decision) {
                            (true, Decision::Allowed) => allowed += 1,
                            (false, Decision::Denied) => denied += 1,
                            _ => wrong.push(format!(
                                "{s} -> {d}:{port}: kernel {}, IR {want}",
                                if got { "allowed" } else { "denied" }
                            )),
                        }
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} probes disagree:\n{}",
        wrong.len(),
        allowed + denied + wrong.len(),
        wrong.join("\n")
    );
    assert!(
        allowed > 5 && denied > 5,
        "a probe set that tests nothing: {allowed} allowed, {denied} denied"
    );
}
