//! End-to-end tests of the NetworkFabric API, the operator and the Helm chart on the local cluster:
//! install with Helm, then drive the fabric through its life and check what the operator does.

mod support;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;
use weft_e2e::Cluster;
use weft_e2e::install::{WEFT_NAMESPACE, install_weft, uninstall_weft};
use weft_e2e::kstatus::{ensure_kstatus, kstatus_verdicts};

const MINIMAL: &str = r#"{"apiVersion":"weft.dev/v1alpha1","kind":"NetworkFabric","metadata":{"name":"default"},
  "spec":{"podNetwork":{"cidrs":["10.244.0.0/16"]}}}"#;

fn main() {
    let cfg = test_config("wop", 97, 200);
    let trials: Vec<Trial> = vec![
        (
            "helm_installs_the_operator_under_its_own_service_account",
            Box::new(helm_install),
        ),
        (
            "the_api_server_rejects_bad_fabrics_with_clear_messages",
            Box::new(bad_fabrics_rejected),
        ),
        (
            "a_fabric_becomes_available_on_every_node",
            Box::new(fabric_available),
        ),
        (
            "an_mtu_edit_rolls_out_progressing_then_available",
            Box::new(mtu_edit_rolls_out),
        ),
        (
            "a_second_fabric_is_degraded_conflict_and_not_applied",
            Box::new(second_fabric_conflicts),
        ),
        (
            "a_fabric_whose_cidr_misses_the_node_cidrs_is_invalid",
            Box::new(cidr_mismatch_invalid),
        ),
        (
            "an_agent_refusing_its_configuration_degrades_the_fabric_until_reverted",
            Box::new(agent_refusal_degrades),
        ),
        (
            "kstatus_reads_in_progress_failed_and_current_truthfully",
            Box::new(kstatus_reads_truthfully),
        ),
        (
            "a_deleted_or_edited_daemonset_is_restored",
            Box::new(drift_restored),
        ),
        (
            "two_operator_replicas_elect_one_leader_and_fail_over",
            Box::new(leader_failover),
        ),
        (
            "deleting_the_fabric_removes_what_the_operator_created",
            Box::new(fabric_deletion_cleans_up),
        ),
        (
            "helm_uninstall_removes_the_operator_and_keeps_the_crd",
            Box::new(helm_uninstall),
        ),
    ];
    run_suite(cfg, trials)
}

