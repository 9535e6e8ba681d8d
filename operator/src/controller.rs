//! The reconciler: gather → validate → build → apply → status, plus the finalizer and the choice of
//! the one active fabric.
//!
//! ```text
//!  NetworkFabric event ─┐   (also: owned DaemonSet/ConfigMap/ServiceAccount/ClusterRole(Binding)
//!                       │    changes, agent pod changes, a change of the node facts the operator
//!                       │    reads (agents' WeftAgentReady, pod MTU, podCIDRs, addresses),
//!                       │    periodic resync)
//!                       ▼
//!  deleting? ── yes ──► cleanup (DaemonSet first, foreground; then the rest) ─► drop finalizer
//!     │ no
//!  oldest fabric? ─ no ─► status Degraded/Conflict, nothing applied
//!     │ yes
//!  finalizer ─► gather (nodes, service range) ─► validate ─ violations ─► status Degraded/InvalidSpec
//!                                                  │ ok
//!                                     build ─► apply (SSA, force) ─► status from the rollout
//! ```
//!
//! Invariants: only the active fabric ever writes agent objects; an invalid fabric writes nothing but
//! its status; status and events are written only when the computed status differs from the stored
//! one, so a quiet cluster causes no writes; cleanup deletes only objects whose ownerReference names
//! this fabric's uid.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, warn};
use weft_crds::cidr::IpCidr;
use weft_crds::{NetworkFabric, NetworkFabricStatus};

use crate::build::{
    AGENT_CONFIG_MAP, AGENT_NAME, AGENT_POD_SELECTOR, AgentObjects, BuildParams, FABRIC_LABEL,
    build_agent_objects, effective_mtu,
};
use crate::error::{Error, chain};
use crate::facts::{ClusterFacts, node_facts};
use crate::metrics::Metrics;
use crate::status::{
    Observation, Outcome, REASON_APPLY_FAILED, REASON_BUILD_FAILED, REASON_GATHER_FAILED,
    compute_status, transition_events,
};
use crate::validate::validate_fabric;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "weft-operator";
/// Finalizer that makes deletion wait for cleanup.
pub const FINALIZER: &str = "weft.dev/cleanup";
/// How long cleanup waits for agent pods to stop before deleting the rest anyway.
pub const CLEANUP_POD_GRACE: Duration = Duration::from_secs(120);
/// Resync of a healthy fabric (catches node and service-range changes).
const RESYNC: Duration = Duration::from_secs(300);
/// Recheck of a fabric in conflict or while a rollout or cleanup is under way.
const RECHECK: Duration = Duration::from_secs(10);
/// Longest backoff after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Shared state of the reconciler.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Namespace and default image for the agent objects.
    pub params: BuildParams,
    /// Identifies the operator in the Kubernetes Events it publishes.
    pub reporter: Reporter,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Every fabric, from the controller's reflector (to choose the active one).
    pub store: Store<NetworkFabric>,
    /// Asks the controller to reconcile every fabric (after the active one is gone).
    pub reconcile_all: UnboundedSender<()>,
    /// Consecutive failures per fabric, for exponential backoff.
    pub failures: Mutex<HashMap<String, u32>>,
}

/// The active fabric: the oldest by creationTimestamp, ties broken by name.
pub fn select_active<'a>(
    fabrics: impl IntoIterator<Item = &'a NetworkFabric>,
) -> Option<&'a NetworkFabric> {
    fabrics.into_iter().min_by(|a, b| {
        let key = |f: &'a NetworkFabric| {
            (
                f.metadata.creation_timestamp.as_ref().map(|t| t.0),
                f.metadata.name.as_deref(),
            )
        };
        // A missing timestamp (never from the API server) sorts last.
        match (key(a), key(b)) {
            ((Some(ta), na), (Some(tb), nb)) => ta.cmp(&tb).then(na.cmp(&nb)),
            ((None, _), (Some(_), _)) => std::cmp::Ordering::Greater,
            ((Some(_), _), (None, _)) => std::cmp::Ordering::Less,
            ((None, na), (None, nb)) => na.cmp(&nb),
        }
    })
}

