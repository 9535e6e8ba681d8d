//! Bringing a whole local cluster up and down, and looking at it.
//!
//! `up` is idempotent and serialised by a lock file: a second `up` waits for the first and then finds
//! the cluster running. `down` keeps going past errors (and reports them all), so that after it the
//! machine is as before: no namespace, process, mount or file of the cluster is left.

use crate::config::{ClusterConfig, STATE_ROOT};
use crate::controlplane::{self, COMPONENTS};
use crate::gobuild::ensure_control_plane;
use crate::nodelet::pods::{PodRecord, records};
use crate::probe::Endpoint;
use crate::sys::{pid_alive, pids_in_netns, read_pid, rss_kib, spawn_daemon, stop_pid, wait_until};
use crate::topology;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Host directories the nodes see privately; created on the host when missing, removed again by down.
pub const HOST_MOUNT_POINTS: &[&str] = &["/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni"];

/// The port of each node's kubelet API (`weft-kubelet-api`), as a kubelet's.
pub const KUBELET_PORT: u16 = 10250;

/// Ports the external host serves, for traffic that leaves the cluster.
pub const EXTERNAL_PORTS: &str = "TCP/80,UDP/53,TCP/8080";

/// A running local cluster.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub cfg: ClusterConfig,
    /// Where the Go-built control plane and kubectl are.
    pub cp_bin: PathBuf,
}

/// Checks what `up` needs from the machine and says what is missing.
pub fn preflight() -> Result<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "weft-e2e needs root: it creates network namespaces, veths and mounts (run it as root or with sudo)"
        );
    }
    if !Path::new("/proc/self/ns/net").exists() {
        bail!(
            "this kernel has no network namespaces (CONFIG_NET_NS), which the local cluster needs"
        );
    }
    if crate::gobuild::which("ip").is_none() {
        bail!("`ip` (iproute2) is missing: apt-get install iproute2");
    }
    for p in ["bridge", "host-local", "ptp", "portmap", "loopback"] {
        if !Path::new("/usr/lib/cni").join(p).exists() {
            bail!(
                "the reference CNI plugin {p:?} is missing from /usr/lib/cni: apt-get install containernetworking-plugins"
            );
        }
    }
    Ok(())
}

/// Fails with a clear message when a loopback port the cluster needs is taken (another local cluster
/// with other names but the same ports, or any other program).
fn check_ports_free(cfg: &ClusterConfig) -> Result<()> {
    let ports = [
        ("kube-apiserver", cfg.api_port),
        ("etcd client", cfg.etcd_client_port()),
        ("etcd peer", cfg.etcd_peer_port()),
        ("kube-controller-manager", cfg.kcm_port()),
        ("kube-scheduler", cfg.scheduler_port()),
    ];
    for (what, port) in ports {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!(
                "port {port} on 127.0.0.1, needed for {what}, is in use (another local cluster?): \
                 pick other ports with --api-port/--port-base and another --underlay-octet"
            );
        }
    }
    Ok(())
}

fn pidfile(cfg: &ClusterConfig, name: &str) -> PathBuf {
    cfg.pid_dir().join(format!("{name}.pid"))
}

fn daemon_running(cfg: &ClusterConfig, name: &str) -> bool {
    read_pid(&pidfile(cfg, name)).is_some_and(pid_alive)
}

/// Names of every daemon of the cluster besides the control plane.
fn support_daemons(cfg: &ClusterConfig) -> Vec<String> {
    let mut d = vec![
        "forwarder".to_string(),
        "external-server".to_string(),
        "egress".to_string(),
    ];
    d.extend(cfg.node_names().iter().map(|n| format!("nodelet-{n}")));
    d.extend(cfg.node_names().iter().map(|n| format!("kubelet-api-{n}")));
    d
}

/// Holds an exclusive lock on the cluster's lock file while alive.
struct Lock(#[allow(dead_code)] std::fs::File);

impl Lock {
    fn take(name: &str) -> Result<Self> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(STATE_ROOT)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Path::new(STATE_ROOT).join(format!("{name}.lock")))?;
        // SAFETY: plain syscall on an open fd.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "failed to lock the cluster state: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Lock(f))
    }
}

impl Cluster {
    /// A handle on the cluster described by `cfg`, without starting anything.
    pub fn attach(cfg: ClusterConfig) -> Result<Self> {
        let cp_bin = cfg.cache_dir.join("bin");
        Ok(Self { cfg, cp_bin })
    }

