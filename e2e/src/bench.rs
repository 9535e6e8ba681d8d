//! What the benchmarks (`e2e/benches/*.rs`) share: cleanup of everything a run made (also on
//! failure, SIGINT/SIGTERM or a watchdog), the binaries copied out of a shared target directory,
//! commands bounded in time inside a namespace, sockperf/iperf3 between two pods, simulated
//! ("ghost") Nodes, the agent's process, and the statistics the tables print.
//!
//! Invariant: a benchmark that builds on [`Cleanup`] and [`guard`] leaves no cluster, namespace or
//! process of its own behind, however it ends.

use crate::cluster::Cluster;
use crate::config::ClusterConfig;
use crate::sys::{rss_kib, run};
use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Node;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- cleanup

/// A teardown step registered by the benchmark (reference namespaces, foreign daemons, …).
pub type Teardown = Box<dyn FnOnce() + Send>;

/// What must go whatever happens: the servers started, the benchmark's own teardown steps (newest
/// first), the cluster and the work directory.
pub struct Cleanup {
    pub cfg: ClusterConfig,
    pub work: PathBuf,
    /// Servers started in the measured pods, by which path they serve.
    servers: Mutex<Vec<(&'static str, Child)>>,
    teardown: Mutex<Vec<Teardown>>,
    done: Mutex<bool>,
}

impl Cleanup {
    pub fn new(cfg: ClusterConfig, work: PathBuf) -> Self {
        Cleanup {
            cfg,
            work,
            servers: Mutex::new(Vec::new()),
            teardown: Mutex::new(Vec::new()),
            done: Mutex::new(false),
        }
    }

    /// Registers a step run by [`Cleanup::run`] before the cluster goes.
    pub fn on_teardown(&self, f: impl FnOnce() + Send + 'static) {
        if let Ok(mut t) = self.teardown.lock() {
            t.push(Box::new(f));
        }
    }

    /// Removes everything, once.
    pub fn run(&self) {
        let Ok(mut done) = self.done.lock() else {
            return;
        };
        if *done {
            return;
        }
        *done = true;
        self.stop_servers(None);
        let steps: Vec<Teardown> = self
            .teardown
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for step in steps.into_iter().rev() {
            step();
        }
        if Cluster::is_running(&self.cfg) || self.cfg.state_dir().exists() {
            match Cluster::attach(self.cfg.clone()).and_then(Cluster::down) {
                Ok(()) => eprintln!("cluster {} removed", self.cfg.name),
                Err(e) => eprintln!("cluster teardown: {e:#}"),
            }
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }

    /// Starts `cmd` (stdio to /dev/null) as a server of path `tag`, killed by
    /// [`Cleanup::stop_servers`] or at the end.
    pub fn spawn_server(&self, tag: &'static str, cmd: &mut Command) -> Result<()> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("failed to start {cmd:?}"))?;
        self.servers
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?
            .push((tag, child));
        Ok(())
    }

    /// Kills the servers of path `tag` (every server when `None`).
    pub fn stop_servers(&self, tag: Option<&str>) {
        if let Ok(mut servers) = self.servers.lock() {
            servers.retain_mut(|(t, s)| {
                if tag.is_some_and(|tag| tag != *t) {
                    return true;
                }
                let _ = s.kill();
                let _ = s.wait();
                false
            });
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// SIGINT/SIGTERM and the watchdog clean up and exit. The signals are caught by handlers (not
/// blocked): a blocked mask would be inherited by the cluster's daemons, which must stop on SIGTERM.
pub fn guard(cleanup: Arc<Cleanup>, watchdog: Duration) {
    let c = cleanup.clone();
    std::thread::spawn(move || {
        let caught = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async {
                    use tokio::signal::unix::{SignalKind, signal};
                    let mut term = signal(SignalKind::terminate())?;
                    let mut int = signal(SignalKind::interrupt())?;
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    Ok(())
                })
            });
        match caught {
            Ok(()) => {
                eprintln!("signal: cleaning up");
                c.run();
                std::process::exit(130);
            }
            Err(e) => eprintln!("no signal handler ({e:#}): SIGINT leaves the cluster up"),
        }
    });
    std::thread::spawn(move || {
        std::thread::sleep(watchdog);
        eprintln!("watchdog: the run took longer than {watchdog:?}; cleaning up");
        cleanup.run();
        std::process::exit(1);
    });
}

/// Runs `bench` on a fresh cluster `cfg` under `cleanup` (already guarded); everything is removed
/// afterwards, also when `bench` fails or panics.
pub fn run_guarded<T>(
    cfg: ClusterConfig,
    cleanup: &Cleanup,
    bench: impl FnOnce(&Cluster) -> Result<T>,
) -> Result<T> {
    let started = Instant::now();
    let name = cfg.name.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = Cluster::up(cfg)?;
        eprintln!(
            "cluster {name} up in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        bench(&c)
    }));
    if let Ok(Err(e)) = &result {
        eprintln!("the benchmark failed: {e:#}\ncleaning up");
    }
    cleanup.run();
    match result {
        Ok(r) => r,
        Err(_) => bail!("the benchmark panicked (everything was cleaned up)"),
    }
}