fn condition(f: &Value, kind: &str) -> Option<(String, String, String)> {
    f["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
}

fn helm_install(c: &Cluster) -> Result<()> {
    install_weft(c, &["--set", "fabric.create=false"])?;
    // `helm --wait` may return before the pod runs: a one-replica Deployment whose rolling
    // update allows 25 % unavailable counts as ready with none (the fraction rounds down).
    let mut last = String::new();
    let op = eventually("the operator pod to run", Duration::from_secs(120), || {
        let items = operator_pod_objects(c)?;
        last = items
            .iter()
            .map(|p| format!("{} {}", p["metadata"]["name"], p["status"]["phase"]))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(items
            .iter()
            .find(|p| p["status"]["phase"] == "Running")
            .cloned())
    })
    .with_context(|| format!("operator pods: [{last}]"))?;
    let sa = op["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        sa.contains("weft") && sa != "default",
        "operator runs as service account {sa:?}"
    );
    ensure!(
        op["spec"]["hostNetwork"] == true,
        "the operator must run in the host network"
    );
    output(c.kubectl().args(["get", "crd", "networkfabrics.weft.dev"]))?;
    Ok(())
}

fn create_expect_error(c: &Cluster, doc: &str) -> Result<String> {
    let out = c.kubectl_stdin(&["create", "-f", "-"], doc)?;
    ensure!(
        !out.status.success(),
        "the API server accepted an invalid fabric: {doc}"
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

fn bad_fabrics_rejected(c: &Cluster) -> Result<()> {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"podNetwork":{"cidrs":["10.244.0.0/33"]}}"#,
            "must be a CIDR",
        ),
        (r#"{"podNetwork":{"cidrs":["banana"]}}"#, "must be a CIDR"),
        (
            r#"{"podNetwork":{"cidrs":["10.244.1.0/16"]}}"#,
            "without host bits",
        ),
        (
            r#"{"podNetwork":{"cidrs":["10.244.0.0/16","10.245.0.0/16"]}}"#,
            "at most one IPv4",
        ),
        (
            r#"{"podNetwork":{"cidrs":["10.244.0.0/16"],"nodePrefixLength":{"ipv4":8}}}"#,
            "nodePrefixLength must be longer",
        ),
        (
            r#"{"podNetwork":{"cidrs":["10.244.0.0/16"]},"overlay":{"vni":0}}"#,
            "vni",
        ),
        (
            r#"{"podNetwork":{"cidrs":["10.244.0.0/16"]},"overlay":{"vni":16777216}}"#,
            "vni",
        ),
        (
            r#"{"podNetwork":{"cidrs":["10.244.0.0/16"]},"overlay":{"port":70000}}"#,
            "port",
        ),
        (
            r#"{"podNetwork":{"cidrs":["10.244.0.0/16"]},"overlay":{"mtu":100}}"#,
            "mtu must be 0 (automatic) or between 576 and 9000",
        ),
        (
            r#"{"podNetwork":{"cidrs":["10.244.0.0/16"]},"overlay":{"backend":"ipip"}}"#,
            "Unsupported value",
        ),
        (
            r#"{"podNetwork":{"cidrs":["10.244.0.0/16"]},"overlay":{"backend":"host-gw","directRouting":true}}"#,
            "directRouting only applies",
        ),
        (
            r#"{"podNetwork":{"cidrs":["10.244.0.0/16"]},"cni":{"confDir":"etc/cni"}}"#,
            "confDir must be an absolute path",
        ),
    ];
    let mut failures = Vec::new();
    for (spec, want) in cases {
        let doc = format!(
            r#"{{"apiVersion":"weft.dev/v1alpha1","kind":"NetworkFabric","metadata":{{"name":"bad"}},"spec":{spec}}}"#
        );
        match create_expect_error(c, &doc) {
            Ok(err) if err.contains(want) => {}
            Ok(err) => failures.push(format!("{spec}: expected {want:?} in: {}", err.trim())),
            Err(e) => failures.push(format!("{spec}: {e:#}")),
        }
    }
    ensure!(failures.is_empty(), "bad fabrics:\n{}", failures.join("\n"));
    Ok(())
}

fn wait_available(c: &Cluster, name: &str, timeout: Duration) -> Result<Value> {
    eventually(&format!("fabric {name} Available=True"), timeout, || {
        let f = get_json(c, &["networkfabric", name])?;
        let ok = condition(&f, "Available").is_some_and(|(s, _, _)| s == "True")
            && f["status"]["observedGeneration"] == f["metadata"]["generation"];
        if !ok {
            anyhow::bail!("conditions: {}", f["status"]["conditions"]);
        }
        Ok(Some(f))
    })
}

fn fabric_available(c: &Cluster) -> Result<()> {
    c.apply(MINIMAL)?;
    let f = wait_available(c, "default", Duration::from_secs(120))?;
    ensure!(
        f["status"]["nodes"]["ready"] == 3 && f["status"]["nodes"]["desired"] == 3,
        "nodes: {}",
        f["status"]["nodes"]
    );
    ensure!(
        f["status"]["mtu"] == 1450,
        "effective MTU in status: {}",
        f["status"]["mtu"]
    );
    let ds = get_json(c, &["daemonset", "-n", WEFT_NAMESPACE, "weft-agent"])?;
    ensure!(
        ds["status"]["numberReady"] == 3,
        "agent DaemonSet not ready on all nodes"
    );
    let owner = &ds["metadata"]["ownerReferences"][0];
    ensure!(
        owner["kind"] == "NetworkFabric" && owner["name"] == "default",
        "DaemonSet is not owned by the fabric: {owner}"
    );
    for node in c.cfg.node_names() {
        // The node turns Ready when its runtime sees the CNI config the agent wrote.
        let n = eventually(&format!("{node} Ready"), Duration::from_secs(20), || {
            let n = get_json(c, &["node", &node])?;
            let ready = n["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
            });
            Ok(ready.then_some(n))
        })?;
        // The agent measured the node's 1500-byte uplink and leaves room for VXLAN's 50 bytes.
        let mtu = n["metadata"]["annotations"]["weft.dev/pod-mtu"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ensure!(mtu == "1450", "{node} reports pod MTU {mtu:?}, want 1450");
    }
    Ok(())
}

fn mtu_edit_rolls_out(c: &Cluster) -> Result<()> {
    let before = get_json(c, &["daemonset", "-n", WEFT_NAMESPACE, "weft-agent"])?;
    let hash_before =
        before["spec"]["template"]["metadata"]["annotations"]["weft.dev/config-hash"].clone();
    output(c.kubectl().args([
        "patch",
        "networkfabric",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec":{"overlay":{"mtu":1400}}}"#,
    ]))?;
    let started = Instant::now();
    let mut saw_progressing = false;
    loop {
        let f = get_json(c, &["networkfabric", "default"])?;
        if condition(&f, "Progressing").is_some_and(|(s, r, _)| s == "True" && r == "RollingOut") {
            saw_progressing = true;
        }
        let available = condition(&f, "Available").is_some_and(|(s, _, _)| s == "True");
        if saw_progressing
            && available
            && f["status"]["observedGeneration"] == f["metadata"]["generation"]
            && f["status"]["mtu"] == 1400
        {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(180),
            "rollout did not finish: {}",
            f["status"]
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    let after = get_json(c, &["daemonset", "-n", WEFT_NAMESPACE, "weft-agent"])?;
    ensure!(
        after["spec"]["template"]["metadata"]["annotations"]["weft.dev/config-hash"] != hash_before,
        "config hash did not change"
    );
    ensure!(
        after["status"]["updatedNumberScheduled"] == 3,
        "not every agent was updated"
    );
    Ok(())
}

fn second_fabric_conflicts(c: &Cluster) -> Result<()> {
    c.apply(
        r#"{"apiVersion":"weft.dev/v1alpha1","kind":"NetworkFabric","metadata":{"name":"second"},
      "spec":{"podNetwork":{"cidrs":["10.244.0.0/16"]},"overlay":{"backend":"host-gw"}}}"#,
    )?;
    eventually(
        "second fabric Degraded/Conflict",
        Duration::from_secs(30),
        || {
            let f = get_json(c, &["networkfabric", "second"])?;
            Ok(condition(&f, "Degraded")
                .filter(|(s, r, _)| s == "True" && r == "Conflict")
                .map(|_| ()))
        },
    )?;
    let dss = get_json(c, &["daemonsets", "-n", WEFT_NAMESPACE])?;
    ensure!(
        dss["items"].as_array().map(Vec::len) == Some(1),
        "a conflicting fabric got objects applied"
    );
    let first = get_json(c, &["networkfabric", "default"])?;
    ensure!(
        condition(&first, "Available").is_some_and(|(s, _, _)| s == "True"),
        "the active fabric was disturbed"
    );
    output(
        c.kubectl()
            .args(["delete", "networkfabric", "second", "--wait=true"]),
    )?;
    Ok(())
}

fn cidr_mismatch_invalid(c: &Cluster) -> Result<()> {
    // Same cluster, but the active fabric claims a CIDR the nodes' pod CIDRs are not in: the
    // operator must refuse to roll it out and say why.
    let ds_before = get_json(c, &["daemonset", "-n", WEFT_NAMESPACE, "weft-agent"])?;
    output(c.kubectl().args([
        "patch",
        "networkfabric",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec":{"podNetwork":{"cidrs":["10.250.0.0/16"]}}}"#,
    ]))?;
    let (_, _, msg) = eventually("Degraded/InvalidSpec", Duration::from_secs(30), || {
        let f = get_json(c, &["networkfabric", "default"])?;
        Ok(condition(&f, "Degraded").filter(|(s, r, _)| s == "True" && r == "InvalidSpec"))
    })?;
    ensure!(
        msg.contains("10.250.0.0/16") || msg.contains("podCIDR"),
        "the message must say what is wrong: {msg}"
    );
    let ds_after = get_json(c, &["daemonset", "-n", WEFT_NAMESPACE, "weft-agent"])?;
    ensure!(
        ds_before["spec"]["template"]["metadata"]["annotations"]
            == ds_after["spec"]["template"]["metadata"]["annotations"],
        "an invalid spec was rolled out"
    );
    output(c.kubectl().args([
        "patch",
        "networkfabric",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec":{"podNetwork":{"cidrs":["10.244.0.0/16"]}}}"#,
    ]))?;
    wait_available(c, "default", Duration::from_secs(120))?;
    Ok(())
}

fn patch_fabric(c: &Cluster, patch: &str) -> Result<()> {
    output(c.kubectl().args([
        "patch",
        "networkfabric",
        "default",
        "--type=merge",
        "-p",
        patch,
    ]))?;
    Ok(())
}

/// Issue 7: an agent that refuses its configuration shows on the fabric within 10 s, naming the
/// node and in the agent's words; reverting the spec heals the fabric.
fn agent_refusal_degrades(c: &Cluster) -> Result<()> {
    let kstatus = ensure_kstatus(&c.cfg.cache_dir)?;
    patch_fabric(c, r#"{"spec":{"overlay":{"interface":"nosuch0"}}}"#)?;
    // Revert whatever happened, so that the next trials find a healthy fabric.
    let refused = expect_refusal(c, &kstatus);
    patch_fabric(c, r#"{"spec":{"overlay":{"interface":null}}}"#)?;
    let healed = wait_available(c, "default", Duration::from_secs(120));
    refused?;
    let f = healed?;
    ensure!(
        condition(&f, "Degraded").is_some_and(|(s, _, _)| s == "False"),
        "reverting the spec must heal the fabric: {}",
        f["status"]["conditions"]
    );
    Ok(())
}

fn expect_refusal(c: &Cluster, kstatus: &std::path::Path) -> Result<()> {
    let patched = Instant::now();
    let (f, msg) = eventually(
        "Degraded=True AgentConfigInvalid naming a node",
        Duration::from_secs(10),
        || {
            let f = get_json(c, &["networkfabric", "default"])?;
            Ok(condition(&f, "Degraded")
                .filter(|(s, r, _)| s == "True" && r == "AgentConfigInvalid")
                .map(|(_, _, m)| (f, m)))
        },
    )?;
    eprintln!(
        "Degraded=True AgentConfigInvalid {:.1}s after the patch: {msg}",
        patched.elapsed().as_secs_f64()
    );
    let nodes = c.cfg.node_names();
    ensure!(
        nodes
            .iter()
            .any(|n| msg.starts_with(&format!("{n}: ")) || msg.contains(&format!(", {n}"))),
        "the message must name a node ({nodes:?}): {msg}"
    );
    ensure!(
        msg.contains("nosuch0"),
        "the message must carry the agent's words about the interface: {msg}"
    );
    // What a GitOps tool sees: kstatus calls it Failed, with the same words.
    let verdict = kstatus_verdicts(kstatus, &f.to_string())?;
    ensure!(
        verdict
            .first()
            .is_some_and(|v| v.status == "Failed" && v.message == msg),
        "kstatus on a degraded fabric: {verdict:?}"
    );
    // `kubectl get` shows it too (the printer columns read the Ready condition).
    let table = output(c.kubectl().args(["get", "networkfabric", "default"]))?;
    ensure!(
        table.lines().nth(1).is_some_and(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            cols.contains(&"False") && cols.contains(&"AgentConfigInvalid")
        }),
        "kubectl get networkfabric must show Ready False AgentConfigInvalid:\n{table}"
    );
    // The rollout stays stalled: not every agent runs the refused configuration.
    let ds = get_json(c, &["daemonset", "-n", WEFT_NAMESPACE, "weft-agent"])?;
    ensure!(
        ds["status"]["updatedNumberScheduled"].as_i64()
            < ds["status"]["desiredNumberScheduled"].as_i64(),
        "the rolling update should stop at the refusing node: {}",
        ds["status"]
    );
    Ok(())
}

/// The verdict kstatus must give a fabric, from its conditions alone.
fn expected_kstatus(f: &Value) -> &'static str {
    let is = |t: &str| condition(f, t).is_some_and(|(s, _, _)| s == "True");
    if f["status"]["observedGeneration"] != f["metadata"]["generation"] {
        "InProgress"
    } else if is("Degraded") {
        "Failed"
    } else if is("Available") && !is("Progressing") {
        "Current"
    } else {
        "InProgress"
    }
}

/// Issue 7: kstatus (sigs.k8s.io/cli-utils v0.37.2, what Flux uses) reads the fabric as InProgress
/// while it rolls out, Failed while Degraded and Current only when Available.
fn kstatus_reads_truthfully(c: &Cluster) -> Result<()> {
    let kstatus = ensure_kstatus(&c.cfg.cache_dir)?;
    // Every sample: kstatus's verdict on exactly the object read, against its conditions.
    let mut seen: Vec<&'static str> = Vec::new();
    let mut sample = |label: &str| -> Result<(&'static str, Value)> {
        let f = get_json(c, &["networkfabric", "default"])?;
        let got = kstatus_verdicts(&kstatus, &f.to_string())?;
        let got = got.first().context("no verdict")?;
        let want = expected_kstatus(&f);
        ensure!(
            got.status == want,
            "{label}: kstatus says {} ({}), the conditions say {want}: {}",
            got.status,
            got.message,
            f["status"]
        );
        if !seen.contains(&want) {
            seen.push(want);
        }
        Ok((want, f))
    };
    let (first, _) = sample("before")?;
    ensure!(first == "Current", "an Available fabric must be Current");

    // Rolling out: a new MTU rolls every agent; sample until it is Available again.
    patch_fabric(c, r#"{"spec":{"overlay":{"mtu":1380}}}"#)?;
    let started = Instant::now();
    let mut rolling = false;
    loop {
        let (verdict, f) = sample("rollout")?;
        rolling |= verdict == "InProgress"
            && condition(&f, "Reconciling")
                .is_some_and(|(s, r, _)| s == "True" && r == "RollingOut");
        if verdict == "Current" && f["status"]["mtu"] == 1380 {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(180),
            "the rollout did not finish: {}",
            f["status"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        rolling,
        "never saw the fabric InProgress with Reconciling=True/RollingOut during a rollout"
    );

    // Degraded: a spec the operator refuses (the nodes' podCIDRs lie outside it).
    patch_fabric(c, r#"{"spec":{"podNetwork":{"cidrs":["10.250.0.0/16"]}}}"#)?;
    eventually("kstatus Failed", Duration::from_secs(30), || {
        let (verdict, _) = sample("invalid spec")?;
        Ok((verdict == "Failed").then_some(()))
    })?;
    patch_fabric(c, r#"{"spec":{"podNetwork":{"cidrs":["10.244.0.0/16"]}}}"#)?;
    eventually("kstatus Current again", Duration::from_secs(120), || {
        let (verdict, _) = sample("reverted")?;
        Ok((verdict == "Current").then_some(()))
    })?;
    ensure!(
        ["Current", "InProgress", "Failed"]
            .iter()
            .all(|s| seen.contains(s)),
        "every state must have been seen: {seen:?}"
    );
    Ok(())
}

fn drift_restored(c: &Cluster) -> Result<()> {
    let uid =
        get_json(c, &["daemonset", "-n", WEFT_NAMESPACE, "weft-agent"])?["metadata"]["uid"].clone();
    output(c.kubectl().args([
        "delete",
        "daemonset",
        "-n",
        WEFT_NAMESPACE,
        "weft-agent",
        "--wait=true",
    ]))?;
    eventually("the DaemonSet to return", Duration::from_secs(30), || {
        let ds = get_json(c, &["daemonset", "-n", WEFT_NAMESPACE, "weft-agent"]);
        Ok(ds.ok().filter(|d| d["metadata"]["uid"] != uid).map(|_| ()))
    })?;
    output(c.kubectl().args(["-n", WEFT_NAMESPACE, "patch", "daemonset", "weft-agent", "--type=json", "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"example.com/evil:1"}]"#]))?;
    eventually(
        "the DaemonSet's image to be restored",
        Duration::from_secs(30),
        || {
            let ds = get_json(c, &["daemonset", "-n", WEFT_NAMESPACE, "weft-agent"])?;
            let image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Ok(image.contains("weft-agent").then_some(()))
        },
    )?;
    wait_available(c, "default", Duration::from_secs(120))?;
    Ok(())
}

fn lease_holder(c: &Cluster) -> Result<String> {
    let l = get_json(c, &["lease", "-n", WEFT_NAMESPACE, "weft-operator"])?;
    Ok(l["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// The pods of weft's operator, as the API shows them.
fn operator_pod_objects(c: &Cluster) -> Result<Vec<Value>> {
    let pods = get_json(
        c,
        &[
            "pods",
            "-n",
            WEFT_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=weft",
        ],
    )?;
    Ok(pods["items"].as_array().context("items")?.clone())
}

fn operator_pods(c: &Cluster) -> Result<Vec<String>> {
    Ok(operator_pod_objects(c)?
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}

fn leader_failover(c: &Cluster) -> Result<()> {
    install_weft(c, &["--set", "fabric.create=false", "--set", "replicas=2"])?;
    let pods = eventually("two operator pods", Duration::from_secs(90), || {
        let p = operator_pods(c)?;
        Ok((p.len() == 2).then_some(p))
    })?;
    let leader = eventually("a leader", Duration::from_secs(60), || {
        let h = lease_holder(c)?;
        Ok(pods.iter().any(|p| h.contains(p.as_str())).then_some(h))
    })?;
    let (gone, standby): (Vec<&String>, Vec<&String>) =
        pods.iter().partition(|p| leader.contains(p.as_str()));
    ensure!(
        gone.len() == 1 && standby.len() == 1,
        "leader {leader:?} among {pods:?}"
    );
    // Kill the leader's pod at once: another replica (the standby, or the replacement the
    // ReplicaSet starts) must take the Lease and keep reconciling.
    let killed = gone[0].clone();
    output(c.kubectl().args([
        "delete",
        "pod",
        "-n",
        WEFT_NAMESPACE,
        &killed,
        "--grace-period=0",
        "--force",
    ]))?;
    eventually(
        "another replica to take the Lease",
        Duration::from_secs(90),
        || {
            let h = lease_holder(c)?;
            let live = operator_pods(c)?;
            Ok(
                (!h.contains(killed.as_str()) && live.iter().any(|p| h.contains(p.as_str())))
                    .then_some(()),
            )
        },
    )?;
    // The new leader acts: drift is restored again.
    output(c.kubectl().args([
        "delete",
        "daemonset",
        "-n",
        WEFT_NAMESPACE,
        "weft-agent",
        "--wait=true",
    ]))?;
    wait_available(c, "default", Duration::from_secs(120))?;
    install_weft(c, &["--set", "fabric.create=false", "--set", "replicas=1"])?;
    Ok(())
}

fn fabric_deletion_cleans_up(c: &Cluster) -> Result<()> {
    output(c.kubectl().args([
        "delete",
        "networkfabric",
        "default",
        "--wait=true",
        "--timeout=180s",
    ]))?;
    for (kind, name) in [
        ("daemonset", "weft-agent"),
        ("configmap", "weft-agent-config"),
        ("serviceaccount", "weft-agent"),
    ] {
        let out = c
            .kubectl()
            .args(["get", kind, "-n", WEFT_NAMESPACE, name])
            .output()?;
        ensure!(
            !out.status.success(),
            "{kind}/{name} survived the fabric's deletion"
        );
    }
    let crbs = output(c.kubectl().args([
        "get",
        "clusterrolebindings,clusterroles",
        "-l",
        "app.kubernetes.io/managed-by=weft-operator",
        "-o",
        "name",
    ]))?;
    ensure!(
        crbs.trim().is_empty(),
        "cluster-scoped RBAC survived: {crbs}"
    );
    eventually("agent pods to be gone", Duration::from_secs(60), || {
        let p = get_json(
            c,
            &[
                "pods",
                "-n",
                WEFT_NAMESPACE,
                "-l",
                "app.kubernetes.io/name=weft-agent",
            ],
        )?;
        Ok(p["items"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(()))
    })?;
    Ok(())
}

fn helm_uninstall(c: &Cluster) -> Result<()> {
    uninstall_weft(c)?;
    let deps = get_json(c, &["deployments", "-n", WEFT_NAMESPACE])?;
    ensure!(
        deps["items"].as_array().is_some_and(|a| a.is_empty()),
        "operator Deployment survived helm uninstall"
    );
    output(c.kubectl().args(["get", "crd", "networkfabrics.weft.dev"]))
        .context("Helm keeps CRDs on uninstall, as it documents")?;
    Ok(())
}
