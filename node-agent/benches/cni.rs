//! The CNI plugin alone, against the kernel: weft's `weft-cni` against the reference chain it
//! replaces (`ptp` → `host-local` from Debian's containernetworking-plugins in `/usr/lib/cni`),
//! each alone and each as the fabric's default conflist (`chainedPlugins: [portmap]`) has it, in
//! the same run. Needs root; skipped otherwise.
//!
//! ```text
//! cargo bench -p weft-node-agent --bench cni    # as root; apt-get install containernetworking-plugins
//! ```
//!
//! What one run does, in network namespaces of its own (`wcnib-<pid>-node` and
//! `wcnib-<pid>-p<i>`, removed at the end, also on panic, SIGINT or SIGTERM; leftovers of a killed
//! run are removed by the next one):
//! - a "node" namespace the plugins run in (`ip netns exec <node> <plugin>`; with
//!   `WEFT_CNI_BENCH_SETNS=1` the plugin enters it by `setns(2)` between fork and exec instead,
//!   as a runtime living in that namespace would start it: no `ip` process, no mount namespace
//!   and /sys remount), with the environment and stdin a container runtime gives (libcni's
//!   `name`/`cniVersion` injected, `prevResult` for the chained plugin and on DEL,
//!   `CNI_PATH=/usr/lib/cni`), and N pod namespaces made beforehand and not timed;
//! - the network configuration: `{"type":"weft"|"ptp","mtu":1450,"ipam":{"type":"host-local",
//!   "ranges":[[{"subnet":"10.252.0.0/22"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":<fresh
//!   temp dir>}}` in a conflist named `weft`, version 1.0.0; with portmap (a pod without hostPort
//!   mappings), ptp is followed by `{"type":"portmap","capabilities":{"portMappings":true},
//!   "snat":true}` and weft's object gets `"capabilities":{"portMappings":true}` and
//!   `"hostPorts":{"type":"portmap","snat":true}` (since 2a28e5b weft runs portmap itself, only
//!   for a pod with mappings; until then it was chained after weft as after ptp);
//! - per chain (weft, reference; alone, then with portmap) and round: N ADDs one at a time, N DELs
//!   one at a time, then N ADDs started at once (all spawned, then reaped as they exit; each
//!   pod's chain goes on to its next plugin as soon as the first exits, as a runtime's per-pod
//!   goroutine does) and N DELs untimed. Wall time of each ADD or DEL (spawn → exit of the last
//!   plugin of the chain), CPU per call from `getrusage(RUSAGE_CHILDREN)` before and after the
//!   phase (user + system of the plugins and of what they ran, `ip netns exec` included if used);
//! - the floor under every call: `/bin/true` started the same way, and each plugin's `VERSION`
//!   (its process start, nothing done);
//! - the floor under a burst, which no plugin that is a process per ADD (as the CNI spec has it)
//!   can go below: N `/bin/true` started at once the same way (the process starts alone, on the
//!   same CPUs as the starter), and weft's wiring without any process (`wire::add` called N
//!   times in one thread in the node namespace: the veth pair, addresses and routes, i.e. the
//!   kernel's work for a pod, with no process start, no IPAM and no JSON), whose CPU is taken
//!   from the whole machine (`/proc/stat`), since the kernel finishes part of a new device's
//!   registration in its own workers. The bench prints the bound they give together: the burst
//!   of processes, plus the wiring's CPU spread over the machine's CPUs.
//!
//! Correctness is checked, untimed, so that a broken plugin cannot give a fast figure: every ADD
//! succeeded and returned an address in the subnet, the N addresses are distinct, the node
//! namespace holds N veths and N host routes, the first and the last pod answer a ping; every DEL
//! succeeded, no veth is left and the store holds no reservation.
//!
//! Rounds alternate which plugin goes first (round 0 weft first, round 1 the reference first, …)
//! so that drift hits both; samples of all rounds are pooled. The table gives weft, the
//! reference, and reference ÷ weft (above 1: weft faster or cheaper).
//!
//! Knobs: `WEFT_BENCH_REPS` (rounds, default 3), `WEFT_CNI_BENCH_N` (pods, default 100, at most
//! 1000: the /22 holds 1021), `WEFT_CNI_BIN` (the plugin binary; default the `weft-cni` cargo
//! built beside this bench), `WEFT_CNI_BENCH_SETNS=1` (see above).

#[path = "../tests/cmd_support/mod.rs"]
mod cmd_support;

use cmd_support::run;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

