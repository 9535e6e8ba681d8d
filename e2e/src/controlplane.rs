//! The control plane as local processes in the root namespace, all on loopback: etcd, kube-apiserver
//! (RBAC and the Node authorizer on, service-account tokens), kube-controller-manager (node CIDR
//! allocation, garbage collector, DaemonSet/Deployment/namespace controllers) and kube-scheduler.

use crate::cgroup::{CpuHierarchy, cgroup_of, control_plane_name, cpu_hierarchy, remove_tree};
use crate::config::ClusterConfig;
use crate::pki::{ClientIdentity, ServerIdentity, generate, write_kubeconfig};
use crate::sys::{pid_alive, read_pid, spawn_daemon, wait_until};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Control-plane processes in start order.
pub const COMPONENTS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The service-account issuer; tokens carry it as `iss` and the API server as default audience.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Writes the PKI and the kubeconfigs of the admin, the controllers and every node.
pub fn write_credentials(cfg: &ClusterConfig) -> Result<()> {
    let pki = cfg.pki_dir();
    let mut sans: Vec<String> = vec![
        "127.0.0.1".into(),
        "::1".into(),
        "localhost".into(),
        cfg.gateway_ip().to_string(),
        cfg.gateway_ip6(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ];
    sans.extend(first_service_ips(cfg));
    let node_users: Vec<(String, String)> = cfg
        .node_names()
        .into_iter()
        .map(|n| (n.clone(), format!("system:node:{n}")))
        .collect();
    let mut clients = vec![
        ClientIdentity {
            stem: "admin",
            user: "weft-admin",
            groups: &["system:masters"],
        },
        ClientIdentity {
            stem: "kube-controller-manager",
            user: "system:kube-controller-manager",
            groups: &[],
        },
        ClientIdentity {
            stem: "kube-scheduler",
            user: "system:kube-scheduler",
            groups: &[],
        },
        // How the API server authenticates to the nodes' kubelet API.
        ClientIdentity {
            stem: KUBELET_CLIENT,
            user: "kube-apiserver-kubelet-client",
            groups: &[],
        },
    ];
    for (stem, user) in &node_users {
        clients.push(ClientIdentity {
            stem,
            user,
            groups: &["system:nodes"],
        });
    }
    let stems: Vec<String> = cfg
        .node_names()
        .iter()
        .map(|n| kubelet_serving_stem(n))
        .collect();
    let servers: Vec<ServerIdentity<'_>> = cfg
        .node_names()
        .iter()
        .enumerate()
        .zip(&stems)
        .map(|((i, n), stem)| {
            let mut sans = vec![cfg.node_ip(i + 1).to_string(), n.clone()];
            if cfg.is_dual_stack() {
                sans.push(cfg.node_ip6(i + 1));
            }
            ServerIdentity {
                stem,
                common_name: "weft-kubelet-api",
                sans,
            }
        })
        .collect();
    generate(&pki, &sans, &clients, &servers)?;
    std::fs::write(
        egress_config_path(cfg),
        crate::egress::render_egress_config(&egress_socket(cfg)),
    )?;
    write_kubeconfig(&cfg.kubeconfig(), &cfg.api_url_local(), &pki, "admin")?;
    for c in ["kube-controller-manager", "kube-scheduler"] {
        write_kubeconfig(&kubeconfig_of(cfg, c), &cfg.api_url_local(), &pki, c)?;
    }
    for (n, _) in &node_users {
        write_kubeconfig(&kubeconfig_of(cfg, n), &cfg.api_url_in_cluster(), &pki, n)?;
    }
    Ok(())
}

/// The first address of each service CIDR (the `kubernetes` Service's ClusterIP).
fn first_service_ips(cfg: &ClusterConfig) -> Vec<String> {
    cfg.service_cidrs
        .iter()
        .filter_map(|c| {
            let (addr, _) = c.split_once('/')?;
            match addr.parse::<std::net::IpAddr>().ok()? {
                std::net::IpAddr::V4(a) => {
                    Some(std::net::Ipv4Addr::from(u32::from(a) + 1).to_string())
                }
                std::net::IpAddr::V6(a) => {
                    Some(std::net::Ipv6Addr::from(u128::from(a) + 1).to_string())
                }
            }
        })
        .collect()
}

/// File stem of the API server's client certificate for the kubelet API.
pub const KUBELET_CLIENT: &str = "apiserver-kubelet-client";

/// File stem of a node's kubelet-API serving certificate.
pub fn kubelet_serving_stem(node: &str) -> String {
    format!("kubelet-{node}")
}

/// The Unix socket of the egress proxy through which the API server reaches the nodes.
pub fn egress_socket(cfg: &ClusterConfig) -> PathBuf {
    cfg.state_dir().join("egress.sock")
}

fn egress_config_path(cfg: &ClusterConfig) -> PathBuf {
    cfg.state_dir().join("egress-selector.yaml")
}

/// The kubeconfig of a component or node.
pub fn kubeconfig_of(cfg: &ClusterConfig, who: &str) -> PathBuf {
    cfg.state_dir()
        .join("kubeconfigs")
        .join(format!("{who}.kubeconfig"))
}

fn pidfile(cfg: &ClusterConfig, name: &str) -> PathBuf {
    cfg.pid_dir().join(format!("{name}.pid"))
}

/// Whether the named daemon of this cluster is running.
pub fn running(cfg: &ClusterConfig, name: &str) -> bool {
    read_pid(&pidfile(cfg, name)).is_some_and(pid_alive)
}

/// Starts every control-plane component that is not running and waits for the API server.
pub fn start(cfg: &ClusterConfig, bin: &Path) -> Result<()> {
    let pki = cfg.pki_dir();
    let p = |f: &str| pki.join(f).display().to_string();
    let etcd_url = format!("http://127.0.0.1:{}", cfg.etcd_client_port());
    let peer_url = format!("http://127.0.0.1:{}", cfg.etcd_peer_port());
    let services = cfg.service_cidrs.join(",");
    let clusters = cfg.cluster_cidrs.join(",");

    for name in COMPONENTS {
        if running(cfg, name) {
            continue;
        }
        let mut cmd = Command::new(bin.join(name));
        match *name {
            "etcd" => {
                cmd.args([
                    "--name=etcd".to_string(),
                    format!("--data-dir={}", cfg.state_dir().join("etcd").display()),
                    format!("--listen-client-urls={etcd_url}"),
                    format!("--advertise-client-urls={etcd_url}"),
                    format!("--listen-peer-urls={peer_url}"),
                    format!("--initial-advertise-peer-urls={peer_url}"),
                    format!("--initial-cluster=etcd={peer_url}"),
                    "--listen-metrics-urls=".to_string(),
                    "--unsafe-no-fsync=true".to_string(),
                    "--log-level=warn".to_string(),
                ]);
            }
            "kube-apiserver" => {
                cmd.args([
                    format!("--etcd-servers={etcd_url}"),
                    "--bind-address=127.0.0.1".to_string(),
                    format!("--secure-port={}", cfg.api_port),
                    format!("--advertise-address={}", cfg.gateway_ip()),
                    format!("--tls-cert-file={}", p("apiserver.crt")),
                    format!("--tls-private-key-file={}", p("apiserver.key")),
                    format!("--client-ca-file={}", p("ca.crt")),
                    format!("--service-account-issuer={SA_ISSUER}"),
                    format!("--service-account-key-file={}", p("sa.pub")),
                    format!("--service-account-signing-key-file={}", p("sa.key")),
                    "--authorization-mode=Node,RBAC".to_string(),
                    "--enable-admission-plugins=NodeRestriction".to_string(),
                    format!("--service-cluster-ip-range={services}"),
                    "--allow-privileged=true".to_string(),
                    // The nodes' kubelet API (logs, exec, port-forward): by address, through the
                    // egress proxy into the underlay, verified against the cluster's CA.
                    format!(
                        "--egress-selector-config-file={}",
                        egress_config_path(cfg).display()
                    ),
                    "--kubelet-preferred-address-types=InternalIP".to_string(),
                    format!("--kubelet-certificate-authority={}", p("ca.crt")),
                    format!(
                        "--kubelet-client-certificate={}",
                        p(&format!("{KUBELET_CLIENT}.crt"))
                    ),
                    format!(
                        "--kubelet-client-key={}",
                        p(&format!("{KUBELET_CLIENT}.key"))
                    ),
                    "--profiling=false".to_string(),
                    "--v=1".to_string(),
                ]);
            }
            "kube-controller-manager" => {
                cmd.args(controller_common_args(cfg, name, cfg.kcm_port()));
                cmd.args([
                    "--allocate-node-cidrs=true".to_string(),
                    format!("--cluster-cidr={clusters}"),
                    format!("--service-cluster-ip-range={services}"),
                    format!("--service-account-private-key-file={}", p("sa.key")),
                    format!("--root-ca-file={}", p("ca.crt")),
                    format!("--cluster-signing-cert-file={}", p("ca.crt")),
                    format!("--cluster-signing-key-file={}", p("ca.key")),
                    "--use-service-account-credentials=true".to_string(),
                    "--controllers=*".to_string(),
                    "--v=1".to_string(),
                ]);
                // The IPv6 mask flag is refused on a single-stack cluster.
                if cfg.is_dual_stack() {
                    cmd.arg(format!("--node-cidr-mask-size-ipv4={}", cfg.node_mask_v4));
                    cmd.arg(format!("--node-cidr-mask-size-ipv6={}", cfg.node_mask_v6));
                } else {
                    cmd.arg(format!("--node-cidr-mask-size={}", cfg.node_mask_v4));
                }
            }
            "kube-scheduler" => {
                cmd.args(controller_common_args(cfg, name, cfg.scheduler_port()));
                cmd.args(["--v=1".to_string()]);
            }
            other => anyhow::bail!("unknown component {other}"),
        }
        spawn_daemon(
            &mut cmd,
            &cfg.log_dir().join(format!("{name}.log")),
            &pidfile(cfg, name),
        )?;
        if *name == "kube-apiserver" {
            wait_api_ready(cfg, bin, Duration::from_secs(120))?;
        }
    }
    Ok(())
}

/// Flags the controller-manager and the scheduler share: their kubeconfig for everything, a loopback
/// secure port, no leader election (one replica).
fn controller_common_args(cfg: &ClusterConfig, name: &str, port: u16) -> Vec<String> {
    let kc = kubeconfig_of(cfg, name).display().to_string();
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".to_string(),
        format!("--secure-port={port}"),
        "--leader-elect=false".to_string(),
    ]
}

