//! The sync pipeline and the agent's event loop.
//!
//! One sync: **gather** (the watched Node, local interfaces, the VTEP state file) → **plan** (pure:
//! [`plan()`] in [`plan`] turns them into a [`Plan`]) → **apply** (VTEP state, subnet.env, conflist, node
//! annotations, then `NetworkUnavailable=False` last, so the node is declared usable only once pods
//! can be wired). Each apply step writes only what differs, so a sync of an unchanged world is
//! free and idempotent; the loop runs one on every Node event, configuration change and resync tick.
//!
//! Invariants: nothing is written while the lease is invalid (a podCIDR outside the fabric), and
//! nothing is ever deleted (an agent restart or SIGTERM leaves a working node behind, like flannel).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use weft_crds::AgentConfig;

use self::node::{apply_annotations, apply_network_condition};
use crate::Error;
use crate::cni::{FALLBACK_BIN_DIRS, plan_plugin_types};
use crate::files::{read_optional, sync_file};
use crate::flannel::{STATE_FILE_NAME, parse_vtep_state, plan_annotation_patch};
use crate::observe::{Health, Metrics};
use crate::subnet::{CONDITION_TYPE, plan_network_condition};
use crate::uplink::read_interfaces;

pub mod node;
pub mod plan;

pub use plan::{Gathered, Plan, node_pod_cidrs, plan};

/// The first retry delay after a failed sync; doubled up to [`MAX_RETRY`].
pub const MIN_RETRY: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// When the loop first wakes up without an event.
pub const FIRST_TICK: Duration = Duration::from_secs(5);
/// Where random bytes for new VTEP MACs come from.
pub const RANDOM_SOURCE: &str = "/dev/urandom";

/// Where the agent writes.
#[derive(Debug, Clone)]
pub struct Paths {
    /// subnet.env (compatibility.subnetFile).
    pub subnet_file: PathBuf,
    /// The VTEP state file, next to subnet.env.
    pub state_file: PathBuf,
    /// The conflist (cni.confDir/cni.confName).
    pub conflist: PathBuf,
}

impl Paths {
    /// The paths a configuration names.
    pub fn of(config: &AgentConfig) -> Paths {
        let subnet_file = PathBuf::from(&config.compatibility.subnet_file);
        let state_file = subnet_file
            .parent()
            .unwrap_or(Path::new("/"))
            .join(STATE_FILE_NAME);
        Paths {
            subnet_file,
            state_file,
            conflist: Path::new(&config.cni.conf_dir).join(&config.cni.conf_name),
        }
    }
}

/// The outcome of one sync.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The node has no podCIDR yet.
    WaitingForPodCidr,
    /// The node is configured; what changed on the way.
    Synced {
        /// The lease, for logging.
        lease: String,
        /// The MTU.
        mtu: u32,
        /// What was written or patched in this sync (empty: nothing changed).
        changed: Vec<&'static str>,
        /// The Node as the last patch returned it (`None`: nothing patched).
        patched: Option<Box<Node>>,
        /// resourceVersions of intermediate states this sync's own patches produced and then
        /// superseded; a watch event carrying one of them is stale and must not trigger a sync
        /// (it would redo the later patch).
        superseded: Vec<String>,
    },
}

/// The agent: its configuration, its node and its outputs.
pub struct Agent {
    /// The Kubernetes client's Node API.
    pub nodes: Api<Node>,
    /// The own Node's name.
    pub node_name: String,
    /// Readiness.
    pub health: Arc<Health>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `/sys/class/net`.
    pub sys_class_net: PathBuf,
}

fn random_bytes() -> Result<[[u8; 6]; 2], Error> {
    let mut buf = [0u8; 12];
    std::fs::File::open(RANDOM_SOURCE)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|source| Error::ReadFile {
            path: RANDOM_SOURCE.into(),
            source,
        })?;
    let mut out = [[0u8; 6]; 2];
    out[0].copy_from_slice(&buf[..6]);
    out[1].copy_from_slice(&buf[6..]);
    Ok(out)
}

