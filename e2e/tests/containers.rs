//! Real container commands on the local cluster (issue 10, part 2): a sandboxed pod's containers run
//! their `command`/`args` in the pod's network namespace, in a file system where the image's binary
//! sits where the image has it (`/agnhost`), with exit codes, restarts and probes as a kubelet's.
//!
//! Also the kubelet API the API server proxies to (part 3): `kubectl exec` (SPDY and WebSocket),
//! `kubectl logs` (`-f`, `--previous`) and `kubectl port-forward`.
//!
//! And Services through the real kube-proxy (nftables mode, part 1): a ClusterIP from a pod, a
//! NodePort from the external host.
//!
//! One node with a bridge conflist (no weft): pods reach each other on the node's bridge.

mod support;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use support::*;
use weft_e2e::Cluster;

const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.56";
const NS: &str = "default";

fn main() {
    let mut cfg = test_config("wrun", 91, 0);
    cfg.nodes = 1;
    cfg.kube_proxy = true;
    cfg.api_port = 17448;
    cfg.port_base = 13380;
    let trials: Vec<Trial> = vec![
        (
            "agnhost_serve_hostname_answers_agnhost_connect",
            Box::new(serve_hostname_answers_connect),
        ),
        (
            "exit_codes_and_restarts_follow_the_restart_policy",
            Box::new(exit_codes_and_restarts),
        ),
        (
            "exec_probes_gate_readiness_and_restart_on_liveness",
            Box::new(exec_probes),
        ),
        (
            "what_the_nodelet_cannot_run_is_refused_with_a_reason",
            Box::new(refusals),
        ),
        (
            "kubectl_exec_round_trips_over_spdy_and_websocket",
            Box::new(exec_round_trips),
        ),
        (
            "kubectl_logs_follow_and_previous",
            Box::new(logs_follow_and_previous),
        ),
        (
            "kubectl_port_forward_reaches_the_pod",
            Box::new(port_forward),
        ),
        (
            "a_clusterip_service_reaches_its_pods_through_kube_proxy",
            Box::new(clusterip_service),
        ),
        (
            "a_nodeport_is_reachable_from_the_external_host",
            Box::new(nodeport_service),
        ),
    ];
    run_suite(cfg, trials)
}

/// A pod of one agnhost container running `argv`, on node-1.
fn agnhost_pod(name: &str, argv: &[&str], restart: &str, extra: Value) -> Value {
    let mut c = json!({"name": "c", "image": AGNHOST, "command": argv});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": "node-1", "restartPolicy": restart, "terminationGracePeriodSeconds": 1,
                 "containers": [c]}
    })
}

fn pod_json(c: &Cluster, name: &str) -> Result<Value> {
    get_json(c, &["pod", "-n", NS, name])
}

/// Waits until the pod's phase is one of `phases`; returns the pod.
fn wait_phase(c: &Cluster, name: &str, phases: &[&str], timeout: Duration) -> Result<Value> {
    eventually(&format!("pod {name} to reach {phases:?}"), timeout, || {
        let p = pod_json(c, name)?;
        let phase = p["status"]["phase"].as_str().unwrap_or_default();
        Ok(phases.contains(&phase).then_some(p))
    })
}

fn delete(c: &Cluster, names: &[&str]) -> Result<()> {
    let mut args = vec![
        "delete",
        "pod",
        "-n",
        NS,
        "--wait=true",
        "--ignore-not-found",
    ];
    args.extend_from_slice(names);
    output(c.kubectl().args(args))?;
    Ok(())
}

fn ready_node(c: &Cluster) -> Result<()> {
    if get_json(c, &["node", "node-1"])?["spec"]["taints"].is_array() {
        place_bridge_conflist(c, "node-1", "10-e2e.conflist")?;
        eventually("node-1 untainted", Duration::from_secs(30), || {
            Ok((!get_json(c, &["node", "node-1"])?["spec"]["taints"].is_array()).then_some(()))
        })?;
    }
    Ok(())
}

fn terminated(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]["state"]["terminated"]
}

