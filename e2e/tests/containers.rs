//! Real container commands on the local cluster (issue 10, part 2): a sandboxed pod's containers run
//! their `command`/`args` in the pod's network namespace, in a file system where the image's binary
//! sits where the image has it (`/agnhost`), with exit codes, restarts and probes as a kubelet's.
//!
//! One node with a bridge conflist (no weft): pods reach each other on the node's bridge.

mod support;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::time::Duration;
use support::*;
use weft_e2e::Cluster;

const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.56";
const NS: &str = "default";

fn main() {
    let mut cfg = test_config("wrun", 91, 0);
    cfg.nodes = 1;
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
