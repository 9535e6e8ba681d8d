//! weft's CNI plugin (the `weft-cni` binary) run as a container runtime runs it, against the real
//! kernel, in network namespaces made for each test (skipped unless root; deleted when the test
//! ends, also when it fails): a "node" namespace the plugin runs in and "pod" namespaces.
//!
//! Beside weft's plugin runs the reference chain it replaces (`ptp` + `host-local` from Debian's
//! containernetworking-plugins, `/usr/lib/cni`), on the same store, to show that the two leave the
//! same layout and can delete each other's pods.

mod cmd_support;

use cmd_support::run;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PLUGIN: &str = env!("CARGO_BIN_EXE_weft-cni");
const REFERENCE_DIR: &str = "/usr/lib/cni";

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Network namespaces and a store directory, removed on drop.
struct World {
    tag: String,
    namespaces: Vec<String>,
    data_dir: PathBuf,
}

impl World {
    fn new(tag: &str) -> World {
        let tag = format!("wcni-{tag}-{}", std::process::id());
        let data_dir = std::env::temp_dir().join(format!("{tag}-ipam"));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut w = World {
            tag,
            namespaces: Vec::new(),
            data_dir,
        };
        w.netns("node");
        w
    }

    fn name(&self, which: &str) -> String {
        format!("{}-{which}", self.tag)
    }

    fn netns(&mut self, which: &str) -> PathBuf {
        let name = self.name(which);
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        self.namespaces.push(name.clone());
        PathBuf::from("/run/netns").join(name)
    }

    fn ip(&self, which: &str, args: &str) -> String {
        let name = self.name(which);
        let mut a = vec!["ip", "-n", name.as_str()];
        a.extend(args.split_whitespace());
        run(&a)
    }

    fn conf(&self, version: &str, kind: &str, subnets: &[&str]) -> Value {
        let ranges: Vec<Value> = subnets.iter().map(|s| json!([{ "subnet": s }])).collect();
        let mut routes = vec![json!({"dst": "0.0.0.0/0"})];
        if subnets.iter().any(|s| s.contains(':')) {
            routes.push(json!({"dst": "::/0"}));
        }
        json!({
            "cniVersion": version,
            "name": "weft",
            "type": kind,
            "mtu": 1410,
            "ipam": {
                "type": "host-local",
                "ranges": ranges,
                "routes": routes,
                "dataDir": self.data_dir,
            }
        })
    }