// ---------------------------------------------------------------- setup

/// Fails with `hint` when `prog` is not on PATH.
pub fn need(prog: &str, hint: &str) -> Result<()> {
    if crate::gobuild::which(prog).is_none() {
        bail!("{prog} is missing: {hint}");
    }
    Ok(())
}

/// Fails unless the process runs as root.
pub fn need_root(what: &str) -> Result<()> {
    // SAFETY: plain syscall.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "{what} needs root (network namespaces)"
    );
    Ok(())
}

/// The binaries the cluster runs, copied into `<work>/bin`: a target directory shared with other
/// builds can be relinked while the bench runs. They come from `WEFT_E2E_BIN_DIR`, else from
/// `default_dir` (the bench's own target directory).
pub fn private_bins(work: &Path, default_dir: &Path) -> Result<PathBuf> {
    let src = match std::env::var_os("WEFT_E2E_BIN_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => default_dir.to_path_buf(),
    };
    let dst = work.join("bin");
    std::fs::create_dir_all(&dst)?;
    for b in [
        "weft-e2e",
        "weft-nodelet",
        "weft-agent",
        "weft-cni",
        "weft-operator",
    ] {
        let from = src.join(b);
        ensure!(
            from.is_file(),
            "{} is missing: build the workspace first (cargo build --release --workspace --bins), \
             or point WEFT_E2E_BIN_DIR at a directory with {b}",
            from.display()
        );
        std::fs::copy(&from, dst.join(b)).with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(dst)
}

/// A numeric knob from the environment.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fails when a daemon of the cluster (control plane, nodelet, …) is gone.
pub fn alive(c: &Cluster, phase: &str) -> Result<()> {
    ensure!(
        Cluster::is_running(&c.cfg),
        "before {phase}: a daemon of the cluster died:\n{}",
        c.status()
    );
    Ok(())
}

/// `kubectl <args>` against the cluster.
pub fn kubectl(c: &Cluster, args: &[&str]) -> Result<String> {
    run(c.kubectl().args(args))
}

/// Merge-patches the NetworkFabric `default` with `spec` (a JSON object of spec fields).
pub fn patch_fabric(c: &Cluster, spec: serde_json::Value) -> Result<()> {
    let patch = serde_json::json!({ "spec": spec }).to_string();
    kubectl(
        c,
        &[
            "patch",
            "networkfabric",
            "default",
            "--type",
            "merge",
            "-p",
            &patch,
        ],
    )?;
    Ok(())
}

/// Alternating rounds of an on/off comparison: round 1 measures on then off, round 2 off then on,
/// and so on, so that drift of a loaded machine hits both alike and each round switches once.
/// `switch(on)` is called only when the state changes (the state before round 1 is `on`);
/// `measure(round, on)` then takes one sample. Returns the final state.
pub fn alternate(
    reps: u64,
    mut switch: impl FnMut(bool) -> Result<()>,
    mut measure: impl FnMut(u64, bool) -> Result<()>,
) -> Result<bool> {
    let mut state = true;
    for r in 0..reps {
        let order = if r % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for want in order {
            if want != state {
                switch(want)?;
                state = want;
            }
            measure(r, want)?;
        }
    }
    Ok(state)
}

/// The machine's CPU time (busy, total) in clock ticks since boot, from `/proc/stat`.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// Waits until the machine's CPUs were at most `QUIET_BUSY` busy over one second (the control
/// plane done with what a switch set off: agents restarting and listing, the API server
/// serving them), or `max`. Returns how long it waited. A datapath sample taken while other
/// processes take the CPU measures them, not the path: on 2 vCPUs the API server served the
/// restarted agents' re-lists at up to 80 % of a CPU for seconds after a policy switch.
pub fn wait_quiet(max: Duration) -> Duration {
    const QUIET_BUSY: f64 = 0.2;
    let start = Instant::now();
    let mut last = cpu_ticks();
    while start.elapsed() < max {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_ticks();
        if let (Some((b0, t0)), Some((b1, t1))) = (last, now)
            && t1 > t0
            && (b1 - b0) as f64 / ((t1 - t0) as f64) <= QUIET_BUSY
        {
            break;
        }
        last = now;
    }
    start.elapsed()
}

/// The 1-minute load average, for the record of a run.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------- commands in namespaces

/// `nsenter --net=<ns> <args…>`.
pub fn in_ns(ns: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.display())).args(args);
    c
}

