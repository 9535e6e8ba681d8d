//! The policy engine's loop: index updates in, one nftables transaction out per burst of changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use tracing::{debug, error, info, warn};
use weft_crds::{AgentConfig, IpCidr};
use weft_policy::index::PodInfo;
use weft_policy::{
    Index, Ir, Kind, Memo, NodeInput, ObjectRef, PodKey, Reuse, apply_pod_changes,
    compile_node_memo, compile_node_reusing, render_ruleset_seeded, render_update,
};

use super::drops::DropCounters;
use super::watch::{Update, WatchKind, delete_from, watch_all};
use crate::agent::error_chain;
use crate::fastpath::kernel::Switch;
use crate::nft::{Family, NftApplier, TABLE_POLICY};
use crate::observe::Metrics;
use crate::uplink::read_interfaces;

/// The first retry delay after a failed transaction; doubled up to [`MAX_RETRY`].
pub const MIN_RETRY: Duration = Duration::from_millis(200);
/// The longest retry delay.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long the loop waits for a burst of watch events to settle before compiling.
pub const SETTLE: Duration = Duration::from_millis(5);

/// What the engine last did, shared with the HTTP server (verdict queries) and readiness.
#[derive(Debug, Default)]
pub struct PolicyStatus {
    /// The compiled state the kernel holds (`None` before the first transaction).
    pub ir: Option<Ir>,
    /// Objects the engine refuses, with the reason.
    pub problems: Vec<String>,
    /// The last failure to program the kernel, if the last attempt failed.
    pub error: Option<String>,
}