    /// Runs a plugin binary inside the node namespace as a runtime would.
    fn cni(
        &self,
        binary: &str,
        command: &str,
        id: &str,
        netns: &Path,
        conf: &Value,
    ) -> (bool, Value) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name("node"), binary])
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a",
            )
            .env("CNI_PATH", REFERENCE_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("plugin");
        let text = String::from_utf8_lossy(&out.stdout);
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{binary} printed {text:?}: {e}"))
        };
        (out.status.success(), value)
    }

    fn weft(&self, command: &str, id: &str, netns: &Path, conf: &Value) -> Value {
        let (ok, v) = self.cni(PLUGIN, command, id, netns, conf);
        assert!(ok, "weft {command} {id} failed: {v}");
        v
    }

    fn reservations(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.data_dir.join("weft"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn reference_plugins_present() -> bool {
    let present = Path::new(REFERENCE_DIR).join("ptp").is_file();
    assert!(
        present || std::env::var_os("CI").is_none(),
        "the reference plugins are missing in {REFERENCE_DIR}: apt-get install containernetworking-plugins"
    );
    present
}

/// The pod's routes with its own address and the gateway as placeholders, sorted, so two pods'
/// layouts compare.
fn layout(routes: &str, ip: &str, gw: &str) -> Vec<String> {
    let mut out: Vec<String> = routes
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .map(|l| l.replace(ip, "<ip>").replace(gw, "<gw>"))
        .collect();
    out.sort();
    out
}

#[test]
fn add_wires_a_routed_veth_that_carries_traffic_and_del_removes_it() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut w = World::new("add");
    let pod = w.netns("pod");
    let conf = w.conf("1.0.0", "weft", &["10.251.1.0/24"]);
    let result = w.weft("ADD", "c1", &pod, &conf);

    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["ips"][0]["address"], "10.251.1.2/24");
    assert_eq!(result["ips"][0]["gateway"], "10.251.1.1");
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        pod.display().to_string()
    );
    assert_eq!(result["routes"], json!([{"dst": "0.0.0.0/0"}]));
    let host = result["interfaces"][0]["name"]
        .as_str()
        .expect("host veth")
        .to_string();
    assert!(host.starts_with("veth"), "{host}");

    // The pod's side: address, MTU, ptp's three routes.
    let link = w.ip("pod", "-o addr show dev eth0");
    assert!(link.contains("inet 10.251.1.2/24"), "{link}");
    assert!(w.ip("pod", "link show dev eth0").contains("mtu 1410"));
    let routes = layout(&w.ip("pod", "route show"), "10.251.1.2", "10.251.1.1");
    assert_eq!(
        routes,
        [
            "10.251.1.0/24 via <gw> dev eth0 src <ip>",
            "<gw> dev eth0 scope link src <ip>",
            "default via <gw> dev eth0",
        ]
    );
    // One TX and one RX queue on each end, asked for at creation (so the kernel has none to cut
    // back, under rtnl_lock, after registering the devices).
    for (side, dev) in [("pod", "eth0"), ("node", host.as_str())] {
        let details = w.ip(side, &format!("-d link show dev {dev}"));
        assert!(
            details.contains("numtxqueues 1 numrxqueues 1"),
            "{side} {dev}: {details}"
        );
    }
    // The node's side: the gateway on the host end, a host route to the pod.
    let host_addr = w.ip("node", &format!("-o addr show dev {host}"));
    assert!(host_addr.contains("inet 10.251.1.1/32"), "{host_addr}");
    let host_routes = w.ip("node", "route show");
    assert!(
        host_routes.contains(&format!("10.251.1.2 dev {host} scope host")),
        "{host_routes}"
    );
    // Traffic: the pod reaches its gateway and the node reaches the pod.
    run(&[
        "ip",
        "netns",
        "exec",
        &w.name("pod"),
        "ping",
        "-c1",
        "-W2",
        "10.251.1.1",
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        &w.name("node"),
        "ping",
        "-c1",
        "-W2",
        "10.251.1.2",
    ]);
    assert_eq!(w.reservations(), ["10.251.1.2"]);

    // CHECK with the ADD's result passes; with the gateway address gone it names what is wrong.
    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    w.weft("CHECK", "c1", &pod, &check);
    w.ip("node", &format!("addr del 10.251.1.1/32 dev {host}"));
    let (ok, err) = w.cni(PLUGIN, "CHECK", "c1", &pod, &check);
    assert!(!ok);
    assert!(
        err["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("lacks the gateway 10.251.1.1"),
        "{err}"
    );

    // DEL removes the pair and the reservation; a second DEL, and a DEL after the netns is gone,
    // succeed.
    w.weft("DEL", "c1", &pod, &conf);
    assert!(!w.ip("node", "link show").contains(&host));
    assert!(w.reservations().is_empty());
    w.weft("DEL", "c1", &pod, &conf);
    w.weft("DEL", "c1", Path::new("/run/netns/does-not-exist"), &conf);
}

#[test]
fn a_failed_add_leaves_no_link_and_no_reservation() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut w = World::new("fail");
    let pod = w.netns("pod");
    // The pod already has an eth0: ADD must refuse and give its address back.
    w.ip("pod", "link add eth0 type veth peer name eth0x");
    let conf = w.conf("1.0.0", "weft", &["10.251.2.0/24"]);
    let before = w.ip("node", "-o link show");
    let (ok, err) = w.cni(PLUGIN, "ADD", "c1", &pod, &conf);
    assert!(!ok);
    assert_eq!(err["code"], 100, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("\"eth0\" already exists"),
        "{err}"
    );
    assert_eq!(w.ip("node", "-o link show"), before);
    assert!(w.reservations().is_empty(), "{:?}", w.reservations());

    // A missing netns: the error names it, nothing is reserved.
    let (ok, err) = w.cni(PLUGIN, "ADD", "c2", Path::new("/run/netns/nope"), &conf);
    assert!(!ok);
    assert!(
        err["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("/run/netns/nope"),
        "{err}"
    );
    assert!(w.reservations().is_empty());

    // A bad version is refused with CNI's code 1 before anything happens.
    let old = w.conf("0.2.0", "weft", &["10.251.2.0/24"]);
    let (ok, err) = w.cni(PLUGIN, "ADD", "c3", &pod, &old);
    assert!(!ok);
    assert_eq!(err["code"], 1, "{err}");
}