/// Backoff after `failures` consecutive failures: 1 s, 2 s, 4 s, ... up to 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64
        .checked_shl(failures.saturating_sub(1).min(16))
        .unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// Whether `meta` has an ownerReference to the fabric with `uid`.
pub fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.uid == uid)
}

/// Maps an owned object to the fabric named in its ownerReferences (for `Controller::watches`; the
/// stock `owns` would attach the child's namespace to the cluster-scoped fabric's reference).
pub fn owner_fabric<K: Resource>(obj: &K) -> Vec<ObjectRef<NetworkFabric>> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "NetworkFabric" && o.api_version == "weft.dev/v1alpha1")
        .map(|o| ObjectRef::new(&o.name))
        .collect()
}

/// Maps an agent pod to its fabric through the `weft.dev/fabric` label.
pub fn labelled_fabric(pod: &Pod) -> Option<ObjectRef<NetworkFabric>> {
    pod.labels().get(FABRIC_LABEL).map(|n| ObjectRef::new(n))
}

/// Reconciles one fabric, recording metrics.
pub async fn reconcile(fabric: Arc<NetworkFabric>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile_inner(&fabric, &ctx).await;
    ctx.metrics
        .observe(start.elapsed(), result.as_ref().err().map(Error::stage));
    if let Ok(mut failures) = ctx.failures.lock() {
        if result.is_ok() {
            failures.remove(&fabric.name_any());
        } else {
            *failures.entry(fabric.name_any()).or_insert(0) += 1;
        }
    }
    result
}

/// Requeues a failed fabric with exponential backoff.
pub fn error_policy(fabric: Arc<NetworkFabric>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx
        .failures
        .lock()
        .ok()
        .and_then(|f| f.get(&fabric.name_any()).copied())
        .unwrap_or(1);
    let delay = backoff(n);
    warn!(fabric = %fabric.name_any(), stage = err.stage(), error = %chain(err), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_inner(fabric: &NetworkFabric, ctx: &Context) -> Result<Action, Error> {
    let name = fabric.metadata.name.clone().ok_or(Error::Unnamed)?;
    let has_finalizer = fabric.finalizers().iter().any(|f| f == FINALIZER);

    if fabric.metadata.deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        return match cleanup(fabric, ctx).await? {
            Some(waiting_for) => {
                debug!(fabric = %name, %waiting_for, "cleanup in progress");
                Ok(Action::requeue(Duration::from_secs(2)))
            }
            None => {
                remove_finalizer(fabric, &name, ctx).await?;
                info!(fabric = %name, "cleanup complete; finalizer removed");
                // Another fabric may become active now.
                let _ = ctx.reconcile_all.unbounded_send(());
                Ok(Action::await_change())
            }
        };
    }

    let all = ctx.store.state();
    // A deleted fabric whose finalizer is gone is only waiting for the watch to drop it.
    let candidates = all.iter().map(|f| f.as_ref()).filter(|f| {
        f.metadata.deletion_timestamp.is_none() || f.finalizers().iter().any(|x| x == FINALIZER)
    });
    let active = select_active(candidates)
        .and_then(|f| f.metadata.name.clone())
        .unwrap_or_else(|| name.clone());
    if active != name {
        debug!(fabric = %name, %active, "not the active fabric");
        let obs = Observation {
            generation: fabric.metadata.generation,
            outcome: Outcome::Conflict { active: &active },
            daemon_set: None,
            agent_pods: &[],
            fabric: &name,
            nodes: &[],
        };
        write_status(fabric, &obs, ctx).await?;
        return Ok(Action::requeue(RECHECK));
    }

    if !has_finalizer {
        add_finalizer(fabric, &name, ctx).await?;
    }

    match pipeline(fabric, &name, ctx).await {
        Ok(action) => Ok(action),
        Err(err) => {
            let reason = match &err {
                Error::Gather { .. } => REASON_GATHER_FAILED,
                Error::Build(_) => REASON_BUILD_FAILED,
                Error::Apply { .. } => REASON_APPLY_FAILED,
                // The status write itself failed: nothing more to report with.
                _ => return Err(err),
            };
            let uid = fabric.uid().unwrap_or_default();
            let ds_api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ctx.params.namespace);
            let ds = ds_api
                .get_opt(AGENT_NAME)
                .await
                .ok()
                .flatten()
                .filter(|d| owned_by(&d.metadata, &uid));
            let obs = Observation {
                generation: fabric.metadata.generation,
                outcome: Outcome::Failed {
                    reason,
                    message: chain(&err),
                },
                daemon_set: ds.as_ref(),
                agent_pods: &[],
                fabric: &name,
                nodes: &[],
            };
            if let Err(status_err) = write_status(fabric, &obs, ctx).await {
                warn!(fabric = %name, error = %chain(&status_err), "could not report the failure in status");
            }
            Err(err)
        }
    }
}