/// Runs `cmd`, killing it after `limit`; returns stdout and stderr together.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "{cmd:?} failed: {}", text.trim());
    Ok(text)
}

// ---------------------------------------------------------------- one measured path

/// One side of a measured path: where the client runs, where the server runs and its address.
#[derive(Clone, Debug)]
pub struct PodPair {
    pub client: PathBuf,
    pub server: PathBuf,
    pub server_ip: String,
}

/// Starts `iperf3 -s` at the path's server end on `port`.
pub fn start_iperf3(cleanup: &Cleanup, tag: &'static str, p: &PodPair, port: u16) -> Result<()> {
    cleanup.spawn_server(
        tag,
        &mut in_ns(
            &p.server,
            &pinned(SERVER_CPU, &["iperf3", "-s", "-p", &port.to_string()]),
        ),
    )
}

/// The CPU of the measuring clients, and of the servers, when [`pinned`].
const CLIENT_CPU: &str = "0";
const SERVER_CPU: &str = "1";

/// `args` run on CPU `cpu` only (`taskset -c`), unless `WEFT_BENCH_PIN=0` or the machine has one
/// CPU. Left to the scheduler, the client, the server and the packets' softirq work land on the
/// 2 CPUs differently from one sample to the next; pinned, every path of a run gets the same
/// placement: the client (and the forwarding it triggers) on one CPU, the server on the other.
/// It does not remove the spread between samples: in the runs of 2026-12-02 one path's figures
/// still moved by ±15-20 % between rounds, pinned or not (`docs/benchmarks.md`).
pub fn pinned<'a>(cpu: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if env_num("WEFT_BENCH_PIN", 1) == 0 || cpus < 2 {
        return args.to_vec();
    }
    let mut out = vec!["taskset", "-c", cpu];
    out.extend_from_slice(args);
    out
}

/// Starts `sockperf sr` (TCP when `tcp`, else UDP) at the path's server end on `port`.
pub fn start_sockperf(
    cleanup: &Cleanup,
    tag: &'static str,
    p: &PodPair,
    port: u16,
    tcp: bool,
) -> Result<()> {
    let port = port.to_string();
    let mut args = vec!["sockperf", "sr"];
    if tcp {
        args.push("--tcp");
    }
    args.extend(["-i", &p.server_ip, "-p", &port]);
    cleanup.spawn_server(tag, &mut in_ns(&p.server, &pinned(SERVER_CPU, &args)))
}

/// iperf3 TCP throughput of one stream for `dur` seconds, in Gbit/s.
pub fn iperf3_gbps(p: &PodPair, port: u16, dur: u64) -> Result<f64> {
    let out = run_bounded(
        &mut in_ns(
            &p.client,
            &pinned(
                CLIENT_CPU,
                &[
                    "iperf3",
                    "-c",
                    &p.server_ip,
                    "-p",
                    &port.to_string(),
                    "-t",
                    &dur.to_string(),
                    "-J",
                ],
            ),
        ),
        Duration::from_secs(dur + 20),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    Ok(v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no end.sum_received")?
        / 1e9)
}

/// Runs the sockperf client `mode` (tp, pp) with 64-byte messages for `dur` seconds.
fn sockperf(p: &PodPair, mode: &str, tcp: bool, port: u16, dur: u64) -> Result<String> {
    let (port, d) = (port.to_string(), dur.to_string());
    let mut args = vec!["sockperf", mode];
    if tcp {
        args.push("--tcp");
    }
    args.extend(["-i", &p.server_ip, "-p", &port, "-m", "64", "-t", &d]);
    run_bounded(
        &mut in_ns(&p.client, &pinned(CLIENT_CPU, &args)),
        Duration::from_secs(dur + 20),
    )
}

/// sockperf's 64-byte UDP message rate (`sockperf tp`) for `dur` seconds, in thousands per second.
pub fn sockperf_tp_kpps(p: &PodPair, port: u16, dur: u64) -> Result<f64> {
    let out = sockperf(p, "tp", false, port, dur)?;
    Ok(after(&out, "Message Rate is ").context("sockperf tp: no message rate")? / 1e3)
}

/// sockperf's 64-byte TCP ping-pong (`sockperf pp --tcp`) for `dur` seconds: the round-trip time,
/// average and 99th percentile, in µs (sockperf reports one-way latency, half the RTT).
pub fn sockperf_pp_rtt_us(p: &PodPair, port: u16, dur: u64) -> Result<(f64, f64)> {
    let out = sockperf(p, "pp", true, port, dur)?;
    Ok((
        2.0 * after(&out, "avg-latency=").context("sockperf pp: no avg-latency")?,
        2.0 * after(&out, "percentile 99.000 =").context("sockperf pp: no 99th percentile")?,
    ))
}

// ---------------------------------------------------------------- statistics and text

/// The number right after `marker` in `text`.
pub fn after(text: &str, marker: &str) -> Option<f64> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let num: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// `s` without ANSI escape sequences (colours in logs).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

// ---------------------------------------------------------------- the cluster side

/// A pod bound to `node` running `image` (by its last path segment, see `gobuild::IMAGES`).
pub fn pod_doc(
    ns: &str,
    name: &str,
    node: &str,
    labels: &[(&str, &str)],
    image: &str,
) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "app", "image": image}]}
    })
}

