//! The fast path in the kernel: the program loaded through libbpf (ADR 0306), its tc ingress
//! filters, its maps. Everything here is an execution of [`super`]'s plan; a failure is reported
//! and leaves packets to the stack, never dropped.
//!
//! Ownership: a filter is weft's if it sits on clsact ingress with [`TC_HANDLE`] and
//! [`TC_PRIORITY`]; nothing else is touched. The filters outlive the agent (a restart or SIGTERM
//! keeps the path as it was), so a new agent replaces each of them with its own program, whose
//! maps start with the path off, and on its first sync removes those it no longer wants. The
//! fabric's deletion removes all of them ([`FastPath::detach_all`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::Mutex;

use futures::TryStreamExt;
use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder, TC_INGRESS, TcHookBuilder};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::{debug, info, warn};
use weft_crds::IpCidr;

use super::Config;
use crate::overlay::netlink::{link_name, route_addr};
use crate::subnet::Lease;

/// The compiled program (`bpf/fastpath.bpf.c`, built by `build.rs`).
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fastpath.bpf.o"));

/// The tc filter handle of weft's filters.
pub const TC_HANDLE: u32 = 0x57ef;
/// The tc filter priority of weft's filters.
pub const TC_PRIORITY: u32 = 0x57ef;

const PROGRAM: &str = "weft_fastpath";
const MAP_CONFIG: &str = "weft_fp_config";
const MAP_PODS: &str = "weft_fp_pods";
const MAP_COUNTERS: &str = "weft_fp_counters";

/// The program's counters, summed over the CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets the program forwarded itself.
    pub forwarded: u64,
    /// Pod-to-pod packets left to the stack because conntrack knows their flow.
    pub tracked: u64,
    /// Pod-to-pod packets left to the stack because the FIB would not forward them here.
    pub to_stack: u64,
}

/// What one [`FastPath::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Interfaces the filter was attached to (or replaced on).
    pub attached: Vec<String>,
    /// Interfaces weft's filter was removed from.
    pub detached: Vec<String>,
    /// Interfaces it could not be attached to, with the kernel's answer.
    pub failed: Vec<String>,
    /// Pod veths the program now redirects into.
    pub pods: usize,
}

#[derive(Default)]
struct State {
    config: Config,
    devices: Vec<String>,
    lease: Lease,
    /// Whether to attach at all.
    attach: bool,
    /// Whether the agent gave a plan yet (before it, a sync does nothing: a predecessor's
    /// filters stay as they were until this agent knows what it wants).
    planned: bool,
    /// ifindex → name of every interface with weft's filter, as far as this agent knows.
    attached: BTreeMap<u32, String>,
    pods: BTreeSet<u32>,
    /// Whether the first sync (which also removes earlier agents' filters) happened.
    adopted: bool,
}

/// The loaded program and what it is attached to.
pub struct FastPath {
    obj: Object,
    handle: Handle,
    state: Mutex<State>,
    /// One sync at a time (the node's sync and the agent's one-second tick both run them).
    syncing: tokio::sync::Mutex<()>,
}

/// A failure of the fast path, in words a person can act on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FastPathError(pub String);

fn err(what: impl std::fmt::Display) -> FastPathError {
    FastPathError(what.to_string())
}

