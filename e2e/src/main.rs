//! weft-e2e: bring weft's local multi-node cluster up and down, look at it, and probe connectivity.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use weft_e2e::probe::{self, Family};
use weft_e2e::serve::{PortSpec, parse_ports};
use weft_e2e::{Cluster, ClusterConfig};

#[derive(Parser)]
#[command(
    name = "weft-e2e",
    about = "weft's local multi-node Kubernetes cluster",
    version
)]
struct Cli {
    /// Name of the cluster (prefix of its network namespaces).
    #[arg(long, global = true, default_value = "weft", env = "WEFT_E2E_CLUSTER")]
    name: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Suite {
    /// The NetworkPolicy e2e tests of k8s.io/kubernetes (`[sig-network] Netpol`).
    Netpol {
        /// Ginkgo focus (a regular expression over spec names); the whole Netpol suite by default.
        #[arg(long, default_value = weft_e2e::conformance::NETPOL_FOCUS)]
        focus: String,
        /// More specs to skip (a regular expression), besides what this kernel cannot run.
        #[arg(long)]
        skip: Option<String>,
        /// Where the JUnit report (junit_01.xml) and the suite's files go.
        #[arg(long, default_value = "weft-conformance/netpol")]
        report_dir: PathBuf,
    },
    /// The conformance suites of sigs.k8s.io/network-policy-api: ClusterNetworkPolicy (v0.3.0) and
    /// AdminNetworkPolicy/BaselineAdminNetworkPolicy (v0.1.7).
    PolicyApi {
        /// Only this pinned version (v0.3.0 or v0.1.7); both by default.
        #[arg(long)]
        version: Option<String>,
        /// Only these conformance tests (their short names, e.g. CNPAdminTierPriorityField); all by
        /// default. Repeat, or separate with commas.
        #[arg(long = "test", value_delimiter = ',')]
        tests: Vec<String>,
        /// Where each version's JUnit report (<version>/junit.xml) and go test -json stream go.
        #[arg(long, default_value = "weft-conformance/policy-api")]
        report_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring the cluster up (idempotent) and print its kubeconfig.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Give pods and services IPv6 addresses too.
        #[arg(long)]
        dual_stack: bool,
        /// Bring up the bare cluster without installing weft.
        #[arg(long)]
        no_weft: bool,
        /// Do not run kube-proxy (nftables mode, a DaemonSet of host-network pods).
        #[arg(long)]
        no_kube_proxy: bool,
        /// Port of the API server on 127.0.0.1 (change it to run a second cluster beside the first).
        #[arg(long, default_value_t = 16443)]
        api_port: u16,
        /// First of four loopback ports for etcd and the controllers.
        #[arg(long, default_value_t = 12300)]
        port_base: u16,
        /// The underlay network is 10.<octet>.0.0/24.
        #[arg(long, default_value_t = 99)]
        underlay_octet: u8,
    },
    /// Build the control plane, Helm, the test images, weft-kstatus and the network-policy-api
    /// conformance suites from their Go modules (cached), without starting anything.
    Prepare,
    /// Show the demo: nodes, weft's status, pods on every node and their reachability.
    Demo,
    /// Remove every namespace, process, mount and file of the cluster.
    Down,
    /// Show the cluster's processes, namespaces and nodes.
    Status,
    /// Print `export KUBECONFIG=…` for the cluster.
    Env,
    /// Test connectivity between pods.
    Probe {
        /// Source pod, NAMESPACE/NAME.
        #[arg(long, required_unless_present = "all")]
        from: Option<String>,
        /// Destination pod, NAMESPACE/NAME.
        #[arg(long, required_unless_present_any = ["all", "to_service"])]
        to: Option<String>,
        /// Destination Service, NAMESPACE/NAME: its cluster IP, answered by any of its pods.
        #[arg(long, conflicts_with_all = ["to", "all"])]
        to_service: Option<String>,
        /// PROTO/PORT for a single probe.
        #[arg(long, required_unless_present = "all")]
        port: Option<PortSpec>,
        /// Every Running pod against every Running pod.
        #[arg(long)]
        all: bool,
        /// Comma-separated PROTO/PORT list for --all.
        #[arg(long, default_value = "TCP/80")]
        ports: String,
        /// Print the matrix as JSON.
        #[arg(long)]
        json: bool,
        /// Probe IPv6 addresses instead of IPv4.
        #[arg(long)]
        ipv6: bool,
        /// Per-connection timeout in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Run one of Kubernetes' own suites, unchanged, against the cluster; print a summary table and
    /// write a JUnit report.
    Conformance {
        #[command(subcommand)]
        suite: Suite,
    },
    /// Forward TCP from a listener inside a network namespace (used by `up`).
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        netns: PathBuf,
        #[arg(long, required = true)]
        listen: Vec<std::net::SocketAddr>,
        #[arg(long)]
        to: std::net::SocketAddr,
    },
    /// The API server's egress proxy into the underlay (used by `up`).
    #[command(hide = true)]
    Egress {
        #[arg(long)]
        uds: PathBuf,
        #[arg(long)]
        netns: PathBuf,
        /// Any address of the underlay /24: only its addresses are dialled.
        #[arg(long)]
        subnet: std::net::Ipv4Addr,
    },
    /// Serve ports with an identity inside a network namespace (used by `up` for the external host).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        netns: Option<PathBuf>,
        #[arg(long)]
        identity: String,
        #[arg(long)]
        ports: String,
    },
}

fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    Ok(exe
        .parent()
        .context("executable has no directory")?
        .to_path_buf())
}

fn load_or_default(name: &str) -> Result<Cluster> {
    Cluster::load(name).or_else(|_| Cluster::attach(ClusterConfig::new(name, 3, bin_dir()?)))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.cmd {
        Cmd::Prepare => {
            let cache = weft_e2e::config::default_cache_dir();
            let bin = weft_e2e::gobuild::ensure_control_plane(&cache)?;
            weft_e2e::gobuild::ensure_images(&cache)?;
            weft_e2e::gobuild::ensure_kubelet_api(&cache)?;
            weft_e2e::helm::ensure_helm(&cache)?;
            weft_e2e::kstatus::ensure_kstatus(&cache)?;
            weft_e2e::policyapi::ensure_policy_crds(&cache)?;
            weft_e2e::conformance::ensure_netpol_suite(&cache)?;
            for v in weft_e2e::conformance::policy_api::VERSIONS {
                weft_e2e::conformance::policy_api::ensure_suite(&cache, v)?;
            }
            eprintln!(
                "control plane, kubectl, helm, the test images (agnhost, pause), weft-kstatus, the network-policy-api CRDs and conformance suites are ready in {}",
                bin.display()
            );
        }
        Cmd::Demo => weft_e2e::demo::run_demo(&Cluster::load(&cli.name)?)?,
        Cmd::Up {
            nodes,
            dual_stack,
            no_weft,
            no_kube_proxy,
            api_port,
            port_base,
            underlay_octet,
        } => {
            if nodes == 0 || nodes > 200 {
                anyhow::bail!("--nodes must be between 1 and 200");
            }
            let mut cfg = ClusterConfig::new(&cli.name, nodes, bin_dir()?);
            cfg.api_port = api_port;
            cfg.port_base = port_base;
            cfg.underlay_octet = underlay_octet;
            cfg.kube_proxy = !no_kube_proxy;
            if dual_stack {
                cfg = cfg.dual_stack();
            }
            let started = std::time::Instant::now();
            let c = Cluster::up(cfg)?;
            eprintln!(
                "cluster {:?} is up ({} nodes) after {:.1}s",
                c.cfg.name,
                c.cfg.nodes,
                started.elapsed().as_secs_f64()
            );
            // The cluster's own CRDs, before weft: the agent picks the policy APIs it watches at start.
            weft_e2e::policyapi::install_policy_crds(&c, Duration::from_secs(60))?;
            eprintln!(
                "network-policy-api CRDs (ClusterNetworkPolicy v0.3.0, AdminNetworkPolicy and BaselineAdminNetworkPolicy v0.1.7) installed after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            if !no_weft {
                weft_e2e::install::install_weft(&c, &[])?;
                eprintln!(
                    "weft installed with Helm (release {:?} in {:?}) after {:.1}s",
                    weft_e2e::install::RELEASE,
                    weft_e2e::install::WEFT_NAMESPACE,
                    started.elapsed().as_secs_f64()
                );
                match weft_e2e::install::wait_fabric_available(
                    &c,
                    "default",
                    Duration::from_secs(120),
                ) {
                    Ok(()) => eprintln!(
                        "NetworkFabric default is Available after {:.1}s",
                        started.elapsed().as_secs_f64()
                    ),
                    Err(e) => eprintln!("warning: {e:#}"),
                }
            }
            println!("export KUBECONFIG={}", c.cfg.kubeconfig().display());
        }
        Cmd::Down => {
            load_or_default(&cli.name)?.down()?;
            eprintln!("cluster {:?} removed", cli.name);
        }
        Cmd::Status => {
            let c = Cluster::load(&cli.name)?;
            print!("{}", c.status());
            if !Cluster::is_running(&c.cfg) {
                std::process::exit(1);
            }
        }
        Cmd::Env => println!(
            "export KUBECONFIG={}",
            Cluster::load(&cli.name)?.cfg.kubeconfig().display()
        ),
        Cmd::Probe {
            from,
            to,
            to_service,
            port,
            all,
            ports,
            json,
            ipv6,
            timeout_ms,
        } => {
            let c = Cluster::load(&cli.name)?;
            let family = if ipv6 { Family::V6 } else { Family::V4 };
            let timeout = Duration::from_millis(timeout_ms);
            if all {
                let eps = c.endpoints(false)?;
                let m = probe::matrix(&eps, &eps, &parse_ports(&ports)?, family, timeout)?;
                if json {
                    /// One cell as the JSON output names it, in this order.
                    #[derive(serde::Serialize)]
                    struct Cell<'a> {
                        from: &'a str,
                        to: &'a str,
                        allowed: bool,
                    }
                    let slim: std::collections::BTreeMap<_, Vec<_>> = m
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.iter()
                                    .map(|o| Cell {
                                        from: &o.from,
                                        to: &o.to,
                                        allowed: o.allowed,
                                    })
                                    .collect(),
                            )
                        })
                        .collect();
                    println!("{}", serde_json::to_string(&slim)?);
                } else {
                    for (p, rows) in &m {
                        println!("{p}:");
                        for o in rows {
                            println!(
                                "  {:<30} -> {:<30} {}",
                                o.from,
                                o.to,
                                if o.allowed { "allowed" } else { "denied" }
                            );
                        }
                    }
                }
            } else if let Some(svc) = to_service {
                let from = from.unwrap_or_default();
                let port = port.context("--port is required")?;
                let o = probe::to_service(
                    &c.endpoint(&from)?,
                    &c.service(&svc)?,
                    port,
                    family,
                    timeout,
                )?;
                if json {
                    println!("{}", serde_json::to_string(&o)?);
                } else if o.allowed {
                    println!(
                        "{from} -> service/{svc} {port}: allowed (source seen as {})",
                        o.seen_source.unwrap_or_default()
                    );
                } else {
                    println!(
                        "{from} -> service/{svc} {port}: denied ({})",
                        o.error.unwrap_or_default()
                    );
                }
                if !o.allowed {
                    std::process::exit(1);
                }
            } else {
                let (from, to, port) = (
                    from.unwrap_or_default(),
                    to.unwrap_or_default(),
                    port.context("--port is required")?,
                );
                let o = probe::single(
                    &c.endpoint(&from)?,
                    &c.endpoint(&to)?,
                    port,
                    family,
                    timeout,
                )?;
                if json {
                    println!("{}", serde_json::to_string(&o)?);
                } else if o.allowed {
                    println!(
                        "{from} -> {to} {port}: allowed (source seen as {})",
                        o.seen_source.unwrap_or_default()
                    );
                } else {
                    println!(
                        "{from} -> {to} {port}: denied ({})",
                        o.error.unwrap_or_default()
                    );
                }
                if !o.allowed {
                    std::process::exit(1);
                }
            }
        }
        Cmd::Forward { netns, listen, to } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(weft_e2e::forward::run(&netns, &listen, to))?;
        }
        Cmd::Conformance {
            suite:
                Suite::Netpol {
                    focus,
                    skip,
                    report_dir,
                },
        } => {
            use weft_e2e::conformance::{KERNEL_SKIPS, Verdict, render_summary, run_netpol};
            let c = Cluster::load(&cli.name)?;
            let mut skips: Vec<String> = KERNEL_SKIPS.iter().map(|(p, _)| p.to_string()).collect();
            skips.extend(skip);
            let report_dir = std::path::absolute(&report_dir)?;
            let started = std::time::Instant::now();
            let cases = run_netpol(&c, &focus, &skips.join("|"), &report_dir)?;
            print!(
                "{}",
                render_summary(
                    &format!(
                        "Netpol on cluster {:?} ({} nodes), focus {focus:?}, {:.0} s",
                        c.cfg.name,
                        c.cfg.nodes,
                        started.elapsed().as_secs_f64()
                    ),
                    &cases,
                    KERNEL_SKIPS
                )
            );
            println!(
                "JUnit report: {}",
                report_dir.join("junit_01.xml").display()
            );
            if cases
                .iter()
                .any(|c| matches!(c.verdict, Verdict::Failed(_)))
            {
                std::process::exit(1);
            }
        }
        Cmd::Conformance {
            suite:
                Suite::PolicyApi {
                    version,
                    tests,
                    report_dir,
                },
        } => {
            use weft_e2e::conformance::policy_api::{VERSIONS, not_run, run_suite};
            use weft_e2e::conformance::{Verdict, render_report};
            let c = Cluster::load(&cli.name)?;
            let versions = match &version {
                Some(v) => vec![weft_e2e::conformance::policy_api::version(v)?],
                None => VERSIONS.iter().collect(),
            };
            let report_dir = std::path::absolute(&report_dir)?;
            let mut failed = false;
            let mut summaries = Vec::new();
            for v in versions {
                let started = std::time::Instant::now();
                let out = run_suite(&c, v, &tests, &report_dir.join(v.module))?;
                failed |= out
                    .cases
                    .iter()
                    .any(|c| matches!(c.verdict, Verdict::Failed(_)));
                summaries.push(format!(
                    "{}JUnit report: {}\n",
                    render_report(
                        &format!(
                            "network-policy-api {} ({}) on cluster {:?} ({} nodes), {:.0} s",
                            v.module,
                            v.api,
                            c.cfg.name,
                            c.cfg.nodes,
                            started.elapsed().as_secs_f64()
                        ),
                        &out.cases,
                        &not_run(&out.plan)
                    ),
                    out.junit.display()
                ));
            }
            print!("{}", summaries.join("\n"));
            if failed {
                std::process::exit(1);
            }
        }
        Cmd::Egress { uds, netns, subnet } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(weft_e2e::egress::run(&uds, &netns, subnet))?;
        }
        Cmd::Serve {
            netns,
            identity,
            ports,
        } => {
            let ports = parse_ports(&ports)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let (bound, notes) = weft_e2e::serve::bind_ports(netns.as_deref(), &ports)?;
                for n in notes {
                    eprintln!("{n}");
                }
                let _tasks = weft_e2e::serve::serve(bound, identity.as_str().into())?;
                std::future::pending::<()>().await;
                Ok::<_, anyhow::Error>(())
            })?;
        }
    }
    Ok(())
}
