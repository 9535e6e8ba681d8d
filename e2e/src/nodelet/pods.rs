//! The pods bound to this node: a watch, one worker task per pod, and a sync loop that starts workers
//! for new pods, stops them for deleted ones, and finishes graceful deletion once a worker has torn its
//! pod down (the kubelet's final `delete` with grace period 0).
//!
//! A record per running pod (`<node_dir>/pods/<namespace>_<name>.json`) tells the probe where the
//! pod's network namespace is.

use super::NodeletConfig;
use super::cni::{self, NetworkList};
use super::container::{self, Mount};
use super::status::{CState, ContainerRt, PodRt, render_status};
use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::{Value, json};
use std::collections::HashMap;
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
    let netns = PathBuf::from("/run/netns").join(&netns_name);
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
                crate::sys::ip(&["netns", "add", &netns_name])?;
                crate::sys::ip(&["-n", &netns_name, "link", "set", "lo", "up"])?;
            }
            let (l, r) = (list.clone(), rt_conf.clone());
            let result = tokio::task::spawn_blocking(move || cni::add(&l, &r)).await??;
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
                    let _ = crate::sys::ip(&["netns", "del", &netns_name]);
                    return Ok(());
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    rt.pod_ips = cni::result_ips(&attachment.result);
    let ports: Vec<crate::serve::PortSpec> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
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
    let tasks = match served {
        Ok(t) => {
            let now = Timestamp::now();
            for c in &mut rt.containers {
                c.state = CState::Running { started_at: now };
                c.ready = true;
            }
            t
        }
        Err(e) => {
            for c in &mut rt.containers {
                c.state = CState::waiting("RunContainerError", format!("{e:#}"));
            }
            Vec::new()
        }
    };
    rt.sandbox_ready = true;
    rt.sandbox_error = None;
    let _ = write_record(&cfg, id, false, &netns, &rt.pod_ips);
    rep.report(&rt).await;
    // A patch lost to a transient error is retried (report() only skips what was posted).
    while !sleep_or_stop(Duration::from_secs(10), &mut stop).await {
        rep.report(&rt).await;
    }
    for t in tasks {
        t.abort();
    }
    let mut errors = Vec::new();
    let (list, result, r) = (attachment.list, attachment.result, rt_conf);
    errors.extend(
        tokio::task::spawn_blocking(move || cni::del(&list, &r, Some(&result)))
            .await
            .unwrap_or_default(),
    );
    if let Err(e) = crate::sys::ip(&["netns", "del", &netns_name]) {
        errors.push(e);
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

/// A host-network pod: volumes, then one supervised process per container.
async fn host_pod(
    client: kube::Client,
    cfg: NodeletConfig,
    pod: Pod,
    id: &PodId,
    mut rt: PodRt,
    mut rep: Reporter,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let pod_dir = cfg.pods_dir().join(&id.uid);
    rt.pod_ips = std::iter::once(cfg.node_ip.to_string())
        .chain(cfg.node_ip6.clone())
        .collect();
    let mut backoff = Duration::from_secs(1);
    let volumes = loop {
        match container::prepare_volumes(&client, &pod, &pod_dir).await {
            Ok(v) => break v,
            Err(e) => {
                for c in &mut rt.containers {
                    c.state = CState::waiting("CreateContainerConfigError", format!("{e:#}"));
                }
                rep.report(&rt).await;
                if sleep_or_stop(backoff, &mut stop).await {
                    let _ = std::fs::remove_dir_all(&pod_dir);
                    return Ok(());
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    rt.sandbox_ready = true;
    let _ = write_record(&cfg, id, true, &cfg.netns, &rt.pod_ips);
    let shared = Arc::new(Mutex::new(rt));
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(16);
    let mut sups = Vec::new();
    let spec = pod.spec.clone().unwrap_or_default();
    let grace =
        Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64)
            .min(MAX_GRACE);
    let mut created_paths = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
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
        match container::create_targets(&mounts) {
            Ok(p) => created_paths.extend(p),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "mount target"),
        }
        let sup = Supervisor {
            client: client.clone(),
            cfg: cfg.clone(),
            pod: pod.clone(),
            c: c.clone(),
            idx: i,
            mounts,
            log: pod_dir.join(format!("{}.log", c.name)),
            restart: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            grace,
            shared: shared.clone(),
            changed: changed_tx.clone(),
        };
        sups.push(tokio::spawn(sup.run(stop.clone())));
    }
    record_created(&cfg, &created_paths);
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
    for s in sups {
        let _ = s.await;
    }
    let _ = std::fs::remove_dir_all(pod_dir.join("volumes"));
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
    c: Container,
    idx: usize,
    mounts: Vec<Mount>,
    log: PathBuf,
    restart: String,
    grace: Duration,
    shared: Arc<Mutex<PodRt>>,
    changed: tokio::sync::mpsc::Sender<()>,
}

impl Supervisor {
    fn update(&self, f: impl FnOnce(&mut ContainerRt, &mut Option<&'static str>)) {
        if let Ok(mut rt) = self.shared.lock() {
            let rt = &mut *rt;
            let mut terminal = rt.terminal;
            f(&mut rt.containers[self.idx], &mut terminal);
            rt.terminal = terminal;
        }
        let _ = self.changed.try_send(());
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        let image = self.c.image.clone().unwrap_or_default();
        loop {
            if *stop.borrow() {
                return;
            }
            let started = Timestamp::now();
            let child = async {
                let bin = container::open_image_binary(&self.cfg.images, &image)
                    .map_err(|e| ("ErrImagePull", e))?;
                let env = container::build_env(&self.client, &self.cfg, &self.pod, &self.c)
                    .await
                    .map_err(|e| ("CreateContainerConfigError", e))?;
                let cmd: Vec<String> = self.c.command.clone().unwrap_or_default();
                let argv: Vec<String> = cmd
                    .iter()
                    .skip(1)
                    .chain(self.c.args.iter().flatten())
                    .map(|a| container::expand(a, &env))
                    .collect();
                container::spawn(
                    &bin,
                    &argv,
                    &env,
                    &self.mounts,
                    self.c.working_dir.as_deref(),
                    &self.log,
                )
                .map_err(|e| ("RunContainerError", e))
            }
            .await;
            let mut child = match child {
                Ok(c) => c,
                Err((reason, e)) => {
                    let msg = format!("{e:#}");
                    self.update(|c, _| c.state = CState::waiting(reason, msg));
                    if sleep_or_stop(backoff, &mut stop).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let has_readiness = self.c.readiness_probe.is_some();
            self.update(|c, _| {
                c.state = CState::Running {
                    started_at: started,
                };
                c.ready = !has_readiness;
            });
            let exit = self.watch_process(&mut child, &mut stop).await;
            let Some(code) = exit else {
                return; // stopped
            };
            let finished = Timestamp::now();
            let again = match self.restart.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            self.update(|c, terminal| {
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
                    *terminal = Some(if code == 0 { "Succeeded" } else { "Failed" });
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
        stop: &mut watch::Receiver<bool>,
    ) -> Option<i32> {
        let host = self.cfg.node_ip.to_string();
        let ports = self.c.ports.clone().unwrap_or_default();
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
                            let ok = container::run_probe(p, &host, &ports).await.is_ok();
                            ready_failures = if ok { 0 } else { ready_failures + 1 };
                            let threshold = p.failure_threshold.unwrap_or(3).max(1);
                            if ok || ready_failures >= threshold {
                                self.update(|c, _| c.ready = ok);
                            }
                            next_ready = now + period(&readiness);
                        }
                    }
                    if let Some(p) = &liveness
                        && now >= next_live
                    {
                        {
                            let ok = container::run_probe(p, &host, &ports).await.is_ok();
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
