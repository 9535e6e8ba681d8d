//! Pod CPU cgroups, laid out as a kubelet lays them out with `--cgroups-per-qos` (its default) and
//! the cgroupfs driver, one tree per node of the local cluster:
//!
//! ```text
//!   <CPU hierarchy>/weft-e2e-<cluster>-<node>-kubepods   the node's CPU capacity (4 CPUs: 4096 shares)
//!       besteffort/                                     2
//!           pod<uid>/                                   2
//!       burstable/                                      Σ of its pods' CPU requests (at least 2)
//!           pod<uid>/                                   the pod's CPU requests
//!       pod<uid>/                                       a Guaranteed pod: its CPU requests
//! ```
//!
//! (cgroup v1 `cpu.shares`, converted to `cpu.weight` with the kubelet's formula on cgroup v2.)
//! Every process of a pod's containers starts in its pod's cgroup; the nodelet itself, and the CNI
//! plugins it runs, stay where the nodelet is, as a container runtime and its plugins stay outside
//! `kubepods`. So when a burst of pods starts, their containers compete for the CPU as one
//! `kubepods` entity (and BestEffort ones as one tiny `besteffort` inside it), not each as a full
//! task against the plugins setting up the next pods' networks. That is a kubelet node's shape.
//!
//! Opt-in (`WEFT_E2E_CGROUPS_PER_QOS=true` for the local cluster): bursts of pods measured slower
//! CNI ADDs with it than without, for a reason not yet established (ADR 0002, its update of
//! 2026-12-03).
//!
//! The hierarchy is opened (`O_PATH`) before the nodelet remounts `/sys` for its node's namespace,
//! which hides the cgroup mounts; every path below goes through `/proc/self/fd/<fd>`.

use crate::cgroup::{CpuHierarchy, cpu_hierarchy, milli_cpu_to_shares, weight_file};
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A pod's QoS class, as the API defines it (`status.qosClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// A resource quantity in thousandths of its unit (`100m` → 100, `1` → 1000, `1Gi` → 1073741824000);
/// None for what does not parse.
pub fn quantity_milli(q: &str) -> Option<u128> {
    let q = q.trim();
    let suffixes: [(&str, u128); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    if let Some(n) = q.strip_suffix('m') {
        return n.parse::<u128>().ok();
    }
    let (num, mult) = suffixes
        .iter()
        .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((q, 1));
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int.checked_mul(mult)?.checked_mul(1000)?;
    // A fraction, rounded up to the next thousandth, as the API rounds a CPU quantity.
    if !frac.is_empty() {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = frac.len().min(30) as u32;
        let f: u128 = frac[..digits as usize].parse().ok()?;
        let scale = 10u128.pow(digits);
        total += (f * mult * 1000).div_ceil(scale);
    }
    Some(total)
}

/// A container's request for `resource` in thousandths, defaulted from its limit as the API does.
fn request(c: &Container, resource: &str) -> Option<u128> {
    let r = c.resources.as_ref()?;
    let pick = |m: &Option<
        BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| { m.as_ref()?.get(resource).and_then(|q| quantity_milli(&q.0)) };
    pick(&r.requests).or_else(|| pick(&r.limits))
}

fn limit(c: &Container, resource: &str) -> Option<u128> {
    c.resources
        .as_ref()?
        .limits
        .as_ref()?
        .get(resource)
        .and_then(|q| quantity_milli(&q.0))
}

/// The pod's QoS class (the API's `GetPodQOS`, over its init and app containers, for CPU and
/// memory): BestEffort without any request or limit; Guaranteed when every container has CPU and
/// memory limits and requests equal to them; Burstable otherwise.
pub fn qos_class(spec: &PodSpec) -> Qos {
    let all: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect();
    let resources = ["cpu", "memory"];
    let any = all.iter().any(|c| {
        resources
            .iter()
            .any(|r| request(c, r).is_some_and(|v| v > 0) || limit(c, r).is_some_and(|v| v > 0))
    });
    if !any {
        return Qos::BestEffort;
    }
    let guaranteed = all.iter().all(|c| {
        resources.iter().all(|r| match limit(c, r) {
            Some(l) if l > 0 => request(c, r) == Some(l),
            _ => false,
        })
    });
    if guaranteed {
        Qos::Guaranteed
    } else {
        Qos::Burstable
    }
}

/// The pod's CPU request in millicores, as the kubelet sizes its cgroup: the sum over its app
/// containers, or the largest init container's if that is more.
pub fn cpu_request_milli(spec: &PodSpec) -> u64 {
    let milli = |c: &Container| request(c, "cpu").unwrap_or(0);
    let apps: u128 = spec.containers.iter().map(milli).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(milli)
        .max()
        .unwrap_or(0);
    u64::try_from(apps.max(init)).unwrap_or(u64::MAX)
}

/// One node's `kubepods` tree.
pub struct PodCgroups {
    /// The CPU hierarchy's mount point, held open.
    root: std::fs::File,
    h: CpuHierarchy,
    /// The `kubepods` cgroup's name, a child of the hierarchy's root.
    name: String,
    /// The pods with a cgroup: uid → (class, CPU request in millicores).
    pods: Mutex<BTreeMap<String, (Qos, u64)>>,
}

impl std::fmt::Debug for PodCgroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodCgroups")
            .field("hierarchy", &self.h)
            .field("name", &self.name)
            .finish()
    }
}