impl FastPath {
    /// Loads the program (off) and opens a netlink socket in the current network namespace.
    /// Fails where the kernel cannot run it (no BTF, no conntrack kfuncs, no CAP_BPF or
    /// CAP_SYS_ADMIN); the caller then runs without it.
    pub fn load() -> Result<FastPath, FastPathError> {
        // libbpf's own messages (e.g. "Parent Qdisc doesn't exists" when a first sync looks for
        // a predecessor's filter where there is none) go to the log at debug level; what fails
        // is reported by the caller.
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, |_, msg| {
            debug!(target: "libbpf", "{}", msg.trim_end());
        })));
        let open = ObjectBuilder::default()
            .open_memory(OBJECT)
            .map_err(|e| err(format!("cannot open the fast path's BPF object: {e}")))?;
        let obj = open.load().map_err(|e| {
            err(format!(
                "the kernel refused the fast path's BPF program ({e}); it needs BTF \
                 (CONFIG_DEBUG_INFO_BTF), conntrack's BPF kfuncs (Linux 6.0 or newer) and \
                 CAP_BPF + CAP_NET_ADMIN (or CAP_SYS_ADMIN)"
            ))
        })?;
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| err(format!("cannot open a netlink socket: {e}")))?;
        tokio::spawn(connection);
        let fp = FastPath {
            obj,
            handle,
            state: Mutex::new(State::default()),
            syncing: tokio::sync::Mutex::new(()),
        };
        fp.write_config(&Config::default())?;
        Ok(fp)
    }

    fn map(&self, name: &str) -> Result<libbpf_rs::Map<'_>, FastPathError> {
        self.obj
            .maps()
            .find(|m| m.name() == name)
            .ok_or_else(|| err(format!("the BPF object has no map {name}")))
    }

    fn write_config(&self, config: &Config) -> Result<(), FastPathError> {
        self.map(MAP_CONFIG)?
            .update(&0u32.to_ne_bytes(), &config.encode(), MapFlags::ANY)
            .map_err(|e| err(format!("cannot write the fast path's configuration: {e}")))
    }

    /// Sets what the program is told, at once (the policy engine calls this with `enabled`
    /// false before it puts a policy in force).
    pub fn set_config(&self, config: Config) -> Result<(), FastPathError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| err("fast path state poisoned"))?;
        if st.config != config {
            self.write_config(&config)?;
            if st.config.enabled != config.enabled {
                info!(
                    enabled = config.enabled,
                    "pod-to-pod fast path {}",
                    if config.enabled { "on" } else { "off" }
                );
            }
            st.config = config;
        }
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.state.lock().map(|s| s.config).unwrap_or_default()
    }

    /// Sets the devices and the lease the next syncs attach for; `attach` false: none (the
    /// fabric does not want the path: its filters are removed).
    pub fn set_plan(&self, devices: Vec<String>, lease: Lease, attach: bool) {
        if let Ok(mut st) = self.state.lock() {
            st.devices = devices;
            st.lease = lease;
            st.attach = attach;
            st.planned = true;
        }
    }

    /// How many interfaces the filter is attached to.
    pub fn attached(&self) -> usize {
        self.state.lock().map(|s| s.attached.len()).unwrap_or(0)
    }

    /// The program's counters.
    pub fn counters(&self) -> Counters {
        let Ok(map) = self.map(MAP_COUNTERS) else {
            return Counters::default();
        };
        let sum = |key: u32| -> u64 {
            map.lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
                .ok()
                .flatten()
                .map(|per_cpu| {
                    per_cpu
                        .iter()
                        .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                        .map(u64::from_ne_bytes)
                        .sum()
                })
                .unwrap_or(0)
        };
        Counters {
            forwarded: sum(0),
            tracked: sum(1),
            to_stack: sum(2),
        }
    }

    /// weft's tc hook on `ifindex` (ingress, [`TC_HANDLE`], [`TC_PRIORITY`]).
    fn hook(&self, ifindex: u32) -> Result<libbpf_rs::TcHook, FastPathError> {
        let prog = self
            .obj
            .progs()
            .find(|p| p.name() == PROGRAM)
            .ok_or_else(|| err(format!("the BPF object has no program {PROGRAM}")))?;
        Ok(TcHookBuilder::new(prog.as_fd())
            .ifindex(ifindex as i32)
            .replace(true)
            .handle(TC_HANDLE)
            .priority(TC_PRIORITY)
            .hook(TC_INGRESS))
    }

    fn attach(&self, ifindex: u32) -> Result<(), FastPathError> {
        let mut hook = self.hook(ifindex)?;
        hook.create().map_err(err)?;
        hook.attach().map_err(err)?;
        Ok(())
    }

    /// Removes weft's filter from `ifindex`; `Ok(false)` if it had none.
    fn detach(&self, ifindex: u32) -> Result<bool, FastPathError> {
        let mut hook = self.hook(ifindex)?;
        match hook.detach() {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    libbpf_rs::ErrorKind::NotFound | libbpf_rs::ErrorKind::InvalidInput
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(err(e)),
        }
    }

    async fn links(&self) -> Result<Vec<LinkMessage>, FastPathError> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| err(format!("cannot dump links: {e}")))
    }

    /// The host ends of the node's pod veths: the devices of the host routes to addresses in the
    /// node's own subnets (the ptp layout weft-cni and the reference ptp plugin make).
    async fn pod_links(
        &self,
        lease: &Lease,
        veths: &BTreeSet<u32>,
    ) -> Result<BTreeSet<u32>, FastPathError> {
        let mut out = BTreeSet::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessageBuilder::<IpAddr>::new().build();
            req.header.address_family = family;
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(req)
                .execute()
                .try_collect()
                .await
                .map_err(|e| err(format!("cannot dump routes: {e}")))?;
            out.extend(
                routes
                    .iter()
                    .filter_map(|r| pod_route_link(r, lease))
                    .filter(|i| veths.contains(i)),
            );
        }
        Ok(out)
    }

    /// Attaches to the planned devices and the pod veths, keeps the pod map in step, and removes
    /// weft's filter where it is no longer wanted (on the first sync: from every other link).
    pub async fn sync(&self) -> Result<SyncReport, FastPathError> {
        let _one = self.syncing.lock().await;
        let (devices, lease, attach, adopted, planned) = {
            let st = self
                .state
                .lock()
                .map_err(|_| err("fast path state poisoned"))?;
            (
                st.devices.clone(),
                st.lease,
                st.attach,
                st.adopted,
                st.planned,
            )
        };
        if !planned {
            return Ok(SyncReport::default());
        }
        let links = self.links().await?;
        let names: BTreeMap<u32, String> = links
            .iter()
            .filter_map(|l| Some((l.header.index, link_name(l)?.to_owned())))
            .collect();
        let veths: BTreeSet<u32> = links
            .iter()
            .filter(|l| is_veth(l))
            .map(|l| l.header.index)
            .collect();
        let pods = if attach {
            self.pod_links(&lease, &veths).await?
        } else {
            BTreeSet::new()
        };
        let mut wanted: BTreeMap<u32, String> = names
            .iter()
            .filter(|(_, n)| attach && devices.contains(n))
            .map(|(i, n)| (*i, n.clone()))
            .collect();
        for i in &pods {
            if let Some(n) = names.get(i) {
                wanted.insert(*i, n.clone());
            }
        }

        let mut report = SyncReport::default();
        let (attached_before, pods_before) = {
            let st = self
                .state
                .lock()
                .map_err(|_| err("fast path state poisoned"))?;
            (st.attached.clone(), st.pods.clone())
        };
        // The pod map first, so a veth is a redirect target before its filter sends anything.
        let pod_map = self.map(MAP_PODS)?;
        for i in pods.difference(&pods_before) {
            pod_map
                .update(&i.to_ne_bytes(), &1u32.to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| err(format!("cannot add pod link {i}: {e}")))?;
        }
        let mut attached = BTreeMap::new();
        for (i, name) in &wanted {
            if attached_before.get(i) == Some(name) {
                attached.insert(*i, name.clone());
                continue;
            }
            match self.attach(*i) {
                Ok(()) => {
                    attached.insert(*i, name.clone());
                    report.attached.push(name.clone());
                }
                Err(e) => report.failed.push(format!("{name}: {e}")),
            }
        }
        let stale: Vec<(u32, String)> = if adopted {
            attached_before
                .iter()
                .filter(|(i, n)| !wanted.contains_key(i) && names.get(i) == Some(n))
                .map(|(i, n)| (*i, n.clone()))
                .collect()
        } else {
            names
                .iter()
                .filter(|(i, _)| !wanted.contains_key(i))
                .map(|(i, n)| (*i, n.clone()))
                .collect()
        };
        for (i, name) in stale {
            match self.detach(i) {
                Ok(true) => report.detached.push(name),
                Ok(false) => {}
                Err(e) => report.failed.push(format!("{name} (detach): {e}")),
            }
        }
        for i in pods_before.difference(&pods) {
            // ENOENT: gone already.
            let _ = pod_map.delete(&i.to_ne_bytes());
        }
        report.pods = pods.len();
        if let Ok(mut st) = self.state.lock() {
            st.attached = attached;
            st.pods = pods;
            st.adopted = true;
        }
        if !report.attached.is_empty() || !report.detached.is_empty() {
            debug!(?report, "fast path filters");
        }
        for f in &report.failed {
            warn!(failure = %f, "fast path filter not attached; that interface's packets take the stack");
        }
        Ok(report)
    }

    /// Removes weft's filter from every link (the fabric's deletion).
    pub async fn detach_all(&self) -> Result<usize, FastPathError> {
        let _one = self.syncing.lock().await;
        self.set_config(Config::default())?;
        let mut removed = 0;
        for l in self.links().await? {
            if self.detach(l.header.index)? {
                removed += 1;
            }
        }
        if let Ok(mut st) = self.state.lock() {
            st.attached.clear();
            st.pods.clear();
        }
        Ok(removed)
    }
}