const REFERENCE_DIR: &str = "/usr/lib/cni";
const NETWORK: &str = "weft";
const CNI_VERSION: &str = "1.0.0";
const SUBNET: &str = "10.252.0.0/22";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 1);
const MTU: u32 = 1450;
const PREFIX: &str = "wcnib";
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn check_stop() {
    assert!(
        !STOP.load(Ordering::SeqCst),
        "interrupted: cleaning up and stopping"
    );
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Plugin {
    Weft,
    Reference,
}

/// A conflist: the wiring plugin, optionally portmap after it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Chain {
    plugin: Plugin,
    portmap: bool,
}

impl Chain {
    fn name(self) -> &'static str {
        match (self.plugin, self.portmap) {
            (Plugin::Weft, false) => "weft",
            (Plugin::Weft, true) => "weft with hostPorts",
            (Plugin::Reference, false) => "ptp → host-local",
            (Plugin::Reference, true) => "ptp → host-local, portmap",
        }
    }
}

/// The namespaces of one run, removed on drop.
struct World {
    tag: String,
    pods: Vec<PathBuf>,
    names: Vec<String>,
    weft_bin: PathBuf,
    counter: u64,
    /// The node namespace, open, when plugins enter it by `setns` instead of `ip netns exec`.
    setns: Option<std::fs::File>,
}

impl World {
    fn new(n: usize, weft_bin: PathBuf, setns: bool) -> World {
        let tag = format!("{PREFIX}-{}", std::process::id());
        let mut w = World {
            tag,
            pods: Vec::new(),
            names: Vec::new(),
            weft_bin,
            counter: 0,
            setns: None,
        };
        let node = w.node();
        w.add_netns(&node);
        run(&["ip", "-n", &node, "link", "set", "lo", "up"]);
        for i in 0..n {
            let name = format!("{}-p{i}", w.tag);
            w.add_netns(&name);
            w.pods.push(PathBuf::from("/run/netns").join(&name));
        }
        if setns {
            let path = PathBuf::from("/run/netns").join(&node);
            let file = std::fs::File::open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            w.setns = Some(file);
        }
        w
    }

