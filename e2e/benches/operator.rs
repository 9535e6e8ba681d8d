//! Benchmark: on the local 3-node cluster, the time from `kubectl apply` of a NetworkFabric to
//! `Available=True`, and the operator's resident memory at rest. Prints a table.
//!
//! Run with `cargo bench -p weft-e2e --bench operator` (as root; builds nothing itself: run
//! `cargo build --workspace --bins` first). Targets (issue 4): under 5 s and under 30 MiB.

use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use weft_e2e::install::{WEFT_NAMESPACE, install_weft};
use weft_e2e::{Cluster, ClusterConfig};

const ROUNDS: usize = 5;
const FABRIC: &str = r#"{"apiVersion":"weft.dev/v1alpha1","kind":"NetworkFabric","metadata":{"name":"bench"},
  "spec":{"podNetwork":{"cidrs":["10.244.0.0/16"]}}}"#;

fn available(c: &Cluster) -> Result<bool> {
    let out = c
        .kubectl()
        .args([
            "get",
            "networkfabric",
            "bench",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Available\")].status}",
        ])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "True")
}

fn operator_pid(c: &Cluster) -> Option<i32> {
    c.cfg.node_names().iter().find_map(|n| {
        let ns = std::path::PathBuf::from(format!("/run/netns/{}", c.cfg.node_ns(n)));
        weft_e2e::sys::pids_in_netns(&ns).into_iter().find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|e| e.file_name().is_some_and(|f| f == "weft-operator"))
        })
    })
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_weft-e2e"))
        .parent()
        .context("bin dir")?
        .to_path_buf();
    let mut cfg = ClusterConfig::new("wbench", 3, bin);
    cfg.underlay_octet = 93;
    cfg.api_port = 16443 + 500;
    cfg.port_base = 12300 + 500;
    let c = Cluster::up(cfg)?;
    let result = (|| -> Result<(Vec<f64>, Option<u64>)> {
        install_weft(&c, &["--set", "fabric.create=false"])?;
        let mut times = Vec::new();
        for _ in 0..ROUNDS {
            let t = Instant::now();
            c.apply(FABRIC)?;
            while !available(&c)? {
                anyhow::ensure!(
                    t.elapsed() < Duration::from_secs(180),
                    "fabric never became Available"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            times.push(t.elapsed().as_secs_f64());
            weft_e2e::sys::run(c.kubectl().args([
                "delete",
                "networkfabric",
                "bench",
                "--wait=true",
                "--timeout=180s",
            ]))?;
            // Let the agents' pods finish terminating before the next round.
            weft_e2e::sys::wait_until(
                "agent pods gone",
                Duration::from_secs(120),
                Duration::from_millis(200),
                || {
                    let out = weft_e2e::sys::run(c.kubectl().args([
                        "get",
                        "pods",
                        "-n",
                        WEFT_NAMESPACE,
                        "-l",
                        "app.kubernetes.io/name=weft-agent",
                        "-o",
                        "name",
                    ]))?;
                    Ok(out.trim().is_empty())
                },
            )?;
        }
        c.apply(FABRIC)?;
        while !available(&c)? {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(10));
        let rss = operator_pid(&c).and_then(weft_e2e::sys::rss_kib);
        Ok((times, rss))
    })();
    let down = c.down();
    let (mut times, rss) = result?;
    down?;
    times.sort_by(|a, b| a.total_cmp(b));
    println!("\nweft-operator on the local 3-node cluster ({ROUNDS} rounds)\n");
    println!("| metric | median | min | max | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| kubectl apply → Available=True | {:.2} s | {:.2} s | {:.2} s | < 5 s |",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
    match rss {
        Some(kib) => println!(
            "| operator resident memory at rest | {:.1} MiB | | | < 30 MiB |",
            kib as f64 / 1024.0
        ),
        None => println!(
            "| operator resident memory at rest | (operator process not found) | | | < 30 MiB |"
        ),
    }
    Ok(())
}
