//! The pods bound to this node: a watch, one worker task per pod, and a sync loop that starts workers
//! for new pods, stops them for deleted ones, and finishes graceful deletion once a worker has torn its
//! pod down (the kubelet's final `delete` with grace period 0).
//!
//! A record per running pod (`<node_dir>/pods/<namespace>_<name>.json`) tells the probe where the
//! pod's network namespace is.

use super::NodeletConfig;
use super::cni::{self, NetworkList};
use super::container;
use super::image::{self, DEFAULT_PATH};
use super::launch::{self, Launch};
use super::netns;
use super::rootfs::{self, Bind, HostEntry, SYSTEM_DIRS, SandboxFs};
use super::status::{CState, ContainerRt, PodRt, render_status};
use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const SYNC_EVERY: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(20);
const MAX_GRACE: Duration = Duration::from_secs(10);

/// Where the probe finds a pod's network namespace.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PodRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub host_network: bool,
    /// The netns path inside the nodelet's mount namespace (`/run/netns/…`), or the node's netns path
    /// for host-network pods.
    pub netns: PathBuf,
    pub ips: Vec<String>,
}

pub fn record_path(pods_dir: &Path, ns: &str, name: &str) -> PathBuf {
    pods_dir.join(format!("{ns}_{name}.json"))
}

/// Namespace, name and uid of a pod; shown as `namespace/name`.
#[derive(Clone, Debug)]
struct PodId {
    ns: String,
    name: String,
    uid: String,
}

impl PodId {
    fn of(pod: &Pod) -> Self {
        let m = &pod.metadata;
        Self {
            ns: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for PodId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ns, self.name)
    }
}

struct Worker {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
    id: PodId,
}

/// Watches this node's pods and runs them until `stop`; then tears every pod down.
pub async fn run(client: kube::Client, cfg: NodeletConfig, mut stop: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node));
    let (kick_tx, mut kick_rx) = tokio::sync::mpsc::channel::<()>(1);
    let stream = reflector(writer, watcher(api.clone(), wc))
        .default_backoff()
        .touched_objects();
    let watch_task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "pod watch error");
            }
            let _ = kick_tx.try_send(());
        }
    });
    let _ = std::fs::create_dir_all(cfg.pods_dir());
    let mut workers: HashMap<String, Worker> = HashMap::new();
    loop {
        tokio::select! {
            _ = kick_rx.recv() => {}
            _ = tokio::time::sleep(SYNC_EVERY) => {}
            _ = stop.changed() => break,
        }
        let pods: HashMap<String, Arc<Pod>> = reader
            .state()
            .into_iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect();
        for (uid, pod) in &pods {
            if pod.metadata.deletion_timestamp.is_none() && !workers.contains_key(uid) {
                let (tx, rx) = watch::channel(false);
                let id = PodId::of(pod);
                tracing::info!(pod = %id, "starting pod");
                let handle =
                    tokio::spawn(pod_worker(client.clone(), cfg.clone(), (**pod).clone(), rx));
                workers.insert(
                    uid.clone(),
                    Worker {
                        stop: tx,
                        handle,
                        id,
                    },
                );
            }
        }
        let mut finished = Vec::new();
        for (uid, w) in &workers {
            let gone = pods
                .get(uid)
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
            if gone && !*w.stop.borrow() {
                tracing::info!(pod = %w.id, "stopping pod");
                let _ = w.stop.send(true);
            }
            if w.handle.is_finished() {
                finished.push(uid.clone());
            }
        }
        for uid in finished {
            let Some(w) = workers.remove(&uid) else {
                continue;
            };
            if pods
                .get(&uid)
                .is_some_and(|p| p.metadata.deletion_timestamp.is_some())
            {
                let api: Api<Pod> = Api::namespaced(client.clone(), &w.id.ns);
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&w.id.name, &dp).await {
                    Ok(_) => tracing::info!(pod = %w.id, "pod deleted"),
                    Err(e) => tracing::warn!(error = %e, "failed to finish deleting pod"),
                }
            }
        }
    }
    watch_task.abort();
    for w in workers.values() {
        let _ = w.stop.send(true);
    }
    for (_, w) in workers {
        let _ = w.handle.await;
    }
}

/// Posts pod status when it changed.
struct Reporter {
    api: Api<Pod>,
    name: String,
    last: Option<Value>,
    since: Timestamp,
    last_ready: bool,
}

impl Reporter {
    async fn report(&mut self, rt: &PodRt) {
        if rt.all_ready() != self.last_ready {
            self.last_ready = rt.all_ready();
            self.since = Timestamp::now();
        }
        let patch = render_status(rt, &self.since);
        if self.last.as_ref() == Some(&patch) {
            return;
        }
        match self
            .api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(patch.clone()),
            )
            .await
        {
            Ok(_) => self.last = Some(patch),
            Err(e) => tracing::debug!(error = %e, pod = %self.name, "status patch failed"),
        }
    }
}