/// gather → validate → build → apply → status for the active fabric.
async fn pipeline(fabric: &NetworkFabric, name: &str, ctx: &Context) -> Result<Action, Error> {
    // gather
    let facts = gather_facts(ctx).await?;
    let ns = &ctx.params.namespace;
    let ds_api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), ns);

    // validate
    let violations = validate_fabric(fabric, &facts);
    if !violations.is_empty() {
        info!(fabric = %name, count = violations.len(), "invalid spec; nothing is rolled out");
        let uid = fabric.uid().unwrap_or_default();
        let ds = get_opt(&ds_api, AGENT_NAME, "the agent DaemonSet")
            .await?
            .filter(|d| owned_by(&d.metadata, &uid));
        let pods = agent_pods(ctx).await?;
        let obs = Observation {
            generation: fabric.metadata.generation,
            outcome: Outcome::InvalidSpec(&violations),
            daemon_set: ds.as_ref(),
            agent_pods: &pods,
            fabric: name,
            nodes: &facts.nodes,
        };
        write_status(fabric, &obs, ctx).await?;
        return Ok(Action::requeue(RESYNC));
    }

    // build
    let objects = build_agent_objects(fabric, &ctx.params).map_err(Error::Build)?;

    // apply
    let ds = apply_all(&objects, ctx).await?;

    // status
    let pods = agent_pods(ctx).await?;
    let obs = Observation {
        generation: fabric.metadata.generation,
        outcome: Outcome::Applied {
            config_hash: &objects.config_hash,
            mtu: effective_mtu(fabric, &facts.nodes),
        },
        daemon_set: Some(&ds),
        agent_pods: &pods,
        fabric: name,
        nodes: &facts.nodes,
    };
    let status = write_status(fabric, &obs, ctx).await?;
    let settled = status
        .conditions
        .iter()
        .any(|c| c.type_ == crate::status::AVAILABLE && c.status == "True");
    Ok(Action::requeue(if settled { RESYNC } else { RECHECK }))
}

/// Reads the cluster facts validation needs.
async fn gather_facts(ctx: &Context) -> Result<ClusterFacts, Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let nodes = nodes
        // From the API server's watch cache (resourceVersion=0): cheap on large clusters, and a
        // slightly stale list is corrected by the next resync.
        .list(&ListParams::default().match_any())
        .await
        .map_err(|source| Error::Gather {
            what: "nodes",
            source,
        })?;
    let nodes = nodes.items.iter().map(node_facts).collect();
    Ok(ClusterFacts {
        service_ranges: service_ranges(ctx).await?,
        nodes,
    })
}

