//! End-to-end tests of the local cluster itself, against the real control plane and real namespaces.

mod support;

use anyhow::{Context, Result, bail, ensure};
use std::net::Ipv4Addr;
use std::time::Duration;
use support::*;
use weft_e2e::Cluster;
use weft_e2e::probe::{self, Family};
use weft_e2e::serve::parse_ports;

fn main() {
    let cfg = test_config("wtest", 98, 100);
    let trials: Vec<Trial> = vec![
        (
            "node_cidrs_are_allocated_from_the_cluster_cidr",
            Box::new(node_cidrs_are_allocated),
        ),
        (
            "nodes_are_not_ready_until_a_cni_config_exists",
            Box::new(nodes_ready_after_cni_config),
        ),
        (
            "a_deployment_is_scheduled_and_its_pods_run",
            Box::new(deployment_runs),
        ),
        (
            "a_daemonset_gets_one_pod_per_node",
            Box::new(daemonset_one_per_node),
        ),
        (
            "rbac_denies_a_service_account_what_it_was_not_granted",
            Box::new(rbac_denies),
        ),
        (
            "pods_on_one_node_reach_each_other",
            Box::new(same_node_pods_reach_each_other),
        ),
        (
            "host_network_pods_run_as_processes_with_env_and_token",
            Box::new(host_network_pod),
        ),
        (
            "a_failing_cni_add_is_reported_in_pod_status",
            Box::new(cni_failure_reported),
        ),
        (
            "a_second_up_finds_the_running_cluster",
            Box::new(second_up_is_idempotent),
        ),
        (
            "a_second_cluster_going_down_leaves_the_first_intact",
            Box::new(second_cluster_down_keeps_first),
        ),
        ("down_leaves_nothing_behind", Box::new(down_leaves_nothing)),
    ];
    run_suite(cfg, trials)
}

fn node_cidrs_are_allocated(c: &Cluster) -> Result<()> {
    let nodes = get_json(c, &["nodes"])?;
    let items = nodes["items"].as_array().context("no items")?;
    ensure!(items.len() == 3, "expected 3 nodes, got {}", items.len());
    let mut cidrs: Vec<String> = items
        .iter()
        .filter_map(|n| n["spec"]["podCIDR"].as_str().map(str::to_string))
        .collect();
    ensure!(cidrs.len() == 3, "every node needs a pod CIDR: {cidrs:?}");
    for cidr in &cidrs {
        let (net, len) = cidr.split_once('/').context("bad cidr")?;
        let net: Ipv4Addr = net.parse()?;
        ensure!(len == "24", "{cidr}: node mask must be /24");
        ensure!(
            net.octets()[0] == 10 && net.octets()[1] == 244,
            "{cidr} is outside 10.244.0.0/16"
        );
    }
    cidrs.sort();
    cidrs.dedup();
    ensure!(cidrs.len() == 3, "node CIDRs overlap: {cidrs:?}");
    Ok(())
}

fn node_ready(c: &Cluster, node: &str) -> Result<(bool, bool)> {
    let n = get_json(c, &["node", node])?;
    let ready = n["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    let tainted = n["spec"]["taints"].as_array().is_some_and(|ts| {
        ts.iter()
            .any(|t| t["key"] == "node.kubernetes.io/not-ready" && t["effect"] == "NoSchedule")
    });
    Ok((ready, tainted))
}

fn nodes_ready_after_cni_config(c: &Cluster) -> Result<()> {
    for node in c.cfg.node_names() {
        let (ready, tainted) = node_ready(c, &node)?;
        ensure!(
            !ready && tainted,
            "{node} must be NotReady and tainted before it has a CNI config (ready={ready}, tainted={tainted})"
        );
    }
    for node in c.cfg.node_names() {
        place_bridge_conflist(c, &node, "10-e2e.conflist")?;
    }
    for node in c.cfg.node_names() {
        eventually(
            &format!("{node} Ready and untainted"),
            Duration::from_secs(30),
            || {
                let (ready, tainted) = node_ready(c, &node)?;
                Ok((ready && !tainted).then_some(()))
            },
        )?;
    }
    Ok(())
}

