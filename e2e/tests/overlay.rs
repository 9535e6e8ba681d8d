//! The overlay end to end: weft installed with Helm on a 3-node local cluster, pods on every node,
//! and the kernel state of the node namespaces checked directly (issue 8).

mod support;

use anyhow::{Context, Result, ensure};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;
use weft_e2e::Cluster;
use weft_e2e::bench::patch_fabric;
use weft_e2e::install::{install_weft, wait_fabric_available};
use weft_e2e::probe::{self, Endpoint, Family};
use weft_e2e::serve::parse_ports;

const NS: &str = "overlay";

fn main() {
    let mut cfg = test_config("wov", 86, 300);
    // As `weft-e2e up` runs it: kube-proxy in nftables mode beside weft.
    cfg.kube_proxy = true;
    let trials: Vec<Trial> = vec![
        (
            "every_pod_reaches_every_pod_across_nodes_without_nat",
            Box::new(every_pod_reaches_every_pod),
        ),
        (
            "pods_reach_the_external_host_with_their_node_address",
            Box::new(external_host_sees_the_node),
        ),
        (
            "pods_on_every_node_reach_the_api_server_through_the_kubernetes_service",
            Box::new(kubernetes_service_from_pods),
        ),
        (
            "a_node_added_is_routed_within_a_second_and_removed_within_two",
            Box::new(node_added_and_removed),
        ),
        (
            "an_agent_killed_or_restarted_drops_no_packet",
            Box::new(agent_restart_drops_nothing),
        ),
        (
            "an_upgrade_by_changing_the_fabric_drops_no_packet",
            Box::new(fabric_change_drops_nothing),
        ),
        (
            "host_gw_routes_via_node_addresses_and_removes_the_vxlan_device",
            Box::new(host_gw_backend),
        ),
        (
            "a_device_with_the_wrong_vni_is_reconciled_and_the_fabric_says_so",
            Box::new(wrong_vni_reconciled),
        ),
    ];
    run_suite(cfg, trials)
}

/// In-cluster clients (client-go's `InClusterConfig`) reach the API server at the `kubernetes`
/// Service's ClusterIP: through kube-proxy's DNAT to the endpoint the API server publishes (its
/// advertise address and secure port) and weft's masquerade out of the pod network. The API server
/// answers a plain-HTTP request on its TLS port with Go's "HTTP request to an HTTPS server" 400,
/// which shows that it is the API server that answered and not just any listener.
fn kubernetes_service_from_pods(c: &Cluster) -> Result<()> {
    let eps = pods(c)?;
    let svc = get_json(c, &["service", "-n", "default", "kubernetes"])?;
    let ip: std::net::IpAddr = svc["spec"]["clusterIP"]
        .as_str()
        .context("the kubernetes Service has no ClusterIP")?
        .parse()?;
    let addr = std::net::SocketAddr::new(ip, 443);
    for ep in &eps {
        let reply = eventually(
            &format!("{} to reach the API server at {addr}", ep.id),
            Duration::from_secs(30),
            || {
                let reply = weft_e2e::netns::in_netns(&ep.netns, move || {
                    use std::io::{Read, Write};
                    let mut s =
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.write_all(b"GET /version HTTP/1.0\r\n\r\n")?;
                    let mut buf = Vec::new();
                    let _ = s.read_to_end(&mut buf);
                    Ok(String::from_utf8_lossy(&buf).into_owned())
                })?;
                Ok(Some(reply))
            },
        )?;
        ensure!(
            reply.contains("HTTP request to an HTTPS server"),
            "{} -> {addr}: not the API server's answer: {reply:?}",
            ep.id
        );
    }
    Ok(())
}

/// Installs weft (once) and starts one pod per node in namespace [`NS`]; returns their endpoints.
fn pods(c: &Cluster) -> Result<Vec<Endpoint>> {
    if get_json(c, &["namespace", NS]).is_err() {
        install_weft(c, &[])?;
        wait_fabric_available(c, "default", Duration::from_secs(120))?;
        output(c.kubectl().args(["create", "namespace", NS]))?;
        for node in c.cfg.node_names() {
            c.apply(pod_yaml(
                NS,
                &format!("p-{node}"),
                Some(&node),
                &[("app", "p")],
                &[("TCP", 80), ("UDP", 53)],
            ))?;
        }
    }
    for node in c.cfg.node_names() {
        wait_pod_ready(c, NS, &format!("p-{node}"), Duration::from_secs(60))?;
    }
    let eps: Vec<_> = c
        .endpoints(false)?
        .into_iter()
        .filter(|e| e.id.starts_with(&format!("{NS}/")))
        .collect();
    ensure!(eps.len() == 3, "expected 3 pods, got {eps:?}");
    Ok(eps)
}

