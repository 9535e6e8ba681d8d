//! "Would traffic from A to B on TCP/80 be allowed, and by which policy?", answered from the
//! agents' own compiled state.
//!
//! Each agent serves its node's verdict at `GET /policy/verdict?src=…&dst=…&proto=…&port=…` on its
//! metrics port; `weft-agent explain` asks the source pod's node (egress) and the destination pod's
//! node (ingress) through the API server's node proxy, the way `kubectl get --raw` reaches a
//! kubelet, and combines the two: a connection needs both.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::routing::get;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use weft_policy::{Decision, Proto};

use super::PolicyStatus;

/// The path of the verdict endpoint.
pub const VERDICT_PATH: &str = "/policy/verdict";

/// The router of the verdict endpoint (merged into the metrics server's).
pub fn verdict_router(status: Arc<Mutex<PolicyStatus>>) -> Router {
    Router::new()
        .route(VERDICT_PATH, get(verdict))
        .with_state(status)
}

/// This node's verdict as text: the first line `Allowed` or `Denied`, then one reason a line.
pub fn render_verdict(
    status: &PolicyStatus,
    q: &BTreeMap<String, String>,
) -> Result<String, String> {
    let ip = |k: &str| -> Result<IpAddr, String> {
        q.get(k)
            .ok_or_else(|| format!("missing query parameter {k}"))?
            .parse()
            .map_err(|_| format!("{k} is not an IP address"))
    };
    let (src, dst) = (ip("src")?, ip("dst")?);
    let proto = q
        .get("proto")
        .and_then(|p| Proto::parse(p))
        .ok_or("proto must be TCP, UDP or SCTP")?;
    let port: u16 = q
        .get("port")
        .and_then(|p| p.parse().ok())
        .ok_or("port must be a number 1-65535")?;
    let Some(ir) = &status.ir else {
        return Err("no policy ruleset is in force on this node yet".into());
    };
    let v = ir.verdict(src, dst, proto, port);
    let mut out = format!("{:?}\n", v.decision);
    for b in &v.because {
        out.push_str(&format!("{b}\n"));
    }
    Ok(out)
}

/// The query parameters of `uri` (values of this endpoint need no decoding beyond `%3A`).
fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":").replace("%3a", ":")))
        .collect()
}

async fn verdict(State(status): State<Arc<Mutex<PolicyStatus>>>, uri: Uri) -> impl IntoResponse {
    let q = query(&uri);
    let answer = match status.lock() {
        Ok(s) => render_verdict(&s, &q),
        Err(_) => Err("the policy status is unavailable".into()),
    };
    match answer {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::BAD_REQUEST, e),
    }
}

/// Asks the agents of both ends, through the API server's node proxy, and prints the answer.
/// Returns whether the connection is allowed.
pub async fn explain(
    client: Client,
    from: &str,
    to: &str,
    port: &str,
    metrics_port: u16,
) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    let (proto, number) = port
        .split_once('/')
        .context("--port is PROTO/NUMBER, e.g. TCP/80")?;
    let pod = |id: &str| {
        let (ns, name) = id
            .split_once('/')
            .with_context(|| format!("{id:?} is not NAMESPACE/POD"))?;
        anyhow::Ok((ns.to_owned(), name.to_owned()))
    };
    let mut ends = Vec::new();
    for id in [from, to] {
        let (ns, name) = pod(id)?;
        let p = Api::<Pod>::namespaced(client.clone(), &ns)
            .get(&name)
            .await
            .with_context(|| format!("failed to get pod {id}"))?;
        let status = p.status.unwrap_or_default();
        let ip = status
            .pod_ip
            .with_context(|| format!("pod {id} has no IP yet"))?;
        let node = p
            .spec
            .and_then(|s| s.node_name)
            .with_context(|| format!("pod {id} is not scheduled"))?;
        ends.push((id.to_owned(), ip, node));
    }
    let (src, dst) = (&ends[0], &ends[1]);
    let mut allowed = true;
    for (role, node) in [
        ("egress, at the source's node", &src.2),
        ("ingress, at the destination's node", &dst.2),
    ] {
        let path = format!(
            "/api/v1/nodes/{node}:{metrics_port}/proxy{VERDICT_PATH}?src={}&dst={}&proto={proto}&port={number}",
            src.1, dst.1
        );
        let req = http::Request::get(&path)
            .body(Vec::new())
            .context("request")?;
        let text = client
            .request_text(req)
            .await
            .with_context(|| format!("failed to ask the agent on node {node} ({path})"))?;
        println!("{role} ({node}):");
        for line in text.lines() {
            println!("  {line}");
        }
        allowed &= text.lines().next() == Some(&format!("{:?}", Decision::Allowed));
    }
    println!(
        "{} -> {} on {port}: {}",
        src.0,
        dst.0,
        if allowed { "allowed" } else { "denied" }
    );
    Ok(allowed)
}
