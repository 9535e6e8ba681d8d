//! weft-agent: flags, logging, the Kubernetes client, the HTTP endpoints and the agent loop.
//!
//! Invariant: SIGTERM (or SIGINT) ends the process cleanly and leaves every file and annotation in
//! place, so pods keep their network across agent restarts and upgrades (flannel does the same).

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, reload};
use weft_crds::agent_config::AGENT_CONFIG_PATH;
use weft_crds::fabric::LogLevel;
use weft_node_agent::agent::teardown::{fabric_is_deleted, teardown_node};
use weft_node_agent::agent::{Agent, error_chain, nodes};
use weft_node_agent::config::{load_config, sync_config_watch};
use weft_node_agent::fastpath::kernel::{FastPath, Switch};
use weft_node_agent::nft::Nftables;
use weft_node_agent::observe::{Health, Metrics, bind, health_router, metrics_router, serve};
use weft_node_agent::overlay::netlink::Netlink;
use weft_node_agent::policy::explain::verdict_router;
use weft_node_agent::policy::{PolicyEngine, PolicyStatus};
use weft_node_agent::uplink::SYS_CLASS_NET;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// weft's per-node agent: the node's subnet lease, the overlay to its peers, masquerade, the CNI
/// plugin and configuration, and network policy.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The agent configuration file rendered by weft-operator.
    #[arg(long, env = "WEFT_CONFIG", default_value = AGENT_CONFIG_PATH)]
    config: PathBuf,
    /// Name of the Node this agent runs on (the DaemonSet sets NODE_NAME from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Name of the agent's pod (for logs).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Namespace of the agent's pod (for logs).
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
    /// Log level; overrides the configuration's logLevel (error, warn, info, debug, trace).
    #[arg(long, env = "WEFT_LOG_LEVEL", value_parser = parse_level)]
    log_level: Option<LogLevel>,
    /// Log format.
    #[arg(long, env = "WEFT_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Address the health and metrics servers bind to (ports come from the configuration).
    #[arg(long, env = "WEFT_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// How often the configuration file is checked for changes, in seconds.
    #[arg(long, env = "WEFT_CONFIG_POLL_SECONDS", default_value_t = 5)]
    config_poll_seconds: u64,
    /// How often the node is re-synced without an event (repairs removed files), in seconds.
    #[arg(long, env = "WEFT_RESYNC_SECONDS", default_value_t = 60)]
    resync_seconds: u64,
    /// weft's CNI plugin binary, which the agent installs into the fabric's cni.binDir as `weft`.
    /// Default: `weft-cni` beside this binary if it can be read, else this binary itself (which
    /// is the plugin too when a runtime runs it).
    #[arg(long, env = "WEFT_CNI_PLUGIN")]
    cni_plugin: Option<PathBuf>,
}

fn parse_level(s: &str) -> Result<LogLevel, String> {
    Ok(match s {
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        other => {
            return Err(format!(
                "{other:?} is not one of error, warn, info, debug, trace"
            ));
        }
    })
}

/// The filter for `level`: weft's crates at that level, the libraries one step quieter at info.
fn filter(level: LogLevel) -> EnvFilter {
    let l = level.as_str();
    let libs = match level {
        LogLevel::Debug | LogLevel::Trace => "info",
        _ => l,
    };
    EnvFilter::new(format!("{libs},weft_agent={l},weft_node_agent={l}"))
}

type ReloadHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

fn init_logging(format: LogFormat, level: LogLevel) -> ReloadHandle {
    let (filter, handle) = reload::Layer::new(filter(level));
    let fmt = match format {
        // Colours only on a terminal: `kubectl logs` and log collectors read plain text.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    handle
}

async fn shutdown_signal() {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("received SIGTERM"),
                _ = int.recv() => info!("received SIGINT"),
            }
        }
        _ => {
            // Without signal handlers the default disposition still terminates the process.
            std::future::pending::<()>().await;
        }
    }
}

/// `weft-agent explain`: would traffic from one pod to another be allowed, and by which policy?
/// Asks the agents of both ends (their compiled state, through the API server's node proxy).
#[derive(Debug, Parser)]
#[command(name = "weft-agent explain")]
struct ExplainArgs {
    /// The source pod, NAMESPACE/NAME.
    #[arg(long)]
    from: String,
    /// The destination pod, NAMESPACE/NAME.
    #[arg(long)]
    to: String,
    /// PROTO/PORT, e.g. TCP/80.
    #[arg(long)]
    port: String,
    /// The agents' metrics port (the fabric's agent.metricsPort).
    #[arg(long, default_value_t = 9641)]
    metrics_port: u16,
}

async fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("failed to configure the Kubernetes client (KUBECONFIG or in-cluster)")?;
    let allowed = weft_node_agent::policy::explain::explain(
        client,
        &args.from,
        &args.to,
        &args.port,
        args.metrics_port,
    )
    .await?;
    std::process::exit(if allowed { 0 } else { 1 });
}

fn main() -> anyhow::Result<()> {
    // Run by a container runtime as the CNI plugin (the agent may have installed itself, see
    // `cni::install`): nothing else of the agent starts.
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(weft_node_agent::cni::plugin::cmd::main());
    }
    // glibc gives every thread that allocates an arena of its own (up to 8 per CPU), and freed
    // memory stays in the arena it came from. With the runtime's and the blocking pool's threads
    // taking turns on the same work that kept MiBs of fragments resident: the policy benchmark's
    // agent at 10,000 pods peaked at 61.0 MiB without this and 56.7 MiB with it. Two arenas, set
    // before any thread starts.
    // Large buffers (a page of a list, a full ruleset's script) are mapped and unmapped on their
    // own at a fixed 256 KiB and up. glibc's default raises that threshold to 32 MiB once a large
    // mapping is freed, after which such buffers come from the heap and leave it fragmented; an
    // agent restarted into 10,000 pods kept its start-up peak resident that way.
    // SAFETY: mallopt only changes the allocator's tuning; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?
        .block_on(agent_main())
}