fn assert_full_matrix(eps: &[Endpoint]) -> Result<()> {
    let m = probe::matrix(
        eps,
        eps,
        &parse_ports("TCP/80,UDP/53")?,
        Family::V4,
        Duration::from_secs(2),
    )?;
    for (port, rows) in &m {
        ensure!(rows.len() == 9, "{port}: {} pairs", rows.len());
        for o in rows {
            ensure!(
                o.allowed,
                "{port}: {} -> {} unreachable: {:?}",
                o.from,
                o.to,
                o.error
            );
            let from = eps.iter().find(|e| e.id == o.from).context("source")?;
            let src = o.seen_source.clone().unwrap_or_default();
            ensure!(
                from.ips.iter().any(|ip| ip.to_string() == src),
                "{port}: {} -> {} seen from {src}: pod-to-pod traffic must not be NATed",
                o.from,
                o.to
            );
        }
    }
    Ok(())
}

fn every_pod_reaches_every_pod(c: &Cluster) -> Result<()> {
    let eps = pods(c)?;
    assert_full_matrix(&eps)
}

fn external_host_sees_the_node(c: &Cluster) -> Result<()> {
    let eps = pods(c)?;
    let external = Endpoint {
        id: "external".into(),
        netns: format!("/run/netns/{}", c.cfg.external_ns()).into(),
        ips: vec![std::net::IpAddr::V4(c.cfg.external_ip())],
    };
    let m = probe::matrix(
        &eps,
        std::slice::from_ref(&external),
        &parse_ports("TCP/80,UDP/53")?,
        Family::V4,
        Duration::from_secs(2),
    )?;
    let pods_json = get_json(c, &["pods", "-n", NS])?;
    for (port, rows) in &m {
        ensure!(rows.len() == 3, "{port}: {} pairs", rows.len());
        for o in rows {
            ensure!(
                o.allowed,
                "{port}: {} -> external unreachable: {:?}",
                o.from,
                o.error
            );
            let name = o.from.trim_start_matches(&format!("{NS}/"));
            let host_ip = pods_json["items"]
                .as_array()
                .and_then(|a| a.iter().find(|p| p["metadata"]["name"] == name))
                .and_then(|p| p["status"]["hostIP"].as_str())
                .context("hostIP")?;
            ensure!(
                o.seen_source.as_deref() == Some(host_ip),
                "{port}: {} -> external seen from {:?}, not its node {host_ip}: not masqueraded",
                o.from,
                o.seen_source
            );
        }
    }
    Ok(())
}

/// `ip …` inside a node's namespace.
fn node_ip(c: &Cluster, node: &str, args: &str) -> Result<String> {
    let ns = c.cfg.node_ns(node);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns, "ip"])
        .args(args.split_whitespace());
    output(&mut cmd)
}