fn deployment_runs(c: &Cluster) -> Result<()> {
    c.apply(r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default"},
      "spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},
      "template":{"metadata":{"labels":{"app":"web"}},"spec":{"terminationGracePeriodSeconds":1,
      "containers":[{"name":"web","image":"nginx","ports":[{"containerPort":80}]}]}}}}"#,
    )?;
    eventually(
        "deployment web to have 2 available replicas",
        Duration::from_secs(60),
        || {
            let d = get_json(c, &["deployment", "web"])?;
            Ok((d["status"]["availableReplicas"] == 2).then_some(()))
        },
    )?;
    let pods = get_json(c, &["pods", "-l", "app=web"])?;
    for p in pods["items"].as_array().context("items")? {
        let ip = p["status"]["podIP"].as_str().context("pod without IP")?;
        ensure!(
            ip.starts_with("10.244."),
            "pod IP {ip} is not from the node's pod CIDR"
        );
        ensure!(
            p["spec"]["nodeName"].as_str().is_some(),
            "pod was not scheduled"
        );
    }
    output(
        c.kubectl()
            .args(["delete", "deployment", "web", "--wait=true"]),
    )?;
    Ok(())
}

fn daemonset_one_per_node(c: &Cluster) -> Result<()> {
    c.apply(r#"{"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"ds","namespace":"default"},
      "spec":{"selector":{"matchLabels":{"app":"ds"}},
      "template":{"metadata":{"labels":{"app":"ds"}},"spec":{"terminationGracePeriodSeconds":1,
      "containers":[{"name":"c","image":"nginx","ports":[{"containerPort":80}]}]}}}}"#,
    )?;
    eventually(
        "daemonset ds to be ready on every node",
        Duration::from_secs(60),
        || {
            let d = get_json(c, &["daemonset", "ds"])?;
            Ok(
                (d["status"]["numberReady"] == 3 && d["status"]["desiredNumberScheduled"] == 3)
                    .then_some(()),
            )
        },
    )?;
    let pods = get_json(c, &["pods", "-l", "app=ds"])?;
    let mut nodes: Vec<&str> = pods["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    nodes.sort();
    ensure!(
        nodes == ["node-1", "node-2", "node-3"],
        "one pod per node expected, got {nodes:?}"
    );
    output(
        c.kubectl()
            .args(["delete", "daemonset", "ds", "--wait=true"]),
    )?;
    Ok(())
}

fn rbac_denies(c: &Cluster) -> Result<()> {
    output(c.kubectl().args(["create", "namespace", "rbac-test"]))?;
    output(
        c.kubectl()
            .args(["-n", "rbac-test", "create", "serviceaccount", "reader"]),
    )?;
    output(c.kubectl().args([
        "-n",
        "rbac-test",
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
    ]))?;
    output(c.kubectl().args([
        "-n",
        "rbac-test",
        "create",
        "rolebinding",
        "reader",
        "--role=pod-reader",
        "--serviceaccount=rbac-test:reader",
    ]))?;
    let token = output(
        c.kubectl()
            .args(["-n", "rbac-test", "create", "token", "reader"]),
    )?;
    let as_sa = |args: &[&str]| {
        let mut cmd = std::process::Command::new(c.cp_bin.join("kubectl"));
        cmd.env_remove("KUBECONFIG")
            .arg("--kubeconfig=/dev/null")
            .arg(format!("--server={}", c.cfg.api_url_local()))
            .arg(format!(
                "--certificate-authority={}",
                c.cfg.pki_dir().join("ca.crt").display()
            ))
            .arg(format!("--token={}", token.trim()))
            .args(args);
        cmd.output()
    };
    let allowed = as_sa(&["-n", "rbac-test", "get", "pods"])?;
    ensure!(
        allowed.status.success(),
        "the granted verb was refused: {}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    for denied in [
        vec!["-n", "rbac-test", "get", "secrets"],
        vec!["-n", "default", "get", "pods"],
        vec!["-n", "rbac-test", "run", "x", "--image=nginx"],
    ] {
        let out = as_sa(&denied)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains("forbidden"),
            "{denied:?} should be forbidden, got: {err}"
        );
    }
    output(
        c.kubectl()
            .args(["delete", "namespace", "rbac-test", "--wait=false"]),
    )?;
    Ok(())
}