async fn event(
    client: &kube::Client,
    id: &PodId,
    node: &str,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &id.ns);
    let now = Timestamp::now().to_string();
    let ev = json!({
        "metadata": {"generateName": format!("{}.", id.name)},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": id.name, "namespace": id.ns, "uid": id.uid},
        "reason": reason, "message": message, "type": kind,
        "source": {"component": "kubelet", "host": node},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": "kubelet", "reportingInstance": node,
    });
    if let Ok(ev) = serde_json::from_value(ev) {
        let _ = api.create(&PostParams::default(), &ev).await;
    }
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

async fn pod_worker(
    client: kube::Client,
    cfg: NodeletConfig,
    pod: Pod,
    stop: watch::Receiver<bool>,
) {
    let id = PodId::of(&pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let rt = PodRt {
        host_ip: cfg.node_ip.to_string(),
        pod_ips: vec![],
        start_time: Timestamp::now(),
        sandbox_ready: false,
        sandbox_error: None,
        containers: spec
            .containers
            .iter()
            .map(|c| ContainerRt::new(&c.name, c.image.as_deref().unwrap_or("")))
            .collect(),
        terminal: None,
    };
    let reporter = Reporter {
        api: Api::namespaced(client.clone(), &id.ns),
        name: id.name.clone(),
        last: None,
        since: Timestamp::now(),
        last_ready: false,
    };
    let res = if spec.host_network == Some(true) {
        host_pod(client, cfg.clone(), pod, &id, rt, reporter, stop).await
    } else {
        sandboxed_pod(client, cfg.clone(), pod, &id, rt, reporter, stop).await
    };
    if let Err(e) = res {
        tracing::warn!(pod = %id, error = %format!("{e:#}"), "pod teardown reported errors");
    }
    let _ = std::fs::remove_file(record_path(&cfg.pods_dir(), &id.ns, &id.name));
}

fn write_record(
    cfg: &NodeletConfig,
    id: &PodId,
    host_network: bool,
    netns: &Path,
    ips: &[String],
) -> Result<()> {
    let rec = PodRecord {
        uid: id.uid.clone(),
        namespace: id.ns.clone(),
        name: id.name.clone(),
        host_network,
        netns: netns.to_path_buf(),
        ips: ips.to_vec(),
    };
    let p = record_path(&cfg.pods_dir(), &id.ns, &id.name);
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&rec)?)?;
    std::fs::rename(tmp, p)?;
    Ok(())
}

/// The outcome of CNI ADD, kept for DEL (the same list and its result, as libcni does, even if the
/// conf dir changes meanwhile).
struct Attachment {
    list: NetworkList,
    result: Value,
}

fn cni_runtime(pod: &Pod, id: &PodId, netns: &Path) -> cni::Runtime {
    let mut caps = serde_json::Map::new();
    let mappings: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let hp = p.host_port.filter(|h| *h > 0)?;
            Some(json!({"hostPort": hp, "containerPort": p.container_port,
                "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into()).to_lowercase(),
                "hostIP": p.host_ip.clone().unwrap_or_default()}))
        })
        .collect();
    if !mappings.is_empty() {
        caps.insert("portMappings".into(), Value::Array(mappings));
    }
    cni::Runtime {
        container_id: id.uid.clone(),
        netns: netns.to_path_buf(),
        ifname: "eth0".into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), id.ns.clone()),
            ("K8S_POD_NAME".into(), id.name.clone()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), id.uid.clone()),
            ("K8S_POD_UID".into(), id.uid.clone()),
        ],
        capabilities: caps,
    }
}

