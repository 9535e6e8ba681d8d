//! The status stage: a fabric's status as a pure function of what the pipeline decided and what the
//! cluster shows (the agent DaemonSet's rollout and the agent pods).
//!
//! Conditions follow the Kubernetes conventions (and the tigera operator's `Installation`):
//! - `Available`: every desired agent runs the current configuration and is ready;
//! - `Progressing`: a rollout is under way (`RollingOut`, "2 of 3 nodes updated");
//! - `Degraded`: something needs a person: `Conflict`, `InvalidSpec`, `GatherFailed`,
//!   `BuildFailed`, `ApplyFailed`,
//!   `AgentCrashLooping`, `AgentImagePullFailed`. `Degraded=False` says `AsExpected`, or
//!   `DatapathReconciled` naming the nodes whose agents recently replaced a device that held someone
//!   else's values (an old flannel's VNI, a hand edit) with the fabric's.
//!
//! Invariants: `lastTransitionTime` changes only when a condition's status changes, so recomputing an
//! unchanged situation yields an identical status (no write, no event, no reconcile loop); every
//! condition carries the generation it describes; [`transition_events`] reports exactly the changes.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use weft_crds::NetworkFabricStatus;
use weft_crds::agent_config::{
    AGENT_REASON_CONFIG_INVALID, AGENT_REASON_DATAPATH_FAILED, AGENT_REASON_READY,
    AGENT_REASON_RECONCILED, AGENT_REASON_SYNC_FAILED, AGENT_REASON_WAITING_FOR_POD_CIDR,
};
use weft_crds::fabric::NodeCounts;
use weft_crds::validate::SpecViolation;

use crate::facts::NodeFacts;
use crate::names::FABRIC_LABEL;

/// Condition type: every desired agent is updated and ready.
pub const AVAILABLE: &str = "Available";
/// Condition type: a rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: something needs attention.
pub const DEGRADED: &str = "Degraded";
/// Condition type (kstatus): the fabric is fully reconciled and serving; always present.
pub const READY: &str = "Ready";
/// Condition type (kstatus): the operator is still working towards the spec; present only when
/// True.
pub const RECONCILING: &str = "Reconciling";
/// Condition type (kstatus): progress needs a person or is failing; present only when True.
pub const STALLED: &str = "Stalled";

/// Reason: another fabric is active.
pub const REASON_CONFLICT: &str = "Conflict";
/// Reason: the spec disagrees with the cluster or with itself.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Reason: applying the agent objects failed (retried with backoff).
pub const REASON_APPLY_FAILED: &str = "ApplyFailed";
/// Reason: reading the cluster facts failed (retried with backoff).
pub const REASON_GATHER_FAILED: &str = "GatherFailed";
/// Reason: building the agent objects failed (retried with backoff).
pub const REASON_BUILD_FAILED: &str = "BuildFailed";
/// Reason: an agent refuses its configuration on its node (missing interface, podCIDR outside the
/// fabric, ...).
pub const REASON_AGENT_CONFIG_INVALID: &str = "AgentConfigInvalid";
/// Reason: an agent fails to program its node's kernel (netlink, nftables).
pub const REASON_AGENT_DATAPATH_FAILED: &str = "AgentDatapathFailed";
/// Reason: an agent fails to read or write its node's files or the API.
pub const REASON_AGENT_SYNC_FAILED: &str = "AgentSyncFailed";
/// Reason: a node has had no podCIDR for longer than [`POD_CIDR_GRACE_SECONDS`].
pub const REASON_AGENT_WAITING_FOR_POD_CIDR: &str = "AgentWaitingForPodCIDR";
/// Reason: an agent reports a failure with a reason this operator does not know.
pub const REASON_AGENT_FAILED: &str = "AgentFailed";
/// Reason: agent pods are crash-looping.
pub const REASON_CRASH_LOOPING: &str = "AgentCrashLooping";
/// Reason: agent pods cannot pull their image.
pub const REASON_IMAGE_PULL_FAILED: &str = "AgentImagePullFailed";
/// Reason: the DaemonSet is rolling out.
pub const REASON_ROLLING_OUT: &str = "RollingOut";
/// Reason: the rollout finished.
pub const REASON_ROLLOUT_COMPLETE: &str = "RolloutComplete";
/// Reason: all agents ready.
pub const REASON_AGENTS_READY: &str = "AgentsReady";
/// Reason: some agents are not ready or not updated.
pub const REASON_AGENTS_NOT_READY: &str = "AgentsNotReady";
/// Reason: no node should run an agent.
pub const REASON_NO_NODES: &str = "NoNodes";
/// Reason: the DaemonSet does not exist (yet).
pub const REASON_NO_DAEMONSET: &str = "DaemonSetMissing";
/// Reason: nothing is wrong.
pub const REASON_AS_EXPECTED: &str = "AsExpected";
/// Reason (Degraded=False): nothing is wrong, and some agents recently replaced foreign or wrong
/// state (see [`agent_notices`]).
pub const REASON_DATAPATH_RECONCILED: &str = "DatapathReconciled";

/// An agent waiting this long for its node's podCIDR is reported (kube-controller-manager assigns
/// one within seconds when it allocates node CIDRs at all).
pub const POD_CIDR_GRACE_SECONDS: i64 = 60;
/// At most this many distinct agent messages are spelled out in the Degraded message.
pub const MAX_REFUSALS_SHOWN: usize = 5;
/// At most this many node names are listed for one agent message.
pub const MAX_NODES_NAMED: usize = 3;
/// An agent's message is cut to this many bytes in the fabric's status.
pub const MAX_AGENT_MESSAGE: usize = 300;

/// A container restarted at least this often and not ready counts as crash-looping even before
/// the kubelet reports `CrashLoopBackOff`.
pub const CRASH_RESTART_THRESHOLD: i32 = 3;

/// What the pipeline decided for this fabric.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<'a> {
    /// Another fabric is active; nothing was applied.
    Conflict {
        /// Name of the active fabric.
        active: &'a str,
    },
    /// Validation failed; nothing was applied.
    InvalidSpec(&'a [SpecViolation]),
    /// A stage failed with this message; it is retried with backoff.
    Failed {
        /// The condition reason: [`REASON_GATHER_FAILED`], [`REASON_BUILD_FAILED`] or
        /// [`REASON_APPLY_FAILED`].
        reason: &'static str,
        /// The error and its causes.
        message: String,
    },
    /// The agent objects were applied with this configuration hash.
    Applied {
        /// Hash of the applied agent configuration.
        config_hash: &'a str,
        /// The effective MTU.
        mtu: i32,
    },
}

/// Everything the status depends on.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// `metadata.generation` of the fabric.
    pub generation: Option<i64>,
    /// The pipeline's decision.
    pub outcome: Outcome<'a>,
    /// The agent DaemonSet as last read (after apply), if it exists.
    pub daemon_set: Option<&'a DaemonSet>,
    /// The agent pods.
    pub agent_pods: &'a [Pod],
    /// Name of the fabric; only its agents' reports count.
    pub fabric: &'a str,
    /// The nodes, with what each agent reports in its Node's `WeftAgentReady` condition.
    pub nodes: &'a [NodeFacts],
}