    /// `program` to be run in the node namespace: through `ip netns exec`, or entering it with
    /// `setns` between fork and exec (as a runtime in that namespace would run it: no `ip`
    /// process, no private mount namespace and /sys of its own).
    fn command(&self, program: &Path) -> Command {
        let Some(ns) = &self.setns else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.node()]).arg(program);
            return c;
        };
        let fd = ns.as_raw_fd();
        let mut c = Command::new(program);
        // SAFETY: between fork and exec the closure only calls setns(2), which is
        // async-signal-safe, on a descriptor that stays open as long as the World.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        c
    }

    fn node(&self) -> String {
        format!("{}-node", self.tag)
    }

    fn add_netns(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.names.push(name.to_owned());
    }

    fn binary(&self, kind: &str) -> PathBuf {
        match kind {
            "weft" => self.weft_bin.clone(),
            other => Path::new(REFERENCE_DIR).join(other),
        }
    }

    /// A container ID as a runtime makes them (64 hex digits), new for every pod of every phase.
    fn container_id(&mut self) -> String {
        self.counter += 1;
        format!("{:016x}{:048x}", std::process::id(), self.counter)
    }

    /// Starts `kind` in the node namespace with a runtime's environment and writes its stdin.
    fn spawn(&self, kind: &str, command: &str, id: &str, pod: usize, conf: &Value) -> Child {
        let mut child = self
            .command(&self.binary(kind))
            .env_clear()
            .env("PATH", PATH_ENV)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", &self.pods[pod])
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p{pod};K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID={id}"
                ),
            )
            .env("CNI_PATH", REFERENCE_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to run {kind}: {e}"));
        // The configuration is far smaller than a pipe's buffer: written whole before the plugin
        // reads it, the pipe closed so that it sees the end.
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(conf.to_string().as_bytes())
            .expect("write the plugin's stdin");
        drop(stdin);
        child
    }

    fn links(&self, kind: &str) -> usize {
        run(&["ip", "-n", &self.node(), "-o", "link", "show", "type", kind])
            .lines()
            .count()
    }

    fn host_routes(&self) -> usize {
        run(&["ip", "-n", &self.node(), "-4", "route", "show"])
            .lines()
            .filter(|l| l.contains("dev veth") && !l.contains('/'))
            .count()
    }

    fn ping(&self, ip: &str) {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.node(),
            "ping",
            "-c1",
            "-W2",
            "-q",
            ip,
        ]);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Namespaces and stores of earlier runs whose process is gone (killed before it could clean
/// up).
fn remove_stale() {
    let dead = |name: &str| {
        let pid = name
            .strip_prefix(&format!("{PREFIX}-"))
            .and_then(|rest| rest.split('-').next())
            .unwrap_or_default();
        !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new("/proc").join(pid).exists()
    };
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            if dead(&e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        if let Some(name) = line.split_whitespace().next().filter(|n| dead(n)) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A host-local store directory, removed on drop.
struct Store(PathBuf);

impl Store {
    fn new(label: &str) -> Store {
        let dir = std::env::temp_dir().join(format!("{PREFIX}-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Store(dir)
    }

    /// Reservation files left in the network's directory (not the lock, not the round robin).
    fn reservations(&self) -> Vec<String> {
        std::fs::read_dir(self.0.join(NETWORK))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The conflist's plugins, as `render_conflist` writes them: the plugin alone, or with the
/// fabric's default `chainedPlugins: [portmap]` (for weft a `hostPorts` delegate in its own
/// object, for ptp portmap chained after it).
fn conflist(chain: Chain, store: &Store) -> Vec<Value> {
    let kind = match chain.plugin {
        Plugin::Weft => "weft",
        Plugin::Reference => "ptp",
    };
    let mut plugins = vec![json!({
        "type": kind,
        "mtu": MTU,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": SUBNET}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": store.0,
        }
    })];
    match (chain.plugin, chain.portmap) {
        (_, false) => {}
        // Since 2a28e5b weft runs portmap itself, only for a pod with hostPort mappings.
        (Plugin::Weft, true) => {
            plugins[0]["capabilities"] = json!({"portMappings": true});
            plugins[0]["hostPorts"] = json!({"type": "portmap", "snat": true});
        }
        (Plugin::Reference, true) => plugins.push(json!({
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "snat": true,
        })),
    }
    plugins
}

/// One plugin's stdin as libcni builds it: the list's name and version injected, the previous
/// result, and no `runtimeConfig` (no capability has a value: the pod has no host ports).
fn stdin_for(plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = json!(NETWORK);
    conf["cniVersion"] = json!(CNI_VERSION);
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}

fn kind(plugin: &Value) -> &str {
    plugin["type"].as_str().expect("type")
}

/// Waits for `child` (already reaped when `status` is given) and returns its stdout as JSON, or
/// panics with its error.
fn finish(mut child: Child, status: WaitStatus, what: &str) -> Value {
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{what} failed ({status:?}): {} {}",
        out.trim(),
        err.trim()
    );
    if out.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what} printed {out:?}: {e}"))
    }
}

fn reap(pid: Option<Pid>) -> WaitStatus {
    loop {
        match waitpid(pid, None) {
            Ok(status) => return status,
            Err(nix::errno::Errno::EINTR) => check_stop(),
            Err(e) => panic!("waitpid: {e}"),
        }
    }
}

/// Runs one plugin to its end (one call of a sequential phase).
fn call(
    w: &World,
    plugin: &Value,
    command: &str,
    id: &str,
    pod: usize,
    prev: Option<&Value>,
) -> Value {
    let child = w.spawn(kind(plugin), command, id, pod, &stdin_for(plugin, prev));
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let status = reap(Some(pid));
    finish(
        child,
        status,
        &format!("{} {command} of pod {pod}", kind(plugin)),
    )
}

/// CPU time (user + system) of every child reaped so far, in ms.
fn children_cpu_ms() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_CHILDREN is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_CHILDREN)");
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// The first address of an ADD result, checked to be in the bench's subnet.
fn result_ip(result: &Value) -> Ipv4Addr {
    let addr = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("an ADD result without an address: {result}"));
    let ip: Ipv4Addr = addr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an ADD result with a bad address {addr:?}"));
    let o = ip.octets();
    assert!(
        o[0] == 10 && o[1] == 252 && o[2] < 4 && ip != GATEWAY,
        "address {ip} is not a pod address of {SUBNET}"
    );
    ip
}

/// The pods of one phase: container ID and ADD result of each.
struct Pods {
    ids: Vec<String>,
    results: Vec<Value>,
}

/// Checks what N ADDs left: distinct addresses, N veths and host routes, two pods reachable.
fn check_added(w: &World, pods: &Pods, what: &str) {
    let n = pods.results.len();
    let ips: BTreeSet<Ipv4Addr> = pods.results.iter().map(result_ip).collect();
    assert_eq!(
        ips.len(),
        n,
        "{what}: {n} ADDs gave {} distinct addresses",
        ips.len()
    );
    assert_eq!(w.links("veth"), n, "{what}: veths in the node namespace");
    assert_eq!(
        w.host_routes(),
        n,
        "{what}: host routes in the node namespace"
    );
    for r in [pods.results.first(), pods.results.last()]
        .into_iter()
        .flatten()
    {
        w.ping(&result_ip(r).to_string());
    }
}

/// Checks what N DELs left: nothing.
fn check_deleted(w: &World, store: &Store, what: &str) {
    assert_eq!(
        w.links("veth"),
        0,
        "{what}: veths left in the node namespace"
    );
    assert_eq!(
        w.host_routes(),
        0,
        "{what}: host routes left in the node namespace"
    );
    let left = store.reservations();
    assert!(
        left.is_empty(),
        "{what}: reservations left in the store: {left:?}"
    );
}

/// The samples of one chain, pooled over rounds.
#[derive(Default)]
struct Figures {
    add_ms: Vec<f64>,
    add_cpu_ms: f64,
    del_ms: Vec<f64>,
    del_cpu_ms: f64,
    burst_each_ms: Vec<f64>,
    burst_wall_ms: Vec<f64>,
    burst_cpu_ms: f64,
    /// From the burst's start until its last pod was started.
    burst_start_ms: Vec<f64>,
}

fn add_one_at_a_time(w: &mut World, plugins: &[Value], n: usize, fig: &mut Figures) -> Pods {
    let mut pods = Pods {
        ids: Vec::new(),
        results: Vec::new(),
    };
    let cpu = children_cpu_ms();
    for pod in 0..n {
        check_stop();
        let id = w.container_id();
        let start = Instant::now();
        let mut prev: Option<Value> = None;
        for p in plugins {
            let r = call(w, p, "ADD", &id, pod, prev.as_ref());
            prev = Some(r);
        }
        fig.add_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        pods.ids.push(id);
        pods.results.push(prev.expect("a result"));
    }
    fig.add_cpu_ms += children_cpu_ms() - cpu;
    pods
}

/// DEL of every pod, one at a time: the list in reverse, each plugin given the cached result.
fn del_one_at_a_time(w: &World, plugins: &[Value], pods: &Pods, fig: Option<&mut Figures>) {
    let cpu = children_cpu_ms();
    let mut samples = Vec::with_capacity(pods.ids.len());
    for (pod, (id, result)) in pods.ids.iter().zip(&pods.results).enumerate() {
        check_stop();
        let start = Instant::now();
        for p in plugins.iter().rev() {
            call(w, p, "DEL", id, pod, Some(result));
        }
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    if let Some(fig) = fig {
        fig.del_cpu_ms += children_cpu_ms() - cpu;
        fig.del_ms.extend(samples);
    }
}

/// N ADDs started at once: all spawned, then reaped as they exit by a thread of their own (so
/// that an ADD which ends while the others are still being spawned is timed when it ends); a pod
/// whose first plugin exits goes on to the next plugin of its list at once.
fn add_burst(w: &mut World, plugins: &[Value], n: usize, fig: &mut Figures) -> Pods {
    let ids: Vec<String> = (0..n).map(|_| w.container_id()).collect();
    let expected = n * plugins.len();
    let (tx, rx) = std::sync::mpsc::channel::<(WaitStatus, Instant)>();
    let mut running: HashMap<i32, (usize, usize, Child)> = HashMap::new();
    let mut started = Vec::with_capacity(n);
    let mut results: Vec<Option<Value>> = vec![None; n];
    let mut each_ms = vec![0.0; n];
    let cpu = children_cpu_ms();
    let burst = Instant::now();
    // Every child of the process in this phase is a plugin of the burst: the reaper takes exactly
    // as many as will be spawned.
    let reaper = std::thread::spawn(move || {
        let mut reaped = 0;
        while reaped < expected {
            let status = match waitpid(None, None) {
                Ok(status) => status,
                // No child at this moment: before the first spawn, or between a pod's plugins.
                Err(nix::errno::Errno::ECHILD) => {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                    continue;
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("waitpid: {e}"),
            };
            reaped += 1;
            if tx.send((status, Instant::now())).is_err() {
                return;
            }
        }
    });
    let pid_of = |c: &Child| i32::try_from(c.id()).expect("pid");
    let mut reaped = 0;
    while reaped < expected {
        // The next pod starts; exits reported meanwhile are handled between two starts (a pod
        // whose first plugin is done goes on to portmap without waiting for the last start).
        let exits: Vec<(WaitStatus, Instant)> = if started.len() < n {
            let pod = started.len();
            let first = &plugins[0];
            started.push(Instant::now());
            let child = w.spawn(kind(first), "ADD", &ids[pod], pod, &stdin_for(first, None));
            running.insert(pid_of(&child), (pod, 0, child));
            rx.try_iter().collect()
        } else {
            vec![rx.recv().expect("the reaper ended early")]
        };
        for (status, ended) in exits {
            reaped += 1;
            let pid = status.pid().expect("an exited child").as_raw();
            let Some((pod, stage, child)) = running.remove(&pid) else {
                panic!("reaped a child that is not a plugin of the burst: {status:?}");
            };
            let what = format!("{} ADD of pod {pod} (burst)", kind(&plugins[stage]));
            let result = finish(child, status, &what);
            if let Some(next) = plugins.get(stage + 1) {
                let child = w.spawn(
                    kind(next),
                    "ADD",
                    &ids[pod],
                    pod,
                    &stdin_for(next, Some(&result)),
                );
                running.insert(pid_of(&child), (pod, stage + 1, child));
            } else {
                each_ms[pod] = ended.duration_since(started[pod]).as_secs_f64() * 1000.0;
                results[pod] = Some(result);
            }
        }
    }
    fig.burst_start_ms.push(
        started
            .last()
            .map_or(0.0, |s| s.duration_since(burst).as_secs_f64() * 1000.0),
    );
    // The burst ends when its last pod's chain does.
    let ended = started
        .iter()
        .zip(&each_ms)
        .map(|(s, ms)| s.duration_since(burst).as_secs_f64() * 1000.0 + ms)
        .fold(0.0, f64::max);
    reaper.join().expect("the reaper");
    fig.burst_wall_ms.push(ended);
    fig.burst_cpu_ms += children_cpu_ms() - cpu;
    fig.burst_each_ms.extend(each_ms);
    Pods {
        ids,
        results: results
            .into_iter()
            .map(|r| r.expect("every pod finished"))
            .collect(),
    }
}

/// One round of one chain: sequential ADDs, sequential DELs, a burst of ADDs, untimed DELs.
fn round(w: &mut World, chain: Chain, r: usize, n: usize, fig: &mut Figures) {
    let label = format!("{}-r{r}", chain.name().replace([' ', ',', '→'], ""));
    let store = Store::new(&label);
    let plugins = conflist(chain, &store);
    let what = format!("{} round {r}", chain.name());

    let pods = add_one_at_a_time(w, &plugins, n, fig);
    check_added(w, &pods, &format!("{what}, ADD one at a time"));
    del_one_at_a_time(w, &plugins, &pods, Some(fig));
    check_deleted(w, &store, &format!("{what}, DEL one at a time"));

    let pods = add_burst(w, &plugins, n, fig);
    check_added(w, &pods, &format!("{what}, {n} ADDs at once"));
    del_one_at_a_time(w, &plugins, &pods, None);
    check_deleted(w, &store, &format!("{what}, DEL after the burst"));
}

/// A floor probe: `args` in the node namespace, entered as the plugins are, with `VERSION` as its
/// command (what a plugin's `VERSION` is measured with; `/bin/true` ignores it) and no I/O.
fn probe(w: &World, args: &[&str]) -> Command {
    let mut c = w.command(Path::new(args[0]));
    c.args(&args[1..])
        .env_clear()
        .env("PATH", PATH_ENV)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// `n` runs of `args` in the node namespace started at once (spawned one after another as fast
/// as one thread can, reaped by another as they exit): each run's wall time (ms), and when the
/// last one had been started (ms).
fn floor_burst(w: &World, args: &[&str], n: usize) -> (Vec<f64>, f64) {
    check_stop();
    let (tx, rx) = std::sync::mpsc::channel::<(i32, Instant)>();
    let reaper = std::thread::spawn(move || {
        for _ in 0..n {
            let status = loop {
                match waitpid(None, None) {
                    Ok(status) => break status,
                    Err(nix::errno::Errno::ECHILD) => {
                        std::thread::sleep(std::time::Duration::from_micros(50));
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => panic!("waitpid: {e}"),
                }
            };
            assert!(
                matches!(status, WaitStatus::Exited(_, 0)),
                "a run of the burst failed: {status:?}"
            );
            let pid = status.pid().expect("an exited child").as_raw();
            tx.send((pid, Instant::now()))
                .expect("the starter is waiting");
        }
    });
    let burst = Instant::now();
    let mut started: HashMap<i32, Instant> = HashMap::with_capacity(n);
    for _ in 0..n {
        let child = probe(w, args).spawn().expect("spawn");
        started.insert(i32::try_from(child.id()).expect("pid"), Instant::now());
        // Reaped by the thread above, not by `Child`.
        std::mem::forget(child);
    }
    let all_started = burst.elapsed().as_secs_f64() * 1000.0;
    let mut each = Vec::with_capacity(n);
    for _ in 0..n {
        let (pid, ended) = rx.recv().expect("the reaper ended early");
        // Read only once all are started, so every pid is in the map.
        let start = started.get(&pid).copied().expect("a child of the burst");
        each.push(ended.duration_since(start).as_secs_f64() * 1000.0);
    }
    reaper.join().expect("the reaper");
    (each, all_started)
}

/// weft's wiring of `n` pods without a process: `wire::add` called in this thread, in the node
/// namespace, for pod namespaces 0..n (addresses 10.252.2.x, away from the plugin's), then
/// removed untimed. Returns the busy CPU time of the whole machine per pod (ms), which includes
/// the kernel workers that finish a device's registration, and this thread's own per pod.
fn wiring_in_process(w: &World, n: usize) -> (f64, f64) {
    use weft_node_agent::cni::plugin::IpConfig;
    use weft_node_agent::cni::plugin::wire::{Attachment, add, del, host_veth_name};
    check_stop();
    let node = std::fs::File::open(PathBuf::from("/run/netns").join(w.node())).expect("node ns");
    let home = std::fs::File::open("/proc/thread-self/ns/net").expect("own ns");
    nix::sched::setns(&node, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the node ns");
    let thread_ms = || {
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage; RUSAGE_THREAD is a valid `who`.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD)");
        let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
        ms(ru.ru_utime) + ms(ru.ru_stime)
    };
    let ips: Vec<[IpConfig; 1]> = (0..n)
        .map(|i| {
            [IpConfig {
                address: std::net::IpAddr::V4(Ipv4Addr::new(
                    10,
                    252,
                    2 + (i / 250) as u8,
                    (i % 250) as u8 + 2,
                )),
                prefix_len: 22,
                gateway: Some(std::net::IpAddr::V4(GATEWAY)),
                interface: Some(1),
            }]
        })
        .collect();
    let (busy, own) = (machine_busy_ms(), thread_ms());
    for (i, ip) in ips.iter().enumerate() {
        let a = Attachment {
            netns: &w.pods[i],
            ifname: "eth0",
            host_ifname: host_veth_name(&format!("in-process-{i}"), "eth0"),
            mtu: MTU,
            ips: ip,
            routes: &[],
        };
        add(&a).unwrap_or_else(|e| panic!("in-process wiring of pod {i}: {e}"));
    }
    let own = (thread_ms() - own) / n as f64;
    // The device registrations' deferred work ends within a moment of the last one.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let busy = (machine_busy_ms() - busy) / n as f64;
    for pod in &w.pods[..n] {
        del(pod, "eth0").expect("remove the in-process wiring");
    }
    nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET).expect("back home");
    (busy, own)
}

/// `n` runs of `args` in the node namespace: wall samples (ms) and CPU per run (ms).
fn floor(w: &World, args: &[&str], n: usize) -> (Vec<f64>, f64) {
    let cpu = children_cpu_ms();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        check_stop();
        let start = Instant::now();
        let status = probe(w, args).status().expect("spawn");
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(status.success(), "{args:?} failed in the node namespace");
    }
    (samples, (children_cpu_ms() - cpu) / n as f64)
}

fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let idx = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1;
    s[idx]
}

fn row(chain: &str, measure: &str, weft: f64, reference: f64) {
    println!(
        "| {chain:<16} | {measure:<44} | {weft:>9.2} | {reference:>9.2} | {:>6.2} |",
        reference / weft
    );
}

/// Busy CPU time of the whole machine so far (all CPUs, /proc/stat), in ms.
fn machine_busy_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: f64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .enumerate()
        // user nice system idle iowait irq softirq steal: all but idle and iowait.
        .filter(|(i, _)| ![3, 4].contains(i) && *i < 8)
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks * 1000.0 / hz
}

/// CPU time of this process and of its reaped children, in ms.
fn own_cpu_ms() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_SELF)");
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(ru.ru_utime) + ms(ru.ru_stime) + children_cpu_ms()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn weft_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEFT_CNI_BIN") {
        return Some(PathBuf::from(p));
    }
    // Cargo sets this for the benches and integration tests of the package that has the binary,
    // and builds the binary (with the bench's profile) before them.
    let p = PathBuf::from(env!("CARGO_BIN_EXE_weft-cni"));
    p.is_file().then_some(p)
}