/// A pod with its own network: netns + CNI, then its ports served until stopped.
async fn sandboxed_pod(
    client: kube::Client,
    cfg: NodeletConfig,
    pod: Pod,
    id: &PodId,
    mut rt: PodRt,
    mut rep: Reporter,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let netns_name = format!("cni-{}", id.uid);
    let netns = Path::new(netns::NETNS_DIR).join(&netns_name);
    let rt_conf = cni_runtime(&pod, id, &netns);
    let mut backoff = Duration::from_secs(1);
    let attachment = loop {
        if *stop.borrow() {
            return Ok(());
        }
        let attempt: Result<Attachment> = async {
            let list = cni::load_network(Path::new(super::node::CNI_CONF_DIR))?
                .context("network is not ready: no CNI configuration file in /etc/cni/net.d")?;
            if !netns.exists() {
                // Mounts and a thread join block: off the runtime's few worker threads, which a
                // burst of pods would otherwise block (their watches and status reports wait behind).
                let name = netns_name.clone();
                tokio::task::spawn_blocking(move || {
                    netns::create(Path::new(netns::NETNS_DIR), &name)
                })
                .await??;
            }
            let (l, r) = (list.clone(), rt_conf.clone());
            let started = std::time::Instant::now();
            let result = tokio::task::spawn_blocking(move || cni::add(&l, &r)).await??;
            // The CNI ADD's own duration (every plugin of the list), which the overlay benchmark
            // reads from this log.
            tracing::info!(
                pod = %id,
                cni_add_ms = started.elapsed().as_secs_f64() * 1e3,
                "CNI ADD done"
            );
            Ok(Attachment { list, result })
        }
        .await;
        match attempt {
            Ok(a) => break a,
            Err(e) => {
                let msg = format!("failed to set up pod network: {e:#}");
                tracing::warn!(pod = %id, "{msg}");
                if rt.sandbox_error.as_deref() != Some(msg.as_str()) {
                    event(
                        &client,
                        id,
                        &cfg.node,
                        "Warning",
                        "FailedCreatePodSandBox",
                        &msg,
                    )
                    .await;
                }
                // Clean up whatever the failed ADD left behind, as a runtime does, before retrying.
                if let Ok(Some(list)) = cni::load_network(Path::new(super::node::CNI_CONF_DIR)) {
                    let r = rt_conf.clone();
                    let _ = tokio::task::spawn_blocking(move || cni::del(&list, &r, None)).await;
                }
                rt.sandbox_error = Some(msg.clone());
                for c in &mut rt.containers {
                    c.state = CState::waiting("ContainerCreating", msg.clone());
                }
                rep.report(&rt).await;
                if sleep_or_stop(backoff, &mut stop).await {
                    let name = netns_name.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        netns::delete(Path::new(netns::NETNS_DIR), &name)
                    })
                    .await;
                    return Ok(());
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    rt.pod_ips = cni::result_ips(&attachment.result);
    // Containers with ports but without command and args get the nodelet's port server (the probe's
    // counterpart); the others run their process in the pod's network namespace.
    let ports: Vec<crate::serve::PortSpec> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter(|c| !runs_process(c))
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            format!(
                "{}/{}",
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.container_port
            )
            .parse()
            .ok()
        })
        .collect();
    let served = crate::serve::bind_ports(Some(&netns), &ports).and_then(|(b, notes)| {
        for n in notes {
            tracing::info!(pod = %id, "{n}");
        }
        crate::serve::serve(b, Arc::from(id.to_string().as_str()))
    });
    let spec = pod.spec.clone().unwrap_or_default();
    let tasks = match served {
        Ok(t) => {
            let now = Timestamp::now();
            for (c, cs) in rt.containers.iter_mut().zip(&spec.containers) {
                if !runs_process(cs) {
                    c.state = CState::Running { started_at: now };
                    c.ready = true;
                }
            }
            t
        }
        Err(e) => {
            for (c, cs) in rt.containers.iter_mut().zip(&spec.containers) {
                if !runs_process(cs) {
                    c.state = CState::waiting("RunContainerError", format!("{e:#}"));
                }
            }
            Vec::new()
        }
    };
    rt.sandbox_ready = true;
    rt.sandbox_error = None;
    let _ = write_record(&cfg, id, false, &netns, &rt.pod_ips);
    let pod_dir = cfg.pods_dir().join(&id.uid);
    let mut errors = Vec::new();
    if spec.containers.iter().any(runs_process) {
        let hostname = spec.hostname.clone().unwrap_or_else(|| id.name.clone());
        let pod_ip = rt.pod_ips.first().cloned();
        let mut etc_files = Vec::new();
        for (path, text) in render_etc_files(&hostname, pod_ip.as_deref(), &id.ns) {
            let src = pod_dir.join("etc").join(path.trim_start_matches("/etc/"));
            match write_pod_file(&src, &text) {
                Ok(()) => etc_files.push((src, path)),
                Err(e) => tracing::warn!(pod = %id, error = %format!("{e:#}"), "pod file {path}"),
            }
        }
        let sandbox = Sandbox {
            netns: netns.clone(),
            pod_ip,
            hostname,
            etc_files,
        };
        if let Err(e) = run_containers(&client, &cfg, &pod, id, rt, rep, stop, Some(sandbox)).await
        {
            errors.push(e);
        }
    } else {
        rep.report(&rt).await;
        // A patch lost to a transient error is retried (report() only skips what was posted).
        while !sleep_or_stop(Duration::from_secs(10), &mut stop).await {
            rep.report(&rt).await;
        }
    }
    for t in tasks {
        t.abort();
    }
    let _ = std::fs::remove_dir_all(pod_dir.join("volumes"));
    let _ = std::fs::remove_dir_all(pod_dir.join("rootfs"));
    let _ = std::fs::remove_dir_all(pod_dir.join("etc"));
    let (list, result, r) = (attachment.list, attachment.result, rt_conf);
    errors.extend(
        tokio::task::spawn_blocking(move || cni::del(&list, &r, Some(&result)))
            .await
            .unwrap_or_default(),
    );
    let name = netns_name.clone();
    match tokio::task::spawn_blocking(move || netns::delete(Path::new(netns::NETNS_DIR), &name))
        .await
    {
        Ok(Err(e)) => errors.push(e.into()),
        Err(e) => errors.push(anyhow::anyhow!("failed to delete netns {netns_name}: {e}")),
        Ok(Ok(())) => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            errors
                .iter()
                .map(|e| format!("{e:#}"))
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }
}