/// Polls (every 20 ms) until `check` holds on every node, returning how long it took.
fn time_until(
    c: &Cluster,
    what: &str,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let mut all = true;
        for node in c.cfg.node_names() {
            all &= check(&node_ip(c, &node, "route show")?);
        }
        if all {
            return Ok(start.elapsed());
        }
        ensure!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn node_added_and_removed(c: &Cluster) -> Result<()> {
    pods(c)?;
    // A node as a flannel or weft peer announces itself: podCIDR and flannel's annotations.
    let ghost = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "ghost", "annotations": {
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/backend-data": "{\"VNI\":1,\"VtepMAC\":\"0a:58:0a:f4:c8:00\"}",
            "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            "flannel.alpha.coreos.com/public-ip": format!("10.{}.0.200", c.cfg.underlay_octet),
        }},
        "spec": {"podCIDR": "10.244.200.0/24", "podCIDRs": ["10.244.200.0/24"],
                 "taints": [{"key": "weft.dev/ghost", "effect": "NoSchedule"}]}
    });
    c.apply(ghost)?;
    let route = "10.244.200.0/24 via 10.244.200.0 dev flannel.1 proto 87 onlink";
    let added = time_until(c, "the ghost's route", Duration::from_secs(5), |r| {
        r.contains(route)
    })?;
    let fdb = {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &c.cfg.node_ns("node-1"),
            "bridge",
            "fdb",
            "show",
            "dev",
            "flannel.1",
        ]);
        output(&mut cmd)?
    };
    ensure!(fdb.contains("0a:58:0a:f4:c8:00 dst 10."), "fdb: {fdb}");
    output(
        c.kubectl()
            .args(["delete", "node", "ghost", "--wait=false"]),
    )?;
    let removed = time_until(c, "the ghost's route to go", Duration::from_secs(5), |r| {
        !r.contains("10.244.200.0/24")
    })?;
    let neigh = node_ip(c, "node-1", "neigh show dev flannel.1")?;
    ensure!(!neigh.contains("10.244.200.0"), "stale neighbour: {neigh}");
    eprintln!("node added → routed on every node: {added:?}; deleted → removed: {removed:?}");
    ensure!(
        added < Duration::from_secs(1),
        "added after {added:?} (target < 1 s)"
    );
    ensure!(
        removed < Duration::from_secs(2),
        "removed after {removed:?} (target < 2 s)"
    );
    Ok(())
}

/// The pids of processes named `comm` in a node's network namespace.
fn pids_in_node(c: &Cluster, node: &str, comm: &str) -> Result<Vec<i32>> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "pids", &c.cfg.node_ns(node)]);
    let out = output(&mut cmd)?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect())
}

/// What one TCP stream across nodes saw.
struct StreamReport {
    sent: u64,
    received: u64,
    /// Segments the sender retransmitted.
    retransmitted: u64,
    /// Of those, the ones whose original had arrived (spurious).
    duplicates: u64,
    /// The longest time the receiver waited for the next bytes.
    longest_gap: Duration,
}

const STREAM_PORT: u16 = 7777;
const STREAM_CHUNK: usize = 4096;

/// Segments this connection retransmitted, and how many of those the receiver reported as
/// duplicates (D-SACK: it had the original), from `TCP_INFO`. Their difference is what the path lost.
/// Under CPU contention a delayed ACK makes TCP send a tail loss probe of a segment that did arrive;
/// that is a retransmission but not a loss.
fn retransmissions(conn: &std::net::TcpStream) -> Result<(u64, u64)> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero tcp_info is valid, and getsockopt writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the fd is a live TCP socket owned by `conn`; `info` and `len` outlive the call.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    ensure!(rc == 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    Ok((
        u64::from(info.tcpi_total_retrans),
        u64::from(info.tcpi_dsack_dups),
    ))
}