/// The agnhost image the suites run.
pub const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
/// The pause image (a pod that only holds its network namespace).
pub const PAUSE: &str = "registry.k8s.io/pause:3.10";

/// The pid of the process named `comm` in `node`'s network namespace.
pub fn pid_on_node(c: &Cluster, node: &str, comm: &str) -> Option<i32> {
    let ns = PathBuf::from(format!("/run/netns/{}", c.cfg.node_ns(node)));
    crate::sys::pids_in_netns(&ns).into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
    })
}

/// The VmRSS of the process named `comm` on `node`, in MiB.
pub fn rss_mib_on_node(c: &Cluster, node: &str, comm: &str) -> Result<f64> {
    let pid = pid_on_node(c, node, comm).with_context(|| format!("no {comm} process on {node}"))?;
    let kib = rss_kib(pid).context("VmRSS")?;
    Ok(kib as f64 / 1024.0)
}

/// The peak resident set (VmHWM) of the process named `comm` on `node` since it started, in MiB.
pub fn peak_mib_on_node(c: &Cluster, node: &str, comm: &str) -> Result<f64> {
    let pid = pid_on_node(c, node, comm).with_context(|| format!("no {comm} process on {node}"))?;
    let kib = crate::sys::status_kib(pid, "VmHWM").context("VmHWM")?;
    Ok(kib as f64 / 1024.0)
}

/// The agent's metrics port (the fabric's default `agent.metricsPort`).
pub const AGENT_METRICS: u16 = 9641;

/// The agent's metrics on `node`.
pub fn agent_metrics(c: &Cluster, node: &str) -> Result<String> {
    http_get_in(
        &PathBuf::from(format!("/run/netns/{}", c.cfg.node_ns(node))),
        AGENT_METRICS,
        "/metrics",
    )
}

/// The value of the sample `name` (with its labels, as exposed) in a metrics text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The weft agent's VmRSS on `node`, in MiB.
pub fn agent_rss_mib(c: &Cluster, node: &str) -> Result<f64> {
    rss_mib_on_node(c, node, "weft-agent")
}

/// An annotation-only Node: a flannel/weft peer as the API shows it (podCIDR + flannel's
/// annotations), without a kubelet. Without the `kubernetes.io/os` label, no DaemonSet pod goes
/// there; its taint keeps the scheduler away. `public_ip` should be off the underlay (no traffic
/// ever goes there).
pub fn ghost_node(
    name: &str,
    label: &str,
    index: usize,
    subnet: &str,
    public_ip: &str,
) -> Result<Node> {
    let mac = format!(
        "0a:58:0a:{:02x}:{:02x}:00",
        (index >> 8) & 0xff,
        index & 0xff
    );
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {label: "true"}, "annotations": {
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/backend-data": format!("{{\"VNI\":1,\"VtepMAC\":\"{mac}\"}}"),
            "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            "flannel.alpha.coreos.com/public-ip": public_ip,
        }},
        "spec": {"podCIDR": subnet, "podCIDRs": [subnet],
                 "taints": [{"key": "weft.dev/ghost", "effect": "NoSchedule"}]}
    }))?)
}