/// The service IP ranges: every ServiceCIDR (`kubernetes` is the API server's default one), or the
/// `default/kubernetes` Service's cluster IPs where the ServiceCIDR API is not served.
async fn service_ranges(ctx: &Context) -> Result<Vec<(IpCidr, String)>, Error> {
    let cidrs: Api<ServiceCIDR> = Api::all(ctx.client.clone());
    match cidrs.list(&ListParams::default().match_any()).await {
        Ok(list) => {
            let ranges: Vec<(IpCidr, String)> = list
                .items
                .into_iter()
                .flat_map(|sc| {
                    let name = sc.name_any();
                    sc.spec
                        .and_then(|s| s.cidrs)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| IpCidr::parse_lenient(&c).ok())
                        .map(move |c| (c, format!("ServiceCIDR {name}")))
                })
                .collect();
            if !ranges.is_empty() {
                return Ok(ranges);
            }
        }
        // Not served (older API server) or not allowed: fall back to the Service.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => {}
        Err(source) => {
            return Err(Error::Gather {
                what: "the ServiceCIDRs",
                source,
            });
        }
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), "default");
    let svc = get_opt(&services, "kubernetes", "the default/kubernetes Service").await?;
    let ips = svc
        .and_then(|s| s.spec)
        .map(|s| match (s.cluster_ips, s.cluster_ip) {
            (Some(list), _) if !list.is_empty() => list,
            (_, Some(one)) => vec![one],
            _ => Vec::new(),
        })
        .unwrap_or_default();
    Ok(ips
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| {
            (
                IpCidr::host(ip),
                "the clusterIP of Service default/kubernetes".to_owned(),
            )
        })
        .collect())
}

async fn get_opt<K>(api: &Api<K>, name: &str, what: &'static str) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|source| Error::Gather { what, source })
}

async fn agent_pods(ctx: &Context) -> Result<Vec<Pod>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.params.namespace);
    // Watch cache is fine: every agent pod change triggers another reconcile.
    pods.list(&ListParams::default().labels(AGENT_POD_SELECTOR).match_any())
        .await
        .map(|l| l.items)
        .map_err(|source| Error::Gather {
            what: "the agent pods",
            source,
        })
}

async fn apply_one<K>(api: &Api<K>, obj: &K, kind: &'static str) -> Result<K, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(obj))
        .await
        .map_err(|source| Error::Apply {
            kind,
            name: match &obj.meta().namespace {
                Some(ns) => format!("{ns}/{name}"),
                None => name.clone(),
            },
            source,
        })
}

/// Applies every agent object; RBAC and configuration first, so new agent pods find them.
async fn apply_all(objs: &AgentObjects, ctx: &Context) -> Result<DaemonSet, Error> {
    let c = &ctx.client;
    let ns = &ctx.params.namespace;
    apply_one(
        &Api::<ServiceAccount>::namespaced(c.clone(), ns),
        &objs.service_account,
        "ServiceAccount",
    )
    .await?;
    apply_one(
        &Api::<ClusterRole>::all(c.clone()),
        &objs.cluster_role,
        "ClusterRole",
    )
    .await?;
    apply_one(
        &Api::<ClusterRoleBinding>::all(c.clone()),
        &objs.cluster_role_binding,
        "ClusterRoleBinding",
    )
    .await?;
    apply_one(
        &Api::<ConfigMap>::namespaced(c.clone(), ns),
        &objs.config_map,
        "ConfigMap",
    )
    .await?;
    let ds = apply_one(
        &Api::<DaemonSet>::namespaced(c.clone(), ns),
        &objs.daemon_set,
        "DaemonSet",
    )
    .await?;
    debug!(hash = %objs.config_hash, "applied the agent objects");
    Ok(ds)
}

