//! Shared by the end-to-end suites: one cluster per suite, brought up before the first test and torn
//! down after the last, also when tests fail or panic.

#![allow(dead_code)]

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use weft_e2e::{Cluster, ClusterConfig};

/// The directory with weft-e2e, weft-nodelet and the weft binaries of this build, or
/// `$WEFT_E2E_BIN_DIR` (a copy of them: a target dir shared by several checkouts can be relinked by
/// another checkout's build while a suite runs).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WEFT_E2E_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_weft-e2e"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

/// A test cluster config that cannot collide with the demo cluster (`weft`).
pub fn test_config(name: &str, octet: u8, port_offset: u16) -> ClusterConfig {
    let mut cfg = ClusterConfig::new(name, 3, bin_dir());
    cfg.underlay_octet = octet;
    cfg.api_port = 16443 + port_offset;
    cfg.port_base = 12300 + port_offset;
    cfg
}

/// Runs a command and returns stdout, failing with stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl get … -o json`.
pub fn get_json(c: &Cluster, args: &[&str]) -> Result<Value> {
    let text = output(c.kubectl().arg("get").args(args).args(["-o", "json"]))?;
    Ok(serde_json::from_str(&text)?)
}

/// Polls `check` until it returns Ok(Some(v)) or the timeout passes; the last error explains a timeout.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() > deadline {
            return Err(match last {
                Some(e) => e.context(format!("timed out waiting for {what}")),
                None => anyhow::anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Writes a bridge + host-local conflist for the node's pod CIDR into the node's conf dir, as a
/// network plugin would.
pub fn place_bridge_conflist(c: &Cluster, node: &str, file: &str) -> Result<()> {
    let n = get_json(c, &["node", node])?;
    let cidr = n["spec"]["podCIDR"]
        .as_str()
        .context("node has no pod CIDR")?;
    let cidrs: Vec<&str> = n["spec"]["podCIDRs"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
        .unwrap_or_else(|| vec![cidr]);
    let ranges: Vec<Value> = cidrs
        .iter()
        .map(|c| serde_json::json!([{"subnet": c}]))
        .collect();
    let routes: Vec<Value> = cidrs
        .iter()
        .map(|c| serde_json::json!({"dst": if c.contains(':') { "::/0" } else { "0.0.0.0/0" }}))
        .collect();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "e2e-bridge",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": ranges, "routes": routes}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    let dir = c.cfg.node_dir(node).join("etc-cni-net.d");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(file), serde_json::to_vec_pretty(&conf)?)?;
    Ok(())
}

/// A plain pod that serves the given container ports, pinned to a node.
pub fn pod_yaml(
    ns: &str,
    name: &str,
    node: Option<&str>,
    labels: &[(&str, &str)],
    ports: &[(&str, u16)],
) -> String {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(proto, port)| serde_json::json!({"containerPort": port, "protocol": proto}))
        .collect();
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    let mut pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53", "ports": ports}]}
    });
    if let Some(n) = node {
        pod["spec"]["nodeName"] = Value::from(n);
    }
    serde_json::to_string(&pod).expect("json")
}

/// Waits until a pod is Running and Ready; returns its JSON.
pub fn wait_pod_ready(c: &Cluster, ns: &str, name: &str, timeout: Duration) -> Result<Value> {
    eventually(
        &format!("pod {ns}/{name} to be Running and Ready"),
        timeout,
        || {
            let p = get_json(c, &["pod", "-n", ns, name])?;
            let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            Ok((p["status"]["phase"] == "Running" && ready).then_some(p))
        },
    )
}

/// One named test of a suite.
pub type Trial = (&'static str, Box<dyn FnOnce(&Cluster) -> Result<()> + Send>);

/// Runs the suite: brings the cluster up, runs the trials in order on one thread, always tears the
/// cluster down, and exits with the harness's verdict.
pub fn run_suite(cfg: ClusterConfig, trials: Vec<Trial>) -> ! {
    run_suite_then(cfg, trials, || {})
}

/// [`run_suite`], then `after` (which removes what the suite set up besides the cluster), whatever
/// the verdict.
pub fn run_suite_then(cfg: ClusterConfig, trials: Vec<Trial>, after: impl FnOnce()) -> ! {
    let mut args = libtest_mimic::Arguments::from_args();
    args.test_threads = Some(1);
    if args.list {
        let listed: Vec<_> = trials
            .into_iter()
            .map(|(n, _)| libtest_mimic::Trial::test(n, || Ok(())))
            .collect();
        libtest_mimic::run(&args, listed).exit();
    }
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "the end-to-end suites need root (network namespaces, mounts); they were not run"
        );
        std::process::exit(1);
    }
    // One run of a suite at a time on this machine: two runs would share (and tear down) one
    // cluster of the same name. Held until the process exits.
    let lock_path = std::env::temp_dir().join(format!("weft-e2e-suite-{}.lock", cfg.name));
    let _suite_lock = match std::fs::File::create(&lock_path)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e.to_string())
        }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("could not lock {}: {e}", lock_path.display());
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let cluster = match Cluster::up(cfg.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("could not bring the test cluster up: {e:#}");
            after();
            std::process::exit(1);
        }
    };
    eprintln!(
        "test cluster {:?} up in {:.1}s",
        cfg.name,
        started.elapsed().as_secs_f64()
    );
    let shared = std::sync::Arc::new(cluster);
    let list: Vec<_> = trials
        .into_iter()
        .map(|(name, f)| {
            let c = shared.clone();
            libtest_mimic::Trial::test(name, move || f(&c).map_err(|e| format!("{e:#}").into()))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, list);
    // Always leave the machine as it was, whatever the tests did.
    if (Cluster::is_running(&cfg) || cfg.state_dir().exists())
        && let Err(e) = (*shared).clone().down()
    {
        eprintln!("teardown after the suite failed: {e:#}");
        after();
        std::process::exit(1);
    }
    after();
    conclusion.exit()
}
