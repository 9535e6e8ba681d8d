//! Real flannel on a node of a local cluster: flanneld v0.28.10, built from its Go module
//! (`e2e/flannel`) into the cache, run in a node's network namespace as kube-flannel's DaemonSet
//! runs it (kube-subnet-manager mode), and the CNI config flannel's plugin delegates to. Used by the
//! interop suite (`tests/flannel.rs`) and the overlay benchmark (`benches/overlay.rs`), never
//! shipped.
//!
//! Invariant: a [`Flanneld`] is flanneld itself (not a wrapper process), and is killed when dropped;
//! everything it leaves in the node's namespace goes with the cluster.

use crate::cluster::Cluster;
use crate::sys::run;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// flanneld, built from `e2e/flannel` into the cache (minutes the first time, then free).
pub fn ensure_flanneld(c: &Cluster) -> Result<PathBuf> {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("flannel");
    let bin = crate::gobuild::ensure_go_binaries(
        &module,
        &[("flannel", "github.com/flannel-io/flannel")],
        "flannel",
        &["tools.go"],
        "-s -w",
        // flannel's udp backend is cgo.
        &[],
        &c.cfg.cache_dir,
    )?;
    Ok(bin.join("flannel"))
}

/// flannel's `net-conf.json` for the cluster's first pod network and `backend` (`vxlan`,
/// `host-gw`), with nftables as kube-flannel's ConfigMap can ask.
pub fn net_conf(network: &str, backend: &str) -> serde_json::Value {
    serde_json::json!({
        "Network": network,
        "EnableNFTables": true,
        "Backend": {"Type": backend}
    })
}

/// flanneld running in a node's network namespace; killed when dropped.
pub struct Flanneld(Option<Child>);

impl Flanneld {
    /// Starts flanneld on `node` as kube-flannel's DaemonSet does: `--kube-subnet-mgr`, the node's
    /// interface, `--ip-masq`, the ConfigMap's net-conf.json (backend `backend`), NODE_NAME from the
    /// downward API. Its log goes to `flanneld-<node>.log` in the cluster's log directory (appended).
    pub fn start(c: &Cluster, node: &str, exe: &Path, backend: &str) -> Result<Self> {
        let dir = c.cfg.node_dir(node).join("flannel");
        std::fs::create_dir_all(&dir)?;
        let net_conf_path = dir.join("net-conf.json");
        std::fs::write(
            &net_conf_path,
            serde_json::to_string_pretty(&net_conf(&c.cfg.cluster_cidrs[0], backend))?,
        )?;
        // The node's private /run (the nodelet's view), where weft's agent finds subnet.env later.
        let subnet_file = c.cfg.node_dir(node).join("run/flannel/subnet.env");
        // kube-flannel's ServiceAccount may list and watch every Node; a node's own identity may
        // not (Node authorizer). The admin credentials, at the address the nodes reach.
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            std::fs::read_to_string(c.cfg.kubeconfig())?
                .replace(&c.cfg.api_url_local(), &c.cfg.api_url_in_cluster()),
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(c.cfg.log_dir().join(format!("flanneld-{node}.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &c.cfg.node_ns(node)])
            .arg(exe)
            .arg("--kube-subnet-mgr")
            .arg(format!("--kubeconfig-file={}", kubeconfig.display()))
            .args(["--iface", "eth0", "--ip-masq"])
            .arg(format!("--net-config-path={}", net_conf_path.display()))
            .arg(format!("--subnet-file={}", subnet_file.display()))
            .env("NODE_NAME", node)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting flanneld")?;
        Ok(Self(Some(child)))
    }

    /// Whether flanneld still runs.
    pub fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|ch| ch.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// SIGTERM, as a DaemonSet pod's deletion does; flanneld leaves the datapath in place.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut ch) = self.0.take() {
            // `ip netns exec` execs flanneld: the child is flanneld itself.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(ch.id() as i32),
                nix::sys::signal::SIGTERM,
            )?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while ch.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = ch.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for Flanneld {
    fn drop(&mut self) {
        if let Some(mut ch) = self.0.take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }
}

/// The flannel CNI config of `node`: what flannel's CNI plugin delegates to (a `cni0` bridge with
/// host-local over the node's subnet, MTU `mtu`: the VXLAN device's, or the uplink's for host-gw),
/// as a conflist named like k3s's and kube-flannel's.
pub fn place_flannel_conflist(c: &Cluster, node: &str, mtu: u32) -> Result<PathBuf> {
    let n: serde_json::Value =
        serde_json::from_str(&run(c.kubectl().args(["get", "node", node, "-o", "json"]))?)?;
    let cidr = n["spec"]["podCIDR"].as_str().context("no podCIDR")?;
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "cbr0",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isDefaultGateway": true, "ipMasq": false,
             "hairpinMode": true, "mtu": mtu,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": cidr}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    let dir = c.cfg.node_dir(node).join("etc-cni-net.d");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("10-flannel.conflist");
    std::fs::write(&path, serde_json::to_vec_pretty(&conf)?)?;
    Ok(path)
}
