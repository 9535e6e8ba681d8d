//! The sync pipeline and the agent's event loop.
//!
//! One sync: **gather** (the watched Node, local interfaces, the VTEP state file) → **plan** (pure:
//! [`plan()`] in [`plan`] turns them into a [`Plan`]) → **apply** (VTEP state, subnet.env, conflist, node
//! annotations, then `NetworkUnavailable=False` last, so the node is declared usable only once pods
//! can be wired). Each apply step writes only what differs, so a sync of an unchanged world is
//! free and idempotent; the loop runs one on every Node event, configuration change and resync tick.
//!
//! Invariants: nothing is written while the lease is invalid (a podCIDR outside the fabric); an
//! agent restart or SIGTERM leaves a working node behind, like flannel, and start-up never flushes.
//! The only deletions are of weft-owned kernel state that the plan no longer holds (a removed
//! peer's entries, a stale route: the overlay's GC) and, on the fabric's deletion, the uninstall
//! in [`teardown`].

use std::collections::BTreeSet;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use weft_crds::AgentConfig;
use weft_crds::agent_config::{
    AGENT_CONDITION_TYPE, AGENT_REASON_READY, AGENT_REASON_RECONCILED,
    AGENT_REASON_WAITING_FOR_POD_CIDR,
};
use weft_crds::fabric::Backend;

use self::node::{apply_annotations, apply_node_condition};
use crate::Error;
use crate::cni::install::{Compare, sync_plugin};
use crate::cni::{FALLBACK_BIN_DIRS, plan_plugin_types};
use crate::fastpath::kernel::Switch;
use crate::fastpath::plan_devices;
use crate::files::{read_optional, sync_file};
use crate::flannel::{
    Peer, PeerProblem, STATE_FILE_NAME, parse_peers, parse_vtep_state, plan_annotation_patch,
};
use crate::masquerade::{plan_masquerade, sync_masquerade};
use crate::nft::{NftApplier, TableChange};
use crate::observe::{Health, Metrics};
use crate::overlay::diff::diff_datapath;
use crate::overlay::netlink::{Kernel, Netlink};
use crate::overlay::plan::{OverlayInput, plan_datapath};
use crate::overlay::untracked::sync_untracked;
use crate::subnet::{CONDITION_TYPE, plan_agent_condition, plan_network_condition};
use crate::uplink::read_interfaces;

pub mod node;
pub mod plan;
pub mod teardown;

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
        /// How many peers the overlay knows.
        peers: usize,
        /// Nodes that are not routed, with the reason.
        problems: Vec<String>,
        /// Foreign or wrong state this or a recent sync replaced (see [`Reconciled`]).
        reconciled: Option<Reconciled>,
    },
}

/// Devices with weft's names but someone else's values (an old flannel, a hand edit) that a sync
/// replaced with the fabric's, and when. The node's `WeftAgentReady` condition says so, with reason
/// [`AGENT_REASON_RECONCILED`], for [`RECONCILED_NOTICE_SECONDS`]; the operator repeats it on the
/// fabric's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// What was wrong, per device, e.g. `device flannel.1 has VNI 42 (want 1)`.
    pub what: Vec<String>,
    /// When it was replaced.
    pub at: k8s_openapi::jiff::Timestamp,
}

/// The words of a [`Reconciled`] notice, e.g. `at 2026-12-02T00:41:02Z replaced device flannel.1,
/// which had VNI 42 (want 1), with the fabric's values`.
pub fn render_reconciled(r: &Reconciled) -> String {
    format!(
        "at {} replaced with the fabric's values: {}",
        r.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        r.what.join("; ")
    )
}

/// How long a reconciled device is reported after the fact.
pub const RECONCILED_NOTICE_SECONDS: i64 = 600;

