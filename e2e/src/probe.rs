//! Connectivity probes between pods: one pair, or every Running pod against every Running pod.
//!
//! A probe runs inside the source pod's network namespace (entered on a dedicated thread, see
//! `netns`), opens a connection to the destination pod's IP and expects the destination's identity
//! back from the port server (`serve`). Allowed means the reply named the destination; anything else
//! (refused, timed out, answered by someone else) is not allowed.

use crate::serve::{PortSpec, Proto};
use anyhow::{Context, Result};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A pod as the probe sees it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `namespace/name`.
    pub id: String,
    /// Path of the pod's network namespace, usable from the root namespace.
    pub netns: PathBuf,
    /// The pod's IPs, IPv4 first.
    pub ips: Vec<IpAddr>,
}

/// One cell of the reachability matrix.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Outcome {
    pub from: String,
    pub to: String,
    pub allowed: bool,
    /// What went wrong, when not allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The source address the destination saw, when allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_source: Option<String>,
}

/// Which address family to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

fn pick_ip(ips: &[IpAddr], family: Family) -> Option<IpAddr> {
    ips.iter().copied().find(|ip| match family {
        Family::V4 => ip.is_ipv4(),
        Family::V6 => ip.is_ipv6(),
    })
}

/// Sends one request to `addr` and returns the reply, in the caller's namespace.
pub async fn request(addr: SocketAddr, proto: Proto, timeout: Duration) -> Result<String> {
    match proto {
        Proto::Tcp => {
            let fut = async {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.write_all(b"probe\n").await?;
                let mut out = String::new();
                s.read_to_string(&mut out).await?;
                Ok::<_, std::io::Error>(out)
            };
            tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| anyhow::anyhow!("timed out"))?
                .map_err(Into::into)
        }
        Proto::Udp => {
            let local: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
            let s = tokio::net::UdpSocket::bind(local).await?;
            s.connect(addr).await?;
            let mut buf = [0u8; 1500];
            // A first datagram may be lost while neighbours resolve: try three times.
            for _ in 0..3 {
                s.send(b"probe\n").await?;
                if let Ok(r) = tokio::time::timeout(timeout / 3, s.recv(&mut buf)).await {
                    let n = r?;
                    return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
            anyhow::bail!("timed out")
        }
        Proto::Sctp => anyhow::bail!("SCTP is not available on this kernel"),
    }
}

fn judge(from: &str, to: &Endpoint, result: Result<String>) -> Outcome {
    match result {
        Ok(reply) => {
            let mut words = reply.split_whitespace();
            let who = words.next().unwrap_or_default();
            let src = words.next().map(str::to_string);
            if who == to.id {
                Outcome {
                    from: from.into(),
                    to: to.id.clone(),
                    allowed: true,
                    error: None,
                    seen_source: src,
                }
            } else {
                Outcome {
                    from: from.into(),
                    to: to.id.clone(),
                    allowed: false,
                    error: Some(format!("answered by {who:?}, not {}", to.id)),
                    seen_source: None,
                }
            }
        }
        Err(e) => Outcome {
            from: from.into(),
            to: to.id.clone(),
            allowed: false,
            error: Some(format!("{e:#}")),
            seen_source: None,
        },
    }
}

/// Probes every destination on every port from `source`, inside its namespace.
fn probe_from(
    source: Endpoint,
    dests: Vec<Endpoint>,
    ports: Vec<PortSpec>,
    family: Family,
    timeout: Duration,
) -> Result<Vec<(PortSpec, Outcome)>> {
    crate::netns::in_netns(&source.netns.clone(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let jobs = ports
                .iter()
                .flat_map(|p| dests.iter().map(move |d| (*p, d.clone())));
            let results = futures::stream::iter(jobs)
                .map(|(port, dest)| {
                    let from = source.id.clone();
                    async move {
                        let outcome = match pick_ip(&dest.ips, family) {
                            Some(ip) => {
                                let r =
                                    request(SocketAddr::new(ip, port.port), port.proto, timeout)
                                        .await;
                                judge(&from, &dest, r)
                            }
                            None => judge(
                                &from,
                                &dest,
                                Err(anyhow::anyhow!("no address of that family")),
                            ),
                        };
                        (port, outcome)
                    }
                })
                .buffer_unordered(256)
                .collect::<Vec<_>>()
                .await;
            Ok(results)
        })
    })
}

/// The reachability matrix: for each port, every source against every destination, sorted.
pub fn matrix(
    sources: &[Endpoint],
    dests: &[Endpoint],
    ports: &[PortSpec],
    family: Family,
    timeout: Duration,
) -> Result<BTreeMap<String, Vec<Outcome>>> {
    let handles: Vec<_> = sources
        .iter()
        .map(|s| {
            let (s, d, p) = (s.clone(), dests.to_vec(), ports.to_vec());
            std::thread::spawn(move || probe_from(s, d, p, family, timeout))
        })
        .collect();
    let mut out: BTreeMap<String, Vec<Outcome>> =
        ports.iter().map(|p| (p.to_string(), Vec::new())).collect();
    for h in handles {
        let rows = h
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
        for (p, o) in rows {
            out.entry(p.to_string()).or_default().push(o);
        }
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    }
    Ok(out)
}

/// Probes one pair on one port.
pub fn single(
    from: &Endpoint,
    to: &Endpoint,
    port: PortSpec,
    family: Family,
    timeout: Duration,
) -> Result<Outcome> {
    let rows = probe_from(from.clone(), vec![to.clone()], vec![port], family, timeout)?;
    rows.into_iter()
        .next()
        .map(|(_, o)| o)
        .context("probe produced no result")
}