impl Agent {
    /// One sync of the node against `config` (see the module docs).
    pub async fn sync(&self, config: &AgentConfig, node: &Node) -> Result<Outcome, Error> {
        let paths = Paths::of(config);
        // gather
        let interfaces = read_interfaces(&self.sys_class_net)?;
        let vtep_state = read_optional(&paths.state_file)?
            .map(|s| parse_vtep_state(&s))
            .unwrap_or_default();
        let random = random_bytes()?;
        // plan
        let Some(plan) = plan(
            config,
            &self.node_name,
            node,
            &Gathered {
                interfaces: &interfaces,
                vtep_state: &vtep_state,
                random,
            },
        )?
        else {
            return Ok(Outcome::WaitingForPodCidr);
        };
        debug!(?plan, "planned node state");
        // apply: local state first, so the MAC we announce survives a crash right after.
        let mut changed = Vec::new();
        if let Some(state) = &plan.vtep_state
            && sync_file(&paths.state_file, state.as_bytes())?
        {
            changed.push("vtep_state");
        }
        if sync_file(&paths.subnet_file, plan.subnet_env.as_bytes())? {
            changed.push("subnet_env");
        }
        if sync_file(&paths.conflist, plan.conflist.as_bytes())? {
            changed.push("conflist");
        }
        let mut patched: Vec<Node> = Vec::new();
        let current = node.metadata.annotations.clone().unwrap_or_default();
        if let Some(patch) = plan_annotation_patch(
            &config.compatibility.annotation_prefix,
            &current,
            &plan.annotations,
        ) {
            debug!(?patch, "patching node annotations");
            patched.push(apply_annotations(&self.nodes, &self.node_name, &patch).await?);
            changed.push("annotations");
        }
        let latest = patched.last().unwrap_or(node);
        let condition = latest
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == CONDITION_TYPE));
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        if let Some(cond) = plan_network_condition(condition, now) {
            patched.push(apply_network_condition(&self.nodes, &self.node_name, &cond).await?);
            changed.push("condition");
        }
        let last = patched.pop();
        let superseded = patched
            .iter()
            .filter_map(|n| n.metadata.resource_version.clone())
            .collect();
        for what in &changed {
            match *what {
                "annotations" | "condition" => self.metrics.node_patched(what),
                file => self.metrics.file_written(file),
            }
        }
        self.metrics.set_mtu(plan.mtu);
        Ok(Outcome::Synced {
            lease: plan.lease.to_string(),
            mtu: plan.mtu,
            changed,
            patched: last.map(Box::new),
            superseded,
        })
    }

    /// Runs a sync and turns its outcome into readiness, metrics and logs. Returns whether it
    /// failed (so the loop retries).
    async fn sync_and_report(
        &self,
        config: &AgentConfig,
        node: &Node,
        last: &mut Option<Outcome>,
    ) -> bool {
        let start = Instant::now();
        let result = self.sync(config, node).await;
        let seconds = start.elapsed().as_secs_f64();
        match result {
            Ok(Outcome::WaitingForPodCidr) => {
                self.metrics.sync("waiting", None, seconds);
                let reason = format!(
                    "waiting for kube-controller-manager to assign Node.spec.podCIDRs to node {} (is --allocate-node-cidrs set?)",
                    self.node_name
                );
                if last.as_ref() != Some(&Outcome::WaitingForPodCidr) {
                    info!(node = %self.node_name, "{reason}");
                }
                self.health.set_not_ready(reason);
                self.metrics.set_ready(false);
                *last = Some(Outcome::WaitingForPodCidr);
                false
            }
            Ok(outcome @ Outcome::Synced { .. }) => {
                self.metrics.sync("ok", None, seconds);
                if let Outcome::Synced {
                    lease,
                    mtu,
                    changed,
                    ..
                } = &outcome
                {
                    let was_ready = self.health.readiness().is_ok();
                    if !changed.is_empty() || !was_ready {
                        info!(node = %self.node_name, %lease, mtu, ?changed, "node network configured");
                    } else {
                        debug!(node = %self.node_name, "node network up to date");
                    }
                }
                self.health.set_ready();
                self.metrics.set_ready(true);
                *last = Some(outcome);
                false
            }
            Err(e) => {
                self.metrics.sync("error", Some(e.stage()), seconds);
                let reason = error_chain(&e);
                error!(node = %self.node_name, stage = e.stage(), error = %reason, "sync failed");
                self.health.set_not_ready(reason);
                self.metrics.set_ready(false);
                *last = None;
                true
            }
        }
    }

    /// The event loop: syncs on every change of the own Node or the configuration, on every
    /// resync tick and after failures (with backoff), until `shutdown` resolves.
    pub async fn run(
        &self,
        mut config: AgentConfig,
        mut config_changes: mpsc::Receiver<Result<AgentConfig, Error>>,
        resync: Duration,
        on_config: impl Fn(&AgentConfig),
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let selector = format!("metadata.name={}", self.node_name);
        let mut node_events = watcher(
            self.nodes.clone(),
            watcher::Config::default().fields(&selector),
        )
        .default_backoff()
        .applied_objects()
        .boxed();
        tokio::pin!(shutdown);
        let mut node: Option<Node> = None;
        let mut last: Option<Outcome> = None;
        let mut retry: Option<Duration> = None;
        // The first tick comes early, so a missing Node is reported within seconds.
        let mut next_sync = tokio::time::Instant::now() + resync.min(FIRST_TICK);
        let mut waited_for_node = false;
        let mut superseded: Vec<String> = Vec::new();
        self.health.set_not_ready(format!(
            "waiting for node {} from the API server",
            self.node_name
        ));
        check_plugins(&config);
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    info!("shutting down; files and node annotations stay in place");
                    return;
                }
                event = node_events.next() => match event {
                    Some(Ok(n)) => {
                        let stale = n.metadata.resource_version.as_ref().is_some_and(|rv| superseded.contains(rv));
                        if stale {
                            debug!("skipping a Node event that this agent's own later patch superseded");
                            continue;
                        }
                        node = Some(n);
                    }
                    Some(Err(e)) => {
                        let reason = error_chain(&e);
                        warn!(error = %reason, "watching the own Node failed; retrying");
                        // A node that is already configured stays ready: its files and
                        // annotations still hold while the API server is away.
                        if self.health.readiness().is_err() {
                            self.health.set_not_ready(format!("cannot watch node {}: {reason}", self.node_name));
                        }
                        continue;
                    }
                    None => {
                        error!("the Node watch ended");
                        return;
                    }
                },
                change = config_changes.recv() => match change {
                    Some(Ok(c)) => {
                        info!(fabric = %c.fabric, "configuration changed; re-applying");
                        self.metrics.config_reload("ok");
                        if c.metrics_port != config.metrics_port || c.health_port != config.health_port {
                            warn!("metricsPort/healthPort changes take effect when the agent restarts");
                        }
                        on_config(&c);
                        config = c;
                        check_plugins(&config);
                    }
                    Some(Err(e)) => {
                        self.metrics.config_reload("error");
                        error!(error = %error_chain(&e), "configuration file changed but cannot be used; keeping the previous one");
                        continue;
                    }
                    None => {}
                },
                () = tokio::time::sleep_until(next_sync) => {}
            }
            let Some(n) = &node else {
                if !waited_for_node {
                    info!(node = %self.node_name, "waiting for the Node object");
                    waited_for_node = true;
                }
                next_sync = tokio::time::Instant::now() + resync;
                continue;
            };
            let failed = self.sync_and_report(&config, n, &mut last).await;
            if let Some(Outcome::Synced {
                patched,
                superseded: newly,
                ..
            }) = &last
            {
                if let Some(p) = patched {
                    node = Some((**p).clone());
                }
                superseded = newly.clone();
            }
            let delay = if failed {
                let d = retry.map_or(MIN_RETRY, |d| (d * 2).min(MAX_RETRY));
                retry = Some(d);
                d
            } else {
                retry = None;
                resync
            };
            next_sync = tokio::time::Instant::now() + delay;
        }
    }
}

