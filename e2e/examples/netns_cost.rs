//! What a pod's network namespace costs the nodelet: N namespaces made and removed the old way
//! (`ip netns add`, `ip -n … link set lo up`, `ip netns del`: three processes per pod) and the new
//! way (`weft_e2e::nodelet::netns`: syscalls on a thread), one after the other, with wall time per
//! pod and the CPU time (this process and its children) per pod. Prints a table.
//!
//! ```text
//! cargo run -p weft-e2e --example netns_cost -- [N]      # as root; N defaults to 100
//! ```
//!
//! Everything happens in a private mount namespace with a tmpfs over `/run/netns`, so the names
//! (`netns-cost-<i>`) never meet anyone else's, and the tmpfs vanishes with the run.

use anyhow::{Context, Result, bail, ensure};
use nix::mount::{MsFlags, mount};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use weft_e2e::nodelet::netns::{self, NETNS_DIR};

/// Durations of one operation over N pods, and the CPU time the whole batch took.
struct Batch {
    each: Vec<Duration>,
    cpu: Duration,
}

/// User + system CPU time of this process and its waited-for children.
fn cpu_time() -> Duration {
    let of = |who| {
        // SAFETY: getrusage writes into the zeroed struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}

fn batch(n: usize, mut op: impl FnMut(&str) -> Result<()>) -> Result<Batch> {
    let cpu0 = cpu_time();
    let mut each = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("netns-cost-{i}");
        let t = Instant::now();
        op(&name)?;
        each.push(t.elapsed());
    }
    Ok(Batch {
        each,
        cpu: cpu_time() - cpu0,
    })
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("failed to run ip")?;
    if !out.status.success() {
        bail!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn row(way: &str, what: &str, b: &mut Batch) {
    b.each.sort();
    let n = b.each.len();
    let pct = |p: f64| b.each[((n as f64 * p).ceil() as usize).clamp(1, n) - 1];
    let total: Duration = b.each.iter().sum();
    println!(
        "| {way:<14} | {what:<6} | {:>8.3} | {:>8.3} | {:>8.3} | {:>9.1} | {:>12.3} |",
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(total) / n as f64,
        ms(total),
        ms(b.cpu) / n as f64,
    );
}

fn run(n: usize) -> Result<()> {
    // A private mount namespace for this thread (and the `ip` processes it starts).
    netns::private_mount_namespace().context("failed to create a private mount namespace")?;
    std::fs::create_dir_all(NETNS_DIR)?;
    mount(
        Some("tmpfs"),
        NETNS_DIR,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=755"),
    )
    .context("failed to mount a tmpfs on /run/netns")?;
    let dir = Path::new(NETNS_DIR);

    let mut old_add = batch(n, |name| {
        ip(&["netns", "add", name])?;
        ip(&["-n", name, "link", "set", "lo", "up"])
    })?;
    let mut old_del = batch(n, |name| ip(&["netns", "del", name]))?;
    let mut new_add = batch(n, |name| {
        netns::create(dir, name).map(drop).map_err(Into::into)
    })?;
    let mut new_del = batch(n, |name| netns::delete(dir, name).map_err(Into::into))?;
    ensure!(
        std::fs::read_dir(dir)?.next().is_none(),
        "namespaces left behind in the scratch /run/netns"
    );

    println!("{n} pod network namespaces, made then removed one after the other\n");
    println!(
        "| way            | op     | p50 ms   | p99 ms   | mean ms  | total ms  | CPU ms / pod |"
    );
    println!(
        "|----------------|--------|----------|----------|----------|-----------|--------------|"
    );
    row("ip processes", "add", &mut old_add);
    row("ip processes", "del", &mut old_del);
    row("in-process", "add", &mut new_add);
    row("in-process", "del", &mut new_del);
    Ok(())
}

fn main() -> Result<()> {
    // SAFETY: plain syscall.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "needs root (network and mount namespaces)"
    );
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().context("N must be a number")?,
        None => 100,
    };
    ensure!(n > 0, "N must be at least 1");
    // On a thread of its own: the main thread's mount namespace is left as it is.
    std::thread::spawn(move || run(n))
        .join()
        .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))?
}