async fn agent_main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("explain") {
        return explain(ExplainArgs::parse_from(std::env::args().skip(1))).await;
    }
    let args = Args::parse();
    let config = load_config(&args.config).map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let log = init_logging(args.log_format, args.log_level.unwrap_or(config.log_level));
    info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %args.node_name,
        pod = args.pod_name.as_deref().unwrap_or(""),
        namespace = args.pod_namespace.as_deref().unwrap_or(""),
        config = %args.config.display(),
        fabric = %config.fabric,
        backend = config.overlay.backend.as_str(),
        "starting weft-agent"
    );

    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::new());
    let port = |p: i32, what: &str| {
        u16::try_from(p).with_context(|| format!("{what} {p} is not a TCP port"))
    };
    let health_addr = SocketAddr::new(args.bind_address, port(config.health_port, "healthPort")?);
    let metrics_addr =
        SocketAddr::new(args.bind_address, port(config.metrics_port, "metricsPort")?);
    let health_listener = bind(health_addr)
        .await
        .with_context(|| format!("failed to listen on {health_addr} for /healthz and /readyz"))?;
    let metrics_listener = bind(metrics_addr)
        .await
        .with_context(|| format!("failed to listen on {metrics_addr} for /metrics"))?;
    let health_server = tokio::spawn(serve(health_listener, health_router(health.clone())));
    let policy_status = Arc::new(std::sync::Mutex::new(PolicyStatus::default()));
    let metrics_server = tokio::spawn(serve(
        metrics_listener,
        metrics_router(metrics.clone()).merge(verdict_router(policy_status.clone())),
    ));
    info!(%health_addr, %metrics_addr, "serving /healthz, /readyz and /metrics");

    let kube_config = kube::Config::infer()
        .await
        .context("failed to configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let client =
        kube::Client::try_from(kube_config).context("failed to build the Kubernetes client")?;

    let config_changes = sync_config_watch(
        args.config.clone(),
        &config,
        Duration::from_secs(args.config_poll_seconds.max(1)),
    );
    // The fast path is loaded whether or not the fabric wants it now: its first sync also removes
    // filters an earlier agent left on links it no longer wants.
    let fastpath = match FastPath::load() {
        Ok(fp) => Some(fp),
        Err(e) => {
            if config.overlay.fast_path {
                warn!(error = %e, "the pod-to-pod fast path cannot run on this node; pod traffic takes the kernel's stack");
            }
            None
        }
    };
    let fastpath = Arc::new(Switch::new(fastpath));
    let agent = Agent {
        nodes: nodes(client.clone()),
        node_name: args.node_name.clone(),
        health,
        metrics,
        sys_class_net: PathBuf::from(SYS_CLASS_NET),
        kernel: Netlink::connect().map_err(|e| anyhow::anyhow!(error_chain(&e)))?,
        nft: Arc::new(Nftables::default()),
        cni_plugin: Some(weft_node_agent::cni::install::plugin_source(
            args.cni_plugin.as_deref(),
        )),
        fastpath: fastpath.clone(),
    };
    // The policy engine runs beside the node loop, on the configuration the agent started with (a
    // change of spec.policy rolls the agents through the DaemonSet, like any configuration change).
    let engine = PolicyEngine {
        client: client.clone(),
        node_name: args.node_name.clone(),
        nft: agent.nft.clone(),
        metrics: agent.metrics.clone(),
        sys_class_net: PathBuf::from(SYS_CLASS_NET),
        status: policy_status.clone(),
        fastpath: fastpath.clone(),
    };
    let (stop_policy, policy_stopped) = tokio::sync::oneshot::channel::<()>();
    let policy_config = config.clone();
    let policy_task = tokio::spawn(async move {
        engine
            .run(&policy_config, async {
                let _ = policy_stopped.await;
            })
            .await;
    });
    // New pods' veths get the fast path within a second (the node's sync does it too).
    let fastpath_task = {
        let (fastpath, metrics) = (fastpath.clone(), agent.metrics.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                fastpath.sync(&metrics).await;
            }
        })
    };
    let fixed_level = args.log_level;
    let config = agent
        .run(
            config,
            config_changes,
            Duration::from_secs(args.resync_seconds.max(1)),
            move |c| {
                if fixed_level.is_none() {
                    let _ = log.reload(filter(c.log_level));
                }
            },
            shutdown_signal(),
        )
        .await;
    let _ = stop_policy.send(());
    let _ = policy_task.await;
    fastpath_task.abort();
    // A restart or upgrade leaves the node as it is; only the fabric's deletion cleans it.
    if fabric_is_deleted(client, &config.fabric).await {
        info!(fabric = %config.fabric, "the fabric is being deleted: removing weft from this node");
        let mut failures = teardown_node(&config, &agent.kernel, &*agent.nft).await;
        match fastpath.detach_all().await {
            Ok(n) => info!(interfaces = n, "fast path filters removed"),
            Err(e) => failures.push(format!("remove the fast path's filters: {e}")),
        }
        for f in &failures {
            tracing::error!(error = %f, "teardown step failed");
        }
        if failures.is_empty() {
            info!("node clean");
        }
    } else {
        info!("the datapath, files and node annotations stay in place");
    }
    health_server.abort();
    metrics_server.abort();
    Ok(())
}