/// Warns when a plugin the conflist references is in none of the directories runtimes search.
fn check_plugins(config: &AgentConfig) {
    let mut dirs = vec![config.cni.bin_dir.as_str()];
    dirs.extend(
        FALLBACK_BIN_DIRS
            .iter()
            .filter(|d| **d != config.cni.bin_dir),
    );
    let missing: Vec<&str> = plan_plugin_types(&config.cni.chained_plugins)
        .into_iter()
        .filter(|p| !dirs.iter().any(|d| Path::new(d).join(p).exists()))
        .collect();
    if !missing.is_empty() {
        warn!(?missing, searched = ?dirs, "CNI plugins referenced by the conflist were not found; pods will fail to start until they are installed (e.g. Debian's containernetworking-plugins)");
    }
}

/// An error with its causes, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        // Some errors (kube's among them) already print their cause; do not repeat it.
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Builds a Node API client for the own node.
pub fn nodes(client: Client) -> Api<Node> {
    Api::all(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_read_like_sentences() {
        let e = Error::ReadMtu {
            interface: "eth0".into(),
            path: "/sys/class/net/eth0/mtu".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(
            error_chain(&e),
            "failed to read the MTU of interface eth0 from /sys/class/net/eth0/mtu: gone"
        );
        assert_eq!(e.stage(), "Gather");
    }
}
