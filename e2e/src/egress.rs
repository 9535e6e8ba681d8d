//! The API server's way to the nodes: an HTTP CONNECT proxy on a Unix socket (the API server's
//! egress selector, `cluster` traffic), that opens each connection inside the underlay namespace.
//!
//! ```text
//!  kube-apiserver (root netns, 127.0.0.1) ── uds: CONNECT 10.U.0.11:10250 ──► weft-e2e egress
//!                                                                             │ socket made in
//!                                                                             ▼ <name>-underlay
//!                                                     br0 ──► node-1 10.U.0.11:10250 (kubelet API)
//! ```
//!
//! So `kubectl logs`, `exec` and `port-forward` reach the nodes' kubelet API while the root network
//! namespace keeps no route, address or interface of the cluster. Invariant: only addresses of the
//! underlay subnet are ever dialled; anything else is refused with 403.

use crate::netns::in_netns;
use anyhow::{Context, Result, bail};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The egress selector configuration that sends the API server's `cluster` traffic to `uds`.
pub fn render_egress_config(uds: &Path) -> String {
    format!(
        "apiVersion: apiserver.k8s.io/v1beta1\n\
         kind: EgressSelectorConfiguration\n\
         egressSelections:\n\
         - name: cluster\n  \
           connection:\n    \
             proxyProtocol: HTTPConnect\n    \
             transport:\n      \
               uds:\n        \
                 udsName: {}\n",
        uds.display()
    )
}

/// The target of a `CONNECT host:port HTTP/1.1` request line, if it is one to an IPv4 address in
/// `allowed` (a /24, given by its first three octets).
pub fn parse_connect(line: &str, allowed: [u8; 3]) -> Result<SocketAddr> {
    let mut parts = line.split_whitespace();
    let (Some("CONNECT"), Some(target), Some(v)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("not a CONNECT request: {line:?}");
    };
    if !v.starts_with("HTTP/1.") {
        bail!("unsupported protocol {v:?}");
    }
    let addr: SocketAddr = target
        .parse()
        .with_context(|| format!("CONNECT target {target:?} is not an IP address and port"))?;
    match addr.ip() {
        IpAddr::V4(ip) if ip.octets()[..3] == allowed => Ok(addr),
        ip => bail!(
            "{ip} is not a node of this cluster (only {}.{}.{}.0/24 is reachable)",
            allowed[0],
            allowed[1],
            allowed[2]
        ),
    }
}

/// Serves the proxy on `uds` until killed; connections are made inside `netns`.
pub async fn run(uds: &Path, netns: &Path, subnet: Ipv4Addr) -> Result<()> {
    let _ = std::fs::remove_file(uds);
    let listener = tokio::net::UnixListener::bind(uds)
        .with_context(|| format!("failed to listen on {}", uds.display()))?;
    let o = subnet.octets();
    let allowed = [o[0], o[1], o[2]];
    loop {
        let (conn, _) = listener.accept().await?;
        let netns: PathBuf = netns.to_path_buf();
        tokio::spawn(async move {
            if let Err(e) = serve(conn, &netns, allowed).await {
                tracing::debug!(error = %format!("{e:#}"), "egress connection");
            }
        });
    }
}

async fn serve(conn: tokio::net::UnixStream, netns: &Path, allowed: [u8; 3]) -> Result<()> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    // The rest of the request's head: headers up to the empty line.
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let target = match parse_connect(line.trim_end(), allowed) {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("{e:#}");
            let resp = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{msg}",
                msg.len()
            );
            reader.get_mut().write_all(resp.as_bytes()).await?;
            return Err(e);
        }
    };
    let ns = netns.to_path_buf();
    let dialled = tokio::task::spawn_blocking(move || {
        in_netns(&ns, move || {
            let s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(10))
                .with_context(|| format!("failed to connect to {target}"))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
    })
    .await?;
    let mut outbound = match dialled {
        Ok(s) => tokio::net::TcpStream::from_std(s)?,
        Err(e) => {
            let msg = format!("{e:#}");
            let resp = format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\n\r\n{msg}",
                msg.len()
            );
            reader.get_mut().write_all(resp.as_bytes()).await?;
            return Err(e);
        }
    };
    reader
        .get_mut()
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    // Whatever the client sent after its head is already buffered in the reader.
    let buffered = reader.buffer().to_vec();
    let mut inbound = reader.into_inner();
    outbound.set_nodelay(true)?;
    outbound.write_all(&buffered).await?;
    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connects_to_the_underlay_are_accepted() {
        let net = [10, 91, 0];
        assert_eq!(
            parse_connect("CONNECT 10.91.0.11:10250 HTTP/1.1", net).unwrap(),
            "10.91.0.11:10250".parse::<SocketAddr>().unwrap()
        );
        for bad in [
            "CONNECT 127.0.0.1:2379 HTTP/1.1",
            "CONNECT 10.92.0.11:10250 HTTP/1.1",
            "CONNECT node-1:10250 HTTP/1.1",
            "GET / HTTP/1.1",
            "CONNECT 10.91.0.11:10250",
        ] {
            assert!(parse_connect(bad, net).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_egress_config_sends_cluster_traffic_to_the_socket() {
        let y = render_egress_config(Path::new("/var/lib/weft-e2e/x/egress.sock"));
        let v: serde_json::Value = yaml_serde::from_str(&y).unwrap();
        assert_eq!(v["kind"], "EgressSelectorConfiguration");
        let sel = &v["egressSelections"][0];
        assert_eq!(sel["name"], "cluster");
        assert_eq!(sel["connection"]["proxyProtocol"], "HTTPConnect");
        assert_eq!(
            sel["connection"]["transport"]["uds"]["udsName"],
            "/var/lib/weft-e2e/x/egress.sock"
        );
    }
}
