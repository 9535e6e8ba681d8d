//! A TCP forwarder from listeners inside a network namespace to an address in the caller's
//! namespace. It makes the API server, which listens on the root namespace's loopback, reachable from
//! the node namespaces at the underlay gateway address, TLS passing through untouched.
//!
//! `up` listens on two ports of the gateway: 6443, which the nodes' kubeconfigs use, and the API
//! server's own secure port, because that is the port the API server publishes in the `kubernetes`
//! Service's endpoints (`--advertise-address` + `--secure-port`): pods that talk to
//! `kubernetes.default` through kube-proxy end up there.

use crate::netns::in_netns;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::Path;

/// Listens on every address of `listen` inside `netns` and forwards every connection to `to`.
/// Runs until a listener fails.
pub async fn run(netns: &Path, listen: &[SocketAddr], to: SocketAddr) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut addrs = listen.to_vec();
    addrs.sort();
    addrs.dedup();
    for addr in addrs {
        let std_listener = in_netns(netns, move || {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("failed to listen on {addr}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        tasks.spawn(accept_loop(listener, to));
    }
    match tasks.join_next().await {
        Some(result) => result?,
        None => Ok(()),
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, to: SocketAddr) -> Result<()> {
    loop {
        let (mut inbound, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
