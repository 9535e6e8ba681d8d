//! Liveness, readiness and Prometheus metrics of the agent, and the HTTP servers that expose them.
//!
//! `/healthz` answers 200 while the process and its runtime run. `/readyz` answers 200 only once
//! the node is usable by pods: one whole sync done (the overlay and the nftables tables in the
//! kernel, subnet.env and the conflist written, the node's annotations applied); before that (or after a failed sync) it answers 503 with the reason as body, e.g.
//! "waiting for kube-controller-manager to assign Node.spec.podCIDRs". `/metrics` serves the text
//! exposition format. Both servers bind to the configured ports on 0.0.0.0 (host network).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
/// Work to do before each scrape (reading kernel counters), registered with [`Metrics::on_scrape`].
type ScrapeHook = Box<dyn Fn() + Send + Sync>;

/// Readiness of the agent.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    reason: Mutex<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            ready: AtomicBool::new(false),
            reason: Mutex::new("starting".to_owned()),
        }
    }
}

impl Health {
    /// Marks the agent ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Marks the agent not ready, with the reason `/readyz` reports.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        if let Ok(mut r) = self.reason.lock() {
            *r = reason.into();
        }
        self.ready.store(false, Ordering::SeqCst);
    }

    /// `Ok(())` when ready, else the reason.
    pub fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(self
            .reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| "not ready".to_owned()))
    }
}

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    syncs: Family<Labels, Counter>,
    sync_errors: Family<Labels, Counter>,
    duration: Histogram,
    files_written: Family<Labels, Counter>,
    node_patches: Family<Labels, Counter>,
    config_reloads: Family<Labels, Counter>,
    ready: Gauge,
    mtu: Gauge,
    peers: Gauge,
    peer_problems: Gauge,
    netlink_ops: Family<Labels, Counter>,
    netlink_errors: Family<Labels, Counter>,
    gc_removals: Family<Labels, Counter>,
    fastpath_packets: Family<Labels, Counter>,
    fastpath_links: Gauge,
    fastpath_enabled: Gauge,
    policy_apply: Family<Labels, Histogram>,
    policy_stage: Family<Labels, Histogram>,
    policy_errors: Counter,
    policy_problems: Gauge,
    policy_elements: Gauge,
    policy_pods: Gauge,
    policy_dropped_packets: Family<Labels2, Counter>,
    policy_dropped_bytes: Family<Labels2, Counter>,
    scrape_hooks: Mutex<Vec<ScrapeHook>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weft_agent");
        let syncs = Family::<Labels, Counter>::default();
        registry.register(
            "syncs",
            "Syncs of the node's subnet and CNI configuration, by result (ok, waiting, error)",
            syncs.clone(),
        );
        let sync_errors = Family::<Labels, Counter>::default();
        registry.register(
            "sync_errors",
            "Failed syncs, by stage (Config, Gather, Plan, ApplyFiles, ApplyNode)",
            sync_errors.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "sync_duration_seconds",
            "Duration of one sync",
            duration.clone(),
        );
        let files_written = Family::<Labels, Counter>::default();
        registry.register(
            "files_written",
            "Files rewritten because their content changed, by file (subnet_env, conflist, vtep_state)",
            files_written.clone(),
        );
        let node_patches = Family::<Labels, Counter>::default();
        registry.register(
            "node_patches",
            "Patches sent to the own Node, by what (annotations, condition)",
            node_patches.clone(),
        );
        let config_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Changes of the configuration file, by result (ok, error)",
            config_reloads.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 while /readyz answers 200", ready.clone());
        let mtu = Gauge::default();
        registry.register("pod_mtu", "The pod MTU in effect", mtu.clone());
        let peers = Gauge::default();
        registry.register(
            "overlay_peers",
            "Remote nodes whose pod subnets are routed from this node",
            peers.clone(),
        );
        let peer_problems = Gauge::default();
        registry.register(
            "overlay_peer_problems",
            "Remote nodes (or families) not routed because of a problem (see the agent's log)",
            peer_problems.clone(),
        );
        let netlink_ops = Family::<Labels, Counter>::default();
        registry.register(
            "netlink_operations",
            "Kernel writes of the overlay, by kind (add_route, del_fdb, create_device, ...)",
            netlink_ops.clone(),
        );
        let netlink_errors = Family::<Labels, Counter>::default();
        registry.register(
            "netlink_errors",
            "Failed kernel writes of the overlay, by kind",
            netlink_errors.clone(),
        );
        let gc_removals = Family::<Labels, Counter>::default();
        registry.register(
            "overlay_gc_removals",
            "Stale overlay objects removed (of nodes that are gone, or left before a restart), by kind (route, neighbour, fdb, device)",
            gc_removals.clone(),
        );
        let fastpath_packets = Family::<Labels, Counter>::default();
        registry.register(
            "fastpath_packets",
            "Pod-to-pod packets seen by the fast path's program, by result: forwarded (by the program, past netfilter), tracked (left to the stack: conntrack knows the flow), to_stack (left to the stack: the FIB would not forward it here)",
            fastpath_packets.clone(),
        );
        let fastpath_links = Gauge::default();
        registry.register(
            "fastpath_links",
            "Interfaces the fast path's program is attached to (pod veths and overlay devices)",
            fastpath_links.clone(),
        );
        let fastpath_enabled = Gauge::default();
        registry.register(
            "fastpath_enabled",
            "1 while the fast path forwards (the fabric asks for it and the cluster has no policy object)",
            fastpath_enabled.clone(),
        );
        let policy_apply = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "policy_apply_seconds",
            "From the first API event of a change to its nftables transaction committed, by kind (incremental, full)",
            policy_apply.clone(),
        );
        let policy_stage = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "policy_stage_seconds",
            "Time spent per stage of a policy change: follow (pod churn without a compile), compile, render, kernel (the nftables transaction)",
            policy_stage.clone(),
        );
        let policy_errors = Counter::default();
        registry.register(
            "policy_sync_errors",
            "Failed policy transactions (the previous ruleset stays in force; retried)",
            policy_errors.clone(),
        );
        let policy_problems = Gauge::default();
        registry.register(
            "policy_problems",
            "Policy objects (or parts) that cannot be honoured as written; their pods fail closed",
            policy_problems.clone(),
        );
        let policy_elements = Gauge::default();
        registry.register(
            "policy_set_elements",
            "Addresses in the policy ruleset's selector sets",
            policy_elements.clone(),
        );
        let policy_pods = Gauge::default();
        registry.register(
            "policy_local_pods",
            "Local pods with a policy profile in the kernel",
            policy_pods.clone(),
        );
        let policy_dropped_packets = Family::<Labels2, Counter>::default();
        registry.register(
            "policy_dropped_packets",
            "Packets dropped by the policy ruleset, by direction (ingress, egress: seen from the local pod) and reason (policy; unprogrammed: a local pod address not programmed yet), read from the table's named counters at scrape time",
            policy_dropped_packets.clone(),
        );
        let policy_dropped_bytes = Family::<Labels2, Counter>::default();
        registry.register(
            "policy_dropped_bytes",
            "Bytes (IP packet lengths) dropped by the policy ruleset, by direction and reason",
            policy_dropped_bytes.clone(),
        );
        Metrics {
            policy_dropped_packets,
            policy_dropped_bytes,
            scrape_hooks: Mutex::new(Vec::new()),
            policy_apply,
            policy_stage,
            policy_errors,
            policy_problems,
            policy_elements,
            policy_pods,
            peers,
            peer_problems,
            netlink_ops,
            netlink_errors,
            gc_removals,
            fastpath_packets,
            fastpath_links,
            fastpath_enabled,
            registry,
            syncs,
            sync_errors,
            duration,
            files_written,
            node_patches,
            config_reloads,
            ready,
            mtu,
        }
    }

    /// Records a committed policy transaction of `kind` (`full`: the table replaced;
    /// `incremental`: compiled, then only the difference written; `elements`: pod churn followed
    /// without a compile, set and map elements only) and the ruleset it put in force.
    pub fn policy_applied(&self, kind: &'static str, seconds: f64, ir: &weft_policy::Ir) {
        self.policy_apply
            .get_or_create(&[("kind", kind)])
            .observe(seconds);
        let elements: usize = ir
            .addr_sets
            .values()
            .map(|s| match &s.elems {
                weft_policy::ir::SetElems::Addrs(a) => a.len(),
                weft_policy::ir::SetElems::Prefixes(p) => p.len(),
            })
            .sum();
        self.policy_elements
            .set(i64::try_from(elements).unwrap_or(i64::MAX));
        self.policy_pods
            .set(i64::try_from(ir.pods.len()).unwrap_or(i64::MAX));
    }

    /// Adds packets and bytes dropped by the policy ruleset in `direction` (ingress, egress) for
    /// `reason` (policy, unprogrammed); creates the series even when both are zero.
    pub fn policy_dropped(
        &self,
        direction: &'static str,
        reason: &'static str,
        packets: u64,
        bytes: u64,
    ) {
        let labels = [("direction", direction), ("reason", reason)];
        self.policy_dropped_packets
            .get_or_create(&labels)
            .inc_by(packets);
        self.policy_dropped_bytes
            .get_or_create(&labels)
            .inc_by(bytes);
    }

    /// Registers work to run before every scrape (e.g. reading kernel counters). Hooks block; the
    /// HTTP handler runs them on a blocking thread.
    pub fn on_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut hooks) = self.scrape_hooks.lock() {
            hooks.push(Box::new(hook));
        }
    }

    /// Runs the scrape hooks, then renders the exposition (blocking).
    pub fn scrape(&self) -> String {
        if let Ok(hooks) = self.scrape_hooks.lock() {
            for hook in hooks.iter() {
                hook();
            }
        }
        self.render()
    }

    /// Records how long one stage of a policy change took: `follow` (pod churn followed without a
    /// compile), `compile`, `render` (the update script), `kernel` (the transaction).
    pub fn policy_stage(&self, stage: &'static str, seconds: f64) {
        self.policy_stage
            .get_or_create(&[("stage", stage)])
            .observe(seconds);
    }

    /// Records a failed policy transaction.
    pub fn policy_failed(&self) {
        self.policy_errors.inc();
    }

    /// Records how many policy objects cannot be honoured as written.
    pub fn set_policy_problems(&self, n: usize) {
        self.policy_problems
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records the overlay's peers: routed, and not routed because of a problem.
    pub fn set_peers(&self, programmed: usize, problems: usize) {
        self.peers
            .set(i64::try_from(programmed).unwrap_or(i64::MAX));
        self.peer_problems
            .set(i64::try_from(problems).unwrap_or(i64::MAX));
    }

    /// Records kernel writes of the overlay: successes and failures by kind.
    pub fn netlink(
        &self,
        done: &std::collections::BTreeMap<&'static str, u64>,
        failed: &[&'static str],
    ) {
        for (op, n) in done {
            self.netlink_ops.get_or_create(&[("op", op)]).inc_by(*n);
        }
        for op in failed {
            self.netlink_errors.get_or_create(&[("op", op)]).inc();
        }
    }

    /// Records the fast path's state: its counters' growth since the last call, by result, the
    /// interfaces it is attached to and whether it forwards.
    pub fn fastpath(&self, grown: [(&'static str, u64); 3], links: usize, enabled: bool) {
        for (result, n) in grown {
            if n > 0 {
                self.fastpath_packets
                    .get_or_create(&[("result", result)])
                    .inc_by(n);
            }
        }
        self.fastpath_links.set(links as i64);
        self.fastpath_enabled.set(i64::from(enabled));
    }

    /// Records garbage-collected overlay objects of `kind`.
    pub fn gc(&self, kind: &'static str, n: usize) {
        if n > 0 {
            self.gc_removals
                .get_or_create(&[("kind", kind)])
                .inc_by(n as u64);
        }
    }

    /// Records a sync: `result` is ok, waiting or error; `stage` the failing stage.
    pub fn sync(&self, result: &'static str, stage: Option<&'static str>, seconds: f64) {
        self.syncs.get_or_create(&[("result", result)]).inc();
        if let Some(stage) = stage {
            self.sync_errors.get_or_create(&[("stage", stage)]).inc();
        }
        self.duration.observe(seconds);
    }

    /// Records a rewritten file.
    pub fn file_written(&self, file: &'static str) {
        self.files_written.get_or_create(&[("file", file)]).inc();
    }

    /// Records a patch of the own Node.
    pub fn node_patched(&self, what: &'static str) {
        self.node_patches.get_or_create(&[("what", what)]).inc();
    }

    /// Records a configuration change.
    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&[("result", result)])
            .inc();
    }

    /// Sets the ready gauge.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Sets the MTU gauge.
    pub fn set_mtu(&self, mtu: u32) {
        self.mtu.set(i64::from(mtu));
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// `/healthz` and `/readyz`.
pub fn health_router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.readiness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// `/metrics`.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    // Scrape hooks read the kernel (an nft process): off the async workers.
    let body = tokio::task::spawn_blocking(move || metrics.scrape())
        .await
        .unwrap_or_else(|e| format!("# the scrape failed: {e}\n"));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Binds `addr` and serves `router` until the task is dropped.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `router` on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_and_metrics_over_http() {
        let health = Arc::new(Health::default());
        let metrics = Arc::new(Metrics::new());
        let hl = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let ml = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let (ha, ma) = (
            hl.local_addr().expect("addr"),
            ml.local_addr().expect("addr"),
        );
        tokio::spawn(serve(hl, health_router(health.clone())));
        tokio::spawn(serve(ml, metrics_router(metrics.clone())));
        health.set_not_ready("waiting for podCIDRs");
        assert_eq!(get_text(ha, "/healthz").await, (200, "ok\n".to_owned()));
        assert_eq!(
            get_text(ha, "/readyz").await,
            (503, "waiting for podCIDRs\n".to_owned())
        );
        health.set_ready();
        assert_eq!(get_text(ha, "/readyz").await.0, 200);
        metrics.sync("ok", None, 0.01);
        metrics.set_mtu(1450);
        let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = scrapes.clone();
        let m = Arc::downgrade(&metrics);
        metrics.on_scrape(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            if let Some(m) = m.upgrade() {
                m.policy_dropped("ingress", "policy", 2, 168);
            }
        });
        let (code, body) = get_text(ma, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("weft_agent_syncs_total{result=\"ok\"} 1"),
            "{body}"
        );
        assert!(body.contains("weft_agent_pod_mtu 1450"), "{body}");
        assert_eq!(
            scrapes.load(Ordering::SeqCst),
            1,
            "one scrape, one hook run"
        );
        assert!(
            body.contains(
                "weft_agent_policy_dropped_packets_total{direction=\"ingress\",reason=\"policy\"} 2"
            ),
            "the hook ran before rendering: {body}"
        );
    }

    async fn get_text(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        let code = buf[9..12].parse().expect("status");
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (code, body)
    }
}
