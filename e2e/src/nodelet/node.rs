//! The Node object: registration, the Lease heartbeat, and readiness.
//!
//! Like a kubelet, the node registers tainted `node.kubernetes.io/not-ready:NoSchedule` and reports
//! `Ready=False` (NetworkPluginNotReady) until a CNI configuration exists in its conf dir; then it
//! reports `Ready=True` and lifts the taint. It never touches conditions it does not own (a network
//! agent sets `NetworkUnavailable`): status goes out as strategic-merge patches keyed by type.

use super::NodeletConfig;
use super::cni::load_network;
use anyhow::Result;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The CPU capacity (and allocatable) the node reports, in millicores; its `kubepods` cgroup is
/// weighted by it, as a kubelet's is by the node's allocatable CPU.
pub const CPU_CAPACITY_MILLI: u64 = 4000;

pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
const LEASE_NS: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often the CNI configuration is looked at; a change is posted at once, not at the next beat.
const NETWORK_CHECK: Duration = Duration::from_millis(500);

/// Why the node is not ready, or None when it is.
pub fn network_not_ready(conf_dir: &Path) -> Option<String> {
    match load_network(conf_dir) {
        Ok(Some(_)) => None,
        Ok(None) => Some(format!(
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:no CNI configuration file in {}",
            conf_dir.display()
        )),
        Err(e) => Some(format!("container runtime network not ready: {e:#}")),
    }
}

fn ready_condition(not_ready: &Option<String>, now: &str) -> Value {
    match not_ready {
        None => json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "weft-nodelet is posting ready status", "lastHeartbeatTime": now}),
        Some(m) => json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady",
            "message": m, "lastHeartbeatTime": now}),
    }
}

fn status_patch(cfg: &NodeletConfig, not_ready: &Option<String>, transition: bool) -> Value {
    let now = Timestamp::now().to_string();
    let mut ready = ready_condition(not_ready, &now);
    if transition {
        ready["lastTransitionTime"] = json!(now);
    }
    let pressure = |t: &str, reason: &str| json!({"type": t, "status": "False", "reason": reason, "message": "no pressure", "lastHeartbeatTime": now});
    let mut addresses = vec![json!({"type": "InternalIP", "address": cfg.node_ip.to_string()})];
    if let Some(v6) = &cfg.node_ip6 {
        addresses.push(json!({"type": "InternalIP", "address": v6}));
    }
    addresses.push(json!({"type": "Hostname", "address": cfg.node}));
    let capacity = json!({"cpu": (CPU_CAPACITY_MILLI / 1000).to_string(), "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"});
    json!({"status": {
        "addresses": addresses,
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [ready, pressure("MemoryPressure", "KubeletHasSufficientMemory"),
            pressure("DiskPressure", "KubeletHasNoDiskPressure"), pressure("PIDPressure", "KubeletHasSufficientPID")],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": kernel_version(), "osImage": "weft-e2e local node",
            "containerRuntimeVersion": concat!("weft-nodelet://", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": "v1.34.4", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64"
        }
    }})
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Creates the Node (or adopts an existing one) and posts its first status.
pub async fn register(client: &kube::Client, cfg: &NodeletConfig) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": cfg.node, "labels": {
            "kubernetes.io/hostname": cfg.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"
        }},
        "spec": {"taints": [{"key": NOT_READY_TAINT, "effect": "NoSchedule"}]}
    }))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %cfg.node, "registered node"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(node = %cfg.node, "node already registered")
        }
        Err(e) => return Err(e.into()),
    }
    let not_ready = network_not_ready(Path::new(CNI_CONF_DIR));
    let node = nodes
        .patch_status(
            &cfg.node,
            &PatchParams::default(),
            &Patch::Strategic(status_patch(cfg, &not_ready, true)),
        )
        .await?;
    set_taint(&nodes, node, not_ready.is_some()).await?;
    Ok(())
}

/// Adds or removes the not-ready NoSchedule taint on `node` (as just read or patched), keeping every
/// other taint; the resourceVersion guards against a concurrent change.
async fn set_taint(nodes: &Api<Node>, node: Node, tainted: bool) -> Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    let has = taints
        .iter()
        .any(|t| t.key == NOT_READY_TAINT && t.effect == "NoSchedule");
    if has == tainted {
        return Ok(());
    }
    if tainted {
        taints.push(serde_json::from_value(
            json!({"key": NOT_READY_TAINT, "effect": "NoSchedule"}),
        )?);
    } else {
        taints.retain(|t| !(t.key == NOT_READY_TAINT && t.effect == "NoSchedule"));
    }
    let rv = node.metadata.resource_version;
    nodes
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"resourceVersion": rv}, "spec": {"taints": taints}
            })),
        )
        .await?;
    Ok(())
}

async fn renew_lease(client: &kube::Client, cfg: &NodeletConfig, node_uid: &str) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    // MicroTime has exactly six fractional digits on the wire.
    let now = serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        Timestamp::now(),
    ))?;
    let patch = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": cfg.node, "ownerReferences": [{
            "apiVersion": "v1", "kind": "Node", "name": cfg.node, "uid": node_uid
        }]},
        "spec": {"holderIdentity": cfg.node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}
    });
    leases
        .patch(
            &cfg.node,
            &PatchParams::apply("weft-nodelet").force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

/// Renews the Lease and re-posts status every few seconds; flips readiness and the taint when the
/// CNI configuration appears or goes away.
pub async fn heartbeat(
    client: kube::Client,
    cfg: NodeletConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut last: Option<Option<String>> = None;
    let mut last_beat = tokio::time::Instant::now();
    loop {
        let not_ready = network_not_ready(Path::new(CNI_CONF_DIR));
        let changed = last.as_ref() != Some(&not_ready);
        if !changed && last_beat.elapsed() < HEARTBEAT {
            tokio::select! {
                _ = tokio::time::sleep(NETWORK_CHECK) => continue,
                _ = stop.changed() => return,
            }
        }
        last_beat = tokio::time::Instant::now();
        let res: Result<()> = async {
            // The status patch answers with the whole Node: its uid owns the Lease and its taints
            // are what set_taint edits, so no separate read is needed.
            let node = nodes
                .patch_status(
                    &cfg.node,
                    &PatchParams::default(),
                    &Patch::Strategic(status_patch(&cfg, &not_ready, changed)),
                )
                .await?;
            let uid = node.metadata.uid.clone().unwrap_or_default();
            renew_lease(&client, &cfg, &uid).await?;
            set_taint(&nodes, node, not_ready.is_some()).await?;
            Ok(())
        }
        .await;
        match res {
            Ok(()) => {
                if changed {
                    tracing::info!(node = %cfg.node, ready = not_ready.is_none(), reason = ?not_ready, "node readiness");
                }
                last = Some(not_ready);
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "heartbeat failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(NETWORK_CHECK) => {}
            _ = stop.changed() => return,
        }
    }
}