impl Reconciled {
    /// The notice still in force at `now`: `fresh` (this sync's), else `previous` while recent.
    fn carry(
        fresh: Option<Reconciled>,
        previous: Option<&Reconciled>,
        now: k8s_openapi::jiff::Timestamp,
    ) -> Option<Reconciled> {
        fresh.or_else(|| {
            previous
                .filter(|r| now.as_second() - r.at.as_second() < RECONCILED_NOTICE_SECONDS)
                .cloned()
        })
    }
}

/// The agent: its configuration, its node and its outputs.
pub struct Agent<K = Netlink> {
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
    /// The kernel the overlay is programmed into.
    pub kernel: K,
    /// The nftables applier (masquerade, policy).
    pub nft: Arc<dyn NftApplier>,
    /// weft's CNI plugin binary, installed into `cni.binDir` before the conflist names it
    /// (`None`: not installed by this agent, e.g. in tests).
    pub cni_plugin: Option<PathBuf>,
    /// The pod-to-pod fast path (a no-op where it could not be loaded).
    pub fastpath: Arc<Switch>,
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

/// The fabric's VXLAN UDP port (validated by the CRD's schema; flannel's default otherwise).
fn vxlan_port(config: &AgentConfig) -> u16 {
    u16::try_from(config.overlay.port).unwrap_or(8472)
}

/// Runs an nftables sync on a blocking thread.
async fn nft_task(
    sync: impl FnOnce() -> Result<TableChange, Error> + Send + 'static,
) -> Result<TableChange, Error> {
    tokio::task::spawn_blocking(sync)
        .await
        .map_err(|e| Error::NftTask(e.to_string()))?
}

/// The overlay settings of a configuration, as the planner takes them.
fn overlay_input<'a>(
    config: &AgentConfig,
    plan: &'a Plan,
    peers: &'a [Peer],
    on_link: &'a BTreeSet<IpAddr>,
) -> OverlayInput<'a> {
    OverlayInput {
        backend: config.overlay.backend,
        vni: u32::try_from(config.overlay.vni).unwrap_or(1),
        port: vxlan_port(config),
        direct_routing: config.overlay.direct_routing,
        configured_mtu: u32::try_from(config.overlay.mtu).ok().filter(|m| *m > 0),
        tx_checksum_offload: config.overlay.tx_checksum_offload,
        lease: &plan.lease,
        uplinks: &plan.uplinks,
        macs: &plan.macs,
        peers,
        on_link,
    }
}