const BESTEFFORT: &str = "besteffort";
const BURSTABLE: &str = "burstable";

impl PodCgroups {
    /// Opens the CPU hierarchy and creates `name` (the node's `kubepods`, weighted by
    /// `capacity_milli`) with its `besteffort` and `burstable` children. Must run before `/sys` is
    /// remounted.
    pub fn create(name: &str, capacity_milli: u64) -> Result<Self> {
        let (h, mount) = cpu_hierarchy()?;
        let root = std::fs::File::open(&mount)
            .with_context(|| format!("opening the CPU hierarchy at {}", mount.display()))?;
        let me = PodCgroups {
            root,
            h,
            name: name.to_owned(),
            pods: Mutex::new(BTreeMap::new()),
        };
        me.make("", milli_cpu_to_shares(capacity_milli))?;
        me.make(BESTEFFORT, crate::cgroup::MIN_SHARES)?;
        me.make(BURSTABLE, crate::cgroup::MIN_SHARES)?;
        Ok(me)
    }

    /// The path of `rel` below `kubepods` ("" for `kubepods` itself), through the held-open root.
    fn path(&self, rel: &str) -> PathBuf {
        let base =
            PathBuf::from(format!("/proc/self/fd/{}", self.root.as_raw_fd())).join(&self.name);
        if rel.is_empty() { base } else { base.join(rel) }
    }