/// The engine.
pub struct PolicyEngine {
    /// API access.
    pub client: Client,
    /// This node.
    pub node_name: String,
    /// The nftables applier.
    pub nft: Arc<dyn NftApplier>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `/sys/class/net` (the node's addresses are always allowed to and from its pods).
    pub sys_class_net: PathBuf,
    /// Shared status.
    pub status: Arc<Mutex<PolicyStatus>>,
    /// The pod-to-pod fast path, which skips the forward hook policy is enforced in: told to
    /// stop before a ruleset with any policy is put in force, and that it may go once a ruleset
    /// without any is.
    pub fastpath: Arc<Switch>,
}

impl PolicyEngine {
    /// The node's pod CIDRs, waiting (with retries) until the Node has them.
    async fn pod_cidrs(&self) -> Vec<IpCidr> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut delay = Duration::from_millis(200);
        loop {
            match nodes.get(&self.node_name).await {
                Ok(n) => {
                    let cidrs: Vec<IpCidr> = weft_crds::node::node_pod_cidrs(&n)
                        .iter()
                        .filter_map(|c| c.parse().ok())
                        .collect();
                    if !cidrs.is_empty() {
                        return cidrs;
                    }
                }
                Err(e) => {
                    warn!(error = %error_chain(&e), "policy engine: cannot read the own Node yet")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn node_input(&self, pod_cidrs: &[IpCidr]) -> NodeInput {
        let host_addrs: Vec<IpAddr> = read_interfaces(&self.sys_class_net)
            .map(|ifs| ifs.into_iter().flat_map(|i| i.addrs).collect())
            .unwrap_or_default();
        NodeInput {
            node_name: self.node_name.clone(),
            host_addrs,
            pod_cidrs: pod_cidrs.to_vec(),
        }
    }

    /// A Warning Event on the policy object the engine refuses (part of), from this node's agent.
    async fn publish_refusal(&self, p: &weft_policy::Problem, cnp_version: &str) {
        use k8s_openapi::api::core::v1::ObjectReference;
        use kube::runtime::events::{Event, EventType, Recorder, Reporter};
        use weft_policy::Kind;
        let (api_version, kind) = match p.object.kind {
            Kind::NetworkPolicy => ("networking.k8s.io/v1".to_owned(), "NetworkPolicy"),
            Kind::ClusterNetworkPolicy => (
                format!("policy.networking.k8s.io/{cnp_version}"),
                "ClusterNetworkPolicy",
            ),
            Kind::AdminNetworkPolicy => (
                "policy.networking.k8s.io/v1alpha1".to_owned(),
                "AdminNetworkPolicy",
            ),
            Kind::BaselineAdminNetworkPolicy => (
                "policy.networking.k8s.io/v1alpha1".to_owned(),
                "BaselineAdminNetworkPolicy",
            ),
        };
        let reference = ObjectReference {
            api_version: Some(api_version),
            kind: Some(kind.to_owned()),
            name: Some(p.object.name.clone()),
            namespace: p.object.namespace.clone(),
            ..ObjectReference::default()
        };
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: "weft-agent".into(),
                instance: Some(self.node_name.clone()),
            },
        );
        let event = Event {
            type_: EventType::Warning,
            reason: "PolicyNotHonoured".into(),
            note: Some(format!("{} (its pods fail closed)", p.refusal)),
            action: "Compile".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(error = %e, "failed to publish an event on a refused policy");
        }
    }

    /// Applies `update`, which takes the kernel to `next`; returns when the change was in force,
    /// with `next` (a full replacement renders it on a blocking thread, which takes it there and
    /// back rather than a copy). A full replacement is rendered with the drop counters seeded
    /// from the table it replaces ([`DropCounters::apply_full`]), so that they keep counting
    /// across it. An incremental update goes make-before-break where it can
    /// ([`weft_policy::render::Staged`]): new chains and sets, then every element change as one
    /// native netlink batch (the moment packets see the change), then the removal of what
    /// nothing references any more.
    async fn apply(
        &self,
        update: weft_policy::Update,
        next: Ir,
        drops: &Arc<DropCounters>,
    ) -> Result<(Instant, Ir), String> {
        let joined = |e: tokio::task::JoinError| format!("the nftables task failed: {e}");
        let nft = self.nft.clone();
        if update.full {
            let drops = drops.clone();
            let (applied, next) = tokio::task::spawn_blocking(move || {
                let applied = drops
                    .apply_full(|seed| render_ruleset_seeded(&next, seed))
                    .map(|()| Instant::now());
                // A full compile and render (start-up, a relist) frees tens of MiB at once; give
                // the pages back rather than keep them resident as the allocator's free lists.
                // SAFETY: malloc_trim only releases free memory of the allocator.
                unsafe { libc::malloc_trim(0) };
                (applied, next)
            })
            .await
            .map_err(joined)?;
            return applied.map(|t| (t, next)).map_err(|e| error_chain(&e));
        }
        let task = if let Some(staged) = update.staged {
            tokio::task::spawn_blocking(move || {
                if !staged.create.is_empty() {
                    nft.apply(&staged.create)?;
                }
                nft.apply_elements(&staged.elements)?;
                let in_force = Instant::now();
                if !staged.remove.is_empty() {
                    nft.apply(&staged.remove)?;
                }
                Ok(in_force)
            })
        } else {
            let script = update.script;
            tokio::task::spawn_blocking(move || nft.apply(&script).map(|()| Instant::now()))
        };
        task.await
            .map_err(joined)?
            .map(|t| (t, next))
            .map_err(|e| error_chain(&e))
    }

    /// Enforces policy per `config` until `shutdown` resolves. With policy disabled, removes the
    /// table and idles.
    pub async fn run(&self, config: &AgentConfig, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        if !config.policy.enabled {
            let nft = self.nft.clone();
            let removed =
                tokio::task::spawn_blocking(move || nft.delete_table(Family::Inet, TABLE_POLICY))
                    .await;
            if let Ok(Err(e)) = removed {
                warn!(error = %error_chain(&e), "failed to remove the policy table");
            }
            info!("network policy is disabled by the fabric (spec.policy.enabled: false)");
            self.fastpath.policy_clear(true);
            shutdown.await;
            return;
        }
        let pod_cidrs = tokio::select! {
            c = self.pod_cidrs() => c,
            () = &mut shutdown => return,
        };
        let (mut updates, watched, kinds) = watch_all(
            self.client.clone(),
            config.policy.cluster_network_policy,
            config.policy.admin_network_policy,
        )
        .await;
        info!(
            cluster_network_policy = watched.cnp.unwrap_or("not served"),
            admin_network_policy = watched.anp,
            "policy engine watching"
        );
        // Dropped packets are read from the kernel at every scrape (the hook holds no strong
        // reference: the engine owns the reader).
        let drops = Arc::new(DropCounters::new(self.nft.clone(), self.metrics.clone()));
        let weak = Arc::downgrade(&drops);
        self.metrics.on_scrape(move || {
            if let Some(d) = weak.upgrade()
                && let Err(e) = d.sample()
            {
                debug!(error = %error_chain(&e), "could not read the policy drop counters");
            }
        });
        let mut index = Index::new();
        let mut keys: BTreeMap<WatchKind, BTreeSet<(String, String)>> = BTreeMap::new();
        let mut listed: BTreeSet<WatchKind> = BTreeSet::new();
        // Kinds in the middle of a (re-)list, with the objects listed so far.
        let mut listing: BTreeMap<WatchKind, BTreeSet<(String, String)>> = BTreeMap::new();
        // What the last compile knew: `Some` while the kernel holds exactly `status.ir` (the
        // compiled state lives there, shared with the verdict endpoint). Unknown at start (a
        // restart) and after a failed transaction: the next transaction replaces the table whole.
        let mut memo: Option<Memo> = None;
        // Pods changed since the last transaction, with what the index held of them before;
        // whether policies changed, and whether namespaces, nodes or a relist of pods did.
        let mut pods_changed: BTreeMap<PodKey, Option<PodInfo>> = BTreeMap::new();
        // Policies whose content changed since the last compile (their chains are compiled
        // again; the others' are taken from it).
        let mut policies_changed: BTreeSet<ObjectRef> = BTreeSet::new();
        let mut world_changed = false;
        let mut dirty = true;
        let mut since: Option<Instant> = None;
        let mut retry: Option<Duration> = None;
        let mut wake = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut last_problems: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                u = updates.next() => {
                    let Some(u) = u else {
                        error!("the policy watches ended");
                        return;
                    };
                    let mut batch = vec![u];
                    tokio::time::sleep(SETTLE).await;
                    while let Some(Some(more)) = updates.next().now_or_never() {
                        batch.push(more);
                    }
                    for u in batch {
                        // What the update is about, before the index forgets the old state.
                        enum About {
                            Pod(PodKey, Option<PodInfo>),
                            Policy(ObjectRef),
                            Policies,
                            World,
                        }
                        let about = match &u {
                            Update::Apply(o) | Update::Delete(o) if o.kind() == WatchKind::Pod => {
                                let (namespace, name) = o.key();
                                let k = PodKey { namespace, name };
                                let before = index.pod(&k).cloned();
                                About::Pod(k, before)
                            }
                            Update::Apply(o) | Update::Delete(o) => {
                                policy_ref(o.kind(), o.key()).map_or(About::World, About::Policy)
                            }
                            Update::Listed(o) => {
                                policy_ref(o.kind(), o.key()).map_or(About::World, About::Policy)
                            }
                            Update::ListDone(kind) if is_policy(*kind) => About::Policies,
                            Update::ListStart(..) | Update::ListDone(..) | Update::Error(..) => {
                                About::World
                            }
                        };
                        // A Node heartbeat or a watch error changes nothing and must not make
                        // the next change take the slow path.
                        if !handle(&mut index, &mut keys, &mut listed, &mut listing, u) {
                            continue;
                        }
                        dirty = true;
                        since.get_or_insert_with(Instant::now);
                        match about {
                            About::Pod(k, before) => {
                                pods_changed.entry(k).or_insert(before);
                            }
                            About::Policy(r) => {
                                policies_changed.insert(r);
                            }
                            // A relist: any of them may have changed.
                            About::Policies => {
                                policies_changed.extend(index.policies().map(|p| p.source.clone()))
                            }
                            About::World => world_changed = true,
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            wake = tokio::time::Instant::now() + Duration::from_secs(3600);
            // Nothing is compiled before every kind is listed, nor in the middle of a re-list
            // (its deletions are only known at its end).
            if !dirty || kinds.iter().any(|k| !listed.contains(k)) || !listing.is_empty() {
                continue;
            }
            // Pod churn alone: follow it from the last compile, without compiling (see
            // `weft_policy::incremental`); anything else, or what it cannot follow, compiles.
            let follow = policies_changed.is_empty() && !world_changed && retry.is_none();
            // Policies alone: compile, but take the selectors' sets and the unchanged policies'
            // chains from the last compile.
            let reuse = !world_changed && pods_changed.is_empty();
            let changes = std::mem::take(&mut pods_changed);
            let changed_policies = std::mem::take(&mut policies_changed);
            world_changed = false;
            if follow && let Some(m) = &memo {
                let started = Instant::now();
                let ops = {
                    let Ok(mut st) = self.status.lock() else {
                        return;
                    };
                    let node = NodeInput {
                        node_name: self.node_name.clone(),
                        ..NodeInput::default()
                    };
                    st.ir
                        .as_mut()
                        .and_then(|ir| apply_pod_changes(ir, m, &index, &node, &changes))
                };
                if let Some(ops) = ops {
                    self.metrics
                        .policy_stage("follow", started.elapsed().as_secs_f64());
                    dirty = false;
                    if ops.is_empty() {
                        since = None;
                        continue;
                    }
                    let nft = self.nft.clone();
                    let started = Instant::now();
                    let applied =
                        tokio::task::spawn_blocking(move || nft.apply_elements(&ops)).await;
                    self.metrics
                        .policy_stage("kernel", started.elapsed().as_secs_f64());
                    match applied {
                        Ok(Ok(())) => {
                            let seconds = since.take().map_or(0.0, |s| s.elapsed().as_secs_f64());
                            if let Ok(st) = self.status.lock()
                                && let Some(ir) = &st.ir
                            {
                                self.metrics.policy_applied("elements", seconds, ir);
                            }
                        }
                        Ok(Err(e)) => self.failed(
                            error_chain(&e),
                            &mut memo,
                            &mut retry,
                            &mut wake,
                            &mut dirty,
                        ),
                        Err(e) => self.failed(
                            format!("the nftables task failed: {e}"),
                            &mut memo,
                            &mut retry,
                            &mut wake,
                            &mut dirty,
                        ),
                    }
                    continue;
                }
            }
            let started = Instant::now();
            let node = self.node_input(&pod_cidrs);
            let (next, next_memo) = {
                let st = self.status.lock().ok();
                match (st.as_ref().and_then(|st| st.ir.as_ref()), &memo) {
                    (Some(ir), Some(memo)) if reuse => {
                        let reuse = Reuse {
                            ir,
                            memo,
                            changed: &changed_policies,
                        };
                        compile_node_reusing(&index, &node, reuse)
                    }
                    _ => compile_node_memo(&index, &node),
                }
            };
            self.metrics
                .policy_stage("compile", started.elapsed().as_secs_f64());
            let refused = index.problems();
            let problems: Vec<String> = refused.iter().map(ToString::to_string).collect();
            for (p, text) in refused.iter().zip(&problems) {
                if !last_problems.contains(text) {
                    warn!(problem = %text, "a policy cannot be honoured as written");
                    self.publish_refusal(p, watched.cnp.unwrap_or("v1beta1"))
                        .await;
                }
            }
            self.metrics.set_policy_problems(problems.len());
            last_problems.clone_from(&problems);
            let started = Instant::now();
            let update = {
                let Ok(st) = self.status.lock() else {
                    return;
                };
                match (&memo, &st.ir) {
                    (Some(_), Some(prev)) => render_update(prev, &next),
                    _ => weft_policy::render::Update {
                        full: true,
                        script: String::new(),
                        staged: None,
                    },
                }
            };
            self.metrics
                .policy_stage("render", started.elapsed().as_secs_f64());
            if !update.full && update.script.is_empty() {
                dirty = false;
                since = None;
                memo = Some(next_memo);
                if let Ok(mut s) = self.status.lock() {
                    s.ir = Some(next);
                    s.problems = problems;
                }
                continue;
            }
            debug!(
                full = update.full,
                bytes = update.script.len(),
                "applying policy"
            );
            let full = update.full;
            let enforcing = next.enforcing;
            if enforcing {
                // Before the ruleset: no packet may skip the forward hook once a policy is in force.
                self.fastpath.policy_clear(false);
            }
            let started = Instant::now();
            let applied = self.apply(update, next, &drops).await;
            if applied.is_ok() && !enforcing {
                self.fastpath.policy_clear(true);
            }
            self.metrics
                .policy_stage("kernel", started.elapsed().as_secs_f64());
            match applied {
                Ok((in_force, next)) => {
                    let seconds = since
                        .take()
                        .map_or(0.0, |s| in_force.duration_since(s).as_secs_f64());
                    self.metrics.policy_applied(
                        if full { "full" } else { "incremental" },
                        seconds,
                        &next,
                    );
                    if memo.is_none() {
                        info!(
                            pods = next.pods.len(),
                            sets = next.addr_sets.len(),
                            enforcing = next.enforcing,
                            "policy ruleset in force"
                        );
                    }
                    if let Ok(mut s) = self.status.lock() {
                        if memo.is_some()
                            && s.ir.as_ref().is_some_and(|p| p.enforcing != next.enforcing)
                        {
                            info!(
                                enforcing = next.enforcing,
                                "{}",
                                if next.enforcing {
                                    "the cluster has a policy now: forward hook attached"
                                } else {
                                    "the cluster has no policy left: forward hook detached"
                                }
                            );
                        }
                        s.ir = Some(next);
                        s.problems = problems;
                        s.error = None;
                    }
                    memo = Some(next_memo);
                    dirty = false;
                    retry = None;
                }
                Err(e) => self.failed(e, &mut memo, &mut retry, &mut wake, &mut dirty),
            }
        }
    }

    /// A transaction failed: the previous ruleset stays in force (the kernel aborted it), but what
    /// the kernel holds is no longer known for sure, so the next attempt, after a backoff,
    /// compiles and replaces the table whole.
    fn failed(
        &self,
        e: String,
        memo: &mut Option<Memo>,
        retry: &mut Option<Duration>,
        wake: &mut tokio::time::Instant,
        dirty: &mut bool,
    ) {
        self.metrics.policy_failed();
        let d = retry.map_or(MIN_RETRY, |d| (d * 2).min(MAX_RETRY));
        *retry = Some(d);
        error!(error = %e, retry_in = ?d, "applying the policy ruleset failed; the previous ruleset stays in force");
        if let Ok(mut s) = self.status.lock() {
            s.error = Some(e);
        }
        *memo = None;
        *dirty = true;
        *wake = tokio::time::Instant::now() + d;
    }
}

/// The policy object `kind` (namespace, name) names.
fn policy_ref(kind: WatchKind, (namespace, name): (String, String)) -> Option<ObjectRef> {
    let (kind, namespace) = match kind {
        WatchKind::NetworkPolicy => (Kind::NetworkPolicy, Some(namespace)),
        WatchKind::Cnp => (Kind::ClusterNetworkPolicy, None),
        WatchKind::Anp => (Kind::AdminNetworkPolicy, None),
        WatchKind::Banp => (Kind::BaselineAdminNetworkPolicy, None),
        WatchKind::Pod | WatchKind::Namespace | WatchKind::Node => return None,
    };
    Some(ObjectRef {
        kind,
        namespace,
        name,
    })
}

/// Whether `kind` is one of the policy kinds (not pods, namespaces or nodes).
fn is_policy(kind: WatchKind) -> bool {
    policy_ref(kind, Default::default()).is_some()
}

/// Feeds one update into the index; returns whether the index may have changed.
fn handle(
    index: &mut Index,
    keys: &mut BTreeMap<WatchKind, BTreeSet<(String, String)>>,
    listed: &mut BTreeSet<WatchKind>,
    listing: &mut BTreeMap<WatchKind, BTreeSet<(String, String)>>,
    u: Update,
) -> bool {
    match u {
        Update::Apply(o) => {
            keys.entry(o.kind()).or_default().insert(o.key());
            o.apply_to(index)
        }
        Update::Delete(o) => {
            keys.entry(o.kind()).or_default().remove(&o.key());
            delete_from(index, o.kind(), &o.key());
            true
        }
        Update::ListStart(kind) => {
            listing.insert(kind, BTreeSet::new());
            false
        }
        Update::Listed(o) => {
            listing.entry(o.kind()).or_default().insert(o.key());
            o.apply_to(index);
            true
        }
        Update::ListDone(kind) => {
            let fresh = listing.remove(&kind).unwrap_or_default();
            let old = keys.remove(&kind).unwrap_or_default();
            for gone in old.difference(&fresh) {
                delete_from(index, kind, gone);
            }
            if listed.insert(kind) {
                debug!(?kind, objects = fresh.len(), "initial list done");
            }
            keys.insert(kind, fresh);
            true
        }
        Update::Error(kind, e) => {
            warn!(?kind, error = %e, "a policy watch failed; retrying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str) -> super::super::watch::Object {
        let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "x", "name": name, "labels": {"app": name}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"podIPs": [{"ip": ip}]}
        }))
        .expect("pod");
        super::super::watch::Object::Pod(Box::new(p))
    }

    /// A (re-)list reaches the index object by object; at its end, what it did not list is gone,
    /// and only then is the kind listed.
    #[test]
    fn a_relist_applies_as_it_goes_and_deletes_the_unlisted_at_its_end() {
        let (mut index, mut keys, mut listed, mut listing) = (
            Index::new(),
            BTreeMap::new(),
            BTreeSet::new(),
            BTreeMap::new(),
        );
        let key = |n: &str| PodKey {
            namespace: "x".into(),
            name: n.into(),
        };
        let mut feed = |u: Update, index: &mut Index| {
            handle(index, &mut keys, &mut listed, &mut listing, u);
            (listed.contains(&WatchKind::Pod), listing.is_empty())
        };
        assert_eq!(
            feed(Update::ListStart(WatchKind::Pod), &mut index),
            (false, false)
        );
        feed(Update::Listed(pod("a", "10.244.1.2")), &mut index);
        assert!(
            index.pod(&key("a")).is_some(),
            "applied before the list ends"
        );
        feed(Update::Listed(pod("b", "10.244.1.3")), &mut index);
        assert_eq!(
            feed(Update::ListDone(WatchKind::Pod), &mut index),
            (true, true)
        );
        // The watch broke; while it was down, a was deleted.
        feed(Update::ListStart(WatchKind::Pod), &mut index);
        assert_eq!(
            feed(Update::Listed(pod("b", "10.244.1.3")), &mut index),
            (true, false),
            "a re-list in progress holds compiles back"
        );
        assert!(
            index.pod(&key("a")).is_some(),
            "not gone before the list ends"
        );
        feed(Update::ListDone(WatchKind::Pod), &mut index);
        assert!(index.pod(&key("a")).is_none() && index.pod(&key("b")).is_some());
    }

    /// The engine names a changed policy the way the index names its source: a wrong name would
    /// let a compile keep that policy's old chain.
    #[test]
    fn a_watched_policy_is_named_as_the_index_names_it() {
        use weft_crds::policy_api::{v1alpha1, v1beta1};
        let mut index = Index::new();
        let np: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(
            serde_json::json!({"metadata": {"namespace": "x", "name": "np"}, "spec": {"podSelector": {}}}),
        )
        .expect("np");
        index.apply_network_policy(&np);
        let cnp: v1beta1::ClusterNetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cnp"},
            "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}}}
        }))
        .expect("cnp");
        index.apply_cluster_network_policy(&cnp);
        let anp: v1alpha1::AdminNetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "anp"}, "spec": {"priority": 1, "subject": {"namespaces": {}}}
        }))
        .expect("anp");
        index.apply_admin_network_policy(&anp);
        let banp: v1alpha1::BaselineAdminNetworkPolicy = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "default"}, "spec": {"subject": {"namespaces": {}}}}),
        )
        .expect("banp");
        index.apply_baseline_admin_network_policy(&banp);
        let sources: BTreeSet<ObjectRef> = index.policies().map(|p| p.source.clone()).collect();
        let named: BTreeSet<ObjectRef> = [
            (WatchKind::NetworkPolicy, ("x", "np")),
            (WatchKind::Cnp, ("", "cnp")),
            (WatchKind::Anp, ("", "anp")),
            (WatchKind::Banp, ("", "default")),
        ]
        .into_iter()
        .filter_map(|(k, (ns, n))| policy_ref(k, (ns.into(), n.into())))
        .collect();
        assert_eq!(sources.len(), 4, "{sources:?}");
        assert_eq!(named, sources);
        assert_eq!(policy_ref(WatchKind::Pod, ("x".into(), "p".into())), None);
    }
}