/// Waits until the API server answers `/readyz` through the admin kubeconfig.
pub fn wait_api_ready(cfg: &ClusterConfig, bin: &Path, timeout: Duration) -> Result<()> {
    let kubectl = bin.join("kubectl");
    let log = cfg.log_dir().join("kube-apiserver.log");
    wait_until(
        "kube-apiserver /readyz",
        timeout,
        Duration::from_millis(500),
        || {
            if !running(cfg, "kube-apiserver") {
                return Err(
                    crate::sys::Fatal(format!("kube-apiserver exited: {}", tail(&log, 5))).into(),
                );
            }
            let out = Command::new(&kubectl)
                .arg(format!("--kubeconfig={}", cfg.kubeconfig().display()))
                .args(["get", "--raw=/readyz"])
                .output()
                .context("failed to run kubectl")?;
            Ok(out.status.success())
        },
    )
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The control plane's CPU weight while it is lowered: 1/16 of the default (`cpu.shares` 64 of
/// 1024 with cgroup v1, `cpu.weight` 6 of 100 with cgroup v2).
pub const LOW_CPU_SHARES: u64 = 64;

/// The control plane's processes, moved into a CPU cgroup of their own with a low weight, until
/// [`LoweredCpu::restore`] (or drop) puts every one back where it was.
///
/// The local cluster runs the control plane on the CPUs of its nodes. A real cluster gives it
/// machines of its own, and a node's CPUs serve the node's work: the runtime, the CNI plugins, the
/// containers. With the weight lowered, a node's work runs first whenever the two contend, and the
/// control plane still has every CPU cycle the nodes leave idle. It is a measuring condition for
/// benchmarks of a node's own latency (the overlay bench prints its figures both ways); the local
/// cluster never runs like this otherwise.
pub struct LoweredCpu {
    dir: PathBuf,
    /// Each moved process and the cgroup directory it came from.
    moved: Vec<(i32, PathBuf)>,
}

fn lowered_dir(root: &Path, cfg: &ClusterConfig) -> PathBuf {
    root.join(control_plane_name(&cfg.name))
}

impl LoweredCpu {
    /// Moves every running control-plane process of `cfg` into `weft-e2e-<cluster>-control-plane`
    /// with [`LOW_CPU_SHARES`].
    pub fn lower(cfg: &ClusterConfig) -> Result<Self> {
        let (h, root) = cpu_hierarchy()?;
        let dir = lowered_dir(&root, cfg);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (file, value) = match h {
            CpuHierarchy::V1 => ("cpu.shares", LOW_CPU_SHARES),
            // 1/16 of v2's default weight (100), rather than the kubelet's conversion of 64 shares
            // (3): the same fraction of a default task on either version.
            CpuHierarchy::V2 => ("cpu.weight", (LOW_CPU_SHARES * 100 / 1024).max(1)),
        };
        let mut lowered = LoweredCpu {
            dir: dir.clone(),
            moved: Vec::new(),
        };
        std::fs::write(dir.join(file), value.to_string())
            .with_context(|| format!("writing {}/{file}", dir.display()))?;
        for name in COMPONENTS {
            let Some(pid) = read_pid(&pidfile(cfg, name)).filter(|p| pid_alive(*p)) else {
                anyhow::bail!("{name} of cluster {} is not running", cfg.name);
            };
            let from = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .ok()
                .and_then(|t| cgroup_of(&t, h))
                .with_context(|| format!("the {h:?} CPU cgroup of {name} (pid {pid})"))?;
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .with_context(|| format!("moving {name} (pid {pid}) into {}", dir.display()))?;
            lowered.moved.push((pid, root.join(from)));
        }
        Ok(lowered)
    }

    /// Puts every moved process back into its cgroup and removes the one it was lowered in.
    pub fn restore(mut self) -> Result<()> {
        self.put_back()
    }

    fn put_back(&mut self) -> Result<()> {
        let mut first_error = None;
        for (pid, from) in self.moved.drain(..) {
            if !pid_alive(pid) {
                continue;
            }
            if let Err(e) = std::fs::write(from.join("cgroup.procs"), pid.to_string()) {
                first_error.get_or_insert(anyhow::anyhow!(
                    "moving pid {pid} back to {}: {e}",
                    from.display()
                ));
            }
        }
        if self.dir.exists()
            && let Err(e) = std::fs::remove_dir(&self.dir)
        {
            first_error.get_or_insert(anyhow::anyhow!("removing {}: {e}", self.dir.display()));
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Removes the lowered cgroup of `cfg` if one is left (a run stopped by a signal, where no guard is
/// dropped), its processes moved to the hierarchy's root first. A teardown step; nothing to do when
/// there is no CPU controller or no such cgroup.
pub fn remove_lowered_cpu(cfg: &ClusterConfig) -> Result<()> {
    let Ok((_, root)) = cpu_hierarchy() else {
        return Ok(());
    };
    remove_tree(&root, &lowered_dir(&root, cfg))
}

impl Drop for LoweredCpu {
    fn drop(&mut self) {
        if let Err(e) = self.put_back() {
            eprintln!("restoring the control plane's CPU weight: {e:#}");
        }
    }
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    /// The real cgroup filesystem: four processes standing in for the control plane (pid files
    /// where the cluster keeps them) go into the lowered cgroup with its weight, and back, and the
    /// cgroup is gone afterwards, also when the guard is only dropped.
    #[test]
    fn lowering_moves_the_control_plane_and_restoring_puts_it_back() {
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } != 0 || cpu_hierarchy().is_err() {
            eprintln!("skipped: needs root and a CPU cgroup controller");
            return;
        }
        /// Kills the stand-ins and removes their state, also when an assertion fails.
        struct StandIns(Vec<std::process::Child>, PathBuf);
        impl Drop for StandIns {
            fn drop(&mut self) {
                for k in &mut self.0 {
                    let _ = k.kill();
                    let _ = k.wait();
                }
                let _ = std::fs::remove_dir_all(&self.1);
            }
        }
        let cfg = ClusterConfig::new("cpu-test", 1, PathBuf::from("/nonexistent"));
        std::fs::create_dir_all(cfg.pid_dir()).unwrap();
        let mut kids = StandIns(Vec::new(), cfg.state_dir());
        for name in COMPONENTS {
            let kid = Command::new("sleep").arg("60").spawn().unwrap();
            std::fs::write(pidfile(&cfg, name), kid.id().to_string()).unwrap();
            kids.0.push(kid);
        }
        let (h, _) = cpu_hierarchy().unwrap();
        let cgroup = |pid: u32| {
            cgroup_of(
                &std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap(),
                h,
            )
            .unwrap()
        };
        let before: Vec<String> = kids.0.iter().map(|k| cgroup(k.id())).collect();
        let dir_name = "weft-e2e-cpu-test-control-plane";

        let low = LoweredCpu::lower(&cfg).unwrap();
        let weight_file = match h {
            CpuHierarchy::V1 => "cpu.shares",
            CpuHierarchy::V2 => "cpu.weight",
        };
        let weight = std::fs::read_to_string(low.dir.join(weight_file)).unwrap();
        let expected = match h {
            CpuHierarchy::V1 => "64",
            CpuHierarchy::V2 => "6",
        };
        assert_eq!(weight.trim(), expected);
        for k in &kids.0 {
            assert_eq!(cgroup(k.id()), dir_name);
        }
        low.restore().unwrap();
        let after: Vec<String> = kids.0.iter().map(|k| cgroup(k.id())).collect();
        assert_eq!(after, before);
        let (_, root) = cpu_hierarchy().unwrap();
        assert!(!root.join(dir_name).exists());

        // Dropped without restore (a bench that fails mid-burst): the same.
        drop(LoweredCpu::lower(&cfg).unwrap());
        let after: Vec<String> = kids.0.iter().map(|k| cgroup(k.id())).collect();
        assert_eq!(after, before);
        assert!(!root.join(dir_name).exists());

        // Left behind by a run that no guard could restore: the teardown step removes it.
        std::mem::forget(LoweredCpu::lower(&cfg).unwrap());
        assert!(root.join(dir_name).exists());
        remove_lowered_cpu(&cfg).unwrap();
        assert!(!root.join(dir_name).exists());
        remove_lowered_cpu(&cfg).unwrap();

        for k in &mut kids.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
        // A stopped control plane is refused, with its name, and leaves no cgroup behind.
        let err = LoweredCpu::lower(&cfg).err().unwrap().to_string();
        assert!(
            err.contains("etcd of cluster cpu-test is not running"),
            "{err}"
        );
        assert!(!root.join(dir_name).exists());
    }
}