    /// The configuration a running cluster was started with.
    pub fn load(name: &str) -> Result<Self> {
        let p = Path::new(STATE_ROOT).join(name).join("cluster.json");
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!("no local cluster named {name:?} is up (no {})", p.display())
        })?;
        Self::attach(serde_json::from_str(&text)?)
    }

    /// Whether every process and namespace of the cluster is there.
    pub fn is_running(cfg: &ClusterConfig) -> bool {
        COMPONENTS.iter().all(|c| daemon_running(cfg, c))
            && support_daemons(cfg).iter().all(|d| daemon_running(cfg, d))
            && topology::owned_namespaces(&cfg.name).len() == cfg.nodes + 2
    }

    /// Brings the cluster up, or returns the running one.
    pub fn up(cfg: ClusterConfig) -> Result<Self> {
        preflight()?;
        let _lock = Lock::take(&cfg.name)?;
        let cp_bin = ensure_control_plane(&cfg.cache_dir)?;
        crate::gobuild::ensure_images(&cfg.cache_dir)?;
        crate::gobuild::ensure_kubelet_api(&cfg.cache_dir)?;
        if Self::is_running(&cfg) {
            return Ok(Self { cfg, cp_bin });
        }
        if cfg.state_dir().exists() || !topology::owned_namespaces(&cfg.name).is_empty() {
            eprintln!("cleaning up a partial cluster {:?} first", cfg.name);
            teardown(&cfg)?;
        }
        if let Err(e) = check_ports_free(&cfg) {
            let _ = std::fs::remove_file(Path::new(STATE_ROOT).join(format!("{}.lock", cfg.name)));
            let _ = std::fs::remove_dir(STATE_ROOT);
            return Err(e);
        }
        let cluster = Self { cfg, cp_bin };
        if let Err(e) = cluster.start() {
            // Keep the logs for the post-mortem; everything else goes.
            let kept = std::env::temp_dir().join(format!("weft-e2e-{}-logs", cluster.cfg.name));
            let _ = std::fs::remove_dir_all(&kept);
            let _ = std::fs::rename(cluster.cfg.log_dir(), &kept);
            let _ = teardown(&cluster.cfg);
            return Err(e.context(format!(
                "local cluster did not come up (logs kept in {})",
                kept.display()
            )));
        }
        Ok(cluster)
    }

    fn start(&self) -> Result<()> {
        let cfg = &self.cfg;
        std::fs::create_dir_all(cfg.state_dir())?;
        std::fs::write(
            cfg.state_dir().join("cluster.json"),
            serde_json::to_vec_pretty(cfg)?,
        )?;
        let mut created = Vec::new();
        for p in HOST_MOUNT_POINTS {
            let mut missing: Vec<PathBuf> = Path::new(p)
                .ancestors()
                .filter(|a| !a.exists())
                .map(Path::to_path_buf)
                .collect();
            missing.reverse();
            std::fs::create_dir_all(p)?;
            created.extend(missing);
        }
        let text: String = created
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        std::fs::write(cfg.state_dir().join("created-host-dirs"), text)?;
        controlplane::write_credentials(cfg)?;
        topology::create(cfg)?;
        controlplane::start(cfg, &self.cp_bin)?;
        let me = cfg.bin_dir.join("weft-e2e");
        let nodelet = cfg.bin_dir.join("weft-nodelet");
        for b in [&me, &nodelet] {
            if !b.is_file() {
                bail!(
                    "{} is missing: build the workspace first (cargo build --workspace --bins)",
                    b.display()
                );
            }
        }
        let ns_path = |ns: &str| format!("/run/netns/{ns}");
        spawn_daemon(
            Command::new(&me).args([
                "forward",
                "--netns",
                &ns_path(&cfg.underlay_ns()),
                "--listen",
                &format!(
                    "{}:{}",
                    cfg.gateway_ip(),
                    ClusterConfig::API_PORT_IN_CLUSTER
                ),
                // The `kubernetes` Service's endpoint: <advertise address>:<secure port>.
                "--listen",
                &format!("{}:{}", cfg.gateway_ip(), cfg.api_port),
                "--to",
                &format!("127.0.0.1:{}", cfg.api_port),
            ]),
            &cfg.log_dir().join("forwarder.log"),
            &pidfile(cfg, "forwarder"),
        )?;
        spawn_daemon(
            Command::new(&me).args([
                "serve",
                "--netns",
                &ns_path(&cfg.external_ns()),
                "--identity",
                "external",
                "--ports",
                EXTERNAL_PORTS,
            ]),
            &cfg.log_dir().join("external-server.log"),
            &pidfile(cfg, "external-server"),
        )?;
        spawn_daemon(
            Command::new(&me)
                .arg("egress")
                .arg("--uds")
                .arg(controlplane::egress_socket(cfg))
                .args(["--netns", &ns_path(&cfg.underlay_ns())])
                .args(["--subnet", &cfg.gateway_ip().to_string()]),
            &cfg.log_dir().join("egress.log"),
            &pidfile(cfg, "egress"),
        )?;
        let pki = cfg.pki_dir();
        for (i, node) in cfg.node_names().iter().enumerate() {
            let stem = controlplane::kubelet_serving_stem(node);
            spawn_daemon(
                Command::new("ip")
                    .args(["netns", "exec", &cfg.node_ns(node)])
                    .arg(self.cp_bin.join(crate::gobuild::KUBELET_API))
                    .arg(format!("--listen={}:{KUBELET_PORT}", cfg.node_ip(i + 1)))
                    .arg(format!(
                        "--tls-cert-file={}",
                        pki.join(format!("{stem}.crt")).display()
                    ))
                    .arg(format!(
                        "--tls-private-key-file={}",
                        pki.join(format!("{stem}.key")).display()
                    ))
                    .arg(format!("--client-ca-file={}", pki.join("ca.crt").display()))
                    .arg(format!(
                        "--pods-dir={}",
                        cfg.node_dir(node).join("pods").display()
                    )),
                &cfg.log_dir().join(format!("kubelet-api-{node}.log")),
                &pidfile(cfg, &format!("kubelet-api-{node}")),
            )?;
        }
        for (i, node) in cfg.node_names().iter().enumerate() {
            let kc = controlplane::kubeconfig_of(cfg, node);
            let mut cmd = Command::new(&nodelet);
            cmd.env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .args(["--node", node])
            .args(["--netns", &ns_path(&cfg.node_ns(node))])
            .arg("--node-dir")
            .arg(cfg.node_dir(node))
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["--node-ip", &cfg.node_ip(i + 1).to_string()])
            .arg("--bin-dir")
            .arg(&cfg.bin_dir)
            .arg("--bin-dir")
            .arg(&self.cp_bin)
            .args(["--api-host", &cfg.gateway_ip().to_string()])
            .args([
                "--api-port",
                &ClusterConfig::API_PORT_IN_CLUSTER.to_string(),
            ]);
            if cfg.is_dual_stack() {
                cmd.args(["--node-ip6", &cfg.node_ip6(i + 1)]);
            }
            // Pods in a kubelet's cgroup layout, when asked for (`WEFT_E2E_CGROUPS_PER_QOS=true`).
            if cgroups_per_qos() {
                cmd.args([
                    "--kubepods-cgroup",
                    &crate::cgroup::kubepods_name(&cfg.name, node),
                ]);
            }
            spawn_daemon(
                &mut cmd,
                &cfg.log_dir().join(format!("nodelet-{node}.log")),
                &pidfile(cfg, &format!("nodelet-{node}")),
            )?;
        }
        let want = cfg.nodes;
        wait_until(
            "every node to register and get its pod CIDR",
            Duration::from_secs(90),
            Duration::from_millis(500),
            || {
                for d in support_daemons(cfg) {
                    if !daemon_running(cfg, &d) {
                        let log = cfg.log_dir().join(format!("{d}.log"));
                        return Err(crate::sys::Fatal(format!(
                            "{d} exited: {}",
                            controlplane::tail(&log, 5)
                        ))
                        .into());
                    }
                }
                let out = self
                    .kubectl()
                    .args([
                        "get",
                        "nodes",
                        "-o",
                        "jsonpath={range .items[*]}{.spec.podCIDR}{\"\\n\"}{end}",
                    ])
                    .output()?;
                let text = String::from_utf8_lossy(&out.stdout);
                Ok(out.status.success()
                    && text.lines().filter(|l| !l.trim().is_empty()).count() == want)
            },
        )?;
        if cfg.kube_proxy {
            crate::kubeproxy::install_kube_proxy(self, Duration::from_secs(120))?;
        }
        Ok(())
    }

    /// `kubectl` (the Go-built one) with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(self.cp_bin.join("kubectl"));
        c.env("KUBECONFIG", self.cfg.kubeconfig());
        c
    }

    /// Runs kubectl with `args`, feeding `doc` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], doc: &str) -> Result<std::process::Output> {
        use std::io::Write;
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl has no stdin")?
            .write_all(doc.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// `kubectl apply -f -` of a YAML or JSON document (text or a `serde_json::Value`); an error
    /// carries kubectl's message.
    pub fn apply(&self, doc: impl std::fmt::Display) -> Result<()> {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], &doc.to_string())?;
        if !out.status.success() {
            bail!(
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// A kube client with the admin identity.
    pub async fn client(&self) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(self.cfg.kubeconfig())?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// The root-namespace path of a pod's network namespace, from the nodelet's record.
    pub fn pod_netns(&self, node: &str, rec: &PodRecord) -> PathBuf {
        if rec.host_network {
            return rec.netns.clone();
        }
        let pid = read_pid(&pidfile(&self.cfg, &format!("nodelet-{node}"))).unwrap_or(0);
        PathBuf::from(format!("/proc/{pid}/root"))
            .join(rec.netns.strip_prefix("/").unwrap_or(&rec.netns))
    }

    /// Every Running pod the probe can use (pod-network pods by default), as probe endpoints.
    pub fn endpoints(&self, include_host_network: bool) -> Result<Vec<Endpoint>> {
        let mut out = Vec::new();
        for node in self.cfg.node_names() {
            for rec in records(&self.cfg.node_dir(&node).join("pods")) {
                if rec.host_network && !include_host_network {
                    continue;
                }
                out.push(Endpoint {
                    id: format!("{}/{}", rec.namespace, rec.name),
                    netns: self.pod_netns(&node, &rec),
                    ips: rec.ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Finds one pod's endpoint by `namespace/name`.
    pub fn endpoint(&self, id: &str) -> Result<Endpoint> {
        self.endpoints(true)?
            .into_iter()
            .find(|e| e.id == id)
            .with_context(|| {
                format!(
                    "pod {id} is not running on any node of cluster {:?}",
                    self.cfg.name
                )
            })
    }

    /// A Service by `namespace/name`: its cluster IPs and the pods among its endpoints.
    pub fn service(&self, id: &str) -> Result<crate::probe::ServiceTarget> {
        let (ns, name) = id
            .split_once('/')
            .with_context(|| format!("service {id:?} is not NAMESPACE/NAME"))?;
        let get = |args: &[&str]| -> Result<serde_json::Value> {
            let out = crate::sys::run(self.kubectl().args(args).args(["-o", "json"]))?;
            Ok(serde_json::from_str(&out)?)
        };
        let svc = get(&["-n", ns, "get", "service", name])?;
        let mut ips: Vec<std::net::IpAddr> = svc["spec"]["clusterIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.as_str()?.parse().ok())
            .collect();
        ips.sort_by_key(|ip| ip.is_ipv6());
        if ips.is_empty() {
            bail!("service {id} has no cluster IP (headless or ExternalName)");
        }
        let slices = get(&[
            "-n",
            ns,
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={name}"),
        ])?;
        let mut backends: Vec<String> = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
            .filter(|e| e["targetRef"]["kind"] == "Pod")
            .filter_map(|e| {
                let r = &e["targetRef"];
                Some(format!(
                    "{}/{}",
                    r["namespace"].as_str().unwrap_or(ns),
                    r["name"].as_str()?
                ))
            })
            .collect();
        backends.sort();
        backends.dedup();
        Ok(crate::probe::ServiceTarget {
            id: id.to_string(),
            ips,
            backends,
        })
    }

    /// Human-readable state of the cluster.
    pub fn status(&self) -> String {
        let cfg = &self.cfg;
        let mut s = format!(
            "cluster {:?}: {} nodes, API {} (in cluster {})\n",
            cfg.name,
            cfg.nodes,
            cfg.api_url_local(),
            cfg.api_url_in_cluster()
        );
        let names: Vec<String> = COMPONENTS
            .iter()
            .map(|c| c.to_string())
            .chain(support_daemons(cfg))
            .collect();
        for n in names {
            match read_pid(&pidfile(cfg, &n)).filter(|p| pid_alive(*p)) {
                Some(pid) => s.push_str(&format!(
                    "  {n:<28} running  pid {pid:<8} rss {} MiB\n",
                    rss_kib(pid).unwrap_or(0) / 1024
                )),
                None => s.push_str(&format!("  {n:<28} NOT RUNNING\n")),
            }
        }
        s.push_str(&format!(
            "  namespaces: {}\n",
            topology::owned_namespaces(&cfg.name).join(" ")
        ));
        if let Ok(out) = self.kubectl().args(["get", "nodes", "-o", "wide"]).output() {
            s.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        s
    }

    /// Tears the cluster down.
    pub fn down(self) -> Result<()> {
        let _lock = Lock::take(&self.cfg.name)?;
        teardown(&self.cfg)
    }
}

/// Whether any other local cluster has state on this machine.
fn other_clusters(name: &str) -> bool {
    std::fs::read_dir(STATE_ROOT)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| e.path().is_dir() && e.file_name().to_string_lossy() != name)
        })
        .unwrap_or(false)
}

/// Whether nodelets lay their pods out in cgroups as a kubelet with `--cgroups-per-qos` does: only
/// when `WEFT_E2E_CGROUPS_PER_QOS` is `true` or `1` and the machine has a CPU cgroup controller.
/// Off by default: a burst of 100 pods on one node measured CNI ADD p99 45-94 ms with it against
/// 22-29 ms without (ADR 0002, its update of 2026-12-03; the cause is not established).
fn cgroups_per_qos() -> bool {
    let on =
        std::env::var("WEFT_E2E_CGROUPS_PER_QOS").is_ok_and(|v| matches!(v.trim(), "true" | "1"));
    on && crate::cgroup::cpu_hierarchy().is_ok()
}

/// Stops and removes everything of cluster `cfg`; collects every error and reports them together.
pub fn teardown(cfg: &ClusterConfig) -> Result<()> {
    let mut errors: Vec<String> = Vec::new();
    // Nodelets first: they tear their pods down (CNI DEL) on SIGTERM.
    for d in support_daemons(cfg).iter().rev() {
        if let Some(pid) = read_pid(&pidfile(cfg, d)) {
            stop_pid(pid, Duration::from_secs(30));
        }
    }
    for c in COMPONENTS.iter().rev() {
        if let Some(pid) = read_pid(&pidfile(cfg, c)) {
            stop_pid(pid, Duration::from_secs(10));
        }
    }
    // Anything still running inside a node's namespace (a pod process whose nodelet was killed).
    for ns in topology::owned_namespaces(&cfg.name) {
        for pid in pids_in_netns(&Path::new("/run/netns").join(&ns)) {
            stop_pid(pid, Duration::from_secs(5));
        }
    }
    errors.extend(
        topology::delete(&cfg.name)
            .into_iter()
            .map(|e| format!("{e:#}")),
    );
    // The nodes' pod cgroups (a nodelet removes its own on exit; not one that was killed) and a
    // lowered control plane's.
    if let Err(e) = crate::cgroup::remove_cluster_cgroups(cfg) {
        errors.push(format!("{e:#}"));
    }
    // Paths created on the host for mount targets and private views, innermost first.
    let mut created: Vec<PathBuf> = Vec::new();
    for node in cfg.node_names() {
        if let Ok(t) = std::fs::read_to_string(cfg.node_dir(&node).join("created-paths")) {
            created.extend(t.lines().map(PathBuf::from));
        }
    }
    if let Ok(t) = std::fs::read_to_string(cfg.state_dir().join("created-host-dirs")) {
        created.extend(t.lines().map(PathBuf::from));
    }
    // While another local cluster runs, its nodes bind-mount their private views on these
    // directories, and removing a directory that is a mount point elsewhere silently detaches those
    // mounts (Linux ≥ 3.18). So only the last cluster to go removes them; until then they wait in a
    // shared list.
    let pending = Path::new(STATE_ROOT).join("pending-host-paths");
    if let Ok(t) = std::fs::read_to_string(&pending) {
        created.extend(t.lines().map(PathBuf::from));
    }
    created.sort();
    created.dedup();
    let others_running = other_clusters(&cfg.name);
    let mut still: Vec<String> = Vec::new();
    for p in created.iter().rev() {
        if others_running {
            still.push(p.display().to_string());
            continue;
        }
        let r = if p.is_dir() {
            std::fs::remove_dir(p)
        } else if p.is_file() && std::fs::metadata(p).map(|m| m.len() == 0).unwrap_or(false) {
            std::fs::remove_file(p)
        } else {
            Ok(())
        };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("failed to remove {}: {e}", p.display())),
        }
    }
    if still.is_empty() {
        let _ = std::fs::remove_file(&pending);
    } else if let Err(e) = std::fs::write(&pending, still.join("\n") + "\n") {
        errors.push(format!("failed to record {}: {e}", pending.display()));
    }
    if cfg.state_dir().exists()
        && let Err(e) = std::fs::remove_dir_all(cfg.state_dir())
    {
        errors.push(format!(
            "failed to remove {}: {e}",
            cfg.state_dir().display()
        ));
    }
    let _ = std::fs::remove_file(Path::new(STATE_ROOT).join(format!("{}.lock", cfg.name)));
    let _ = std::fs::remove_dir(STATE_ROOT);
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("teardown finished with errors:\n  {}", errors.join("\n  "))
    }
}