/// A GET of `path` on `127.0.0.1:port` inside the network namespace `ns` (the agent's /metrics):
/// the response body.
pub fn http_get_in(ns: &Path, port: u16, path: &str) -> Result<String> {
    let path = path.to_owned();
    crate::netns::in_netns(ns, move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        let (head, rest) = body.split_once("\r\n\r\n").context("no HTTP header end")?;
        ensure!(head.contains(" 200 "), "GET {path}: {head}");
        Ok(rest.to_owned())
    })
}

/// Whether `line` holds `tok` as a whole: no digit (or dot) right before it, no digit right
/// after (so that `10.1.0.5` is not found in `10.1.0.50` or `110.1.0.5`).
pub fn has_token(line: &str, tok: &str) -> bool {
    line.match_indices(tok).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let next = line[i + tok.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !next.is_some_and(|c| c.is_ascii_digit())
    })
}

/// `text` with every address or prefix in `map` replaced, in order, where it stands as a whole
/// token (see [`has_token`]; a `from` ending in `.` is a prefix and matches any address that
/// starts with it): how a ruleset listed on one node is carried over to another topology's node.
pub fn replace_addrs(text: &str, map: &[(String, String)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in map {
        let prefix = from.ends_with('.');
        let mut next = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(from.as_str()) {
            let before = rest[..i].chars().next_back().or(next.chars().next_back());
            let after = rest[i + from.len()..].chars().next();
            let whole = !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
                && (prefix || !after.is_some_and(|c| c.is_ascii_digit()));
            next.push_str(&rest[..i]);
            next.push_str(if whole { to } else { from });
            rest = &rest[i + from.len()..];
        }
        next.push_str(rest);
        out = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_after_markers() {
        assert_eq!(
            after("Message Rate is 74213 [msg/sec]", "Message Rate is "),
            Some(74213.0)
        );
        assert_eq!(
            after("avg-latency=16.250 (std-dev=2)", "avg-latency="),
            Some(16.25)
        );
        assert_eq!(after("nothing here", "avg-latency="), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), 50.0);
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 4.0]), 2.5);
        assert!(percentile(&mut [], 99.0).is_nan());
    }

    #[test]
    fn rounds_alternate_and_switch_once_per_round() {
        let mut log = Vec::new();
        let log_ref = std::cell::RefCell::new(&mut log);
        let end = alternate(
            3,
            |on| {
                log_ref.borrow_mut().push(format!("switch {on}"));
                Ok(())
            },
            |r, on| {
                log_ref.borrow_mut().push(format!("{r} {on}"));
                Ok(())
            },
        )
        .unwrap();
        assert!(!end);
        assert_eq!(
            log,
            [
                "0 true",
                "switch false",
                "0 false",
                "1 false",
                "switch true",
                "1 true",
                "2 true",
                "switch false",
                "2 false"
            ]
        );
    }

    #[test]
    fn whole_tokens() {
        assert!(has_token(
            "add element inet t s { 10.178.0.5 }",
            "10.178.0.5"
        ));
        assert!(!has_token(
            "add element inet t s { 10.178.0.50 }",
            "10.178.0.5"
        ));
        assert!(!has_token("{ 110.178.0.5 }", "10.178.0.5"));
        assert!(has_token("{ 172.31.3.0/24 }", "172.31.3.0/24"));
        assert!(has_token("a 10.0.0.50, 10.0.0.5/32", "10.0.0.5"));
    }

    #[test]
    fn ansi_colours_are_removed() {
        assert_eq!(strip_ansi("\u{1b}[2mcni_add_ms\u{1b}[0m=5"), "cni_add_ms=5");
    }

    #[test]
    fn addresses_are_replaced_as_whole_tokens() {
        let map = [
            ("10.240.1.7".to_string(), "10.244.1.2".to_string()),
            ("10.240.0.0/12".to_string(), "10.244.0.0/16".to_string()),
            ("10.240.1.".to_string(), "10.244.1.".to_string()),
            ("10.84.0.11".to_string(), "192.0.2.1".to_string()),
        ];
        assert_eq!(
            replace_addrs(
                "ip saddr 10.240.1.0/24 ip daddr 10.240.0.0/12 { 10.240.1.7, 10.240.1.70 } \
                 { 10.84.0.11, 10.84.0.111, 110.240.1.7 }",
                &map
            ),
            "ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 { 10.244.1.2, 10.244.1.70 } \
             { 192.0.2.1, 10.84.0.111, 110.240.1.7 }"
        );
    }
}
