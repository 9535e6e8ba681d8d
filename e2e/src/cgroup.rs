//! The machine's CPU cgroup controller, as the local cluster uses it: where it is (cgroup v1's
//! `cpu` hierarchy or the v2 unified one), a cgroup's CPU weight in kubelet's units, and removing a
//! cgroup tree that a run left behind.
//!
//! Two users: the control plane's lowered weight of the benchmarks
//! ([`crate::controlplane::LoweredCpu`]) and the nodelet's pod cgroups
//! ([`crate::nodelet::cgroups`]). Weights are given as cgroup v1 `cpu.shares` (1024 = one default
//! task), as the kubelet computes them, and converted for v2 with the kubelet's formula.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Where this machine's CPU controller is: cgroup v1's `cpu` hierarchy, or the v2 unified one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuHierarchy {
    V1,
    V2,
}

const CGROUP_V1_CPU: &str = "/sys/fs/cgroup/cpu";
const CGROUP_V2: &str = "/sys/fs/cgroup";

/// The kubelet's bounds for `cpu.shares` (`MinShares`, `MaxShares`).
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;

/// The CPU hierarchy and its mount point.
pub fn cpu_hierarchy() -> Result<(CpuHierarchy, PathBuf)> {
    let v1 = Path::new(CGROUP_V1_CPU);
    if v1.join("cpu.shares").exists() {
        return Ok((CpuHierarchy::V1, v1.to_path_buf()));
    }
    let v2 = Path::new(CGROUP_V2);
    let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "cpu") {
        return Ok((CpuHierarchy::V2, v2.to_path_buf()));
    }
    anyhow::bail!(
        "no CPU cgroup controller: neither {CGROUP_V1_CPU}/cpu.shares (cgroup v1) nor `cpu` in \
         {CGROUP_V2}/cgroup.controllers (cgroup v2)"
    )
}

/// The cgroup of a process in the given hierarchy, as a path below its mount point, from the text
/// of `/proc/<pid>/cgroup` (v1: the line whose controllers include `cpu`; v2: the `0::` line).
pub fn cgroup_of(text: &str, h: CpuHierarchy) -> Option<String> {
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (id, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let hit = match h {
            CpuHierarchy::V1 => controllers.split(',').any(|c| c == "cpu"),
            CpuHierarchy::V2 => id == "0" && controllers.is_empty(),
        };
        hit.then(|| path.trim_start_matches('/').to_string())
    })
}

/// The kubelet's `MilliCPUToShares`: CPU millicores to `cpu.shares`, at least [`MIN_SHARES`].
pub fn milli_cpu_to_shares(milli: u64) -> u64 {
    (milli.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// The kubelet's `CpuSharesToCpuWeight`: cgroup v1 shares [2, 262144] to v2 weight [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((s - 2) * 9999) / 262_142
}

/// The file and value that give a cgroup `shares` worth of CPU weight in hierarchy `h`.
pub fn weight_file(h: CpuHierarchy, shares: u64) -> (&'static str, u64) {
    match h {
        CpuHierarchy::V1 => ("cpu.shares", shares),
        CpuHierarchy::V2 => ("cpu.weight", shares_to_weight(shares)),
    }
}

/// The cgroup (a child of the hierarchy's root) that the control plane of cluster `cluster` is
/// moved into while its weight is lowered ([`crate::controlplane::LoweredCpu`]).
pub fn control_plane_name(cluster: &str) -> String {
    format!("weft-e2e-{cluster}-control-plane")
}

/// The `kubepods` cgroup (a child of the hierarchy's root) of node `node` of cluster `cluster`:
/// the node's pods' cgroups are below it ([`crate::nodelet::cgroups`]).
pub fn kubepods_name(cluster: &str, node: &str) -> String {
    format!("weft-e2e-{cluster}-{node}-kubepods")
}

/// Removes every cgroup of cluster `cfg` that is left: the lowered control plane's and each node's
/// `kubepods` tree (a nodelet that was killed cannot remove its own). A teardown step, after the
/// cluster's processes are stopped; nothing to do without a CPU controller.
pub fn remove_cluster_cgroups(cfg: &crate::config::ClusterConfig) -> Result<()> {
    let Ok((_, root)) = cpu_hierarchy() else {
        return Ok(());
    };
    let mut first_error = None;
    let names = std::iter::once(control_plane_name(&cfg.name)).chain(
        cfg.node_names()
            .into_iter()
            .map(|n| kubepods_name(&cfg.name, &n)),
    );
    for name in names {
        if let Err(e) = remove_tree(&root, &root.join(name)) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Removes cgroup `dir` and every cgroup below it, deepest first, moving any process still in one
/// to the hierarchy's root (`root`) first. Nothing to do when `dir` does not exist.
pub fn remove_tree(root: &Path, dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let children: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    for c in children {
        remove_tree(root, &c)?;
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.split_whitespace() {
        // A process that exited meanwhile is gone from the cgroup anyway.
        let _ = std::fs::write(root.join("cgroup.procs"), pid);
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing cgroup {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_cgroup_is_read_from_its_cpu_line() {
        let v1 =
            "9:name=systemd:/\n4:memory:/process_api/c1\n2:cpuacct:/\n1:cpu,cpuacct:/a/b\n0::/\n";
        assert_eq!(cgroup_of(v1, CpuHierarchy::V1).as_deref(), Some("a/b"));
        let v1_split = "3:cpuset:/\n2:cpuacct:/x\n1:cpu:/\n";
        assert_eq!(cgroup_of(v1_split, CpuHierarchy::V1).as_deref(), Some(""));
        let v2 = "0::/user.slice/user-0.slice/session-1.scope\n";
        assert_eq!(
            cgroup_of(v2, CpuHierarchy::V2).as_deref(),
            Some("user.slice/user-0.slice/session-1.scope")
        );
        assert_eq!(cgroup_of(v2, CpuHierarchy::V1), None);
        assert_eq!(cgroup_of("1:cpuacct:/\n", CpuHierarchy::V1), None);
    }

    /// The kubelet's own table (pkg/kubelet/cm/helpers_linux_test.go and the v2 conversion).
    #[test]
    fn shares_and_weights_are_the_kubelets() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(500), 512);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(4000), 4096);
        assert_eq!(milli_cpu_to_shares(u64::MAX), MAX_SHARES);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(weight_file(CpuHierarchy::V1, 512), ("cpu.shares", 512));
        assert_eq!(weight_file(CpuHierarchy::V2, 2), ("cpu.weight", 1));
    }
}