    /// Creates cgroup `rel` (if needed) with `shares`; on cgroup v2, its parent first delegates the
    /// CPU controller to it.
    fn make(&self, rel: &str, shares: u64) -> Result<()> {
        let dir = self.path(rel);
        if self.h == CpuHierarchy::V2 {
            let parent = dir.parent().map(PathBuf::from).unwrap_or_default();
            let control = parent.join("cgroup.subtree_control");
            let on = std::fs::read_to_string(&control).unwrap_or_default();
            if !on.split_whitespace().any(|c| c == "cpu") {
                std::fs::write(&control, "+cpu").with_context(|| {
                    format!(
                        "enabling the cpu controller for the children of {}/{rel}",
                        self.name
                    )
                })?;
            }
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("creating cgroup {}/{rel}", self.name));
            }
        }
        self.set_shares(rel, shares)
    }

    fn set_shares(&self, rel: &str, shares: u64) -> Result<()> {
        let (file, value) = weight_file(self.h, shares);
        std::fs::write(self.path(rel).join(file), value.to_string())
            .with_context(|| format!("writing {file} {value} of cgroup {}/{rel}", self.name))
    }

    /// Where pod `uid` of class `qos` lives, relative to `kubepods`.
    fn pod_rel(qos: Qos, uid: &str) -> String {
        match qos {
            Qos::Guaranteed => format!("pod{uid}"),
            Qos::Burstable => format!("{BURSTABLE}/pod{uid}"),
            Qos::BestEffort => format!("{BESTEFFORT}/pod{uid}"),
        }
    }

    /// `burstable`'s weight: the sum of its pods' CPU requests, as the kubelet keeps it.
    fn update_burstable(&self, pods: &BTreeMap<String, (Qos, u64)>) -> Result<()> {
        let sum: u64 = pods
            .values()
            .filter(|(q, _)| *q == Qos::Burstable)
            .map(|(_, m)| *m)
            .sum();
        self.set_shares(BURSTABLE, milli_cpu_to_shares(sum))
    }

    /// Creates pod `uid`'s cgroup, sized from `spec`, and opens its `cgroup.procs` for its
    /// containers to join; the cgroup goes when the last holder of the returned handle drops it.
    pub fn add_pod(self: &Arc<Self>, uid: &str, spec: &PodSpec) -> Result<PodCgroup> {
        let qos = qos_class(spec);
        let milli = cpu_request_milli(spec);
        let rel = Self::pod_rel(qos, uid);
        let shares = match qos {
            Qos::BestEffort => crate::cgroup::MIN_SHARES,
            Qos::Guaranteed | Qos::Burstable => milli_cpu_to_shares(milli),
        };
        {
            let mut pods = self.pods.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            pods.insert(uid.to_owned(), (qos, milli));
            if qos == Qos::Burstable {
                self.update_burstable(&pods)?;
            }
        }
        // From here on, a failure drops the handle, which undoes what was done.
        let mut handle = PodCgroup {
            owner: self.clone(),
            uid: uid.to_owned(),
            rel: rel.clone(),
            procs: None,
        };
        self.make(&rel, shares)?;
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path(&rel).join("cgroup.procs"))
            .with_context(|| format!("opening cgroup.procs of {}/{rel}", self.name))?;
        handle.procs = Some(procs);
        Ok(handle)
    }

    /// Removes pod `uid`'s cgroup (its processes are gone; a straggler still exiting gets a few
    /// more tries on a thread of its own).
    fn remove_pod(&self, uid: &str, rel: &str) {
        if let Ok(mut pods) = self.pods.lock()
            && let Some((qos, _)) = pods.remove(uid)
            && qos == Qos::Burstable
            && let Err(e) = self.update_burstable(&pods)
        {
            tracing::warn!(error = %format!("{e:#}"), "burstable cgroup's weight");
        }
        let dir = self.path(rel);
        if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
            return;
        }
        let (shown, name) = (format!("{}/{rel}", self.name), dir);
        // The path goes through this process's fd table, which the thread shares.
        std::thread::spawn(move || {
            for _ in 0..50 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if std::fs::remove_dir(&name).is_ok() || !name.exists() {
                    return;
                }
            }
            tracing::warn!(cgroup = %shown, "pod cgroup still busy after 5 s; `weft-e2e down` removes it");
        });
    }

    /// Removes `kubepods` and its QoS children once the node's pods are gone (the nodelet's exit).
    pub fn remove(&self) {
        for rel in [BESTEFFORT, BURSTABLE, ""] {
            if let Err(e) = std::fs::remove_dir(self.path(rel)) {
                tracing::warn!(cgroup = %format!("{}/{rel}", self.name), error = %e, "could not remove the cgroup; `weft-e2e down` removes it");
            }
        }
    }
}

/// A pod's cgroup, while its containers may run.
pub struct PodCgroup {
    owner: Arc<PodCgroups>,
    uid: String,
    rel: String,
    /// Its `cgroup.procs`, open for writing: a container's process writes `0` to it (itself)
    /// between fork and exec.
    procs: Option<std::fs::File>,
}

impl PodCgroup {
    /// The open `cgroup.procs` a container's process joins through.
    pub fn procs(&self) -> Option<&std::fs::File> {
        self.procs.as_ref()
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        self.procs = None;
        self.owner.remove_pod(&self.uid, &self.rel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).expect("pod spec")
    }

    #[test]
    fn quantities_parse_to_thousandths() {
        assert_eq!(quantity_milli("100m"), Some(100));
        assert_eq!(quantity_milli("1"), Some(1000));
        assert_eq!(quantity_milli("0.5"), Some(500));
        assert_eq!(quantity_milli("1.5"), Some(1500));
        assert_eq!(quantity_milli("0.0001"), Some(1), "rounded up");
        assert_eq!(quantity_milli(".25"), Some(250));
        assert_eq!(quantity_milli("64Mi"), Some(64 * 1024 * 1024 * 1000));
        assert_eq!(quantity_milli("1G"), Some(1_000_000_000_000));
        assert_eq!(quantity_milli("1.5Gi"), Some(1_610_612_736_000));
        assert_eq!(quantity_milli("abc"), None);
        assert_eq!(quantity_milli(""), None);
        assert_eq!(quantity_milli("1.x"), None);
    }

