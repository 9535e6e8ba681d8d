//! weft-nodelet: the kubelet stand-in of one local-cluster node. Started by `weft-e2e up`.

use clap::Parser;
use std::io::IsTerminal;
use weft_e2e::nodelet::{NodeletConfig, enter_node, run};

#[derive(Parser)]
#[command(about = "Plays the kubelet for one node of weft's local cluster")]
struct Args {
    #[command(flatten)]
    cfg: NodeletConfig,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // Its log is a file under the cluster's directory: plain text there.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    // Namespaces first, while this process has a single thread.
    enter_node(&mut args.cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args.cfg))
}