/// Rollout counts of the agent DaemonSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rollout {
    desired: i32,
    updated: i32,
    ready: i32,
    /// The DaemonSet controller has seen the latest template.
    observed: bool,
}

fn rollout(ds: &DaemonSet) -> Rollout {
    let status = ds.status.clone().unwrap_or_default();
    let observed = match (ds.metadata.generation, status.observed_generation) {
        (Some(g), Some(o)) => o >= g,
        (None, _) => true,
        (Some(_), None) => false,
    };
    Rollout {
        desired: status.desired_number_scheduled,
        updated: status.updated_number_scheduled.unwrap_or(0),
        ready: status.number_ready,
        observed,
    }
}

/// Container waiting reasons that mean the agent cannot be started (besides CrashLoopBackOff).
const START_REASONS: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];
/// Container waiting reasons that mean the agent image cannot be pulled.
const PULL_REASONS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
/// Start and pull errors of a pod younger than this are not reported: right after a pod is
/// created they are often transient (a ConfigMap not yet visible to the kubelet, a registry hiccup).
pub const START_GRACE_SECONDS: i64 = 60;

/// Agent pods that crash-loop, as "pod on node (reason, N restarts)", sorted.
pub fn crash_looping(pods: &[Pod], now: Timestamp) -> Vec<String> {
    failing(pods, now, |waiting, restarts, ready, settled| {
        waiting == Some("CrashLoopBackOff")
            || (restarts >= CRASH_RESTART_THRESHOLD && !ready)
            || (settled && waiting.is_some_and(|w| START_REASONS.contains(&w)))
    })
}

/// Agent pods whose image cannot be pulled, as "pod on node (reason, N restarts)", sorted.
pub fn image_pull_failing(pods: &[Pod], now: Timestamp) -> Vec<String> {
    failing(pods, now, |waiting, _, _, settled| {
        settled && waiting.is_some_and(|w| PULL_REASONS.contains(&w))
    })
}

/// Pods with a container for which `test(waiting reason, restarts, ready, settled)` holds;
/// `settled` is false during the pod's first [`START_GRACE_SECONDS`].
fn failing(
    pods: &[Pod],
    now: Timestamp,
    test: impl Fn(Option<&str>, i32, bool, bool) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let settled = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .is_none_or(|c| now.as_second() - c.0.as_second() >= START_GRACE_SECONDS);
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref());
        for cs in statuses.into_iter().flatten() {
            let waiting = cs
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref());
            if test(waiting, cs.restart_count, cs.ready, settled) {
                let node = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .unwrap_or("an unscheduled node");
                let pod_name = pod.metadata.name.as_deref().unwrap_or("?");
                let why = waiting.unwrap_or("not ready");
                out.push(format!(
                    "{pod_name} on {node} ({why}, {} restarts)",
                    cs.restart_count
                ));
            }
        }
    }
    out.sort();
    out
}

/// The fabric's Degraded reason for an agent's `WeftAgentReady=False` reason, and its precedence
/// (lower first) when agents disagree; `None` for a report that is no failure (yet).
fn refusal_reason(agent_reason: &str, settled: bool) -> Option<(&'static str, u8)> {
    match agent_reason {
        AGENT_REASON_READY | AGENT_REASON_RECONCILED => None,
        AGENT_REASON_CONFIG_INVALID => Some((REASON_AGENT_CONFIG_INVALID, 0)),
        AGENT_REASON_DATAPATH_FAILED => Some((REASON_AGENT_DATAPATH_FAILED, 1)),
        AGENT_REASON_SYNC_FAILED => Some((REASON_AGENT_SYNC_FAILED, 2)),
        AGENT_REASON_WAITING_FOR_POD_CIDR if settled => {
            Some((REASON_AGENT_WAITING_FOR_POD_CIDR, 3))
        }
        AGENT_REASON_WAITING_FOR_POD_CIDR => None,
        _ => Some((REASON_AGENT_FAILED, 4)),
    }
}

/// Whether an agent pod of `fabric` runs on `node`.
fn runs_agent(fabric: &str, pods: &[Pod], node: &str) -> bool {
    pods.iter().any(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(FABRIC_LABEL))
            .map(String::as_str)
            == Some(fabric)
            && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
    })
}

/// What the fabric's agents recently reconciled (their `WeftAgentReady=True` condition with reason
/// `DatapathReconciled`), in their own words, e.g. `node-1: at 2026-12-02T00:41:02Z replaced with
/// the fabric's values: device flannel.1 has VNI 42 (want 1); subnet …`. Bounded like the refusals.
pub fn agent_notices(fabric: &str, nodes: &[NodeFacts], pods: &[Pod]) -> Option<String> {
    let mut parts: Vec<String> = nodes
        .iter()
        .filter_map(|node| {
            let agent = node.agent.as_ref()?;
            (agent.status == "True"
                && agent.reason == AGENT_REASON_RECONCILED
                && runs_agent(fabric, pods, &node.name))
            .then(|| {
                format!(
                    "{}: {}",
                    node.name,
                    truncate(agent.message.trim(), MAX_AGENT_MESSAGE)
                )
            })
        })
        .collect();
    if parts.is_empty() {
        return None;
    }
    parts.sort();
    let total = parts.len();
    parts.truncate(MAX_REFUSALS_SHOWN);
    if total > MAX_REFUSALS_SHOWN {
        parts.push(format!(
            "and {} more (see the nodes' WeftAgentReady condition)",
            total - MAX_REFUSALS_SHOWN
        ));
    }
    Some(parts.join("; "))
}