fn install_signal_handlers() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &action) }.expect("sigaction");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    if !nix::unistd::geteuid().is_root() {
        println!("cni bench skipped: needs root (it creates network namespaces and veths)");
        return;
    }
    for p in ["ptp", "host-local", "portmap"] {
        if !Path::new(REFERENCE_DIR).join(p).is_file() {
            println!(
                "cni bench skipped: {REFERENCE_DIR}/{p} is missing (apt-get install containernetworking-plugins)"
            );
            return;
        }
    }
    let Some(weft_bin) = weft_binary() else {
        panic!(
            "the weft-cni binary is missing at {} (cargo builds it with the bench; or set WEFT_CNI_BIN)",
            env!("CARGO_BIN_EXE_weft-cni")
        );
    };
    let reps: usize = std::env::var("WEFT_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let n: usize = std::env::var("WEFT_CNI_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    install_signal_handlers();
    remove_stale();

    let load_before = load();
    let whole = Instant::now();
    // What the rest of the machine used meanwhile: the sign of a run that shared the CPUs.
    let (busy_before, own_before) = (machine_busy_ms(), own_cpu_ms());
    let setns = std::env::var("WEFT_CNI_BENCH_SETNS").is_ok_and(|v| v == "1");
    let enter = if setns {
        "setns(2) between fork and exec"
    } else {
        "ip netns exec"
    };
    let mut w = World::new(n, weft_bin.clone(), setns);
    let chains = |portmap| {
        [
            Chain {
                plugin: Plugin::Weft,
                portmap,
            },
            Chain {
                plugin: Plugin::Reference,
                portmap,
            },
        ]
    };
    let mut figures: HashMap<(bool, bool), Figures> = HashMap::new();
    let mut floors: HashMap<&str, (Vec<f64>, f64)> = HashMap::new();
    // The floor under a burst: N /bin/true at once (each run's wall, when all were started) and
    // weft's wiring in-process (machine CPU per pod, the thread's own per pod), one per round.
    let (mut true_burst, mut true_started) = (Vec::new(), Vec::new());
    let mut wiring: Vec<(f64, f64)> = Vec::new();
    let weft_path = weft_bin.to_string_lossy().into_owned();
    let ptp_path = format!("{REFERENCE_DIR}/ptp");
    for r in 0..reps {
        for portmap in [false, true] {
            let mut order = chains(portmap);
            if r % 2 == 1 {
                order.reverse();
            }
            for chain in order {
                let fig = figures
                    .entry((chain.plugin == Plugin::Weft, portmap))
                    .or_default();
                eprintln!("round {r}: {} ({n} pods)", chain.name());
                round(&mut w, chain, r, n, fig);
            }
        }
        let mut probes = [
            ("/bin/true", vec!["/bin/true"]),
            ("weft VERSION", vec![weft_path.as_str()]),
            ("ptp VERSION", vec![ptp_path.as_str()]),
        ];
        if r % 2 == 1 {
            probes.swap(1, 2);
        }
        for (name, args) in probes {
            let (samples, cpu) = floor(&w, &args, n);
            let e = floors.entry(name).or_default();
            e.0.extend(samples);
            e.1 += cpu / reps as f64;
        }
        let (each, started) = floor_burst(&w, &["/bin/true"], n);
        true_burst.extend(each);
        true_started.push(started);
        wiring.push(wiring_in_process(&w, n));
    }
    drop(w);
    let wall_ms = whole.elapsed().as_secs_f64() * 1000.0;
    let busy_ms = machine_busy_ms() - busy_before;
    let own_ms = own_cpu_ms() - own_before;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;

    let version = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "containernetworking-plugins"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "CNI plugin alone: weft-cni ({}) against ptp + host-local (containernetworking-plugins {version}), {n} pods, {reps} rounds, node namespace entered by {enter}, kernel {}, load average {load_before} before and {} after, {:.0} s",
        weft_bin.display(),
        kernel.trim(),
        load(),
        wall_ms / 1000.0
    );
    println!(
        "busy CPU time of the whole machine during the run (/proc/stat): {:.1} s; of this bench and its children (getrusage): {:.1} s; the rest, everything else: {:.1} s of {:.0} s available",
        busy_ms / 1000.0,
        own_ms / 1000.0,
        (busy_ms - own_ms).max(0.0) / 1000.0,
        wall_ms * cpus / 1000.0
    );
    println!(
        "| {:<16} | {:<44} | {:>9} | {:>9} | {:>6} |",
        "chain", "measure (ms)", "weft", "reference", "ref÷weft"
    );
    println!(
        "|{:-<18}|{:-<46}|{:->11}|{:->11}|{:->8}|",
        "", "", "", "", ""
    );
    for portmap in [false, true] {
        let weft = &figures[&(true, portmap)];
        let reference = &figures[&(false, portmap)];
        let chain = if portmap {
            "conflist+portmap"
        } else {
            "plugin alone"
        };
        let per = |total: f64, samples: usize| total / samples.max(1) as f64;
        let both = |measure: &str, f: &dyn Fn(&Figures) -> f64| {
            row(chain, measure, f(weft), f(reference));
        };
        both("ADD one at a time, p50", &|f| quantile(&f.add_ms, 0.50));
        both("ADD one at a time, p99", &|f| quantile(&f.add_ms, 0.99));
        both("ADD one at a time, CPU per ADD", &|f| {
            per(f.add_cpu_ms, f.add_ms.len())
        });
        both("DEL one at a time, p50", &|f| quantile(&f.del_ms, 0.50));
        both("DEL one at a time, p99", &|f| quantile(&f.del_ms, 0.99));
        both("DEL one at a time, CPU per DEL", &|f| {
            per(f.del_cpu_ms, f.del_ms.len())
        });
        both(&format!("{n} ADDs at once, each ADD p50"), &|f| {
            quantile(&f.burst_each_ms, 0.50)
        });
        both(&format!("{n} ADDs at once, each ADD p99"), &|f| {
            quantile(&f.burst_each_ms, 0.99)
        });
        both(&format!("{n} ADDs at once, whole burst (median)"), &|f| {
            quantile(&f.burst_wall_ms, 0.50)
        });
        both(
            &format!("{n} ADDs at once, all started after (median)"),
            &|f| quantile(&f.burst_start_ms, 0.50),
        );
        both(&format!("{n} ADDs at once, CPU per ADD"), &|f| {
            per(f.burst_cpu_ms, f.burst_each_ms.len())
        });
    }
    let (weft_v, weft_cpu) = &floors["weft VERSION"];
    let (ptp_v, ptp_cpu) = &floors["ptp VERSION"];
    row(
        "floor",
        "VERSION (process start), p50",
        quantile(weft_v, 0.5),
        quantile(ptp_v, 0.5),
    );
    row("floor", "VERSION, CPU per call", *weft_cpu, *ptp_cpu);
    let (true_s, true_cpu) = &floors["/bin/true"];
    println!(
        "floor under every call, both plugins: /bin/true entered the same way, p50 {:.2} ms, p99 {:.2} ms, CPU {:.2} ms",
        quantile(true_s, 0.5),
        quantile(true_s, 0.99),
        true_cpu
    );
    let wiring_busy: Vec<f64> = wiring.iter().map(|w| w.0).collect();
    let wiring_own: Vec<f64> = wiring.iter().map(|w| w.1).collect();
    // Any plugin that is a process per ADD costs at least a process start (/bin/true's CPU) plus
    // the kernel's wiring of the pod.
    let least_cpu = n as f64 * (true_cpu + quantile(&wiring_busy, 0.5));
    println!(
        "floor under a burst: {n} /bin/true started at once the same way: all started after {:.1} ms (median of {}), each p50 {:.1} ms, p99 {:.1} ms; weft's wiring in-process (no process, no IPAM, no JSON): {:.2} ms of the machine's CPU per pod, {:.2} ms of it in the calling thread (medians of {})",
        quantile(&true_started, 0.5),
        true_started.len(),
        quantile(&true_burst, 0.5),
        quantile(&true_burst, 0.99),
        quantile(&wiring_busy, 0.5),
        quantile(&wiring_own, 0.5),
        wiring.len(),
    );
    println!(
        "so {n} ADDs at once need at least {least_cpu:.0} ms of CPU ({n} × ({true_cpu:.2} + {:.2}) ms), whatever the plugin does, and cannot all end before {:.0} ms on {cpus} CPUs; weft's took {:.0} ms of CPU ({:.2} ms per ADD)",
        quantile(&wiring_busy, 0.5),
        least_cpu / cpus,
        figures[&(true, false)].burst_cpu_ms / reps as f64,
        figures[&(true, false)].burst_cpu_ms
            / figures[&(true, false)].burst_each_ms.len().max(1) as f64,
    );
    for portmap in [false, true] {
        let walls = |weft: bool| {
            figures[&(weft, portmap)]
                .burst_wall_ms
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "whole burst per round{}: weft {} ms; reference {} ms",
            if portmap { " (+ portmap)" } else { "" },
            walls(true),
            walls(false)
        );
    }
    println!(
        "every ADD returned a distinct address in {SUBNET}, wired (veths, host routes, ping); every DEL succeeded and left no veth and no reservation"
    );
}