/// Computes and, when it changed, writes the status; publishes events for the transitions.
async fn write_status(
    fabric: &NetworkFabric,
    obs: &Observation<'_>,
    ctx: &Context,
) -> Result<NetworkFabricStatus, Error> {
    let name = fabric.name_any();
    let prev = fabric.status.as_ref();
    let next = compute_status(prev, obs, Timestamp::now());
    if prev == Some(&next) {
        return Ok(next);
    }
    let api: Api<NetworkFabric> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": "weft.dev/v1alpha1",
        "kind": "NetworkFabric",
        "status": next,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Status {
        name: name.clone(),
        source,
    })?;
    let reference = fabric.object_ref(&());
    // A fresh recorder per status change: kube's recorder folds events with the same reason into
    // one series and keeps the first note, which would show a stale message (an old config hash).
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    for event in transition_events(prev, &next) {
        info!(fabric = %name, reason = %event.reason, note = event.note.as_deref().unwrap_or(""), "status transition");
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(fabric = %name, error = %e, "failed to publish an event");
        }
    }
    Ok(next)
}

async fn add_finalizer(fabric: &NetworkFabric, name: &str, ctx: &Context) -> Result<(), Error> {
    let mut finalizers = fabric.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    patch_finalizers(fabric, name, finalizers, ctx).await
}

async fn remove_finalizer(fabric: &NetworkFabric, name: &str, ctx: &Context) -> Result<(), Error> {
    let finalizers = fabric
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(fabric, name, finalizers, ctx).await
}

/// Merge patch with the resourceVersion as a precondition: a concurrent change makes it fail (409)
/// and the reconcile is retried on fresh data.
async fn patch_finalizers(
    fabric: &NetworkFabric,
    name: &str,
    finalizers: Vec<String>,
    ctx: &Context,
) -> Result<(), Error> {
    let api: Api<NetworkFabric> = Api::all(ctx.client.clone());
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": fabric.resource_version(),
        }
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::Finalizer {
            name: name.to_owned(),
            source,
        })
}

/// Whether cleanup has waited long enough for agent pods to stop.
pub fn pod_grace_expired(deletion: Option<Timestamp>, now: Timestamp) -> bool {
    let grace = i64::try_from(CLEANUP_POD_GRACE.as_secs()).unwrap_or(i64::MAX);
    deletion.is_some_and(|d| now.as_second() - d.as_second() >= grace)
}

/// Deletes what the fabric owns. Returns what it still waits for, or None when everything is gone.
///
/// The DaemonSet goes first with foreground propagation, so the agents stop (and clean their
/// nodes) while their RBAC still exists; the rest follows once the DaemonSet is gone, or after
/// [`CLEANUP_POD_GRACE`] if agent pods on unreachable nodes never stop.
async fn cleanup(fabric: &NetworkFabric, ctx: &Context) -> Result<Option<String>, Error> {
    let uid = fabric.uid().unwrap_or_default();
    let c = &ctx.client;
    let ns = &ctx.params.namespace;
    let ds_api: Api<DaemonSet> = Api::namespaced(c.clone(), ns);
    if let Some(waiting) = delete_owned(&ds_api, AGENT_NAME, &uid, "DaemonSet", true).await? {
        let deletion = fabric.metadata.deletion_timestamp.as_ref().map(|t| t.0);
        if !pod_grace_expired(deletion, Timestamp::now()) {
            return Ok(Some(waiting));
        }
        warn!(fabric = %fabric.name_any(), "agent pods did not stop in time; deleting the remaining agent objects");
    }
    let mut waiting = Vec::new();
    let cm: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    let sa: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
    let crb: Api<ClusterRoleBinding> = Api::all(c.clone());
    let cr: Api<ClusterRole> = Api::all(c.clone());
    waiting.extend(delete_owned(&cm, AGENT_CONFIG_MAP, &uid, "ConfigMap", false).await?);
    waiting.extend(delete_owned(&crb, AGENT_NAME, &uid, "ClusterRoleBinding", false).await?);
    waiting.extend(delete_owned(&cr, AGENT_NAME, &uid, "ClusterRole", false).await?);
    waiting.extend(delete_owned(&sa, AGENT_NAME, &uid, "ServiceAccount", false).await?);
    Ok((!waiting.is_empty()).then(|| waiting.join(", ")))
}