#[test]
fn dual_stack_pods_reach_their_gateways_at_once() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut w = World::new("dual");
    let pod = w.netns("pod");
    let conf = w.conf("1.0.0", "weft", &["10.251.3.0/24", "fd00:251:3::/64"]);
    let result = w.weft("ADD", "c1", &pod, &conf);
    assert_eq!(result["ips"][1]["address"], "fd00:251:3::2/64");
    assert_eq!(result["ips"][1]["gateway"], "fd00:251:3::1");
    let v6 = w.ip("pod", "-6 route show");
    assert!(v6.contains("default via fd00:251:3::1 dev eth0"), "{v6}");
    // No DAD wait: the address is usable as soon as ADD returns.
    let addr = w.ip("pod", "-6 -o addr show dev eth0 scope global");
    assert!(!addr.contains("tentative"), "{addr}");
    run(&[
        "ip",
        "netns",
        "exec",
        &w.name("pod"),
        "ping",
        "-6",
        "-c1",
        "-W2",
        "fd00:251:3::1",
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        &w.name("node"),
        "ping",
        "-6",
        "-c1",
        "-W2",
        "fd00:251:3::2",
    ]);
    // A 0.4.0 configuration gets a 0.4.0 result.
    let pod2 = w.netns("pod2");
    let old = w.conf("0.4.0", "weft", &["10.251.3.0/24", "fd00:251:3::/64"]);
    let r2 = w.weft("ADD", "c2", &pod2, &old);
    assert_eq!(r2["cniVersion"], "0.4.0");
    assert_eq!(r2["ips"][0]["version"], "4");
    assert_eq!(r2["ips"][1]["address"], "fd00:251:3::3/64");
    w.weft("DEL", "c1", &pod, &conf);
    w.weft("DEL", "c2", &pod2, &old);
    assert!(w.reservations().is_empty());
}

#[test]
fn weft_and_the_reference_ptp_leave_the_same_layout_and_delete_each_others_pods() {
    if !is_root() || !reference_plugins_present() {
        eprintln!("skipped: needs root and {REFERENCE_DIR}/ptp");
        return;
    }
    let mut w = World::new("ref");
    let a = w.netns("a");
    let b = w.netns("b");
    let weft = w.conf("1.0.0", "weft", &["10.251.4.0/24"]);
    let ptp = w.conf("1.0.0", "ptp", &["10.251.4.0/24"]);
    let ra = w.weft("ADD", "ca", &a, &weft);
    let ptp_bin = format!("{REFERENCE_DIR}/ptp");
    let (ok, rb) = w.cni(&ptp_bin, "ADD", "cb", &b, &ptp);
    assert!(ok, "ptp ADD: {rb}");
    // One store, one round robin: weft took .2, ptp .3.
    assert_eq!(ra["ips"][0]["address"], "10.251.4.2/24");
    assert_eq!(rb["ips"][0]["address"], "10.251.4.3/24");
    assert_eq!(
        layout(&w.ip("a", "route show"), "10.251.4.2", "10.251.4.1"),
        layout(&w.ip("b", "route show"), "10.251.4.3", "10.251.4.1"),
    );
    // Pod to pod through the node.
    run(&[
        "ip",
        "netns",
        "exec",
        &w.name("a"),
        "ping",
        "-c1",
        "-W2",
        "10.251.4.3",
    ]);
    // Each deletes the other's pod: links and reservations go.
    let (ok, out) = w.cni(&ptp_bin, "DEL", "ca", &a, &ptp);
    assert!(ok, "ptp DEL of weft's pod: {out}");
    w.weft("DEL", "cb", &b, &weft);
    let links = w.ip("node", "-o link show");
    for r in [&ra, &rb] {
        let host = r["interfaces"][0]["name"].as_str().expect("host");
        assert!(!links.contains(host), "{host} left: {links}");
    }
    assert!(w.reservations().is_empty(), "{:?}", w.reservations());
}

