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

/// A Service as the probe sees it: its cluster IPs and the pods behind it.
#[derive(Clone, Debug)]
pub struct ServiceTarget {
    /// `namespace/name`.
    pub id: String,
    /// The Service's cluster IPs, IPv4 first.
    pub ips: Vec<IpAddr>,
    /// `namespace/name` of every pod among its endpoints.
    pub backends: Vec<String>,
}

/// Judges a reply through a Service: allowed when one of its backends answered.
pub fn judge_service(from: &str, to: &ServiceTarget, result: Result<String>) -> Outcome {
    let (allowed, error, seen_source) = match result {
        Ok(reply) => {
            let mut words = reply.split_whitespace();
            let who = words.next().unwrap_or_default().to_string();
            if to.backends.contains(&who) {
                (
                    true,
                    None,
                    Some(format!(
                        "{} (answered by {who})",
                        words.next().unwrap_or_default()
                    )),
                )
            } else {
                (
                    false,
                    Some(format!("answered by {who:?}, not a backend of {}", to.id)),
                    None,
                )
            }
        }
        Err(e) => (false, Some(format!("{e:#}")), None),
    };
    Outcome {
        from: from.into(),
        to: format!("service/{}", to.id),
        allowed,
        error,
        seen_source,
    }
}

/// Probes a Service's cluster IP on `port` from inside `from`'s namespace.
pub fn to_service(
    from: &Endpoint,
    to: &ServiceTarget,
    port: PortSpec,
    family: Family,
    timeout: Duration,
) -> Result<Outcome> {
    let ip = pick_ip(&to.ips, family)
        .with_context(|| format!("service {} has no cluster IP of that family", to.id))?;
    let (netns, id, target) = (from.netns.clone(), from.id.clone(), to.clone());
    crate::netns::in_netns(&netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let reply = rt.block_on(request(SocketAddr::new(ip, port.port), port.proto, timeout));
        Ok(judge_service(&id, &target, reply))
    })
}

#[cfg(test)]
mod service_tests {
    use super::*;

    #[test]
    fn a_service_probe_is_allowed_only_when_a_backend_answers() {
        let svc = ServiceTarget {
            id: "ns/web".into(),
            ips: vec!["10.96.0.10".parse().unwrap()],
            backends: vec!["ns/web-1".into(), "ns/web-2".into()],
        };
        let ok = judge_service("ns/client", &svc, Ok("ns/web-2 10.244.0.5\n".into()));
        assert!(ok.allowed);
        assert_eq!(ok.to, "service/ns/web");
        assert!(ok.seen_source.unwrap().contains("ns/web-2"));
        let other = judge_service("ns/client", &svc, Ok("ns/intruder 10.244.0.5\n".into()));
        assert!(!other.allowed);
        let err = judge_service("ns/client", &svc, Err(anyhow::anyhow!("timed out")));
        assert_eq!(err.error.as_deref(), Some("timed out"));
    }
}