fn same_node_pods_reach_each_other(c: &Cluster) -> Result<()> {
    output(c.kubectl().args(["create", "namespace", "conn"]))?;
    for name in ["a", "b", "c"] {
        c.apply(pod_yaml(
            "conn",
            name,
            Some("node-1"),
            &[("app", name)],
            &[("TCP", 80), ("UDP", 53)],
        ))?;
    }
    let mut ips = std::collections::BTreeMap::new();
    for name in ["a", "b", "c"] {
        let p = wait_pod_ready(c, "conn", name, Duration::from_secs(60))?;
        ips.insert(
            format!("conn/{name}"),
            p["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let eps: Vec<_> = c
        .endpoints(false)?
        .into_iter()
        .filter(|e| e.id.starts_with("conn/"))
        .collect();
    ensure!(eps.len() == 3, "expected 3 probe endpoints, got {eps:?}");
    let m = probe::matrix(
        &eps,
        &eps,
        &parse_ports("TCP/80,UDP/53")?,
        Family::V4,
        Duration::from_secs(2),
    )?;
    for (port, rows) in &m {
        ensure!(
            rows.len() == 9,
            "{port}: expected 9 pairs, got {}",
            rows.len()
        );
        for o in rows {
            ensure!(
                o.allowed,
                "{port}: {} -> {} not allowed: {:?}",
                o.from,
                o.to,
                o.error
            );
            let src = o.seen_source.clone().unwrap_or_default();
            ensure!(
                src == ips[&o.from],
                "{port}: {} -> {} seen from {src}, not the pod's own IP (traffic was NATed)",
                o.from,
                o.to
            );
        }
    }
    // A port nobody serves is refused: the probe can fail.
    let closed = probe::single(
        &eps[0],
        &eps[1],
        "TCP/81".parse()?,
        Family::V4,
        Duration::from_secs(2),
    )?;
    ensure!(!closed.allowed, "a closed port must not count as reachable");
    Ok(())
}

fn host_network_pod(c: &Cluster) -> Result<()> {
    c.apply(
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"hostproc","namespace":"conn"},
      "spec":{"nodeName":"node-1","hostNetwork":true,"terminationGracePeriodSeconds":2,
      "containers":[{"name":"srv","image":"weft.dev/weft-e2e:dev",
        "args":["serve","--identity","$(MY_NS)/$(MY_NAME)","--ports","TCP/18080"],
        "env":[{"name":"MY_NS","valueFrom":{"fieldRef":{"fieldPath":"metadata.namespace"}}},
               {"name":"MY_NAME","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}}],
        "ports":[{"containerPort":18080}],
        "readinessProbe":{"tcpSocket":{"port":18080},"periodSeconds":1}}]}}"#,
    )?;
    let p = wait_pod_ready(c, "conn", "hostproc", Duration::from_secs(60))?;
    ensure!(
        p["status"]["podIP"] == "10.98.0.11",
        "a host-network pod's IP is its node's: {}",
        p["status"]["podIP"]
    );
    let from = c.endpoint("conn/a")?;
    let to = c.endpoint("conn/hostproc")?;
    let o = probe::single(
        &from,
        &to,
        "TCP/18080".parse()?,
        Family::V4,
        Duration::from_secs(2),
    )?;
    ensure!(
        o.allowed,
        "the host-network process did not answer with its downward-API identity: {:?}",
        o.error
    );
    // The service-account token is mounted where client libraries look for it (/var/run is /run;
    // an absolute symlink would escape /proc/<pid>/root, so look under /run).
    let ns_path = std::path::PathBuf::from(format!("/run/netns/{}", c.cfg.node_ns("node-1")));
    let pid = weft_e2e::sys::pids_in_netns(&ns_path)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cl| String::from_utf8_lossy(&cl).contains("TCP/18080"))
        })
        .context("the container process is not running in node-1's network namespace")?;
    let token = std::fs::read_to_string(format!(
        "/proc/{pid}/root/run/secrets/kubernetes.io/serviceaccount/token"
    ))
    .context("no service-account token at the usual path inside the container")?;
    ensure!(token.split('.').count() == 3, "the token is not a JWT");
    let ns = std::fs::read_to_string(format!(
        "/proc/{pid}/root/run/secrets/kubernetes.io/serviceaccount/namespace"
    ))?;
    ensure!(ns == "conn", "namespace file says {ns:?}");
    output(
        c.kubectl()
            .args(["-n", "conn", "delete", "pod", "hostproc", "--wait=true"]),
    )?;
    ensure!(
        !weft_e2e::sys::pid_alive(pid),
        "the container process outlived its pod"
    );
    Ok(())
}