fn is_veth(l: &LinkMessage) -> bool {
    l.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}

/// The output link of a main-table host route (/32, /128) into one of the lease's subnets.
fn pod_route_link(r: &RouteMessage, lease: &Lease) -> Option<u32> {
    if r.header.table != RouteHeader::RT_TABLE_MAIN {
        return None;
    }
    let mut dst = None;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = route_addr(d),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dst = dst?;
    let host = match dst {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if r.header.destination_prefix_length != host {
        return None;
    }
    let inside = [lease.v4, lease.v6]
        .into_iter()
        .flatten()
        .any(|c: IpCidr| c.contains_addr(dst) && c.addr() != dst);
    inside.then_some(oif).flatten()
}

/// The fast path as the agent and the policy engine drive it: whether the fabric wants it, whether
/// the cluster is clear of policy, and the program when it could be loaded (`None`: this kernel
/// cannot run it; every call is then a no-op and packets take the stack).
pub struct Switch {
    fast_path: Option<FastPath>,
    state: Mutex<SwitchState>,
    last: Mutex<Counters>,
}

#[derive(Default)]
struct SwitchState {
    wanted: bool,
    policy_clear: bool,
    networks: crate::subnet::Networks,
}

impl Switch {
    /// A switch over `fast_path`, off until both the fabric and the policy engine allow it.
    pub fn new(fast_path: Option<FastPath>) -> Switch {
        Switch {
            fast_path,
            state: Mutex::new(SwitchState::default()),
            last: Mutex::new(Counters::default()),
        }
    }

    /// Whether the program is loaded.
    pub fn loaded(&self) -> bool {
        self.fast_path.is_some()
    }

    fn apply(&self) {
        let (Some(fp), Ok(st)) = (&self.fast_path, self.state.lock()) else {
            return;
        };
        let config = Config::of(&st.networks, super::enabled(st.wanted, st.policy_clear));
        if let Err(e) = fp.set_config(config) {
            warn!(error = %e, "cannot update the fast path");
        }
    }

    /// The policy engine's word: `false` before it puts a ruleset with any policy in force, `true`
    /// once a ruleset without any is in force (or when policy is off in the fabric). The program
    /// is told before this returns.
    pub fn policy_clear(&self, clear: bool) {
        if let Ok(mut st) = self.state.lock() {
            st.policy_clear = clear;
        }
        self.apply();
    }

    /// The fabric's word and the node's plan (from the agent's sync).
    pub fn configure(
        &self,
        wanted: bool,
        networks: crate::subnet::Networks,
        devices: Vec<String>,
        lease: Lease,
    ) {
        if let Ok(mut st) = self.state.lock() {
            st.wanted = wanted;
            st.networks = networks;
        }
        if let Some(fp) = &self.fast_path {
            fp.set_plan(devices, lease, wanted);
        }
        self.apply();
    }

    /// Attaches and detaches as the node's links and pods now are, then records the metrics.
    pub async fn sync(&self, metrics: &crate::observe::Metrics) -> Option<SyncReport> {
        let fp = self.fast_path.as_ref()?;
        let report = match fp.sync().await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "fast path sync failed; packets take the stack");
                return None;
            }
        };
        let now = fp.counters();
        if let Ok(mut last) = self.last.lock() {
            let grown = [
                ("forwarded", now.forwarded.saturating_sub(last.forwarded)),
                ("tracked", now.tracked.saturating_sub(last.tracked)),
                ("to_stack", now.to_stack.saturating_sub(last.to_stack)),
            ];
            metrics.fastpath(grown, fp.attached(), fp.config().enabled);
            *last = now;
        }
        Some(report)
    }

    /// Removes weft's filters from every link (the fabric's deletion); the count removed.
    pub async fn detach_all(&self) -> Result<usize, FastPathError> {
        match &self.fast_path {
            Some(fp) => fp.detach_all().await,
            None => Ok(0),
        }
    }
}