fn write_pod_file(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))
}

/// Whether a container of a sandboxed pod runs a process: one with a command or args, or one that
/// declares no ports (the image's entrypoint and cmd, as a runtime runs it: agnhost's `pause`, so it
/// can be exec'd into). A container with ports and neither command nor args gets the nodelet's port
/// server instead, the counterpart of `weft-e2e probe`.
fn runs_process(c: &Container) -> bool {
    c.command.as_ref().is_some_and(|v| !v.is_empty())
        || c.args.as_ref().is_some_and(|v| !v.is_empty())
        || c.ports.as_ref().is_none_or(|p| p.is_empty())
}

/// What a sandboxed pod's containers share: the pod's network namespace, host name and files.
#[derive(Clone, Debug)]
struct Sandbox {
    netns: PathBuf,
    pod_ip: Option<String>,
    hostname: String,
    /// The pod's /etc/hosts, /etc/hostname, /etc/resolv.conf (source, path in the container).
    etc_files: Vec<(PathBuf, &'static str)>,
}

/// The pod's /etc/hosts, /etc/hostname and /etc/resolv.conf, as a kubelet writes them.
fn render_etc_files(
    hostname: &str,
    pod_ip: Option<&str>,
    namespace: &str,
) -> [(&'static str, String); 3] {
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file (weft-nodelet).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if let Some(ip) = pod_ip {
        hosts.push_str(&format!("{ip}\t{hostname}\n"));
    }
    [
        ("/etc/hosts", hosts),
        ("/etc/hostname", format!("{hostname}\n")),
        (
            "/etc/resolv.conf",
            format!(
                "# weft-nodelet: the local cluster has no cluster DNS server.\nsearch {namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
            ),
        ),
    ]
}

/// What the pod spec asks for that the nodelet cannot do, as a kubelet-style message; None if
/// nothing. Such a pod is refused on its status, never half-run.
pub fn refusal(spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<String> {
    let mut why = Vec::new();
    if spec.init_containers.as_ref().is_some_and(|v| !v.is_empty()) {
        why.push("init containers".to_string());
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|v| !v.is_empty())
    {
        why.push("ephemeral containers".to_string());
    }
    if spec.host_pid == Some(true) || spec.host_ipc == Some(true) {
        why.push("hostPID/hostIPC".to_string());
    }
    if spec.share_process_namespace == Some(true) {
        why.push("shareProcessNamespace".to_string());
    }
    for c in &spec.containers {
        if c.volume_devices.as_ref().is_some_and(|v| !v.is_empty()) {
            why.push(format!("volumeDevices (container {:?})", c.name));
        }
        if c.lifecycle.is_some() {
            why.push(format!("lifecycle hooks (container {:?})", c.name));
        }
        for (kind, p) in [
            ("liveness", &c.liveness_probe),
            ("readiness", &c.readiness_probe),
            ("startup", &c.startup_probe),
        ] {
            if let Some(p) = p
                && p.http_get.is_none()
                && p.tcp_socket.is_none()
                && p.exec.is_none()
            {
                why.push(format!("{kind} probe of container {:?} (only httpGet, tcpSocket and exec probes are supported)", c.name));
            }
        }
        if c.startup_probe.is_some() {
            why.push(format!("startup probe (container {:?})", c.name));
        }
    }
    why.dedup();
    (!why.is_empty()).then(|| format!("weft-nodelet cannot run this pod: {}", why.join(", ")))
}

/// A host-network pod: one supervised process per container, in the node's network namespace.
async fn host_pod(
    client: kube::Client,
    cfg: NodeletConfig,
    pod: Pod,
    id: &PodId,
    mut rt: PodRt,
    rep: Reporter,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    rt.pod_ips = std::iter::once(cfg.node_ip.to_string())
        .chain(cfg.node_ip6.clone())
        .collect();
    let _ = write_record(&cfg, id, true, &cfg.netns, &rt.pod_ips);
    let res = run_containers(&client, &cfg, &pod, id, rt, rep, stop, None).await;
    let _ = std::fs::remove_dir_all(cfg.pods_dir().join(&id.uid).join("volumes"));
    let _ = std::fs::remove_dir_all(cfg.pods_dir().join(&id.uid).join("rootfs"));
    res
}

/// A container's current run, for the kubelet API (`weft-kubelet-api` reads it): the process to
/// enter for exec, and which log file is the current one.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ContainerRecord {
    pub pid: u32,
    /// The run's index: its log is `logs/<container>/<restarts>.log`.
    pub restarts: i32,
    pub running: bool,
}

pub fn container_record_path(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("containers").join(format!("{container}.json"))
}

fn write_container_record(pod_dir: &Path, container: &str, rec: &ContainerRecord) {
    let p = container_record_path(pod_dir, container);
    let res: Result<()> = (|| {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(rec)?)?;
        std::fs::rename(tmp, &p)?;
        Ok(())
    })();
    if let Err(e) = res {
        tracing::warn!(error = %format!("{e:#}"), path = %p.display(), "failed to write the container record");
    }
}

/// Where a container's output goes: one file per run, like the kubelet's
/// `/var/log/pods/<ns>_<name>_<uid>/<container>/<restart>.log`.
pub fn log_path(pod_dir: &Path, container: &str, restart: i32) -> PathBuf {
    pod_dir
        .join("logs")
        .join(container)
        .join(format!("{restart}.log"))
}

/// Prepares the pod's volumes, then runs every container under a supervisor and reports status until
/// `stop`. A pod that asks for what the nodelet cannot do is refused on its status.
#[allow(clippy::too_many_arguments)]
async fn run_containers(
    client: &kube::Client,
    cfg: &NodeletConfig,
    pod: &Pod,
    id: &PodId,
    mut rt: PodRt,
    mut rep: Reporter,
    mut stop: watch::Receiver<bool>,
    sandbox: Option<Sandbox>,
) -> Result<()> {
    let pod_dir = cfg.pods_dir().join(&id.uid);
    let spec = pod.spec.clone().unwrap_or_default();
    let sandboxed = sandbox.is_some();
    if let Some(why) = refusal(&spec) {
        event(client, id, &cfg.node, "Warning", "Failed", &why).await;
        for (c, cs) in rt.containers.iter_mut().zip(&spec.containers) {
            if !sandboxed || runs_process(cs) {
                c.state = CState::waiting("CreateContainerConfigError", why.clone());
            }
        }
        rt.sandbox_ready = true;
        rep.report(&rt).await;
        while !sleep_or_stop(Duration::from_secs(10), &mut stop).await {
            rep.report(&rt).await;
        }
        return Ok(());
    }
    let mut backoff = Duration::from_secs(1);
    let volumes = loop {
        match container::prepare_volumes(client, pod, &pod_dir).await {
            Ok(v) => break v,
            Err(e) => {
                let msg = format!("{e:#}");
                for (c, cs) in rt.containers.iter_mut().zip(&spec.containers) {
                    if !sandboxed || runs_process(cs) {
                        c.state = CState::waiting("CreateContainerConfigError", msg.clone());
                    }
                }
                rep.report(&rt).await;
                if sleep_or_stop(backoff, &mut stop).await {
                    let _ = std::fs::remove_dir_all(pod_dir.join("volumes"));
                    return Ok(());
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    rt.sandbox_ready = true;
    // The pod's CPU cgroup, for every process its containers start (see `cgroups`); it goes when
    // the last supervisor is done with it.
    let cgroup = match &cfg.cgroups {
        Some(cgs) => match cgs.add_pod(&id.uid, &spec) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::warn!(pod = %id, error = %format!("{e:#}"), "no pod cgroup: its containers run in the nodelet's");
                None
            }
        },
        None => None,
    };
    let shared = Arc::new(Mutex::new(rt));
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(16);
    let mut sups = Vec::new();
    let grace =
        Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64)
            .min(MAX_GRACE);
    let mut created_paths = Vec::new();
    let sandbox = sandbox.map(Arc::new);
    for (i, c) in spec.containers.iter().enumerate() {
        if sandboxed && !runs_process(c) {
            continue;
        }
        let mounts = match container::mounts_for(c, &volumes) {
            Ok(m) => m,
            Err(e) => {
                shared
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .containers[i]
                    .state = CState::waiting("CreateContainerConfigError", format!("{e:#}"));
                continue;
            }
        };
        // A host-network container's targets are host paths; one with a root of its own gets them
        // made inside that root.
        if !own_root(sandboxed, c, &probe_system_dirs()) {
            match container::create_targets(&mounts) {
                Ok(p) => created_paths.extend(p),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "mount target"),
            }
        }
        let sup = Supervisor {
            client: client.clone(),
            cfg: cfg.clone(),
            pod: pod.clone(),
            id: id.clone(),
            c: c.clone(),
            idx: i,
            mounts,
            pod_dir: pod_dir.clone(),
            sandbox: sandbox.clone(),
            restart: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            grace,
            shared: shared.clone(),
            changed: changed_tx.clone(),
            cgroup: cgroup.clone(),
        };
        sups.push(tokio::spawn(sup.run(stop.clone())));
    }
    record_created(cfg, &created_paths);
    drop(changed_tx);
    loop {
        let snapshot = shared
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        rep.report(&snapshot).await;
        tokio::select! {
            m = changed_rx.recv() => if m.is_none() { break },
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
    // Every supervisor is done (stopped): wait for the stop signal itself if they ended on their
    // own (all containers terminated), so the pod's status stays posted until then.
    for s in sups {
        let _ = s.await;
    }
    Ok(())
}

/// Paths created on the host for mount targets, for `weft-e2e down` to remove.
fn record_created(cfg: &NodeletConfig, paths: &[PathBuf]) {
    if paths.is_empty() {
        return;
    }
    let f = cfg.node_dir.join("created-paths");
    let mut text = std::fs::read_to_string(&f).unwrap_or_default();
    for p in paths {
        // /var/run is /run, which is private to the node.
        let p = match p.strip_prefix("/var/run") {
            Ok(rest) => Path::new("/run").join(rest),
            Err(_) => p.clone(),
        };
        let private = super::PRIVATE_PATHS.iter().any(|(_, t)| p.starts_with(t));
        if !private {
            text.push_str(&format!("{}\n", p.display()));
        }
    }
    let _ = std::fs::write(f, text);
}

struct Supervisor {
    client: kube::Client,
    cfg: NodeletConfig,
    pod: Pod,
    id: PodId,
    c: Container,
    idx: usize,
    mounts: Vec<Bind>,
    pod_dir: PathBuf,
    sandbox: Option<Arc<Sandbox>>,
    restart: String,
    grace: Duration,
    shared: Arc<Mutex<PodRt>>,
    changed: tokio::sync::mpsc::Sender<()>,
    /// The pod's CPU cgroup, which its container's process joins.
    cgroup: Option<Arc<super::cgroups::PodCgroup>>,
}

impl Supervisor {
    fn update(&self, f: impl FnOnce(&mut ContainerRt)) {
        if let Ok(mut rt) = self.shared.lock() {
            let rt = &mut *rt;
            f(&mut rt.containers[self.idx]);
            // The pod is over once every container has terminated for good.
            let exits: Vec<i32> = rt
                .containers
                .iter()
                .filter_map(|c| match c.state {
                    CState::Terminated { exit_code, .. } => Some(exit_code),
                    _ => None,
                })
                .collect();
            if exits.len() == rt.containers.len() {
                rt.terminal = Some(if exits.iter().all(|c| *c == 0) {
                    "Succeeded"
                } else {
                    "Failed"
                });
            }
        }
        let _ = self.changed.try_send(());
    }

    fn restarts(&self) -> i32 {
        self.shared
            .lock()
            .map(|rt| rt.containers[self.idx].restarts)
            .unwrap_or(0)
    }

    /// Starts the container's process once.
    async fn start(
        &self,
        image: &str,
    ) -> std::result::Result<
        (tokio::process::Child, BTreeMap<String, String>),
        (&'static str, anyhow::Error),
    > {
        let bin =
            launch::open_image_binary(&self.cfg.images, image).map_err(|e| ("ErrImagePull", e))?;
        let node_ip = self.cfg.node_ip.to_string();
        let pod_ips: Vec<String> = match &self.sandbox {
            Some(sb) => sb.pod_ip.iter().cloned().collect(),
            None => std::iter::once(node_ip.clone())
                .chain(self.cfg.node_ip6.clone())
                .collect(),
        };
        let pod = container::with_runtime_ips(&self.pod, &node_ip, &pod_ips);
        let mut env = container::build_env(&self.client, &self.cfg, &pod, &self.c)
            .await
            .map_err(|e| ("CreateContainerConfigError", e))?;
        let spec = image::image_spec(image);
        let withheld =
            container::withhold_sctp_ports(&spec.binary, &mut env, container::kernel_has_sctp());
        if !withheld.is_empty() && self.restarts() == 0 {
            event(
                &self.client,
                &self.id,
                &self.cfg.node,
                "Warning",
                "SCTPUnavailable",
                &format!(
                    "container {}: this node's kernel has no SCTP sockets; {} withheld, so agnhost serves its other ports without these SCTP servers",
                    self.c.name,
                    withheld.join(", ")
                ),
            )
            .await;
        }
        let argv: Vec<String> =
            image::plan_argv(&spec, self.c.command.as_deref(), self.c.args.as_deref())
                .iter()
                .map(|a| container::expand(a, &env))
                .collect();
        let Some(argv0) = argv.first() else {
            return Err((
                "RunContainerError",
                anyhow::anyhow!(
                    "no command specified: the container sets none and image {image:?} has no entrypoint"
                ),
            ));
        };
        let path = env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH);
        let exec = image::plan_exec(&spec, argv0, path);
        let log = log_path(&self.pod_dir, &self.c.name, self.restarts());
        let workdir = self.c.working_dir.as_deref();
        let system = probe_system_dirs();
        let fs = if own_root(self.sandbox.is_some(), &self.c, &system) {
            let root = self.pod_dir.join("rootfs").join(&self.c.name);
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).map_err(|e| ("RunContainerError", e.into()))?;
            // A host-network container keeps the node's /etc (hosts, resolv.conf) from the shared
            // system dirs.
            let etc: Vec<(PathBuf, &str)> = self
                .sandbox
                .iter()
                .flat_map(|sb| sb.etc_files.iter().map(|(s, d)| (s.clone(), *d)))
                .collect();
            rootfs::plan_sandbox_fs(&SandboxFs {
                root: &root,
                system: &system,
                image_binary: Some((bin.fd_path(), spec.path.as_str())),
                etc_files: &etc,
                volumes: &self.mounts,
                workdir,
            })
        } else {
            rootfs::plan_host_fs(&self.mounts, workdir)
        };
        launch::spawn(&Launch {
            binary: &bin,
            exec: &exec,
            argv: &argv,
            env: &env,
            fs: &fs,
            netns: self.sandbox.as_ref().map(|s| s.netns.as_path()),
            hostname: self.sandbox.as_ref().map(|s| s.hostname.as_str()),
            log: &log,
            cgroup_procs: self.cgroup.as_ref().and_then(|c| c.procs()),
        })
        .map(|child| (child, env.clone()))
        .map_err(|e| ("RunContainerError", e))
    }

    /// Runs one probe of the running container (process `pid`, environment `env`); true on success.
    async fn probe(&self, p: &Probe, pid: Option<u32>, env: &BTreeMap<String, String>) -> bool {
        let Some(e) = &p.exec else {
            let host = match &self.sandbox {
                Some(sb) => sb.pod_ip.clone().unwrap_or_default(),
                None => self.cfg.node_ip.to_string(),
            };
            let ports = self.c.ports.clone().unwrap_or_default();
            return container::run_probe(p, &host, &ports).await.is_ok();
        };
        let Some(pid) = pid else {
            return false;
        };
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
        let mut cmd = tokio::process::Command::new("nsenter");
        cmd.arg("--target")
            .arg(pid.to_string())
            .args(["--mount", "--net", "--uts", "--"])
            .args(e.command.iter().flatten())
            .env_clear()
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        matches!(
            tokio::time::timeout(timeout, async { cmd.status().await }).await,
            Ok(Ok(st)) if st.success()
        )
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        let image = self.c.image.clone().unwrap_or_default();
        loop {
            if *stop.borrow() {
                return;
            }
            let started = Timestamp::now();
            let child = self.start(&image).await;
            let (mut child, env) = match child {
                Ok(c) => c,
                Err((reason, e)) => {
                    let msg = format!("{e:#}");
                    let first = self
                        .shared
                        .lock()
                        .map(|rt| !matches!(&rt.containers[self.idx].state, CState::Waiting { message, .. } if *message == msg))
                        .unwrap_or(true);
                    if first {
                        tracing::warn!(pod = %self.id, container = %self.c.name, "{reason}: {msg}");
                        event(
                            &self.client,
                            &self.id,
                            &self.cfg.node,
                            "Warning",
                            "Failed",
                            &format!("Error: {reason}: {msg}"),
                        )
                        .await;
                    }
                    self.update(|c| c.state = CState::waiting(reason, msg));
                    if sleep_or_stop(backoff, &mut stop).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let run = ContainerRecord {
                pid: child.id().unwrap_or(0),
                restarts: self.restarts(),
                running: true,
            };
            write_container_record(&self.pod_dir, &self.c.name, &run);
            let has_readiness = self.c.readiness_probe.is_some();
            self.update(|c| {
                c.state = CState::Running {
                    started_at: started,
                };
                c.ready = !has_readiness;
            });
            let exit = self.watch_process(&mut child, &env, &mut stop).await;
            write_container_record(
                &self.pod_dir,
                &self.c.name,
                &ContainerRecord {
                    running: false,
                    ..run
                },
            );
            let Some(code) = exit else {
                return; // stopped
            };
            let finished = Timestamp::now();
            let again = match self.restart.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            self.update(|c| {
                let t = CState::Terminated {
                    exit_code: code,
                    reason: if code == 0 {
                        "Completed".into()
                    } else {
                        "Error".into()
                    },
                    started_at: started,
                    finished_at: finished,
                };
                c.ready = false;
                if again {
                    c.restarts += 1;
                    c.last = Some(t);
                    c.state = CState::waiting(
                        "CrashLoopBackOff",
                        format!(
                            "back-off {}s restarting failed container={}",
                            backoff.as_secs(),
                            c.name
                        ),
                    );
                } else {
                    c.state = t;
                }
            });
            if !again {
                let _ = stop.changed().await;
                return;
            }
            if sleep_or_stop(backoff, &mut stop).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Waits for the process to exit (Some(exit code)) or for stop (None, process killed), running the
    /// container's probes meanwhile.
    async fn watch_process(
        &self,
        child: &mut tokio::process::Child,
        env: &BTreeMap<String, String>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<i32> {
        let pid = child.id();
        let readiness = self.c.readiness_probe.clone();
        let liveness = self.c.liveness_probe.clone();
        let period = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            Duration::from_secs(
                p.as_ref()
                    .and_then(|p| p.period_seconds)
                    .unwrap_or(10)
                    .max(1) as u64,
            )
        };
        let delay = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            Duration::from_secs(
                p.as_ref()
                    .and_then(|p| p.initial_delay_seconds)
                    .unwrap_or(0)
                    .max(0) as u64,
            )
        };
        let started = tokio::time::Instant::now();
        let mut next_ready = started + delay(&readiness);
        let mut next_live = started + delay(&liveness);
        let mut live_failures = 0;
        let mut ready_failures = 0;
        loop {
            let next = match (&readiness, &liveness) {
                (Some(_), Some(_)) => next_ready.min(next_live),
                (Some(_), None) => next_ready,
                (None, Some(_)) => next_live,
                (None, None) => started + Duration::from_secs(86400 * 365),
            };
            tokio::select! {
                status = child.wait() => {
                    return Some(status.ok().and_then(|s| s.code().or_else(|| {
                        use std::os::unix::process::ExitStatusExt;
                        s.signal().map(|sig| 128 + sig)
                    })).unwrap_or(-1));
                }
                _ = stop.changed() => {
                    self.kill(child).await;
                    return None;
                }
                _ = tokio::time::sleep_until(next) => {
                    let now = tokio::time::Instant::now();
                    if let Some(p) = &readiness
                        && now >= next_ready
                    {
                        {
                            let ok = self.probe(p, pid, env).await;
                            ready_failures = if ok { 0 } else { ready_failures + 1 };
                            let threshold = p.failure_threshold.unwrap_or(3).max(1);
                            if ok || ready_failures >= threshold {
                                self.update(|c| c.ready = ok);
                            }
                            next_ready = now + period(&readiness);
                        }
                    }
                    if let Some(p) = &liveness
                        && now >= next_live
                    {
                        {
                            let ok = self.probe(p, pid, env).await;
                            live_failures = if ok { 0 } else { live_failures + 1 };
                            if live_failures >= p.failure_threshold.unwrap_or(3).max(1) {
                                tracing::info!(container = %self.c.name, "liveness probe failed: restarting");
                                self.kill(child).await;
                                return Some(137);
                            }
                            next_live = now + period(&liveness);
                        }
                    }
                }
            }
        }
    }

    async fn kill(&self, child: &mut tokio::process::Child) {
        if let Some(pid) = child.id() {
            // SAFETY: plain syscall; the process leads its own session and process group.
            unsafe { libc::kill(-(pid as i32), libc::SIGTERM) };
            if tokio::time::timeout(self.grace, child.wait())
                .await
                .is_err()
            {
                // SAFETY: as above.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                let _ = child.wait().await;
            }
        }
    }
}

/// Whether a container runs in a root of its own: every container of a pod with its own network,
/// and a host-network one whose image's binary cannot be where the image has it in the node's root.
fn own_root(sandboxed: bool, c: &Container, system: &[(&str, HostEntry)]) -> bool {
    sandboxed
        || rootfs::host_container_needs_own_root(
            &image::image_spec(c.image.as_deref().unwrap_or_default()).path,
            system,
        )
}

/// What the host has at each of [`SYSTEM_DIRS`].
fn probe_system_dirs() -> Vec<(&'static str, HostEntry)> {
    SYSTEM_DIRS
        .iter()
        .map(|d| {
            let p = Path::new(d);
            let e = match std::fs::read_link(p) {
                Ok(t) => HostEntry::Symlink(t),
                Err(_) if p.is_dir() => HostEntry::Dir,
                Err(_) => HostEntry::Missing,
            };
            (*d, e)
        })
        .collect()
}

/// Every pod record of a node directory.
pub fn records(pods_dir: &Path) -> Vec<PodRecord> {
    std::fs::read_dir(pods_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_container_runs_a_process_unless_it_only_declares_ports() {
        let cases = [
            (
                json!({"name": "c", "command": ["/agnhost", "porter"]}),
                true,
            ),
            (json!({"name": "c", "args": ["pause"]}), true),
            (
                json!({"name": "c", "command": ["/agnhost"], "ports": [{"containerPort": 80}]}),
                true,
            ),
            (json!({"name": "harry-potter-client"}), true),
            (json!({"name": "c", "command": [], "ports": []}), true),
            (
                json!({"name": "app", "ports": [{"containerPort": 80}]}),
                false,
            ),
        ];
        for (c, want) in cases {
            assert_eq!(runs_process(&container(c.clone())), want, "{c}");
        }
    }

    #[test]
    fn only_host_network_containers_of_root_kept_images_get_a_root_of_their_own() {
        let sys = [("/usr", HostEntry::Dir), ("/bin", HostEntry::Dir)];
        let agnhost = container(
            json!({"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.45"}),
        );
        let proxy = container(json!({"name": "c", "image": "registry.k8s.io/kube-proxy:v1.34.4"}));
        assert!(own_root(false, &agnhost, &sys));
        assert!(!own_root(false, &proxy, &sys));
        assert!(own_root(true, &proxy, &sys), "a pod with its own network");
    }
}