impl<K: Kernel + Sync> Agent<K> {
    /// Programs the overlay toward `peers`: plan, observe, diff, apply only the difference.
    /// Returns the number of objects written and the devices it replaced or removed because they
    /// held someone else's values.
    async fn sync_overlay(
        &self,
        config: &AgentConfig,
        plan: &Plan,
        peers: &[Peer],
        problems: &[PeerProblem],
    ) -> Result<(usize, Vec<String>), Error> {
        let candidates: Vec<IpAddr> = match (config.overlay.backend, config.overlay.direct_routing)
        {
            (Backend::Vxlan, false) => Vec::new(),
            _ => peers
                .iter()
                .flat_map(|p| [p.public.v4, p.public.v6])
                .flatten()
                .collect(),
        };
        let on_link = self.kernel.on_link(&candidates).await;
        let overlay = plan_datapath(&overlay_input(config, plan, peers, &on_link));
        let all_problems: Vec<String> = problems
            .iter()
            .chain(&overlay.problems)
            .map(ToString::to_string)
            .collect();
        self.metrics
            .set_peers(overlay.programmed_peers, all_problems.len());
        for p in &all_problems {
            debug!(problem = %p, "peer not routed");
        }
        let observed = self.kernel.observe().await?;
        let changes = diff_datapath(&overlay.datapath, &observed);
        if changes.is_empty() {
            return Ok((0, Vec::new()));
        }
        info!(%changes, "programming the overlay");
        debug!(?changes, "overlay changes");
        for (name, reason) in &changes.delete_devices {
            info!(device = %name, %reason, "removing device");
        }
        self.metrics.gc("route", changes.del_routes.len());
        self.metrics.gc("neighbour", changes.del_neighbours.len());
        self.metrics.gc("fdb", changes.del_fdb.len());
        self.metrics.gc("device", changes.delete_devices.len());
        let report = self.kernel.apply(&changes).await;
        let failed: Vec<&'static str> = report.failures.iter().map(|f| f.op).collect();
        self.metrics.netlink(&report.done, &failed);
        if report.failures.is_empty() {
            let replaced = changes.replaced();
            return Ok((changes.len(), replaced));
        }
        for f in &report.failures {
            warn!(op = f.op, object = %f.object, error = %f.error, "overlay operation failed");
        }
        Err(Error::OverlayApply {
            failed: report.failures.len(),
            total: changes.len(),
            first: report
                .failures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    /// One sync of the node against `config`, with `others` the other Nodes of the cluster (see
    /// the module docs).
    pub async fn sync(
        &self,
        config: &AgentConfig,
        node: &Node,
        others: &[Node],
    ) -> Result<Outcome, Error> {
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
        let (peers, problems) = parse_peers(
            others,
            &self.node_name,
            &config.compatibility.annotation_prefix,
            &plan.networks,
        );
        // apply: local state first, so the MAC we announce survives a crash right after; then the
        // overlay, so that a peer learning our annotations finds our VTEP already there.
        let mut changed = Vec::new();
        if let Some(state) = &plan.vtep_state
            && sync_file(&paths.state_file, state.as_bytes())?
        {
            changed.push("vtep_state");
        }
        let (written, replaced) = self.sync_overlay(config, &plan, &peers, &problems).await?;
        if written > 0 {
            changed.push("overlay");
        }
        let reconciled = (!replaced.is_empty()).then(|| Reconciled {
            what: replaced,
            at: k8s_openapi::jiff::Timestamp::now(),
        });
        // Masquerade: the node's own addresses and its peers' are never masqueraded toward.
        let node_addresses: Vec<IpAddr> = [plan.uplinks.v4.as_ref(), plan.uplinks.v6.as_ref()]
            .into_iter()
            .flatten()
            .map(|u| u.addr)
            .chain(
                peers
                    .iter()
                    .flat_map(|p| [p.public.v4, p.public.v6])
                    .flatten(),
            )
            .collect();
        let masquerade = plan_masquerade(
            &plan.networks,
            &plan.lease,
            &config.masquerade,
            &node_addresses,
        )?;
        let nft = self.nft.clone();
        if nft_task(move || sync_masquerade(&masquerade, &*nft))
            .await?
            .wrote()
        {
            changed.push("masquerade");
        }
        // The overlay's own packets stay out of conntrack (see `overlay::untracked`).
        let port = (config.overlay.backend == Backend::Vxlan).then(|| vxlan_port(config));
        let nft = self.nft.clone();
        if nft_task(move || sync_untracked(port, &*nft)).await?.wrote() {
            changed.push("untracked");
        }
        // The fast path follows the overlay: its devices exist now (see `fastpath`).
        self.fastpath.configure(
            config.overlay.fast_path,
            plan.networks,
            plan_devices(
                config.overlay.backend,
                config.overlay.direct_routing,
                u32::try_from(config.overlay.vni).unwrap_or(1),
                &plan.networks,
                &plan.uplinks,
            ),
            plan.lease,
        );
        if let Some(r) = self.fastpath.sync(&self.metrics).await
            && (!r.attached.is_empty() || !r.detached.is_empty())
        {
            changed.push("fastpath");
        }
        if sync_file(&paths.subnet_file, plan.subnet_env.as_bytes())? {
            changed.push("subnet_env");
        }
        if let Some(source) = &self.cni_plugin
            && sync_plugin(source, Path::new(&config.cni.bin_dir), Compare::Size)?
        {
            changed.push("cni_plugin");
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
        let condition = node_condition(latest, CONDITION_TYPE);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        if let Some(cond) = plan_network_condition(condition, now) {
            patched.push(apply_node_condition(&self.nodes, &self.node_name, &cond).await?);
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
                "overlay" | "masquerade" | "untracked" | "fastpath" => {}
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
            peers: peers.len(),
            problems: problems.iter().map(ToString::to_string).collect(),
            reconciled,
        })
    }

    /// Publishes the node's `WeftAgentReady` condition when it differs from what the Node holds.
    /// Failing to publish is logged, not fatal: the next sync tries again.
    async fn report_condition(
        &self,
        node: Option<&Node>,
        ready: bool,
        reason: &str,
        message: &str,
    ) -> Option<Node> {
        let current = node.and_then(|n| node_condition(n, AGENT_CONDITION_TYPE));
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let cond = plan_agent_condition(current, ready, reason, message, now)?;
        match apply_node_condition(&self.nodes, &self.node_name, &cond).await {
            Ok(n) => {
                self.metrics.node_patched("agent_condition");
                Some(n)
            }
            Err(e) => {
                warn!(error = %error_chain(&e), "failed to publish the WeftAgentReady condition");
                None
            }
        }
    }

    /// Runs a sync and turns its outcome into readiness, the node's `WeftAgentReady` condition,
    /// metrics and logs. Returns whether it failed (so the loop retries) and the Node as the last
    /// patch returned it.
    async fn sync_and_report(
        &self,
        config: &AgentConfig,
        node: &Node,
        others: &[Node],
        last: &mut Option<Outcome>,
    ) -> (bool, Option<Node>) {
        let start = Instant::now();
        let result = self.sync(config, node, others).await;
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
                self.health.set_not_ready(reason.clone());
                self.metrics.set_ready(false);
                *last = Some(Outcome::WaitingForPodCidr);
                let patched = self
                    .report_condition(
                        Some(node),
                        false,
                        AGENT_REASON_WAITING_FOR_POD_CIDR,
                        &reason,
                    )
                    .await;
                (false, patched)
            }
            Ok(mut outcome @ Outcome::Synced { .. }) => {
                self.metrics.sync("ok", None, seconds);
                let mut message = String::from("the node is programmed");
                let mut reason = AGENT_REASON_READY;
                if let Outcome::Synced { reconciled, .. } = &mut outcome {
                    let previous = match last.as_ref() {
                        Some(Outcome::Synced { reconciled, .. }) => reconciled.as_ref(),
                        _ => None,
                    };
                    *reconciled = Reconciled::carry(
                        reconciled.take(),
                        previous,
                        k8s_openapi::jiff::Timestamp::now(),
                    );
                }
                if let Outcome::Synced {
                    lease,
                    mtu,
                    changed,
                    peers,
                    problems,
                    reconciled,
                    ..
                } = &outcome
                {
                    let was_ready = self.health.readiness().is_ok();
                    if !changed.is_empty() || !was_ready {
                        info!(node = %self.node_name, %lease, mtu, peers, ?changed, "node network configured");
                    } else {
                        debug!(node = %self.node_name, "node network up to date");
                    }
                    let previous = match last.as_ref() {
                        Some(Outcome::Synced { problems, .. }) => problems.clone(),
                        _ => Vec::new(),
                    };
                    for p in problems.iter().filter(|p| !previous.contains(p)) {
                        warn!(problem = %p, "a peer is not routed");
                    }
                    message = format!("subnet {lease}, MTU {mtu}, {peers} peers routed");
                    if !problems.is_empty() {
                        message.push_str(&format!("; not routed: {}", problems.join("; ")));
                    }
                    if let Some(r) = reconciled {
                        reason = AGENT_REASON_RECONCILED;
                        message = format!("{}; {message}", render_reconciled(r));
                    }
                }
                let base = match &outcome {
                    Outcome::Synced { patched, .. } => patched.as_deref().cloned(),
                    Outcome::WaitingForPodCidr => None,
                };
                self.health.set_ready();
                self.metrics.set_ready(true);
                *last = Some(outcome);
                let patched = self
                    .report_condition(Some(base.as_ref().unwrap_or(node)), true, reason, &message)
                    .await;
                (false, patched)
            }
            Err(e) => {
                self.metrics.sync("error", Some(e.stage()), seconds);
                let reason = error_chain(&e);
                error!(node = %self.node_name, stage = e.stage(), error = %reason, "sync failed");
                self.health.set_not_ready(reason.clone());
                self.metrics.set_ready(false);
                *last = None;
                let patched = self
                    .report_condition(Some(node), false, e.agent_reason(), &reason)
                    .await;
                (true, patched)
            }
        }
    }

    /// The event loop: syncs on every change of any Node (the own one and the peers) or of the
    /// configuration, on every resync tick and after failures (with backoff), until `shutdown`
    /// resolves, and returns the configuration last in force. Bursts of Node events are coalesced
    /// into one sync.
    pub async fn run(
        &self,
        mut config: AgentConfig,
        mut config_changes: mpsc::Receiver<Result<AgentConfig, Error>>,
        resync: Duration,
        on_config: impl Fn(&AgentConfig),
        shutdown: impl std::future::Future<Output = ()>,
    ) -> AgentConfig {
        let (store, writer) = reflector::store::<Node>();
        let mut node_events = reflector(
            writer,
            watcher(self.nodes.clone(), watcher::Config::default()).modify(slim_node),
        )
        .default_backoff()
        .touched_objects()
        .boxed();
        tokio::pin!(shutdown);
        let mut own_patched: Option<Node> = None;
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
        self.install_plugin(&config);
        check_plugins(&config);
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    info!("shutting down");
                    return config;
                }
                event = node_events.next() => match event {
                    Some(Ok(n)) => {
                        let own = n.metadata.name.as_deref() == Some(self.node_name.as_str());
                        let stale = own && n.metadata.resource_version.as_ref().is_some_and(|rv| superseded.contains(rv));
                        if stale {
                            debug!("skipping a Node event that this agent's own later patch superseded");
                            continue;
                        }
                        if own {
                            own_patched = None;
                        }
                        // Coalesce a burst (a resync of 500 nodes is one sync, not 500).
                        while let Some(Some(more)) = node_events.next().now_or_never() {
                            if let Ok(m) = more
                                && m.metadata.name.as_deref() == Some(self.node_name.as_str())
                            {
                                own_patched = None;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        let reason = error_chain(&e);
                        warn!(error = %reason, "watching Nodes failed; retrying");
                        // A node that is already configured stays ready: its datapath, files and
                        // annotations still hold while the API server is away.
                        if self.health.readiness().is_err() {
                            self.health.set_not_ready(format!("cannot watch nodes: {reason}"));
                        }
                        continue;
                    }
                    None => {
                        error!("the Node watch ended");
                        return config;
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
                        self.install_plugin(&config);
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
            let all = store.state();
            let own = own_patched.clone().or_else(|| {
                all.iter()
                    .find(|n| n.metadata.name.as_deref() == Some(self.node_name.as_str()))
                    .map(|n| (**n).clone())
            });
            let Some(n) = own else {
                if !waited_for_node {
                    info!(node = %self.node_name, "waiting for the Node object");
                    waited_for_node = true;
                }
                next_sync = tokio::time::Instant::now() + resync;
                continue;
            };
            let others: Vec<Node> = all
                .iter()
                .filter(|o| o.metadata.name.as_deref() != Some(self.node_name.as_str()))
                .map(|o| (**o).clone())
                .collect();
            let (failed, reported) = self.sync_and_report(&config, &n, &others, &mut last).await;
            superseded.clear();
            if let Some(Outcome::Synced {
                patched,
                superseded: newly,
                ..
            }) = &last
            {
                if let Some(p) = patched {
                    own_patched = Some((**p).clone());
                }
                superseded.clone_from(newly);
            }
            if let Some(r) = reported {
                if let Some(p) = &own_patched
                    && let Some(rv) = &p.metadata.resource_version
                {
                    superseded.push(rv.clone());
                }
                own_patched = Some(r);
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

/// What the agent keeps of a Node (the own one and every peer): its metadata without
/// `managedFields`, its spec (podCIDRs), and of its status the addresses and conditions. Images,
/// node info, capacity and the field managers are most of a Node and none of them is read here;
/// a cluster of 500 nodes would otherwise hold them all.
pub fn slim_node(n: &mut Node) {
    n.metadata.managed_fields = None;
    if let Some(s) = n.status.as_mut() {
        *s = k8s_openapi::api::core::v1::NodeStatus {
            addresses: s.addresses.take(),
            conditions: s.conditions.take(),
            ..Default::default()
        };
    }
}

/// The condition of `type_` on `node`, if any.
fn node_condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
}

impl<K> Agent<K> {
    /// Installs (or upgrades) weft's CNI plugin, comparing contents; a failure is logged here and
    /// fails the next sync, which reports it on the node.
    fn install_plugin(&self, config: &AgentConfig) {
        let Some(source) = &self.cni_plugin else {
            return;
        };
        match sync_plugin(source, Path::new(&config.cni.bin_dir), Compare::Contents) {
            Ok(true) => {
                info!(from = %source.display(), bin_dir = %config.cni.bin_dir, "installed weft's CNI plugin")
            }
            Ok(false) => debug!("weft's CNI plugin is up to date"),
            Err(e) => error!(error = %error_chain(&e), "cannot install weft's CNI plugin"),
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
    let missing: Vec<&str> = plan_plugin_types(config.cni.plugin, &config.cni.chained_plugins)
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

    fn at(second: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(second).expect("timestamp")
    }

    #[test]
    fn a_slim_node_keeps_what_the_sync_reads() {
        let mut n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-2", "annotations": {"flannel.alpha.coreos.com/public-ip": "10.99.0.12"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
            "spec": {"podCIDRs": ["10.244.2.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.99.0.12"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "images": [{"names": ["registry.k8s.io/pause:3.10"], "sizeBytes": 1}],
                "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                    "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "",
                    "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": ""}}
        }))
        .expect("node");
        let before = n.clone();
        slim_node(&mut n);
        assert_eq!(n.metadata.managed_fields, None);
        assert_eq!(n.metadata.annotations, before.metadata.annotations);
        assert_eq!(n.spec, before.spec);
        let (s, b) = (n.status.expect("status"), before.status.expect("status"));
        assert_eq!(s.addresses, b.addresses);
        assert_eq!(s.conditions, b.conditions);
        assert_eq!((s.images, s.node_info), (None, None));
    }

    #[test]
    fn a_reconciled_device_is_reported_for_ten_minutes_then_forgotten() {
        let old = Reconciled {
            what: vec!["device flannel.1 has VNI 42 (want 1)".into()],
            at: at(1_000),
        };
        let new = Reconciled {
            what: vec!["device flannel.1 has port 8472 (want 4789)".into()],
            at: at(1_200),
        };
        // A sync that replaced something reports that, whatever came before.
        assert_eq!(
            Reconciled::carry(Some(new.clone()), Some(&old), at(1_200)),
            Some(new)
        );
        // A quiet sync keeps the last notice while it is recent...
        assert_eq!(
            Reconciled::carry(None, Some(&old), at(1_000 + RECONCILED_NOTICE_SECONDS - 1)),
            Some(old.clone())
        );
        // ...and drops it after that.
        assert_eq!(
            Reconciled::carry(None, Some(&old), at(1_000 + RECONCILED_NOTICE_SECONDS)),
            None
        );
        assert_eq!(Reconciled::carry(None, None, at(1_000)), None);
        assert_eq!(
            render_reconciled(&old),
            "at 1970-01-01T00:16:40Z replaced with the fabric's values: device flannel.1 has VNI 42 (want 1)"
        );
    }

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