fn serve_hostname_answers_connect(c: &Cluster) -> Result<()> {
    ready_node(c)?;
    c.apply(agnhost_pod(
        "server",
        &[
            "/agnhost",
            "serve-hostname",
            "--tcp",
            "--http=false",
            "--port",
            "80",
        ],
        "Always",
        json!({"ports": [{"containerPort": 80, "protocol": "TCP"}],
               "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 1}}),
    ))?;
    let server = wait_pod_ready(c, NS, "server", Duration::from_secs(60))?;
    let ip = server["status"]["podIP"]
        .as_str()
        .context("server has no IP")?;
    let target = format!("{ip}:80");
    c.apply(agnhost_pod(
        "client-ok",
        &[
            "/agnhost",
            "connect",
            &target,
            "--timeout=5s",
            "--protocol=tcp",
        ],
        "Never",
        json!({}),
    ))?;
    let closed = format!("{ip}:81");
    c.apply(agnhost_pod(
        "client-closed",
        &[
            "/agnhost",
            "connect",
            &closed,
            "--timeout=3s",
            "--protocol=tcp",
        ],
        "Never",
        json!({}),
    ))?;
    let ok = wait_phase(
        c,
        "client-ok",
        &["Succeeded", "Failed"],
        Duration::from_secs(60),
    )?;
    ensure!(
        ok["status"]["phase"] == "Succeeded" && terminated(&ok)["exitCode"] == 0,
        "agnhost connect to {target} failed: {}",
        ok["status"]
    );
    let bad = wait_phase(
        c,
        "client-closed",
        &["Succeeded", "Failed"],
        Duration::from_secs(60),
    )?;
    ensure!(
        bad["status"]["phase"] == "Failed" && terminated(&bad)["exitCode"] != 0,
        "agnhost connect to a closed port must fail: {}",
        bad["status"]
    );
    delete(c, &["server", "client-ok", "client-closed"])
}

fn exit_codes_and_restarts(c: &Cluster) -> Result<()> {
    ready_node(c)?;
    // The pod's own host name and files, the image's binary at /agnhost, a shell from the base.
    let check = "test \"$(hostname)\" = layout && grep -q layout /etc/hosts && test -x /agnhost && \
                 test -r /var/run/secrets/kubernetes.io/serviceaccount/token";
    c.apply(agnhost_pod(
        "layout",
        &["/bin/sh", "-c", check],
        "Never",
        json!({}),
    ))?;
    c.apply(agnhost_pod(
        "crash",
        &["/bin/sh", "-c", "exit 3"],
        "OnFailure",
        json!({}),
    ))?;
    let p = wait_phase(
        c,
        "layout",
        &["Succeeded", "Failed"],
        Duration::from_secs(60),
    )?;
    ensure!(
        p["status"]["phase"] == "Succeeded",
        "the container's view is not the pod's: {}",
        p["status"]
    );
    let crash = eventually("crash to restart", Duration::from_secs(60), || {
        let p = pod_json(c, "crash")?;
        let s = &p["status"]["containerStatuses"][0];
        Ok((s["restartCount"].as_i64().unwrap_or(0) >= 1).then(|| s.clone()))
    })?;
    ensure!(
        crash["lastState"]["terminated"]["exitCode"] == 3
            && crash["lastState"]["terminated"]["reason"] == "Error",
        "the last state must carry exit code 3: {crash}"
    );
    delete(c, &["layout", "crash"])
}

fn exec_probes(c: &Cluster) -> Result<()> {
    ready_node(c)?;
    c.apply(agnhost_pod(
        "late",
        &["/bin/sh", "-c", "sleep 4; touch /tmp/ready; exec /agnhost pause"],
        "Always",
        json!({"readinessProbe": {"exec": {"command": ["test", "-e", "/tmp/ready"]}, "periodSeconds": 1}}),
    ))?;
    c.apply(agnhost_pod(
        "sick",
        &["/agnhost", "pause"],
        "Always",
        json!({"livenessProbe": {"exec": {"command": ["/bin/false"]}, "periodSeconds": 1, "failureThreshold": 1}}),
    ))?;
    eventually(
        "late to be Running but not Ready",
        Duration::from_secs(30),
        || {
            let p = pod_json(c, "late")?;
            let s = &p["status"]["containerStatuses"][0];
            Ok((s["state"]["running"].is_object() && s["ready"] == false).then_some(()))
        },
    )?;
    wait_pod_ready(c, NS, "late", Duration::from_secs(30))?;
    eventually(
        "sick to be restarted by its liveness probe",
        Duration::from_secs(60),
        || {
            let p = pod_json(c, "sick")?;
            Ok((p["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .unwrap_or(0)
                >= 1)
                .then_some(()))
        },
    )?;
    delete(c, &["late", "sick"])
}

fn refusals(c: &Cluster) -> Result<()> {
    ready_node(c)?;
    let mut nosuch = agnhost_pod("nosuch", &["/nosuch", "x"], "Always", json!({}));
    nosuch["spec"]["containers"][0]["image"] = json!("example.com/no-such-image:1");
    c.apply(&nosuch)?;
    let mut init = agnhost_pod("init", &["/agnhost", "pause"], "Always", json!({}));
    init["spec"]["initContainers"] =
        json!([{"name": "i", "image": AGNHOST, "command": ["/bin/true"]}]);
    c.apply(&init)?;
    c.apply(agnhost_pod(
        "missing-cmd",
        &["/no/such/program"],
        "Always",
        json!({}),
    ))?;
    for (pod, reason, words) in [
        ("nosuch", "ErrImagePull", "no local binary for image"),
        ("init", "CreateContainerConfigError", "init containers"),
        ("missing-cmd", "RunContainerError", "No such file"),
    ] {
        eventually(
            &format!("{pod} to wait with {reason}"),
            Duration::from_secs(30),
            || {
                let p = pod_json(c, pod)?;
                let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
                Ok((w["reason"] == reason
                    && w["message"].as_str().is_some_and(|m| m.contains(words)))
                .then_some(()))
            },
        )?;
        eventually(
            &format!("a Warning event on {pod}"),
            Duration::from_secs(30),
            || {
                let evs = get_json(
                    c,
                    &[
                        "events",
                        "-n",
                        NS,
                        "--field-selector",
                        &format!("involvedObject.name={pod},type=Warning"),
                    ],
                )?;
                Ok(evs["items"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
                    .then_some(()))
            },
        )?;
    }
    delete(c, &["nosuch", "init", "missing-cmd"])
}

/// `kubectl exec` with stdin; returns (exit code, stdout, stderr).
fn kubectl_exec(
    c: &Cluster,
    websocket: bool,
    pod: &str,
    stdin: &str,
    argv: &[&str],
) -> Result<(i32, String, String)> {
    let mut args = vec!["exec", "-i", "-n", NS, pod, "--"];
    args.extend_from_slice(argv);
    let mut cmd = c.kubectl();
    cmd.env(
        "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
        if websocket { "true" } else { "false" },
    );
    let out = {
        use std::io::Write;
        let mut child = cmd
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(stdin.as_bytes())?;
        child.wait_with_output()?
    };
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn exec_round_trips(c: &Cluster) -> Result<()> {
    ready_node(c)?;
    c.apply(agnhost_pod(
        "shell",
        &["/agnhost", "pause"],
        "Always",
        json!({}),
    ))?;
    wait_pod_ready(c, NS, "shell", Duration::from_secs(60))?;
    for websocket in [false, true] {
        let proto = if websocket { "WebSocket" } else { "SPDY" };
        let (code, out, err) = kubectl_exec(
            c,
            websocket,
            "shell",
            "hello from stdin\n",
            &["/bin/sh", "-c", "cat; hostname; echo to-stderr >&2; exit 5"],
        )?;
        ensure!(
            code == 5 && out == "hello from stdin\nshell\n" && err.contains("to-stderr"),
            "{proto}: exit {code}, stdout {out:?}, stderr {err:?}"
        );
        let (code, _, err) = kubectl_exec(c, websocket, "shell", "", &["/no/such/program"])?;
        ensure!(
            code == 127 && err.contains("No such file"),
            "{proto}: a missing program must fail with 127: exit {code}, stderr {err:?}"
        );
        let (code, out) = kubectl_exec_tty(
            c,
            websocket,
            "shell",
            "test -t 0 && test -t 1 && echo \"tty-$(stty size)\"; exit 6",
        )?;
        ensure!(
            code == 6 && out.contains("tty-"),
            "{proto}: kubectl exec -it: exit {code}, output {out:?}"
        );
    }
    delete(c, &["shell"])
}

/// `kubectl exec -it … -- /bin/sh -c <script>` from a terminal of its own (`script` gives kubectl a
/// pseudo-terminal, as a person's shell would); returns kubectl's exit code and what it printed.
fn kubectl_exec_tty(
    c: &Cluster,
    websocket: bool,
    pod: &str,
    script: &str,
) -> Result<(i32, String)> {
    let kubectl = c.kubectl();
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line: Vec<String> = vec![quote(&kubectl.get_program().to_string_lossy())];
    line.extend(kubectl.get_args().map(|a| quote(&a.to_string_lossy())));
    for a in ["exec", "-it", "-n", NS, pod, "--", "/bin/sh", "-c", script] {
        line.push(quote(a));
    }
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line.join(" "), "/dev/null"]);
    for (k, v) in kubectl.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env(
        "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
        if websocket { "true" } else { "false" },
    );
    let out = cmd.stdin(std::process::Stdio::null()).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn logs(c: &Cluster, pod: &str, extra: &[&str]) -> Result<String> {
    let mut args = vec!["logs", "-n", NS, pod];
    args.extend_from_slice(extra);
    output(c.kubectl().args(args))
}

fn logs_follow_and_previous(c: &Cluster) -> Result<()> {
    ready_node(c)?;
    c.apply(agnhost_pod(
        "counter",
        &[
            "/bin/sh",
            "-c",
            "for i in 1 2 3; do echo line-$i; sleep 1; done",
        ],
        "Never",
        json!({}),
    ))?;
    let mut runs = agnhost_pod(
        "runs",
        &[
            "/bin/sh",
            "-c",
            "n=$(cat /data/n 2>/dev/null || echo 0); echo run-$n; echo $((n+1)) > /data/n; sleep 3; exit 1",
        ],
        "Always",
        json!({"volumeMounts": [{"name": "data", "mountPath": "/data"}]}),
    );
    runs["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    c.apply(&runs)?;
    wait_phase(
        c,
        "counter",
        &["Running", "Succeeded"],
        Duration::from_secs(60),
    )?;
    // Follows the run as it writes, and ends when the container does.
    let followed = logs(c, "counter", &["-f"])?;
    ensure!(
        followed == "line-1\nline-2\nline-3\n",
        "logs -f gave {followed:?}"
    );
    let p = wait_phase(c, "counter", &["Succeeded"], Duration::from_secs(30))?;
    ensure!(terminated(&p)["exitCode"] == 0, "counter: {}", p["status"]);
    ensure!(logs(c, "counter", &[])? == followed, "logs after the end");
    let err = output(
        c.kubectl()
            .args(["logs", "-n", NS, "counter", "--previous"]),
    )
    .err()
    .context("--previous of a container that never restarted must fail")?;
    ensure!(
        format!("{err:#}").contains("previous terminated container"),
        "{err:#}"
    );
    // Each run lives 3 s; read both logs while a restarted run is up.
    eventually(
        "runs to run again after a restart",
        Duration::from_secs(60),
        || {
            let p = pod_json(c, "runs")?;
            let s = &p["status"]["containerStatuses"][0];
            Ok(
                (s["restartCount"].as_i64().unwrap_or(0) >= 1 && s["state"]["running"].is_object())
                    .then_some(()),
            )
        },
    )?;
    let number = |s: &str| -> Result<i64> {
        s.trim()
            .strip_prefix("run-")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("unexpected log {s:?}"))
    };
    let (cur, prev) = (logs(c, "runs", &[])?, logs(c, "runs", &["--previous"])?);
    ensure!(
        number(&cur)? == number(&prev)? + 1,
        "current run logged {cur:?}, previous {prev:?}"
    );
    delete(c, &["counter", "runs"])
}

fn port_forward(c: &Cluster) -> Result<()> {
    use std::io::{BufRead, Read};
    ready_node(c)?;
    c.apply(agnhost_pod(
        "fwd",
        &["/agnhost", "serve-hostname", "--tcp", "--http=false", "--port", "80"],
        "Always",
        json!({"ports": [{"containerPort": 80}], "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 1}}),
    ))?;
    wait_pod_ready(c, NS, "fwd", Duration::from_secs(60))?;
    // A loopback port of the root namespace, from this suite's own range.
    let local = 13389;
    let mut pf = c
        .kubectl()
        .args(["port-forward", "-n", NS, "pod/fwd", &format!("{local}:80")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let res = (|| -> Result<()> {
        let mut first = String::new();
        // kept open: kubectl dies of SIGPIPE when it reports a connection to a closed stdout
        let mut stdout = std::io::BufReader::new(pf.stdout.take().context("no stdout")?);
        stdout.read_line(&mut first)?;
        ensure!(
            first.contains("Forwarding from"),
            "port-forward said {first:?}"
        );
        let mut s = std::net::TcpStream::connect(("127.0.0.1", local))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut got = String::new();
        s.read_to_string(&mut got)?;
        ensure!(
            got.trim() == "fwd",
            "through port-forward the pod answered {got:?}"
        );
        Ok(())
    })();
    let _ = pf.kill();
    let _ = pf.wait();
    res?;
    delete(c, &["fwd"])
}

/// Two port-server pods labelled app=web and a Service of `kind` in front of them.
fn web_service(c: &Cluster, kind: &str) -> Result<()> {
    for i in 1..=2 {
        c.apply(pod_yaml(
            NS,
            &format!("web-{i}"),
            Some("node-1"),
            &[("app", "web")],
            &[("TCP", 80)],
        ))?;
    }
    c.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"type": kind, "selector": {"app": "web"},
                 "ports": [{"port": 8080, "targetPort": 80, "protocol": "TCP"}]}
    }))?;
    for i in 1..=2 {
        wait_pod_ready(c, NS, &format!("web-{i}"), Duration::from_secs(60))?;
    }
    Ok(())
}

fn delete_web(c: &Cluster) -> Result<()> {
    output(
        c.kubectl()
            .args(["delete", "service", "-n", NS, "web", "--ignore-not-found"]),
    )?;
    delete(c, &["web-1", "web-2", "client"])
}

fn clusterip_service(c: &Cluster) -> Result<()> {
    ready_node(c)?;
    web_service(c, "ClusterIP")?;
    c.apply(pod_yaml(NS, "client", Some("node-1"), &[], &[("TCP", 80)]))?;
    wait_pod_ready(c, NS, "client", Duration::from_secs(60))?;
    let mut answered = std::collections::BTreeSet::new();
    eventually(
        "both backends to answer through the ClusterIP",
        Duration::from_secs(60),
        || {
            let svc = c.service(&format!("{NS}/web"))?;
            ensure!(svc.backends.len() == 2, "endpoints: {:?}", svc.backends);
            let o = weft_e2e::probe::to_service(
                &c.endpoint(&format!("{NS}/client"))?,
                &svc,
                "TCP/8080".parse()?,
                weft_e2e::probe::Family::V4,
                Duration::from_secs(2),
            )?;
            ensure!(o.allowed, "through the ClusterIP: {:?}", o.error);
            let seen = o.seen_source.unwrap_or_default();
            answered.extend(
                svc.backends
                    .iter()
                    .filter(|b| seen.contains(b.as_str()))
                    .cloned(),
            );
            Ok((answered.len() == 2).then_some(()))
        },
    )?;
    delete_web(c)
}

fn nodeport_service(c: &Cluster) -> Result<()> {
    ready_node(c)?;
    web_service(c, "NodePort")?;
    let svc = get_json(c, &["service", "-n", NS, "web"])?;
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .context("no nodePort allocated")? as u16;
    let addr = std::net::SocketAddr::new(c.cfg.node_ip(1).into(), node_port);
    let external = std::path::PathBuf::from("/run/netns").join(c.cfg.external_ns());
    eventually(
        "the NodePort to answer the external host",
        Duration::from_secs(60),
        || {
            let reply = weft_e2e::netns::in_netns(&external, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(weft_e2e::probe::request(
                    addr,
                    weft_e2e::serve::Proto::Tcp,
                    Duration::from_secs(2),
                ))
            })?;
            let who = reply
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            ensure!(
                who == format!("{NS}/web-1") || who == format!("{NS}/web-2"),
                "{addr} answered {reply:?}"
            );
            Ok(Some(()))
        },
    )?;
    delete_web(c)
}