/// Runs one TCP connection from `from` to `to` (a listener of the test's own inside `to`'s network
/// namespace), 4 KiB every 10 ms, until `stop` is set.
fn tcp_stream(
    from: &Endpoint,
    to: &Endpoint,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<StreamReport>>> {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let addr = std::net::SocketAddr::new(to.ips[0], STREAM_PORT);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let to_ns = to.netns.clone();
    let server = std::thread::spawn(move || -> Result<(u64, Duration)> {
        weft_e2e::netns::enter_netns(&to_ns)?;
        let listener = std::net::TcpListener::bind(addr)?;
        let _ = ready_tx.send(());
        let (mut conn, _) = listener.accept()?;
        let (mut received, mut longest_gap) = (0u64, Duration::ZERO);
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = Instant::now();
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok((received, longest_gap));
            }
            received += n as u64;
            longest_gap = longest_gap.max(last.elapsed());
            last = Instant::now();
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the stream's listener did not start")?;
    let from_ns = from.netns.clone();
    Ok(std::thread::spawn(move || -> Result<StreamReport> {
        weft_e2e::netns::enter_netns(&from_ns)?;
        let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        let chunk = [0x5au8; STREAM_CHUNK];
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            conn.write_all(&chunk)?;
            sent += STREAM_CHUNK as u64;
            std::thread::sleep(Duration::from_millis(10));
        }
        conn.shutdown(std::net::Shutdown::Write)?;
        let (received, longest_gap) = server
            .join()
            .map_err(|_| anyhow::anyhow!("the stream's receiver panicked"))??;
        let (retransmitted, duplicates) = retransmissions(&conn)?;
        Ok(StreamReport {
            sent,
            received,
            retransmitted,
            duplicates,
            longest_gap,
        })
    }))
}

/// Pings (100/s, `count` packets) from the pod on node-1 to the pod on `to_node`, and keeps one TCP
/// stream between them, while `during` runs; fails unless every ping was answered and the stream
/// delivered every byte without a single retransmission.
fn ping_while(
    c: &Cluster,
    to_node: &str,
    count: u32,
    during: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let eps = pods(c)?;
    let from = eps
        .iter()
        .find(|e| e.id.ends_with("node-1"))
        .context("pod on node-1")?;
    let to = eps
        .iter()
        .find(|e| e.id.ends_with(to_node))
        .with_context(|| format!("pod on {to_node}"))?;
    let dst = to.ips[0].to_string();
    let ping = Command::new("nsenter")
        .arg(format!("--net={}", from.netns.display()))
        .args([
            "ping",
            "-q",
            "-i",
            "0.01",
            "-c",
            &count.to_string(),
            "-W",
            "1",
            &dst,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("ping")?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = tcp_stream(from, to, stop.clone())?;
    std::thread::sleep(Duration::from_millis(300));
    let result = during();
    let out = ping.wait_with_output()?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let stream = stream
        .join()
        .map_err(|_| anyhow::anyhow!("the TCP stream panicked"))?;
    result?;
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", text.trim());
    ensure!(
        text.contains(" 0% packet loss"),
        "packets were lost: {text}"
    );
    let stream = stream.context("the TCP stream across nodes broke")?;
    eprintln!(
        "TCP stream {} -> {}: {} bytes sent, {} received, {} segments retransmitted of which {} had \
         arrived (spurious probes), longest gap {:?}",
        from.id,
        to.id,
        stream.sent,
        stream.received,
        stream.retransmitted,
        stream.duplicates,
        stream.longest_gap
    );
    let lost = stream.retransmitted.saturating_sub(stream.duplicates);
    ensure!(
        stream.received == stream.sent && lost == 0,
        "the TCP stream lost packets: {} of {} bytes arrived, {lost} segments lost and retransmitted",
        stream.received,
        stream.sent,
    );
    wait_fabric_available(c, "default", Duration::from_secs(60))?;
    Ok(())
}

fn agent_restart_drops_nothing(c: &Cluster) -> Result<()> {
    // 6 s across nodes, while both ends' agents are killed and restarted.
    ping_while(c, "node-2", 600, || {
        std::thread::sleep(Duration::from_millis(200));
        for node in ["node-1", "node-2"] {
            for pid in pids_in_node(c, node, "weft-agent")? {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)?;
            }
        }
        std::thread::sleep(Duration::from_secs(2));
        // A graceful restart too: the DaemonSet's pod deleted and recreated.
        output(c.kubectl().args([
            "delete",
            "pod",
            "-n",
            "weft-system",
            "-l",
            "app.kubernetes.io/name=weft-agent",
            "--field-selector",
            "spec.nodeName=node-2",
            "--wait=false",
        ]))?;
        Ok(())
    })
}

/// A change of the fabric rolls every agent through the DaemonSet (a new config hash): a flow across
/// nodes keeps going the whole time.
fn fabric_change_drops_nothing(c: &Cluster) -> Result<()> {
    let before = get_json(c, &["networkfabric", "default"])?["metadata"]["generation"].clone();
    let set_log_level =
        |level: &str| patch_fabric(c, serde_json::json!({"agent": {"logLevel": level}}));
    // 15 s across nodes while the rollout replaces every agent.
    let result = ping_while(c, "node-3", 1500, || {
        set_log_level("debug")?;
        eventually(
            "the fabric to roll out the change",
            Duration::from_secs(60),
            || {
                let f = get_json(c, &["networkfabric", "default"])?;
                let rolled = f["metadata"]["generation"] != before
                    && f["status"]["observedGeneration"] == f["metadata"]["generation"]
                    && f["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Available" && c["status"] == "True")
                    });
                Ok(rolled.then_some(()))
            },
        )
    });
    set_log_level("info")?;
    result
}

