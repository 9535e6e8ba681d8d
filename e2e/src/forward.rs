//! A TCP forwarder from a listener inside a network namespace to an address in the caller's
//! namespace. It makes the API server, which listens on the root namespace's loopback, reachable from
//! the node namespaces at the underlay gateway address, TLS passing through untouched.

use crate::netns::in_netns;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::Path;

/// Listens on `listen` inside `netns` and forwards every connection to `to`. Runs forever.
pub async fn run(netns: &Path, listen: SocketAddr, to: SocketAddr) -> Result<()> {
    let std_listener = in_netns(netns, move || {
        let l = std::net::TcpListener::bind(listen)
            .with_context(|| format!("failed to listen on {listen}"))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
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