fn cni_failure_reported(c: &Cluster) -> Result<()> {
    let bad = c
        .cfg
        .node_dir("node-3")
        .join("etc-cni-net.d")
        .join("00-broken.conflist");
    std::fs::write(
        &bad,
        r#"{"cniVersion":"1.0.0","name":"broken","plugins":[{"type":"bogus-plugin"}]}"#,
    )?;
    let res = (|| {
        c.apply(pod_yaml(
            "conn",
            "broken",
            Some("node-3"),
            &[],
            &[("TCP", 80)],
        ))?;
        let msg = eventually(
            "the CNI error in the pod status",
            Duration::from_secs(30),
            || {
                let p = get_json(c, &["pod", "-n", "conn", "broken"])?;
                let waiting = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                Ok(waiting
                    .contains("bogus-plugin")
                    .then_some((waiting, p["status"]["phase"].clone())))
            },
        )?;
        ensure!(
            msg.1 == "Pending",
            "a pod without a network must stay Pending, is {}",
            msg.1
        );
        ensure!(
            msg.0.contains("failed to find plugin"),
            "the plugin's error must be shown: {}",
            msg.0
        );
        Ok(())
    })();
    std::fs::remove_file(&bad)?;
    res?;
    let p = wait_pod_ready(c, "conn", "broken", Duration::from_secs(60))
        .context("the pod must recover once the config is fixed")?;
    ensure!(
        p["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.244.")),
        "no IP after recovery"
    );
    Ok(())
}

fn second_up_is_idempotent(c: &Cluster) -> Result<()> {
    let before = weft_e2e::sys::read_pid(&c.cfg.pid_dir().join("kube-apiserver.pid"));
    let again = Cluster::up(c.cfg.clone())?;
    let after = weft_e2e::sys::read_pid(&again.cfg.pid_dir().join("kube-apiserver.pid"));
    ensure!(
        before.is_some() && before == after,
        "a second up restarted the control plane ({before:?} → {after:?})"
    );
    ensure!(
        Cluster::is_running(&c.cfg),
        "cluster not running after a second up"
    );
    Ok(())
}

fn second_cluster_down_keeps_first(c: &Cluster) -> Result<()> {
    let mut cfg = test_config("wtest2", 92, 600);
    cfg.nodes = 1;
    let other = Cluster::up(cfg)?;
    // Pretend the second cluster created the shared mount points: its teardown must still leave
    // them, since this cluster's nodes have their private views mounted there.
    std::fs::write(
        other.cfg.state_dir().join("created-host-dirs"),
        "/etc/cni\n/etc/cni/net.d\n/var/lib/cni\n",
    )?;
    other.down()?;
    ensure!(
        std::path::Path::new("/etc/cni/net.d").is_dir(),
        "the second cluster's teardown removed a mount point the first still uses"
    );
    // node-1's private view is still mounted: it keeps its conflist and stays Ready, and a new pod
    // gets a network.
    c.apply(pod_yaml(
        "conn",
        "after",
        Some("node-1"),
        &[],
        &[("TCP", 80)],
    ))?;
    wait_pod_ready(c, "conn", "after", Duration::from_secs(60))?;
    let (ready, _) = node_ready(c, "node-1")?;
    ensure!(ready, "node-1 lost its CNI configuration");
    Ok(())
}

fn down_leaves_nothing(c: &Cluster) -> Result<()> {
    let ns_before: Vec<String> = weft_e2e::topology::owned_namespaces(&c.cfg.name);
    ensure!(
        ns_before.len() == 5,
        "expected 5 namespaces before down: {ns_before:?}"
    );
    let pids: Vec<i32> = ["etcd", "kube-apiserver", "nodelet-node-1"]
        .iter()
        .filter_map(|n| weft_e2e::sys::read_pid(&c.cfg.pid_dir().join(format!("{n}.pid"))))
        .collect();
    c.clone().down()?;
    let left = weft_e2e::topology::owned_namespaces(&c.cfg.name);
    if !left.is_empty() {
        bail!("namespaces left behind: {left:?}");
    }
    for pid in pids {
        ensure!(
            !weft_e2e::sys::pid_alive(pid),
            "process {pid} survived down"
        );
    }
    ensure!(
        !c.cfg.state_dir().exists(),
        "state dir {} survived down",
        c.cfg.state_dir().display()
    );
    // Shared mount points wait for the last cluster; another local cluster (another suite or
    // engineer) may still be up.
    let others_up = std::fs::read_dir(weft_e2e::config::STATE_ROOT)
        .map(|rd| rd.filter_map(|e| e.ok()).any(|e| e.path().is_dir()))
        .unwrap_or(false);
    ensure!(
        others_up
            || !std::path::Path::new(weft_e2e::config::STATE_ROOT)
                .join("pending-host-paths")
                .exists(),
        "the last cluster's teardown left shared mount points behind"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(
        !mounts.contains(&c.cfg.state_dir().display().to_string()),
        "mounts of the cluster survived down"
    );
    Ok(())
}