    #[test]
    fn qos_classes_follow_the_api() {
        let be = spec(json!({"containers": [{"name": "a"}, {"name": "b", "resources": {}}]}));
        assert_eq!(qos_class(&be), Qos::BestEffort);
        assert_eq!(cpu_request_milli(&be), 0);
        let burst = spec(json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "b"}]}));
        assert_eq!(qos_class(&burst), Qos::Burstable);
        assert_eq!(cpu_request_milli(&burst), 100);
        let g = spec(json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "0.5", "memory": "64Mi"},
                                        "limits": {"cpu": "500m", "memory": "64Mi"}}}]}));
        assert_eq!(qos_class(&g), Qos::Guaranteed, "requests default to limits");
        assert_eq!(cpu_request_milli(&g), 1000);
        let unequal = spec(json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                        "limits": {"cpu": "500m", "memory": "64Mi"}}}]}));
        assert_eq!(qos_class(&unequal), Qos::Burstable);
        let no_memory_limit = spec(json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1"}}}]}));
        assert_eq!(qos_class(&no_memory_limit), Qos::Burstable);
        let big_init = spec(json!({
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "250m"}}}]}));
        assert_eq!(cpu_request_milli(&big_init), 2000);
    }

    /// The real cgroup filesystem: the tree, a process joining its pod's cgroup by writing `0`
    /// between fork and exec, burstable's weight following its pods, and everything gone after.
    #[test]
    fn pods_get_the_kubelets_tree_and_leave_nothing() {
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } != 0 || cpu_hierarchy().is_err() {
            eprintln!("skipped: needs root and a CPU cgroup controller");
            return;
        }
        let (h, mount) = cpu_hierarchy().unwrap();
        let name = format!("weft-e2e-cgtest{}-node-1-kubepods", std::process::id());
        /// Removes the tree also when an assertion fails.
        struct Cleanup(PathBuf, PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = crate::cgroup::remove_tree(&self.0, &self.1);
            }
        }
        let _cleanup = Cleanup(mount.clone(), mount.join(&name));
        let shares = |rel: &str| {
            let (file, _) = weight_file(h, 2);
            std::fs::read_to_string(mount.join(&name).join(rel).join(file))
                .unwrap()
                .trim()
                .to_owned()
        };
        let expect = |s: u64| weight_file(h, s).1.to_string();
        let cgs = Arc::new(PodCgroups::create(&name, 4000).unwrap());
        assert_eq!(shares(""), expect(4096));
        assert_eq!(shares("besteffort"), expect(2));
        assert_eq!(shares("burstable"), expect(2));

        let be = cgs
            .add_pod("u-be", &spec(json!({"containers": [{"name": "a"}]})))
            .unwrap();
        let b1 = cgs
            .add_pod(
                "u-b1",
                &spec(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "250m"}}}]})),
            )
            .unwrap();
        let b2 = cgs
            .add_pod(
                "u-b2",
                &spec(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "750m"}}}]})),
            )
            .unwrap();
        assert_eq!(shares("besteffort/podu-be"), expect(2));
        assert_eq!(shares("burstable/podu-b1"), expect(256));
        assert_eq!(shares("burstable"), expect(1024));

        // A process joins as a container does: `0` written between fork and exec.
        use std::os::unix::process::CommandExt;
        let fd = be.procs().unwrap().as_raw_fd();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        // SAFETY: write(2) on an fd prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut kid = cmd.spawn().unwrap();
        let text = std::fs::read_to_string(format!("/proc/{}/cgroup", kid.id())).unwrap();
        assert_eq!(
            crate::cgroup::cgroup_of(&text, h).as_deref(),
            Some(format!("{name}/besteffort/podu-be").as_str())
        );
        let _ = kid.kill();
        let _ = kid.wait();

        drop(b1);
        assert_eq!(shares("burstable"), expect(768), "b1's request is gone");
        assert!(!mount.join(&name).join("burstable/podu-b1").exists());
        drop(b2);
        drop(be);
        // The killed process may take a moment to leave its cgroup.
        for _ in 0..50 {
            if !mount.join(&name).join("besteffort/podu-be").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(!mount.join(&name).join("besteffort/podu-be").exists());
        cgs.remove();
        assert!(!mount.join(&name).exists());
    }
}