/// What the fabric's agents refuse or fail to do on their nodes, from the Nodes' `WeftAgentReady`
/// conditions: the Degraded reason of the most severe report and a message naming the nodes with
/// each agent's own words, e.g. `node-1: interface "nosuch0" not found (spec.overlay.interface)`.
///
/// Only nodes that run an agent pod of `fabric` count: a condition left behind by another fabric's
/// agent, or on a node the agents no longer select, says nothing about this fabric. Nodes with the
/// same words share one entry; entries are sorted by severity, then by their first node, and the
/// message is bounded
/// ([`MAX_REFUSALS_SHOWN`], [`MAX_NODES_NAMED`], [`MAX_AGENT_MESSAGE`]) however many nodes fail.
pub fn agent_refusals(
    fabric: &str,
    nodes: &[NodeFacts],
    pods: &[Pod],
    now: Timestamp,
) -> Option<(&'static str, String)> {
    let runs_agent = |node: &str| runs_agent(fabric, pods, node);
    // words → (precedence, reason, nodes)
    let mut by_words: std::collections::BTreeMap<String, (u8, &'static str, Vec<&str>)> =
        Default::default();
    for node in nodes {
        let Some(agent) = &node.agent else { continue };
        if agent.status != "False" || !runs_agent(&node.name) {
            continue;
        }
        let settled = agent
            .since
            .is_none_or(|t| now.as_second() - t >= POD_CIDR_GRACE_SECONDS);
        let Some((reason, rank)) = refusal_reason(&agent.reason, settled) else {
            continue;
        };
        let words = match agent.message.trim() {
            "" => format!("agent not ready ({})", agent.reason),
            w => truncate(w, MAX_AGENT_MESSAGE),
        };
        let entry = by_words.entry(words).or_insert((rank, reason, Vec::new()));
        if rank < entry.0 {
            (entry.0, entry.1) = (rank, reason);
        }
        entry.2.push(&node.name);
    }
    let (_, reason) = by_words
        .values()
        .map(|(rank, reason, _)| (*rank, *reason))
        .min()?;
    // The most severe first (so the reason's own entry is never cut off), then by node.
    let mut entries: Vec<(u8, Vec<&str>, String)> = by_words
        .into_iter()
        .map(|(words, (rank, _, mut names))| {
            names.sort_unstable();
            (rank, names, words)
        })
        .collect();
    entries.sort();
    let total = entries.len();
    let mut parts: Vec<String> = entries
        .into_iter()
        .take(MAX_REFUSALS_SHOWN)
        .map(|(_, names, words)| {
            let shown = names[..names.len().min(MAX_NODES_NAMED)].join(", ");
            match names.len().saturating_sub(MAX_NODES_NAMED) {
                0 => format!("{shown}: {words}"),
                1 => format!("{shown} and 1 more node: {words}"),
                more => format!("{shown} and {more} more nodes: {words}"),
            }
        })
        .collect();
    if total > MAX_REFUSALS_SHOWN {
        parts.push(format!(
            "and {} more (see the nodes' WeftAgentReady condition)",
            total - MAX_REFUSALS_SHOWN
        ));
    }
    Some((reason, parts.join("; ")))
}

struct Cond {
    type_: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
}

fn cond(
    type_: &'static str,
    status: bool,
    reason: &'static str,
    message: impl Into<String>,
) -> Cond {
    Cond {
        type_,
        status,
        reason,
        message: message.into(),
    }
}

/// Available from the DaemonSet alone (what the nodes run now, whatever the spec says).
fn available_from(ds: Option<&DaemonSet>) -> Cond {
    let Some(ds) = ds else {
        return cond(
            AVAILABLE,
            false,
            REASON_NO_DAEMONSET,
            "the agent DaemonSet does not exist",
        );
    };
    let r = rollout(ds);
    if r.desired == 0 {
        cond(
            AVAILABLE,
            false,
            REASON_NO_NODES,
            "no node runs an agent: no node matches the agent's node selector and tolerations",
        )
    } else if r.observed && r.updated >= r.desired && r.ready >= r.desired {
        cond(
            AVAILABLE,
            true,
            REASON_AGENTS_READY,
            format!("{} of {} agents updated and ready", r.ready, r.desired),
        )
    } else {
        cond(
            AVAILABLE,
            false,
            REASON_AGENTS_NOT_READY,
            format!(
                "{} of {} agents ready, {} updated",
                r.ready, r.desired, r.updated
            ),
        )
    }
}

fn node_counts(ds: Option<&DaemonSet>) -> Option<NodeCounts> {
    ds.map(|ds| {
        let r = rollout(ds);
        NodeCounts {
            desired: r.desired,
            updated: r.updated,
            ready: r.ready,
        }
    })
}

/// The conditions kstatus reads, derived from Available, Progressing and Degraded (see the module
/// docs): `Ready` always, `Reconciling` and `Stalled` only when True.
fn kstatus_conditions(conds: &[Cond]) -> Vec<Cond> {
    let find = |t: &str| conds.iter().find(|c| c.type_ == t);
    let (Some(available), Some(progressing), Some(degraded)) =
        (find(AVAILABLE), find(PROGRESSING), find(DEGRADED))
    else {
        return Vec::new();
    };
    let like = |type_, status, c: &Cond| cond(type_, status, c.reason, c.message.clone());
    let mut out = Vec::new();
    if degraded.status {
        out.push(like(READY, false, degraded));
        out.push(like(STALLED, true, degraded));
    } else if progressing.status {
        out.push(like(READY, false, progressing));
        out.push(like(RECONCILING, true, progressing));
    } else {
        out.push(like(READY, available.status, available));
    }
    out
}

/// Computes the new status from the previous one and the observation, at time `now`.
pub fn compute_status(
    prev: Option<&NetworkFabricStatus>,
    obs: &Observation<'_>,
    now: Timestamp,
) -> NetworkFabricStatus {
    let ds = obs.daemon_set;
    let prev_hash = prev.and_then(|p| p.config_hash.clone());
    let prev_mtu = prev.and_then(|p| p.mtu);
    let (conds, nodes, mtu, hash) = match &obs.outcome {
        Outcome::Conflict { active } => {
            let msg = format!(
                "NetworkFabric {active} is the active fabric (the oldest); this one is ignored and nothing of it is applied. Delete one of them"
            );
            (
                vec![
                    cond(AVAILABLE, false, REASON_CONFLICT, msg.clone()),
                    cond(PROGRESSING, false, REASON_CONFLICT, msg.clone()),
                    cond(DEGRADED, true, REASON_CONFLICT, msg),
                ],
                None,
                None,
                None,
            )
        }
        Outcome::InvalidSpec(violations) => {
            let list = violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            (
                vec![
                    available_from(ds),
                    cond(
                        PROGRESSING,
                        false,
                        REASON_INVALID_SPEC,
                        "nothing is rolled out until the spec is fixed; agents keep their previous configuration",
                    ),
                    cond(DEGRADED, true, REASON_INVALID_SPEC, list),
                ],
                node_counts(ds),
                prev_mtu,
                prev_hash,
            )
        }
        Outcome::Failed { reason, message } => (
            vec![
                available_from(ds),
                cond(
                    PROGRESSING,
                    false,
                    reason,
                    "the rollout is held until the failure below clears; retrying with backoff",
                ),
                cond(
                    DEGRADED,
                    true,
                    reason,
                    format!("{message}; retrying with backoff"),
                ),
            ],
            node_counts(ds),
            prev_mtu,
            prev_hash,
        ),
        Outcome::Applied { config_hash, mtu } => {
            // This very spec (generation) and configuration finished rolling out before.
            let rolled_out_before = prev.is_some_and(|p| {
                p.config_hash.as_deref() == Some(*config_hash)
                    && p.conditions.iter().any(|c| {
                        c.type_ == PROGRESSING
                            && c.status == "False"
                            && c.reason == REASON_ROLLOUT_COMPLETE
                            && c.observed_generation == obs.generation
                    })
            });
            let progressing = match ds.map(rollout) {
                None => cond(
                    PROGRESSING,
                    true,
                    REASON_ROLLING_OUT,
                    "waiting for the agent DaemonSet to appear",
                ),
                Some(r) if !r.observed => cond(
                    PROGRESSING,
                    true,
                    REASON_ROLLING_OUT,
                    "waiting for the DaemonSet controller to pick up the new agent template",
                ),
                Some(r) if r.updated < r.desired => cond(
                    PROGRESSING,
                    true,
                    REASON_ROLLING_OUT,
                    format!("{} of {} nodes updated", r.updated, r.desired),
                ),
                // Once a configuration has rolled out completely, an agent that later turns
                // unready is an availability problem (Available=False), not a rollout.
                Some(r) if r.ready < r.desired && !rolled_out_before => cond(
                    PROGRESSING,
                    true,
                    REASON_ROLLING_OUT,
                    format!(
                        "{} of {} nodes updated, {} ready",
                        r.updated, r.desired, r.ready
                    ),
                ),
                Some(r) => cond(
                    PROGRESSING,
                    false,
                    REASON_ROLLOUT_COMPLETE,
                    format!(
                        "{} of {} nodes run configuration {config_hash}",
                        r.updated, r.desired
                    ),
                ),
            };
            let refusals = agent_refusals(obs.fabric, obs.nodes, obs.agent_pods, now);
            let looping = crash_looping(obs.agent_pods, now);
            let pulling = image_pull_failing(obs.agent_pods, now);
            let degraded = if let Some((reason, message)) = refusals {
                cond(DEGRADED, true, reason, message)
            } else if !looping.is_empty() {
                cond(
                    DEGRADED,
                    true,
                    REASON_CRASH_LOOPING,
                    format!(
                        "agent crash-looping: {}; see the pod logs",
                        looping.join(", ")
                    ),
                )
            } else if !pulling.is_empty() {
                cond(
                    DEGRADED,
                    true,
                    REASON_IMAGE_PULL_FAILED,
                    format!(
                        "agent image cannot be pulled: {}; check spec.agent.image or the operator's --agent-image",
                        pulling.join(", ")
                    ),
                )
            } else if let Some(notes) = agent_notices(obs.fabric, obs.nodes, obs.agent_pods) {
                cond(
                    DEGRADED,
                    false,
                    REASON_DATAPATH_RECONCILED,
                    format!("no problems detected; reconciled recently: {notes}"),
                )
            } else {
                cond(DEGRADED, false, REASON_AS_EXPECTED, "no problems detected")
            };
            (
                vec![available_from(ds), progressing, degraded],
                node_counts(ds),
                Some(*mtu),
                Some((*config_hash).to_owned()),
            )
        }
    };

    let kstatus = kstatus_conditions(&conds);
    let conditions = conds
        .into_iter()
        .chain(kstatus)
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let previous = prev.and_then(|p| p.conditions.iter().find(|pc| pc.type_ == c.type_));
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Time(now),
            };
            Condition {
                type_: c.type_.to_owned(),
                status: status.to_owned(),
                reason: c.reason.to_owned(),
                message: c.message,
                observed_generation: obs.generation,
                last_transition_time,
            }
        })
        .collect();
    NetworkFabricStatus {
        observed_generation: obs.generation,
        conditions,
        nodes,
        mtu,
        config_hash: hash,
    }
}