/// Deletes `name` if the fabric owns it; returns a description while it still exists.
async fn delete_owned<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    kind: &'static str,
    foreground: bool,
) -> Result<Option<String>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let err = |source| Error::Cleanup {
        kind,
        name: name.to_owned(),
        source,
    };
    let Some(obj) = api.get_opt(name).await.map_err(err)? else {
        return Ok(None);
    };
    if !owned_by(obj.meta(), uid) {
        return Ok(None);
    }
    if obj.meta().deletion_timestamp.is_none() {
        let params = if foreground {
            DeleteParams::foreground()
        } else {
            DeleteParams::background()
        };
        match api.delete(name, &params).await {
            Ok(_) => info!(kind, name, "deleting"),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
            Err(source) => return Err(err(source)),
        }
    }
    match api.get_opt(name).await.map_err(err)? {
        Some(_) => Ok(Some(format!("{kind} {name}"))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use weft_crds::NetworkFabricSpec;

    fn fabric(name: &str, created: i64) -> NetworkFabric {
        let mut f = NetworkFabric::new(name, NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]));
        f.metadata.creation_timestamp = Some(Time(
            Timestamp::from_second(1_800_000_000 + created).expect("ts"),
        ));
        f
    }

    #[test]
    fn the_oldest_fabric_is_active_ties_by_name() {
        let cases: &[(&[(&str, i64)], &str)] = &[
            (&[("only", 5)], "only"),
            (&[("b", 5), ("a", 9)], "b"),
            (&[("b", 5), ("a", 5)], "a"),
            (&[("z", 1), ("y", 2), ("x", 3)], "z"),
        ];
        for (fabrics, want) in cases {
            let fs: Vec<NetworkFabric> = fabrics.iter().map(|(n, t)| fabric(n, *t)).collect();
            let got = select_active(fs.iter()).and_then(|f| f.metadata.name.clone());
            assert_eq!(got.as_deref(), Some(*want), "{fabrics:?}");
        }
        let mut undated = fabric("a", 0);
        undated.metadata.creation_timestamp = None;
        let fs = [undated, fabric("b", 100)];
        assert_eq!(
            select_active(fs.iter())
                .and_then(|f| f.metadata.name.clone())
                .as_deref(),
            Some("b")
        );
        assert!(select_active(std::iter::empty()).is_none());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let got: Vec<u64> = [0, 1, 2, 3, 9, 10, 50]
            .iter()
            .map(|n| backoff(*n).as_secs())
            .collect();
        assert_eq!(got, [1, 1, 2, 4, 256, 300, 300]);
    }

    #[test]
    fn owner_mapping_ignores_other_owners() {
        let mut cm = ConfigMap::default();
        cm.metadata.namespace = Some("weft-system".into());
        cm.metadata.owner_references = Some(vec![
            OwnerReference {
                api_version: "weft.dev/v1alpha1".into(),
                kind: "NetworkFabric".into(),
                name: "default".into(),
                uid: "u1".into(),
                ..OwnerReference::default()
            },
            OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "x".into(),
                uid: "u2".into(),
                ..OwnerReference::default()
            },
        ]);
        let refs = owner_fabric(&cm);
        assert_eq!(refs, vec![ObjectRef::<NetworkFabric>::new("default")]);
        assert_eq!(refs[0].namespace, None, "fabrics are cluster-scoped");
        assert!(owned_by(&cm.metadata, "u1"));
        assert!(!owned_by(&cm.metadata, "u3"));
    }

    #[test]
    fn cleanup_waits_for_pods_only_so_long() {
        let d = Timestamp::from_second(1_800_000_000).expect("ts");
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("ts");
        assert!(!pod_grace_expired(Some(d), at(10)));
        assert!(pod_grace_expired(Some(d), at(120)));
        assert!(!pod_grace_expired(None, at(1000)));
    }
}
