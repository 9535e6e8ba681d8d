//! The stand-in for a pod's containers: serve every declared container port and answer each request
//! with the pod's identity and the source address the server saw.
//!
//! The reply `"<namespace>/<pod> <source-ip>\n"` lets a probe check that it reached the pod it meant to
//! and whether the traffic was masqueraded on the way. A request that starts with `GET ` gets the same
//! text as an HTTP/1.0 response, so httpGet probes work too.

use crate::netns::in_netns;
use anyhow::{Context, Result, bail};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A transport protocol of a container port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

/// A protocol and port, written `TCP/80`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSpec {
    pub proto: Proto,
    pub port: u16,
}

impl FromStr for PortSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (p, n) = s
            .split_once('/')
            .with_context(|| format!("port {s:?} is not of the form PROTO/PORT, e.g. TCP/80"))?;
        let proto = match p.to_ascii_uppercase().as_str() {
            "TCP" => Proto::Tcp,
            "UDP" => Proto::Udp,
            "SCTP" => Proto::Sctp,
            other => bail!("unknown protocol {other:?} in {s:?}: use TCP, UDP or SCTP"),
        };
        let port = n
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .with_context(|| format!("port number in {s:?} must be 1..65535"))?;
        Ok(Self { proto, port })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.proto {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        };
        write!(f, "{p}/{}", self.port)
    }
}

/// Parses a comma-separated list of ports.
pub fn parse_ports(s: &str) -> Result<Vec<PortSpec>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse())
        .collect()
}

/// A socket bound in some namespace, not yet served.
pub enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Binds every port on the wildcard address (IPv4 and IPv6) inside the network namespace at `netns`,
/// or in the caller's namespace when `None`. SCTP ports are skipped with a note: this kernel has no
/// SCTP sockets.
pub fn bind_ports(netns: Option<&Path>, ports: &[PortSpec]) -> Result<(Vec<Bound>, Vec<String>)> {
    let ports = ports.to_vec();
    let work = move || -> Result<(Vec<Bound>, Vec<String>)> {
        let mut bound = Vec::new();
        let mut notes = Vec::new();
        for p in ports {
            let addr = SocketAddr::from(([0u16; 8], p.port));
            match p.proto {
                Proto::Tcp => {
                    let l = std::net::TcpListener::bind(addr)
                        .or_else(|_| std::net::TcpListener::bind(("0.0.0.0", p.port)))
                        .with_context(|| format!("failed to listen on {p}"))?;
                    l.set_nonblocking(true)?;
                    bound.push(Bound::Tcp(l));
                }
                Proto::Udp => {
                    let s = std::net::UdpSocket::bind(addr)
                        .or_else(|_| std::net::UdpSocket::bind(("0.0.0.0", p.port)))
                        .with_context(|| format!("failed to bind {p}"))?;
                    s.set_nonblocking(true)?;
                    bound.push(Bound::Udp(s));
                }
                Proto::Sctp => {
                    notes.push(format!("{p} not served: this kernel has no SCTP sockets"))
                }
            }
        }
        Ok((bound, notes))
    };
    match netns {
        Some(ns) => in_netns(ns, work),
        None => work(),
    }
}

/// Serves bound sockets until the returned tasks are aborted.
pub fn serve(bound: Vec<Bound>, identity: Arc<str>) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for b in bound {
        let id = identity.clone();
        match b {
            Bound::Tcp(l) => {
                let l = tokio::net::TcpListener::from_std(l)?;
                tasks.push(tokio::spawn(serve_tcp(l, id)));
            }
            Bound::Udp(s) => {
                let s = tokio::net::UdpSocket::from_std(s)?;
                tasks.push(tokio::spawn(serve_udp(s, id)));
            }
        }
    }
    Ok(tasks)
}

fn reply_for(identity: &str, peer: SocketAddr) -> String {
    format!("{identity} {}\n", canonical(peer.ip()))
}

/// An IPv4 client of a dual-stack socket shows as `::ffff:a.b.c.d`; report it as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

async fn serve_tcp(listener: tokio::net::TcpListener, identity: Arc<str>) {
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let identity = identity.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or(0);
            let body = reply_for(&identity, peer);
            let out = if buf[..n].starts_with(b"GET ") {
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            } else {
                body
            };
            let _ = stream.write_all(out.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn serve_udp(sock: tokio::net::UdpSocket, identity: Arc<str>) {
    let mut buf = [0u8; 1500];
    loop {
        if let Ok((_, peer)) = sock.recv_from(&mut buf).await {
            let _ = sock
                .send_to(reply_for(&identity, peer).as_bytes(), peer)
                .await;
        }
    }
}