/// The agent installs itself when `weft-cni` is not beside it: run with `CNI_COMMAND` set,
/// `weft-agent` is the same plugin and starts nothing of the agent.
#[test]
fn the_agent_binary_is_the_plugin_too() {
    const AGENT: &str = env!("CARGO_BIN_EXE_weft-agent");
    let version = Command::new(AGENT)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .expect("run weft-agent");
    assert!(version.status.success(), "{version:?}");
    let v: Value = serde_json::from_slice(&version.stdout).expect("json");
    assert!(
        v["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("1.0.0"))),
        "{v}"
    );
    if !is_root() {
        eprintln!("ADD skipped: needs root");
        return;
    }
    let mut w = World::new("agent");
    let pod = w.netns("pod");
    let conf = w.conf("1.0.0", "weft", &["10.251.5.0/24"]);
    let (ok, r) = w.cni(AGENT, "ADD", "c1", &pod, &conf);
    assert!(ok, "{r}");
    assert_eq!(r["ips"][0]["address"], "10.251.5.2/24");
    let (ok, r) = w.cni(AGENT, "DEL", "c1", &pod, &conf);
    assert!(ok, "{r}");
    assert!(w.reservations().is_empty());
}

/// A pod with hostPorts: weft's plugin runs the reference `portmap` for it (and only for it), so
/// a client outside the node reaches the pod through the node's address; DEL removes the mapping.
#[test]
fn host_ports_are_delegated_to_portmap_only_for_pods_that_have_some() {
    if !is_root() || !reference_plugins_present() {
        eprintln!("skipped: needs root and {REFERENCE_DIR}/portmap");
        return;
    }
    let mut w = World::new("hp");
    let pod = w.netns("pod");
    let plain = w.netns("plain");
    w.netns("client");
    // The client sits on a link of its own to the node: 10.251.7.2 → 10.251.7.1.
    let node = w.name("node");
    let client = w.name("client");
    w.ip(
        "node",
        &format!("link add hpc0 type veth peer name eth0 netns {client}"),
    );
    w.ip("node", "addr add 10.251.7.1/24 dev hpc0");
    w.ip("node", "link set hpc0 up");
    w.ip("client", "addr add 10.251.7.2/24 dev eth0");
    w.ip("client", "link set eth0 up");

    let mut conf = w.conf("1.0.0", "weft", &["10.251.6.0/24"]);
    conf["capabilities"] = json!({"portMappings": true});
    conf["hostPorts"] = json!({"type": "portmap", "snat": true});

    // Without mappings portmap is not run: no hostport chain appears.
    w.weft("ADD", "plain", &plain, &conf);
    let nat = run(&["ip", "netns", "exec", &node, "iptables-save", "-t", "nat"]);
    assert!(!nat.contains("CNI-HOSTPORT"), "{nat}");

    let mut mapped = conf.clone();
    mapped["runtimeConfig"] = json!({"portMappings": [
        {"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}
    ]});
    let r = w.weft("ADD", "mapped", &pod, &mapped);
    assert_eq!(r["ips"][0]["address"], "10.251.6.3/24");
    let nat = run(&["ip", "netns", "exec", &node, "iptables-save", "-t", "nat"]);
    assert!(nat.contains("--to-destination 10.251.6.3:80"), "{nat}");

    // A listener in the pod answers a client that dials the node's address and hostPort.
    let pod_path = pod.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let ns = std::fs::File::open(&pod_path).expect("pod netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = std::net::TcpListener::bind("0.0.0.0:80").expect("bind :80 in the pod");
        ready_tx.send(()).expect("ready");
        let (mut conn, peer) = listener.accept().expect("accept");
        conn.write_all(b"pod\n").expect("write");
        peer
    });
    ready_rx.recv().expect("server ready");
    let reply = run(&[
        "ip",
        "netns",
        "exec",
        &client,
        "bash",
        "-c",
        "exec 3<>/dev/tcp/10.251.7.1/18080 && head -c 4 <&3",
    ]);
    assert_eq!(reply, "pod\n");
    let peer = server.join().expect("server");
    // snat: true makes only hairpin traffic leave with the node's address; this client is not.
    assert_eq!(peer.ip().to_string(), "10.251.7.2");

    w.weft("DEL", "mapped", &pod, &mapped);
    let nat = run(&["ip", "netns", "exec", &node, "iptables-save", "-t", "nat"]);
    assert!(!nat.contains("10.251.6.3:80"), "{nat}");
    w.weft("DEL", "plain", &plain, &conf);
    assert!(w.reservations().is_empty(), "{:?}", w.reservations());
}
