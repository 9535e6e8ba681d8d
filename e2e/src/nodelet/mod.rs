//! weft-nodelet: the part of a kubelet that matters to a network fabric, for one node of the local
//! cluster.
//!
//! ```text
//!   weft-nodelet (node netns + private mount ns: /etc/cni/net.d, /opt/cni/bin, /run, /var/lib/cni)
//!     ├─ node:  register Node, Lease heartbeat, Ready once a CNI config exists (taint until then)
//!     └─ pods:  watch pods bound here
//!          ├─ hostNetwork: run each container as a local process in the node's root (image →
//!          │               local binary), env, downward API, volumes bound in a private mount ns,
//!          │               probes, restarts; an image kept at `/` (`/agnhost`) gets a root of its
//!          │               own with the image's layout, still in the node's network
//!          └─ other:       netns + CNI ADD from the node's conflist; a container with command/args,
//!                          or without ports, runs its process in the pod's netns, in a root of its
//!                          own where the image's binary sits where the image has it (`/agnhost`);
//!                          one with ports and no command is the nodelet's port server (what
//!                          `weft-e2e probe` talks to); CNI DEL + netns removal on delete
//! ```
//!
//! Invariant: every pod this process started is torn down (processes killed, CNI DEL run) before it
//! reports the pod gone or exits on SIGTERM.

pub mod cgroups;
pub mod cni;
pub mod container;
pub mod image;
pub mod launch;
pub mod netns;
pub mod node;
pub mod pods;
pub mod rootfs;
pub mod status;

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Host paths that each node sees privately, and the node-dir subdirectory backing each.
pub const PRIVATE_PATHS: &[(&str, &str)] = &[
    ("etc-cni-net.d", "/etc/cni/net.d"),
    ("opt-cni-bin", "/opt/cni/bin"),
    ("var-lib-cni", "/var/lib/cni"),
    ("run", "/run"),
];

/// How one nodelet is set up.
#[derive(Clone, Debug, clap::Args)]
pub struct NodeletConfig {
    /// Node name.
    #[arg(long)]
    pub node: String,
    /// Path of the node's network namespace.
    #[arg(long)]
    pub netns: PathBuf,
    /// Directory backing the node's private paths and pod state.
    #[arg(long)]
    pub node_dir: PathBuf,
    /// The node's kubeconfig (client certificate system:node:<name>).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The node's underlay IPv4 address.
    #[arg(long)]
    pub node_ip: Ipv4Addr,
    /// The node's underlay IPv6 address, reported when the cluster is dual-stack.
    #[arg(long)]
    pub node_ip6: Option<String>,
    /// Directories of binaries that images map to (by the image's last path segment), searched in
    /// order.
    #[arg(long = "bin-dir", required = true)]
    pub bin_dirs: Vec<PathBuf>,
    /// Address of the API server as pods see it (KUBERNETES_SERVICE_HOST).
    #[arg(long)]
    pub api_host: String,
    /// Port of the API server as pods see it (KUBERNETES_SERVICE_PORT).
    #[arg(long, default_value_t = 6443)]
    pub api_port: u16,
    /// The node's `kubepods` CPU cgroup, a child of the CPU hierarchy's root: each pod's
    /// containers run in a cgroup of their own below it, by QoS class, as a kubelet with
    /// `--cgroups-per-qos` lays them out (see [`cgroups`]). Without it, containers run in the
    /// nodelet's cgroup.
    #[arg(long)]
    pub kubepods_cgroup: Option<String>,
    /// The bin dirs, held open by `enter_node` before the node's private paths are mounted.
    #[arg(skip)]
    pub images: launch::BinDirs,
    /// The pods' cgroups, created by `enter_node` before `/sys` is remounted.
    #[arg(skip)]
    pub cgroups: Option<std::sync::Arc<cgroups::PodCgroups>>,
}

impl NodeletConfig {
    pub fn pods_dir(&self) -> PathBuf {
        self.node_dir.join("pods")
    }
}

/// Enters the node: its network namespace and a private mount namespace with the node's own
/// `/etc/cni/net.d`, `/opt/cni/bin`, `/run` and `/var/lib/cni`, and a sysfs of the node's namespace.
/// Must run before any other thread exists.
///
/// The bin dirs are opened before the private paths are mounted: a bin dir under `/run` or
/// `/etc/cni/net.d` would be hidden by the node's private view afterwards.
pub fn enter_node(cfg: &mut NodeletConfig) -> Result<()> {
    crate::netns::enter_netns(&cfg.netns)?;
    netns::private_mount_namespace().context("failed to create a private mount namespace")?;
    // Opened in this mount namespace (a container clones the image's binary from here) but before
    // the private paths below can hide a bin dir.
    cfg.images = launch::BinDirs::open(&cfg.bin_dirs);
    if let Some(name) = &cfg.kubepods_cgroup {
        // The remount of /sys below hides the cgroup mounts: open the hierarchy first.
        let cg = cgroups::PodCgroups::create(name, node::CPU_CAPACITY_MILLI).with_context(|| {
            format!("failed to set up the pods' CPU cgroup {name} (run without --kubepods-cgroup to leave containers in the nodelet's cgroup)")
        })?;
        cfg.cgroups = Some(std::sync::Arc::new(cg));
    }
    for (sub, target) in PRIVATE_PATHS {
        let src = cfg.node_dir.join(sub);
        std::fs::create_dir_all(&src)?;
        bind(&src, Path::new(target))?;
    }
    // sysfs shows the namespace of whoever mounts it: remount so /sys/class/net lists this node's links.
    let _ = umount2("/sys", MntFlags::MNT_DETACH);
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .context("failed to mount sysfs")?;
    Ok(())
}

fn bind(src: &Path, target: &Path) -> Result<()> {
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("failed to bind {} on {}", src.display(), target.display()))
}

/// Runs the nodelet until SIGTERM/SIGINT, then tears every pod down.
pub async fn run(cfg: NodeletConfig) -> Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&cfg.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    // The API server (or the forwarder in front of it) may still be starting: retry, like a kubelet.
    let mut attempt = 0;
    loop {
        match node::register(&client, &cfg).await {
            Ok(()) => break,
            Err(e) if attempt < 60 => {
                attempt += 1;
                tracing::warn!(error = %format!("{e:#}"), attempt, "failed to register the node; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.context("failed to register the node")),
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let heartbeat = tokio::spawn(node::heartbeat(
        client.clone(),
        cfg.clone(),
        stop_rx.clone(),
    ));
    let pods = tokio::spawn(pods::run(client.clone(), cfg.clone(), stop_rx));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("stopping: tearing down pods");
    let _ = stop_tx.send(true);
    let _ = pods.await;
    heartbeat.abort();
    if let Some(cg) = &cfg.cgroups {
        cg.remove();
    }
    Ok(())
}