fn host_gw_backend(c: &Cluster) -> Result<()> {
    let eps = pods(c)?;
    patch_fabric(c, serde_json::json!({"overlay": {"backend": "host-gw"}}))?;
    let octet = c.cfg.underlay_octet;
    time_until(c, "host-gw routes", Duration::from_secs(60), |r| {
        r.contains(&format!("via 10.{octet}.0.1"))
            && r.contains("proto 87")
            && !r.contains("flannel.1")
    })?;
    let links = node_ip(c, "node-1", "link show")?;
    ensure!(
        !links.contains("flannel.1"),
        "the vxlan device stayed: {links}"
    );
    assert_full_matrix(&eps)?;
    patch_fabric(c, serde_json::json!({"overlay": {"backend": "vxlan"}}))?;
    time_until(c, "vxlan routes again", Duration::from_secs(60), |r| {
        r.contains("dev flannel.1 proto 87 onlink")
    })?;
    assert_full_matrix(&eps)
}

/// A hand edit (or an old flannel) leaves `flannel.1` with VNI 42 on node-3: the agent recreates it
/// with the fabric's VNI, every pod reaches every pod again, and the fabric's status names the node
/// and what was wrong (Degraded=False, reason DatapathReconciled), without degrading it.
fn wrong_vni_reconciled(c: &Cluster) -> Result<()> {
    let eps = pods(c)?;
    let details = node_ip(c, "node-3", "-d link show flannel.1")?;
    let field = |key: &str| -> Result<String> {
        let mut words = details.split_whitespace();
        words.find(|w| *w == key);
        words
            .next()
            .map(str::to_owned)
            .with_context(|| format!("no {key} in {details}"))
    };
    let (local, port) = (field("local")?, field("dstport")?);
    // Deleted and re-made in one `ip -batch`, and again if the agent re-created its device in
    // between (it syncs on every Node event and resync tick).
    let batch = format!(
        "link del flannel.1\nlink add flannel.1 type vxlan id 42 local {local} dstport {port} dev eth0 nolearning\n"
    );
    eventually(
        "a flannel.1 with VNI 42 on node-3",
        Duration::from_secs(20),
        || {
            let mut ip = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &c.cfg.node_ns("node-3"),
                    "ip",
                    "-batch",
                    "-",
                ])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            std::io::Write::write_all(ip.stdin.as_mut().context("ip's stdin")?, batch.as_bytes())?;
            let out = ip.wait_with_output()?;
            ensure!(
                out.status.success(),
                "ip -batch: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(Some(()))
        },
    )?;
    // Any Node event makes the agents sync; a resync tick would too, later.
    output(c.kubectl().args([
        "annotate",
        "node",
        "node-3",
        "--overwrite",
        "weft.test/poke=wrong-vni",
    ]))?;
    let mut seen = String::new();
    let message = eventually(
        "the fabric to say that node-3's device was reconciled",
        Duration::from_secs(60),
        || {
            let f = get_json(c, &["networkfabric", "default"])?;
            let degraded = f["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Degraded"))
                .context("no Degraded condition")?;
            seen = format!(
                "{}/{}: {}",
                degraded["status"].as_str().unwrap_or_default(),
                degraded["reason"].as_str().unwrap_or_default(),
                degraded["message"].as_str().unwrap_or_default()
            );
            // Other nodes' notices may stand beside node-3's; wait for node-3's.
            Ok((degraded["status"] == "False"
                && degraded["reason"] == "DatapathReconciled"
                && seen.contains("node-3: at ")
                && seen.contains("device flannel.1 has VNI 42 (want 1)"))
            .then(|| seen.clone()))
        },
    )
    .with_context(|| {
        format!(
            "the fabric's Degraded condition should name node-3 and the wrong VNI; last: {seen}"
        )
    })?;
    eprintln!("Degraded=False DatapathReconciled: {message}");
    let details = node_ip(c, "node-3", "-d link show flannel.1")?;
    ensure!(
        details.contains("vxlan id 1 "),
        "flannel.1 was not recreated with VNI 1: {details}"
    );
    eventually(
        "every pod to reach every pod",
        Duration::from_secs(10),
        || assert_full_matrix(&eps).map(Some),
    )?;
    output(
        c.kubectl()
            .args(["annotate", "node", "node-3", "weft.test/poke-"]),
    )?;
    Ok(())
}
