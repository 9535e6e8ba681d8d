//! weft-operator's entry point: flags, logging, leader election, HTTP endpoints and the controller.
//!
//! Invariant: only the replica that holds the leader Lease runs the controller, and it exits (to
//! be restarted as a standby) the moment it can no longer prove leadership.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::events::Reporter;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client};
use tracing::{error, info, warn};
use weft_crds::NetworkFabric;
use weft_operator::build::{AGENT_POD_SELECTOR, BuildParams, MANAGED_SELECTOR};
use weft_operator::controller::{Context, error_policy, labelled_fabric, owner_fabric, reconcile};
use weft_operator::facts::node_facts_hash;
use weft_operator::leader::{LeaderElector, Timing};
use weft_operator::metrics::{Health, Metrics, health_router, metrics_router, serve};

const DEFAULT_AGENT_IMAGE: &str = concat!("weft.dev/weft-agent:", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Reconciles weft's NetworkFabric into the node agent DaemonSet and its configuration.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long, env = "WEFT_METRICS_ADDR", default_value = "0.0.0.0:9643")]
    metrics_addr: SocketAddr,
    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, env = "WEFT_HEALTH_ADDR", default_value = "0.0.0.0:9644")]
    health_addr: SocketAddr,
    /// Log format (filter with RUST_LOG, default info).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Namespace the operator runs in; the agent's objects are created there too.
    #[arg(long, env = "POD_NAMESPACE", default_value = "weft-system")]
    namespace: String,
    /// Elect a leader on a Lease so that several replicas are safe (--leader-election=false to
    /// run without).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader Lease (default: --namespace).
    #[arg(long)]
    leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "weft-operator")]
    leader_election_id: String,
    /// Agent image used when a fabric does not set spec.agent.image.
    #[arg(long, env = "WEFT_AGENT_IMAGE", default_value = DEFAULT_AGENT_IMAGE)]
    agent_image: String,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: `kubectl logs` and log collectors read plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "weft-operator".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{base}_{}_{nanos:08x}", std::process::id())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Through the logger, so that a JSON log stays JSON to the last line.
            error!(error = %one_line(&e), "weft-operator failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: a cause whose text is already in the
/// line is left out (kube's errors print their sources in their own text, so `{:#}` said the
/// kubeconfig's problem three times).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn run(args: Args) -> anyhow::Result<()> {
    info!(version = env!("CARGO_PKG_VERSION"), namespace = %args.namespace, agent_image = %args.agent_image, "starting weft-operator");

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let metrics_server = tokio::spawn(serve(args.metrics_addr, metrics_router(metrics.clone())));
    let health_server = tokio::spawn(serve(args.health_addr, health_router(health.clone())));

    let client = Client::try_default().await.context(
        "failed to configure the Kubernetes client (run the operator in a pod with its \
             service account, or set KUBECONFIG to a readable kubeconfig)",
    )?;
    client
        .apiserver_version()
        .await
        .context("failed to reach the Kubernetes API server")?;
    // Live and ready as soon as the API server answers: a standby is ready too.
    health.set_ready(true);

    let identity = identity();
    let mut elector = if args.leader_election {
        let ns = args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| args.namespace.clone());
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let mut elector = LeaderElector::new(
            leases,
            &args.leader_election_id,
            &identity,
            Timing::default(),
        );
        info!(lease = %args.leader_election_id, namespace = %ns, %identity, "waiting for the leader Lease");
        tokio::select! {
            () = elector.acquire() => {}
            r = tokio::signal::ctrl_c() => {
                r.context("failed to listen for signals")?;
                info!("interrupted before becoming leader");
                return Ok(());
            }
        }
        Some(elector)
    } else {
        warn!("leader election disabled: run only one replica");
        None
    };
    metrics.set_leader(true);

    let ns = args.namespace.clone();
    let managed = watcher::Config::default().labels(MANAGED_SELECTOR);
    let (reconcile_all_tx, reconcile_all_rx) = futures::channel::mpsc::unbounded();
    // Nodes change all the time (heartbeats, other controllers' conditions); only a change of a
    // fact the operator reads (an agent's WeftAgentReady condition, its pod MTU, podCIDRs,
    // addresses) reconciles, and then every fabric: the active one reports it, the others are
    // unaffected. A Node watch cannot be mapped to one fabric, hence reconcile_all.
    let node_changes = watcher(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(node_facts_hash, Default::default())
    .filter_map(|r| async move {
        match r {
            Ok(_) => Some(()),
            Err(e) => {
                warn!(error = %e, "node watch failed; retrying");
                None
            }
        }
    });
    let controller = Controller::new(
        Api::<NetworkFabric>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .owns(Api::<ClusterRole>::all(client.clone()), managed.clone())
    .owns(
        Api::<ClusterRoleBinding>::all(client.clone()),
        managed.clone(),
    )
    .watches(
        Api::<DaemonSet>::namespaced(client.clone(), &ns),
        managed.clone(),
        |o| owner_fabric(&o),
    )
    .watches(
        Api::<ConfigMap>::namespaced(client.clone(), &ns),
        managed.clone(),
        |o| owner_fabric(&o),
    )
    .watches(
        Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        managed,
        |o| owner_fabric(&o),
    )
    .watches(
        Api::<Pod>::namespaced(client.clone(), &ns),
        watcher::Config::default().labels(AGENT_POD_SELECTOR),
        |p| labelled_fabric(&p),
    )
    .reconcile_all_on(futures::stream::select(reconcile_all_rx, node_changes))
    // Coalesce bursts (a rollout on many nodes updates many pods at once) into one reconcile.
    .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)))
    .shutdown_on_signal();
    let ctx = Arc::new(Context {
        client: client.clone(),
        params: BuildParams {
            namespace: ns,
            default_agent_image: args.agent_image.clone(),
        },
        reporter: Reporter {
            controller: "weft-operator".into(),
            instance: Some(identity.clone()),
        },
        metrics: metrics.clone(),
        store: controller.store(),
        reconcile_all: reconcile_all_tx,
        failures: Mutex::new(Default::default()),
    });
    let run = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        });

    info!("controller running");
    match elector.as_mut() {
        Some(el) => {
            tokio::select! {
                () = run => {
                    info!("controller stopped; releasing the leader Lease");
                    el.release().await;
                }
                () = el.hold() => {
                    metrics.set_leader(false);
                    error!("lost the leader Lease; exiting so that a standby takes over");
                    std::process::exit(1);
                }
            }
        }
        None => run.await,
    }
    metrics_server.abort();
    health_server.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::one_line;

    /// An error that prints its source in its own text, as kube's do.
    #[derive(Debug)]
    struct Embeds(std::io::Error);

    impl std::fmt::Display for Embeds {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failed to read kubeconfig: {}", self.0)
        }
    }

    impl std::error::Error for Embeds {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Embeds(io)).context("failed to configure the client");
        assert_eq!(
            one_line(&e),
            "failed to configure the client: failed to read kubeconfig: no such file"
        );
        let plain = anyhow::anyhow!("root").context("middle").context("top");
        assert_eq!(one_line(&plain), "top: middle: root");
    }
}