/// The Kubernetes Events that announce the differences between two statuses.
pub fn transition_events(
    prev: Option<&NetworkFabricStatus>,
    next: &NetworkFabricStatus,
) -> Vec<Event> {
    let mut events = Vec::new();
    // During a rollout agents are briefly unavailable by design; the RollingOut event says so.
    let rolling_out = next
        .conditions
        .iter()
        .any(|c| c.type_ == PROGRESSING && c.status == "True" && c.reason == REASON_ROLLING_OUT);
    for c in &next.conditions {
        let before = prev.and_then(|p| p.conditions.iter().find(|pc| pc.type_ == c.type_));
        let changed = before.is_none_or(|b| b.status != c.status || b.reason != c.reason);
        if !changed {
            continue;
        }
        let was_true = before.is_some_and(|b| b.status == "True");
        let is_true = c.status == "True";
        let (type_, reason) = match (c.type_.as_str(), was_true, is_true) {
            (AVAILABLE, _, true) => (EventType::Normal, "Available".to_owned()),
            (AVAILABLE, true, false) if rolling_out => continue,
            (AVAILABLE, true, false) => (EventType::Warning, "Unavailable".to_owned()),
            (PROGRESSING, _, true) => (EventType::Normal, c.reason.clone()),
            (PROGRESSING, true, false) if c.reason == REASON_ROLLOUT_COMPLETE => {
                (EventType::Normal, c.reason.clone())
            }
            (DEGRADED, _, true) => (EventType::Warning, c.reason.clone()),
            (DEGRADED, true, false) => (EventType::Normal, "Recovered".to_owned()),
            _ => continue,
        };
        events.push(Event {
            type_,
            reason,
            note: Some(truncate(&c.message, 1000)),
            action: "Reconcile".to_owned(),
            secondary: None,
        });
    }
    events
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::AgentCondition;
    use k8s_openapi::api::apps::v1::DaemonSetStatus;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodSpec, PodStatus,
    };
    use std::collections::HashMap;

    /// kstatus's verdict on a resource with standard conditions, after cli-utils'
    /// `pkg/kstatus/status` (generic.go: generation, then Reconciling, then Stalled; then the
    /// `Ready` condition): enough to table-test against. The e2e suite runs the library itself.
    fn kstatus(generation: i64, s: &NetworkFabricStatus) -> &'static str {
        if s.observed_generation != Some(generation) {
            return "InProgress";
        }
        for c in &s.conditions {
            if c.type_ == RECONCILING && c.status == "True" {
                return "InProgress";
            }
            if c.type_ == STALLED && c.status == "True" {
                return "Failed";
            }
        }
        match s.conditions.iter().find(|c| c.type_ == READY) {
            Some(c) if c.status == "True" => "Current",
            Some(_) => "InProgress",
            None => "Current",
        }
    }

    /// The kstatus conditions agree with Available/Progressing/Degraded.
    fn assert_kstatus_follows(s: &NetworkFabricStatus, name: &str) {
        let is = |t: &str| {
            s.conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        let present = |t: &str| s.conditions.iter().any(|c| c.type_ == t);
        assert!(present(READY), "{name}: Ready is always present");
        assert_eq!(
            is(READY),
            is(AVAILABLE) && !is(PROGRESSING) && !is(DEGRADED),
            "{name}"
        );
        assert_eq!(
            present(STALLED),
            is(DEGRADED),
            "{name}: Stalled iff Degraded"
        );
        assert_eq!(
            present(RECONCILING),
            is(PROGRESSING) && !is(DEGRADED),
            "{name}: Reconciling iff Progressing and not Degraded"
        );
        assert!(
            !s.conditions
                .iter()
                .any(|c| [RECONCILING, STALLED].contains(&c.type_.as_str()) && c.status != "True"),
            "{name}: abnormal-true conditions are present only when True"
        );
    }

    fn agent_node(name: &str, report: Option<(&str, &str, &str, i64)>) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            agent: report.map(|(status, reason, message, since)| AgentCondition {
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                since: Some(t(since).as_second()),
            }),
            ..NodeFacts::default()
        }
    }

    fn agent_pod(node: &str, fabric: &str) -> Pod {
        let mut p = pod(node, None, 0, false);
        p.metadata.labels = Some([(FABRIC_LABEL.to_owned(), fabric.to_owned())].into());
        p
    }

    fn ds(generation: i64, observed: i64, desired: i32, updated: i32, ready: i32) -> DaemonSet {
        let mut d = DaemonSet::default();
        d.metadata.generation = Some(generation);
        d.status = Some(DaemonSetStatus {
            observed_generation: Some(observed),
            desired_number_scheduled: desired,
            updated_number_scheduled: Some(updated),
            number_ready: ready,
            current_number_scheduled: desired,
            number_misscheduled: 0,
            ..DaemonSetStatus::default()
        });
        d
    }

    fn pod(node: &str, waiting: Option<&str>, restarts: i32, ready: bool) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("weft-agent-{node}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "weft-agent".into(),
                    ready,
                    restart_count: restarts,
                    state: waiting.map(|r| ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(r.into()),
                            ..ContainerStateWaiting::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("timestamp")
    }

    fn get<'a>(s: &'a NetworkFabricStatus, type_: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    /// (name, outcome, daemonset, pods) → (Available, Progressing, Degraded) as (status, reason),
    /// plus a substring of one message.
    #[test]
    fn condition_table() {
        let violations = [SpecViolation {
            field: "spec.podNetwork.cidrs[0]".into(),
            message: "pod CIDR 10.96.0.0/16 overlaps the service range".into(),
        }];
        let healthy = ds(2, 2, 3, 3, 3);
        let rolling = ds(3, 3, 3, 2, 2);
        let unobserved = ds(4, 3, 3, 3, 3);
        let unready = ds(2, 2, 3, 3, 1);
        let empty = ds(1, 1, 0, 0, 0);
        let crash = [pod("node-2", Some("CrashLoopBackOff"), 5, false)];
        let restarts = [pod("node-3", None, 4, false)];
        let fine = [pod("node-1", None, 0, true), pod("node-2", None, 7, true)];
        let pull = [pod("node-1", Some("ImagePullBackOff"), 0, false)];
        let both = [
            pod("node-1", Some("ErrImagePull"), 0, false),
            pod("node-2", Some("CrashLoopBackOff"), 2, false),
        ];
        let applied = || Outcome::Applied {
            config_hash: "abc",
            mtu: 1450,
        };
        type Row<'a> = (
            &'a str,
            Outcome<'a>,
            Option<&'a DaemonSet>,
            &'a [Pod],
            [(&'a str, &'a str); 3],
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                "healthy",
                applied(),
                Some(&healthy),
                &fine,
                [
                    ("True", "AgentsReady"),
                    ("False", "RolloutComplete"),
                    ("False", "AsExpected"),
                ],
                "3 of 3 agents updated and ready",
            ),
            (
                "rolling",
                applied(),
                Some(&rolling),
                &[],
                [
                    ("False", "AgentsNotReady"),
                    ("True", "RollingOut"),
                    ("False", "AsExpected"),
                ],
                "2 of 3 nodes updated",
            ),
            (
                "unobserved template",
                applied(),
                Some(&unobserved),
                &[],
                [
                    ("False", "AgentsNotReady"),
                    ("True", "RollingOut"),
                    ("False", "AsExpected"),
                ],
                "pick up the new agent template",
            ),
            (
                "updated but unready",
                applied(),
                Some(&unready),
                &[],
                [
                    ("False", "AgentsNotReady"),
                    ("True", "RollingOut"),
                    ("False", "AsExpected"),
                ],
                "3 of 3 nodes updated, 1 ready",
            ),
            (
                "no daemonset yet",
                applied(),
                None,
                &[],
                [
                    ("False", "DaemonSetMissing"),
                    ("True", "RollingOut"),
                    ("False", "AsExpected"),
                ],
                "waiting for the agent DaemonSet",
            ),
            (
                "no nodes",
                applied(),
                Some(&empty),
                &[],
                [
                    ("False", "NoNodes"),
                    ("False", "RolloutComplete"),
                    ("False", "AsExpected"),
                ],
                "no node runs an agent",
            ),
            (
                "crash loop",
                applied(),
                Some(&unready),
                &crash,
                [
                    ("False", "AgentsNotReady"),
                    ("True", "RollingOut"),
                    ("True", "AgentCrashLooping"),
                ],
                "weft-agent-node-2 on node-2 (CrashLoopBackOff, 5 restarts)",
            ),
            (
                "restart count",
                applied(),
                Some(&unready),
                &restarts,
                [
                    ("False", "AgentsNotReady"),
                    ("True", "RollingOut"),
                    ("True", "AgentCrashLooping"),
                ],
                "node-3 (not ready, 4 restarts)",
            ),
            (
                "image pull",
                applied(),
                Some(&unready),
                &pull,
                [
                    ("False", "AgentsNotReady"),
                    ("True", "RollingOut"),
                    ("True", "AgentImagePullFailed"),
                ],
                "weft-agent-node-1 on node-1 (ImagePullBackOff, 0 restarts)",
            ),
            (
                "crash loop wins over image pull",
                applied(),
                Some(&unready),
                &both,
                [
                    ("False", "AgentsNotReady"),
                    ("True", "RollingOut"),
                    ("True", "AgentCrashLooping"),
                ],
                "node-2 (CrashLoopBackOff",
            ),
            (
                "conflict",
                Outcome::Conflict { active: "first" },
                None,
                &[],
                [
                    ("False", "Conflict"),
                    ("False", "Conflict"),
                    ("True", "Conflict"),
                ],
                "NetworkFabric first is the active fabric",
            ),
            (
                "invalid, old config still serving",
                Outcome::InvalidSpec(&violations),
                Some(&healthy),
                &[],
                [
                    ("True", "AgentsReady"),
                    ("False", "InvalidSpec"),
                    ("True", "InvalidSpec"),
                ],
                "spec.podNetwork.cidrs[0]: pod CIDR 10.96.0.0/16 overlaps",
            ),
            (
                "invalid, nothing deployed",
                Outcome::InvalidSpec(&violations),
                None,
                &[],
                [
                    ("False", "DaemonSetMissing"),
                    ("False", "InvalidSpec"),
                    ("True", "InvalidSpec"),
                ],
                "nothing is rolled out",
            ),
            (
                "apply failed",
                Outcome::Failed {
                    reason: REASON_APPLY_FAILED,
                    message: "failed to apply DaemonSet weft-system/weft-agent: conflict".into(),
                },
                Some(&healthy),
                &[],
                [
                    ("True", "AgentsReady"),
                    ("False", "ApplyFailed"),
                    ("True", "ApplyFailed"),
                ],
                "conflict; retrying with backoff",
            ),
        ];
        let verdicts: HashMap<&str, &str> = [
            ("healthy", "Current"),
            ("rolling", "InProgress"),
            ("unobserved template", "InProgress"),
            ("updated but unready", "InProgress"),
            ("no daemonset yet", "InProgress"),
            ("no nodes", "InProgress"),
            ("crash loop", "Failed"),
            ("restart count", "Failed"),
            ("image pull", "Failed"),
            ("crash loop wins over image pull", "Failed"),
            ("conflict", "Failed"),
            ("invalid, old config still serving", "Failed"),
            ("invalid, nothing deployed", "Failed"),
            ("apply failed", "Failed"),
        ]
        .into_iter()
        .collect();
        for (name, outcome, d, pods, want, needle) in rows {
            let obs = Observation {
                generation: Some(7),
                outcome,
                daemon_set: d,
                agent_pods: pods,
                fabric: "default",
                nodes: &[],
            };
            let s = compute_status(None, &obs, t(0));
            let got: Vec<(&str, &str)> = [AVAILABLE, PROGRESSING, DEGRADED]
                .iter()
                .map(|ty| {
                    let c = get(&s, ty);
                    (c.status.as_str(), c.reason.as_str())
                })
                .collect();
            assert_eq!(got, want, "{name}");
            assert_eq!(Some(&kstatus(7, &s)), verdicts.get(name), "{name}: {s:#?}");
            assert_kstatus_follows(&s, name);
            assert!(
                s.conditions.iter().any(|c| c.message.contains(needle)),
                "{name}: no message contains {needle:?}: {:?}",
                s.conditions
            );
            assert_eq!(s.observed_generation, Some(7), "{name}");
            assert!(
                s.conditions
                    .iter()
                    .all(|c| c.observed_generation == Some(7)),
                "{name}"
            );
        }
    }

    const NOSUCH: &str = r#"interface "nosuch0" not found (spec.overlay.interface)"#;

    /// (name, nodes' reports, nodes with an agent pod of fabric "default" (others: of "old"),
    /// expected Degraded reason and message)
    #[test]
    fn agent_refusal_table() {
        type Report<'a> = (&'a str, Option<(&'a str, &'a str, &'a str, i64)>);
        let invalid = |m| Some(("False", "AgentConfigInvalid", m, 0));
        let long = "x".repeat(400);
        let many: Vec<String> = (1..=10).map(|i| format!("node-{i:02}")).collect();
        let distinct: Vec<String> = (1..=7).map(|i| format!("bad {i}")).collect();
        type Row<'a> = (
            &'a str,
            Vec<Report<'a>>,
            Vec<&'a str>,
            Option<(&'a str, String)>,
        );
        let rows: Vec<Row> = vec![
            (
                "one node refuses its interface",
                vec![
                    ("node-1", invalid(NOSUCH)),
                    ("node-2", Some(("True", "AgentReady", "", 0))),
                ],
                vec!["node-1", "node-2"],
                Some(("AgentConfigInvalid", format!("node-1: {NOSUCH}"))),
            ),
            (
                "same words, nodes grouped and sorted",
                vec![("node-3", invalid(NOSUCH)), ("node-1", invalid(NOSUCH))],
                vec!["node-1", "node-3"],
                Some(("AgentConfigInvalid", format!("node-1, node-3: {NOSUCH}"))),
            ),
            (
                "many nodes are counted, not listed",
                many.iter().map(|n| (n.as_str(), invalid(NOSUCH))).collect(),
                many.iter().map(String::as_str).collect(),
                Some((
                    "AgentConfigInvalid",
                    format!("node-01, node-02, node-03 and 7 more nodes: {NOSUCH}"),
                )),
            ),
            (
                "a configuration refusal outranks a datapath failure and comes first",
                vec![
                    (
                        "node-2",
                        invalid("pod CIDR 10.250.1.0/24 is outside the fabric (spec.podNetwork.cidrs)"),
                    ),
                    (
                        "node-1",
                        Some(("False", "DatapathFailed", "nftables: transaction refused", 0)),
                    ),
                ],
                vec!["node-1", "node-2"],
                Some((
                    "AgentConfigInvalid",
                    "node-2: pod CIDR 10.250.1.0/24 is outside the fabric (spec.podNetwork.cidrs); node-1: nftables: transaction refused".into(),
                )),
            ),
            (
                "datapath failure",
                vec![(
                    "node-1",
                    Some(("False", "DatapathFailed", "failed to add route 10.244.2.0/24: EEXIST", 0)),
                )],
                vec!["node-1"],
                Some((
                    "AgentDatapathFailed",
                    "node-1: failed to add route 10.244.2.0/24: EEXIST".into(),
                )),
            ),
            (
                "sync failure",
                vec![(
                    "node-1",
                    Some(("False", "SyncFailed", "failed to write /run/flannel/subnet.env", 0)),
                )],
                vec!["node-1"],
                Some((
                    "AgentSyncFailed",
                    "node-1: failed to write /run/flannel/subnet.env".into(),
                )),
            ),
            (
                "waiting for a podCIDR briefly is no failure",
                vec![(
                    "node-1",
                    Some(("False", "WaitingForPodCIDR", "node has no spec.podCIDRs yet", 100)),
                )],
                vec!["node-1"],
                None,
            ),
            (
                "waiting for a podCIDR for long is",
                vec![(
                    "node-1",
                    Some(("False", "WaitingForPodCIDR", "node has no spec.podCIDRs yet", 0)),
                )],
                vec!["node-1"],
                Some((
                    "AgentWaitingForPodCIDR",
                    "node-1: node has no spec.podCIDRs yet".into(),
                )),
            ),
            (
                "an unknown reason still counts",
                vec![("node-1", Some(("False", "SomethingNew", "it broke", 0)))],
                vec!["node-1"],
                Some(("AgentFailed", "node-1: it broke".into())),
            ),
            (
                "an agent without words",
                vec![("node-1", invalid(""))],
                vec!["node-1"],
                Some((
                    "AgentConfigInvalid",
                    "node-1: agent not ready (AgentConfigInvalid)".into(),
                )),
            ),
            (
                "unknown status is no refusal",
                vec![("node-1", Some(("Unknown", "AgentConfigInvalid", NOSUCH, 0)))],
                vec!["node-1"],
                None,
            ),
            (
                "no condition yet",
                vec![("node-1", None)],
                vec!["node-1"],
                None,
            ),
            (
                "another fabric's agent does not count",
                vec![("node-1", invalid(NOSUCH)), ("old-node", invalid(NOSUCH))],
                vec![],
                None,
            ),
            (
                "a node without an agent (a leftover condition) does not count",
                vec![("node-9", invalid(NOSUCH)), ("node-1", invalid("bad"))],
                vec!["node-1"],
                Some(("AgentConfigInvalid", "node-1: bad".into())),
            ),
            (
                "long words are cut",
                vec![("node-1", invalid(&long))],
                vec!["node-1"],
                Some((
                    "AgentConfigInvalid",
                    format!("node-1: {}…", "x".repeat(MAX_AGENT_MESSAGE)),
                )),
            ),
            (
                "the most severe refusal is never cut off",
                vec![
                    ("n1", Some(("False", "DatapathFailed", "d1", 0))),
                    ("n2", Some(("False", "DatapathFailed", "d2", 0))),
                    ("n3", Some(("False", "DatapathFailed", "d3", 0))),
                    ("n4", Some(("False", "DatapathFailed", "d4", 0))),
                    ("n5", Some(("False", "DatapathFailed", "d5", 0))),
                    ("n9", invalid(NOSUCH)),
                ],
                vec!["n1", "n2", "n3", "n4", "n5", "n9"],
                Some((
                    "AgentConfigInvalid",
                    format!("n9: {NOSUCH}; n1: d1; n2: d2; n3: d3; n4: d4; and 1 more (see the nodes' WeftAgentReady condition)"),
                )),
            ),
            (
                "many different refusals are bounded",
                distinct
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (["n1", "n2", "n3", "n4", "n5", "n6", "n7"][i], invalid(m)))
                    .collect(),
                vec!["n1", "n2", "n3", "n4", "n5", "n6", "n7"],
                Some((
                    "AgentConfigInvalid",
                    "n1: bad 1; n2: bad 2; n3: bad 3; n4: bad 4; n5: bad 5; and 2 more (see the nodes' WeftAgentReady condition)".into(),
                )),
            ),
        ];
        for (name, reports, with_agent, want) in rows {
            let nodes: Vec<NodeFacts> = reports.iter().map(|(n, r)| agent_node(n, *r)).collect();
            let mut pods: Vec<Pod> = with_agent.iter().map(|n| agent_pod(n, "default")).collect();
            pods.push(agent_pod("old-node", "old"));
            pods.push(agent_pod("node-1", "old"));
            let got = agent_refusals("default", &nodes, &pods, t(120));
            assert_eq!(got.as_ref().map(|(r, m)| (*r, m.clone())), want, "{name}");
        }
    }

    /// A refusal degrades the fabric (kstatus: Failed) and stalls the rollout; reverting heals it.
    #[test]
    fn an_agent_refusal_degrades_and_a_revert_heals() {
        let rolling = ds(3, 3, 3, 1, 2);
        let done = ds(4, 4, 3, 3, 3);
        let pods = [
            agent_pod("node-1", "default"),
            agent_pod("node-2", "default"),
            agent_pod("node-3", "default"),
        ];
        let refusing = [
            agent_node("node-1", Some(("False", "AgentConfigInvalid", NOSUCH, 0))),
            agent_node("node-2", Some(("True", "AgentReady", "", 0))),
            agent_node("node-3", Some(("True", "AgentReady", "", 0))),
        ];
        let healed = [
            agent_node("node-1", Some(("True", "AgentReady", "", 30))),
            agent_node("node-2", Some(("True", "AgentReady", "", 0))),
            agent_node("node-3", Some(("True", "AgentReady", "", 0))),
        ];
        let obs = |generation, hash, d, nodes| Observation {
            generation: Some(generation),
            outcome: Outcome::Applied {
                config_hash: hash,
                mtu: 1450,
            },
            daemon_set: Some(d),
            agent_pods: &pods,
            fabric: "default",
            nodes,
        };
        let s1 = compute_status(None, &obs(1, "good", &done, &healed), t(0));
        assert_eq!(kstatus(1, &s1), "Current");

        let s2 = compute_status(Some(&s1), &obs(2, "bad", &rolling, &refusing), t(10));
        let degraded = get(&s2, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", REASON_AGENT_CONFIG_INVALID)
        );
        assert_eq!(degraded.message, format!("node-1: {NOSUCH}"));
        assert_eq!(get(&s2, PROGRESSING).reason, REASON_ROLLING_OUT);
        assert_eq!(get(&s2, STALLED).message, degraded.message);
        assert_eq!(get(&s2, READY).reason, REASON_AGENT_CONFIG_INVALID);
        assert_eq!(kstatus(2, &s2), "Failed");
        let events: Vec<(EventType, String)> = transition_events(Some(&s1), &s2)
            .into_iter()
            .map(|e| (e.type_, e.reason))
            .collect();
        assert!(
            events.contains(&(EventType::Warning, REASON_AGENT_CONFIG_INVALID.to_owned())),
            "{events:?}"
        );
        assert_eq!(
            compute_status(Some(&s2), &obs(2, "bad", &rolling, &refusing), t(20)),
            s2,
            "an unchanged refusal writes nothing"
        );

        // The spec is reverted: the rollout goes back, and node-1's new agent reports ready.
        let back = ds(5, 5, 3, 3, 3);
        let s3 = compute_status(Some(&s2), &obs(3, "good", &back, &healed), t(30));
        assert_eq!(get(&s3, DEGRADED).status, "False");
        assert_eq!(get(&s3, AVAILABLE).status, "True");
        assert_eq!(get(&s3, READY).status, "True");
        assert!(!s3.conditions.iter().any(|c| c.type_ == STALLED));
        assert_eq!(kstatus(3, &s3), "Current");
        let events: Vec<String> = transition_events(Some(&s2), &s3)
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert!(events.contains(&"Recovered".to_owned()), "{events:?}");
    }

    /// An agent that replaced a foreign device is not a problem: the fabric stays Current, and its
    /// Degraded=False condition names the node and what was replaced, until the agent's notice ends.
    #[test]
    fn a_reconciled_device_is_named_on_the_fabric_without_degrading_it() {
        let done = ds(4, 4, 3, 3, 3);
        let pods = [
            agent_pod("node-1", "default"),
            agent_pod("node-2", "default"),
            agent_pod("node-9", "old"),
        ];
        const NOTE: &str = "at 2026-12-02T00:41:02Z replaced with the fabric's values: device flannel.1 has VNI 42 (want 1); subnet 10.244.1.0/24, MTU 1450, 2 peers routed";
        let reconciled = [
            agent_node("node-1", Some(("True", AGENT_REASON_RECONCILED, NOTE, 0))),
            agent_node("node-2", Some(("True", "AgentReady", "", 0))),
            // Another fabric's agent's notice does not count.
            agent_node("node-9", Some(("True", AGENT_REASON_RECONCILED, NOTE, 0))),
        ];
        let quiet = [
            agent_node("node-1", Some(("True", "AgentReady", "", 0))),
            agent_node("node-2", Some(("True", "AgentReady", "", 0))),
        ];
        let obs = |nodes| Observation {
            generation: Some(1),
            outcome: Outcome::Applied {
                config_hash: "h",
                mtu: 1450,
            },
            daemon_set: Some(&done),
            agent_pods: &pods,
            fabric: "default",
            nodes,
        };
        let s1 = compute_status(None, &obs(&reconciled), t(0));
        let degraded = get(&s1, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("False", REASON_DATAPATH_RECONCILED)
        );
        assert_eq!(
            degraded.message,
            format!("no problems detected; reconciled recently: node-1: {NOTE}")
        );
        assert_eq!(kstatus(1, &s1), "Current");
        let s2 = compute_status(Some(&s1), &obs(&quiet), t(700));
        assert_eq!(get(&s2, DEGRADED).reason, REASON_AS_EXPECTED);
        assert_eq!(kstatus(1, &s2), "Current");
    }

    /// Mid-rollout with nothing wrong reads InProgress (Reconciling), never Current.
    #[test]
    fn a_rollout_reads_in_progress() {
        let rolling = ds(3, 3, 3, 1, 1);
        let obs = Observation {
            generation: Some(2),
            outcome: Outcome::Applied {
                config_hash: "h",
                mtu: 1450,
            },
            daemon_set: Some(&rolling),
            agent_pods: &[],
            fabric: "default",
            nodes: &[],
        };
        let s = compute_status(None, &obs, t(0));
        let r = get(&s, RECONCILING);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("True", REASON_ROLLING_OUT)
        );
        assert_eq!(r.message, "1 of 3 nodes updated");
        assert_eq!(get(&s, READY).status, "False");
        assert_eq!(kstatus(2, &s), "InProgress");
        assert_eq!(kstatus(3, &s), "InProgress", "an unobserved generation");
    }

    #[test]
    fn counts_mtu_and_hash_follow_the_outcome() {
        let healthy = ds(2, 2, 3, 3, 2);
        let obs = Observation {
            generation: Some(1),
            outcome: Outcome::Applied {
                config_hash: "h1",
                mtu: 1450,
            },
            daemon_set: Some(&healthy),
            agent_pods: &[],
            fabric: "default",
            nodes: &[],
        };
        let s = compute_status(None, &obs, t(0));
        assert_eq!(
            s.nodes,
            Some(NodeCounts {
                desired: 3,
                updated: 3,
                ready: 2
            })
        );
        assert_eq!((s.mtu, s.config_hash.as_deref()), (Some(1450), Some("h1")));

        let violations = [];
        let invalid = Observation {
            outcome: Outcome::InvalidSpec(&violations),
            ..obs.clone()
        };
        let s2 = compute_status(Some(&s), &invalid, t(5));
        assert_eq!(
            (s2.mtu, s2.config_hash.as_deref()),
            (Some(1450), Some("h1")),
            "invalid spec keeps what runs"
        );

        let conflict = Observation {
            outcome: Outcome::Conflict { active: "x" },
            ..obs
        };
        let s3 = compute_status(Some(&s), &conflict, t(5));
        assert_eq!((s3.nodes, s3.mtu, s3.config_hash), (None, None, None));
    }

    #[test]
    fn transition_time_moves_only_on_status_change_and_events_follow() {
        let rolling = ds(2, 2, 3, 1, 1);
        let done = ds(2, 2, 3, 3, 3);
        let obs = |d| Observation {
            generation: Some(2),
            outcome: Outcome::Applied {
                config_hash: "h",
                mtu: 1450,
            },
            daemon_set: Some(d),
            agent_pods: &[],
            fabric: "default",
            nodes: &[],
        };
        let s1 = compute_status(None, &obs(&rolling), t(0));
        let first = transition_events(None, &s1);
        let reasons: Vec<&str> = first.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            ["RollingOut"],
            "first status announces the rollout only"
        );

        let s1b = compute_status(Some(&s1), &obs(&rolling), t(10));
        assert_eq!(
            s1, s1b,
            "recomputing an unchanged situation must not change the status"
        );
        assert!(transition_events(Some(&s1), &s1b).is_empty());

        let s2 = compute_status(Some(&s1), &obs(&done), t(20));
        assert_eq!(get(&s2, AVAILABLE).last_transition_time, Time(t(20)));
        assert_eq!(get(&s2, DEGRADED).last_transition_time, Time(t(0)));
        let reasons: Vec<(EventType, String)> = transition_events(Some(&s1), &s2)
            .into_iter()
            .map(|e| (e.type_, e.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (EventType::Normal, "Available".to_owned()),
                (EventType::Normal, "RolloutComplete".to_owned())
            ]
        );

        let crash = [pod("node-1", Some("CrashLoopBackOff"), 3, false)];
        let s3 = compute_status(
            Some(&s2),
            &Observation {
                agent_pods: &crash,
                fabric: "default",
                nodes: &[],
                ..obs(&done)
            },
            t(30),
        );
        let reasons: Vec<(EventType, String)> = transition_events(Some(&s2), &s3)
            .into_iter()
            .map(|e| (e.type_, e.reason))
            .collect();
        assert_eq!(
            reasons,
            [(EventType::Warning, "AgentCrashLooping".to_owned())]
        );
        let s4 = compute_status(Some(&s3), &obs(&done), t(40));
        let reasons: Vec<String> = transition_events(Some(&s3), &s4)
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(reasons, ["Recovered"]);
    }

    #[test]
    fn a_rollout_is_announced_without_an_unavailable_warning() {
        let obs = |d| Observation {
            generation: Some(3),
            outcome: Outcome::Applied {
                config_hash: "h2",
                mtu: 1400,
            },
            daemon_set: Some(d),
            agent_pods: &[],
            fabric: "default",
            nodes: &[],
        };
        let done = ds(2, 2, 3, 3, 3);
        let rolling = ds(3, 3, 3, 1, 2);
        let lost = ds(3, 3, 3, 3, 2);
        let s1 = compute_status(None, &obs(&done), t(0));
        let s2 = compute_status(Some(&s1), &obs(&rolling), t(10));
        let reasons: Vec<(EventType, String)> = transition_events(Some(&s1), &s2)
            .into_iter()
            .map(|e| (e.type_, e.reason))
            .collect();
        assert_eq!(reasons, [(EventType::Normal, "RollingOut".to_owned())]);
        // A new spec (e.g. another image, same configuration) rolls out again: updated but not
        // yet ready agents are progress, not an outage.
        let s2b = compute_status(
            Some(&s1),
            &Observation {
                generation: Some(4),
                ..obs(&lost)
            },
            t(10),
        );
        assert_eq!(get(&s2b, PROGRESSING).reason, REASON_ROLLING_OUT);
        // An agent lost outside a rollout is a warning, and no rollout.
        let s3 = compute_status(Some(&s1), &obs(&lost), t(10));
        assert_eq!(get(&s3, PROGRESSING).reason, REASON_ROLLOUT_COMPLETE);
        assert_eq!(get(&s3, AVAILABLE).status, "False");
        let reasons: Vec<(EventType, String)> = transition_events(Some(&s1), &s3)
            .into_iter()
            .map(|e| (e.type_, e.reason))
            .collect();
        assert!(
            reasons.contains(&(EventType::Warning, "Unavailable".to_owned())),
            "{reasons:?}"
        );
    }

    #[test]
    fn terminating_pods_are_not_crash_looping() {
        let mut p = pod("node-1", Some("CrashLoopBackOff"), 9, false);
        p.metadata.deletion_timestamp = Some(Time(t(0)));
        assert!(crash_looping(&[p], t(0)).is_empty());
        assert_eq!(
            crash_looping(&[pod("node-1", None, 2, false)], t(0)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn start_and_pull_errors_of_young_pods_are_not_reported() {
        let born = |mut p: Pod| {
            p.metadata.creation_timestamp = Some(Time(t(0)));
            p
        };
        let config = [born(pod(
            "node-1",
            Some("CreateContainerConfigError"),
            0,
            false,
        ))];
        let pull = [born(pod("node-1", Some("ImagePullBackOff"), 0, false))];
        let crash = [born(pod("node-1", Some("CrashLoopBackOff"), 1, false))];
        assert!(crash_looping(&config, t(10)).is_empty());
        assert_eq!(crash_looping(&config, t(60)).len(), 1);
        assert!(image_pull_failing(&pull, t(59)).is_empty());
        assert_eq!(image_pull_failing(&pull, t(60)).len(), 1);
        assert_eq!(
            crash_looping(&crash, t(1)).len(),
            1,
            "a crash loop is reported at once"
        );
    }
}
