//! The file system a container sees, as a plan of mount steps (pure); `container::spawn` carries it
//! out in the forked child.
//!
//! ```text
//!  sandboxed pod container             host-network pod container
//!  tmpfs at <pod dir>/rootfs/<c>  ──┐   the node's own root (no pivot)
//!    /bin /lib* /sbin  host's (ro, or its symlinks)
//!    /usr /etc         host's (ro)
//!    /etc/hosts, /etc/hostname, /etc/resolv.conf   the pod's files
//!    /dev  host's   /proc /sys  fresh (sysfs of the pod's netns)
//!    /agnhost          the image's binary (ro)
//!    <volumeMounts>    the pod's volumes
//!  then pivot_root into it           volumes bound over host paths
//! ```
//!
//! A host-network container whose image keeps its binary outside the system dirs (`/agnhost`) gets
//! the sandboxed layout too, in the node's network namespace ([`host_container_needs_own_root`]).
//!
//! Invariants: every bind's source is named here by its host path and opened (cloned) before the
//! first step mounts anything, so one volume cannot hide another's source; each bind's target is
//! created right before the bind, after the binds it is nested in, so nested volumes land inside the
//! outer volume, as with a runtime; nothing is ever created on the host for a sandboxed container.

use std::path::{Path, PathBuf};

/// Host directories a sandboxed container shares read-only (the image's "base layer": a shell and
/// libraries for `/bin/sh -c` wrappers). A symlinked one (merged /usr) becomes the same symlink.
pub const SYSTEM_DIRS: &[&str] = &[
    "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/etc",
];

/// Directories every sandboxed root has, writable (on the root's tmpfs).
const EMPTY_DIRS: &[&str] = &["/proc", "/sys", "/dev", "/tmp", "/run", "/var", "/root"];

/// What the host has at a system path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEntry {
    Dir,
    Symlink(PathBuf),
    Missing,
}

/// A bind mount of a host path onto a path in the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub src: PathBuf,
    /// Absolute in the container's view (before the pivot it is taken under the root dir).
    pub dst: PathBuf,
    pub read_only: bool,
    /// Whether the target is a file (else a directory).
    pub file: bool,
}

/// One step of building the container's file system, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `mkdir`, fine if it exists.
    Mkdir(PathBuf),
    /// Create an empty file as a mount target, fine if it exists.
    Touch(PathBuf),
    /// `symlink(target, link)`.
    Symlink(PathBuf, PathBuf),
    /// Attach the clone of `binds[i].src` on `binds[i].dst`.
    Bind(usize),
}

/// The whole plan; paths in `steps` are absolute on the host (already under `root`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FsPlan {
    /// A tmpfs mounted here becomes the container's `/` (pivot_root); None keeps the node's root.
    pub root: Option<PathBuf>,
    pub binds: Vec<Bind>,
    pub steps: Vec<Step>,
    /// Mount a fresh procfs and (read-only) sysfs at `<root>/proc` and `<root>/sys`.
    pub proc_and_sys: bool,
    /// Where the process starts, in the container's view.
    pub workdir: Option<PathBuf>,
}

/// What a sandboxed container's file system is made of.
#[derive(Clone, Debug)]
pub struct SandboxFs<'a> {
    /// The (empty) directory that becomes the container's `/`.
    pub root: &'a Path,
    /// The host's system dirs, as probed (see [`SYSTEM_DIRS`]).
    pub system: &'a [(&'a str, HostEntry)],
    /// The image's binary: where the nodelet holds it, and where the image has it.
    pub image_binary: Option<(PathBuf, &'a str)>,
    /// The pod's `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`.
    pub etc_files: &'a [(PathBuf, &'a str)],
    /// The container's volume mounts, in spec order.
    pub volumes: &'a [Bind],
    pub workdir: Option<&'a str>,
}

/// `root` joined with an absolute container path.
pub fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// Whether `p` lies in a shared read-only system dir, where nothing can be created.
fn in_system_dir(p: &Path, system: &[(&str, HostEntry)]) -> bool {
    system
        .iter()
        .any(|(d, e)| *e != HostEntry::Missing && p.starts_with(d))
}

/// The mkdir steps for every ancestor of `p` below `root` (and `p` itself when `include_self`).
fn mkdirs(root: &Path, p: &Path, include_self: bool, out: &mut Vec<Step>) {
    let mut dirs: Vec<&Path> = p.ancestors().filter(|a| *a != Path::new("/")).collect();
    if !include_self {
        dirs.retain(|a| *a != p);
    }
    dirs.reverse();
    out.extend(dirs.into_iter().map(|d| Step::Mkdir(under(root, d))));
}

fn push_bind(plan: &mut FsPlan, root: &Path, b: Bind, create_targets: bool) {
    if create_targets {
        mkdirs(root, &b.dst, !b.file, &mut plan.steps);
        if b.file {
            plan.steps.push(Step::Touch(under(root, &b.dst)));
        }
    }
    plan.steps.push(Step::Bind(plan.binds.len()));
    plan.binds.push(Bind {
        dst: under(root, &b.dst),
        ..b
    });
}

/// Plans a sandboxed container's file system (see the module docs).
pub fn plan_sandbox_fs(fs: &SandboxFs<'_>) -> FsPlan {
    let root = fs.root;
    let mut plan = FsPlan {
        root: Some(root.to_path_buf()),
        proc_and_sys: true,
        workdir: fs.workdir.map(PathBuf::from),
        ..Default::default()
    };
    for d in EMPTY_DIRS {
        plan.steps.push(Step::Mkdir(under(root, Path::new(d))));
    }
    for (d, entry) in fs.system {
        match entry {
            HostEntry::Dir => push_bind(
                &mut plan,
                root,
                Bind {
                    src: PathBuf::from(d),
                    dst: PathBuf::from(d),
                    read_only: true,
                    file: false,
                },
                true,
            ),
            HostEntry::Symlink(target) => plan
                .steps
                .push(Step::Symlink(target.clone(), under(root, Path::new(d)))),
            HostEntry::Missing => {}
        }
    }
    push_bind(
        &mut plan,
        root,
        Bind {
            src: PathBuf::from("/dev"),
            dst: PathBuf::from("/dev"),
            read_only: false,
            file: false,
        },
        false,
    );
    for (src, dst) in fs.etc_files {
        push_bind(
            &mut plan,
            root,
            Bind {
                src: src.clone(),
                dst: PathBuf::from(dst),
                read_only: false,
                file: true,
            },
            true,
        );
    }
    // An image path inside a shared system dir has no mount target (the dir is read-only there);
    // the binary still runs from the file the nodelet holds open.
    if let Some((src, path)) = &fs.image_binary
        && !in_system_dir(Path::new(path), fs.system)
    {
        push_bind(
            &mut plan,
            root,
            Bind {
                src: src.clone(),
                dst: PathBuf::from(path),
                read_only: true,
                file: true,
            },
            true,
        );
    }
    for v in fs.volumes {
        push_bind(&mut plan, root, v.clone(), true);
    }
    if let Some(w) = fs.workdir
        && !in_system_dir(Path::new(w), fs.system)
    {
        mkdirs(root, Path::new(w), true, &mut plan.steps);
    }
    plan
}

/// Whether a host-network container needs a root of its own to find its image's binary where the
/// image has it. In the node's root the binary of an image kept in a system dir
/// (`/usr/local/bin/kube-proxy`) runs from the file the nodelet holds open, and the container sees
/// the host's paths it was written for; but nothing can put `/agnhost` or `/pause` at the node's `/`
/// without touching the host, so a command such as `/bin/bash -c "/agnhost serve-hostname …"` gets the
/// image's layout, as in a pod with its own network (in the node's network namespace still).
pub fn host_container_needs_own_root(image_path: &str, system: &[(&str, HostEntry)]) -> bool {
    !in_system_dir(Path::new(image_path), system)
}

/// Plans a host-network container: the node's root with the volumes bound over host paths (their
/// targets are created on the host by the caller, who records them for cleanup).
pub fn plan_host_fs(volumes: &[Bind], workdir: Option<&str>) -> FsPlan {
    FsPlan {
        root: None,
        steps: (0..volumes.len()).map(Step::Bind).collect(),
        binds: volumes.to_vec(),
        proc_and_sys: false,
        workdir: workdir.map(PathBuf::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn system() -> Vec<(&'static str, HostEntry)> {
        vec![
            ("/bin", HostEntry::Symlink(p("usr/bin"))),
            ("/lib", HostEntry::Symlink(p("usr/lib"))),
            ("/lib32", HostEntry::Missing),
            ("/usr", HostEntry::Dir),
            ("/etc", HostEntry::Dir),
        ]
    }

    fn vol(src: &str, dst: &str, file: bool) -> Bind {
        Bind {
            src: p(src),
            dst: p(dst),
            read_only: false,
            file,
        }
    }

    fn plan(volumes: &[Bind], image_path: &str) -> FsPlan {
        let sys = system();
        let etc = [(p("/pods/u/etc-hosts"), "/etc/hosts")];
        plan_sandbox_fs(&SandboxFs {
            root: Path::new("/r"),
            system: &sys,
            image_binary: Some((p("/proc/self/fd/7"), image_path)),
            etc_files: &etc,
            volumes,
            workdir: Some("/work/dir"),
        })
    }

    fn bound(plan: &FsPlan) -> Vec<(String, String)> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::Bind(i) => Some((
                    plan.binds[*i].src.display().to_string(),
                    plan.binds[*i].dst.display().to_string(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_sandbox_root_has_the_system_dirs_the_pod_files_and_the_image_binary() {
        let pl = plan(&[], "/agnhost");
        assert_eq!(pl.root, Some(p("/r")));
        assert!(pl.proc_and_sys);
        assert!(pl.steps.contains(&Step::Symlink(p("usr/bin"), p("/r/bin"))));
        assert!(
            !pl.steps
                .iter()
                .any(|s| matches!(s, Step::Symlink(_, l) if l == Path::new("/r/lib32"))),
            "a dir the host lacks is left out"
        );
        assert_eq!(
            bound(&pl),
            vec![
                ("/usr".into(), "/r/usr".into()),
                ("/etc".into(), "/r/etc".into()),
                ("/dev".into(), "/r/dev".into()),
                ("/pods/u/etc-hosts".into(), "/r/etc/hosts".into()),
                ("/proc/self/fd/7".into(), "/r/agnhost".into()),
            ]
        );
        let agnhost = pl
            .binds
            .iter()
            .find(|b| b.dst == Path::new("/r/agnhost"))
            .unwrap();
        assert!(agnhost.read_only && agnhost.file);
        let touch = pl
            .steps
            .iter()
            .position(|s| *s == Step::Touch(p("/r/agnhost")));
        let bind = pl.steps.iter().position(|s| *s == Step::Bind(4));
        assert!(touch < bind, "the target exists before the bind");
        assert!(pl.steps.contains(&Step::Mkdir(p("/r/work/dir"))));
    }

    #[test]
    fn nested_volumes_are_bound_outer_first_with_targets_made_after_the_outer_bind() {
        let vols = [
            vol("/pods/u/volumes/data", "/data", false),
            vol("/pods/u/volumes/conf", "/data/conf", false),
        ];
        let pl = plan(&vols, "/agnhost");
        let pos = |s: &Step| pl.steps.iter().position(|x| x == s).unwrap();
        let outer = pl
            .binds
            .iter()
            .position(|b| b.dst == Path::new("/r/data"))
            .unwrap();
        let inner = pl
            .binds
            .iter()
            .position(|b| b.dst == Path::new("/r/data/conf"))
            .unwrap();
        assert!(pos(&Step::Bind(outer)) < pos(&Step::Mkdir(p("/r/data/conf"))));
        assert!(pos(&Step::Mkdir(p("/r/data/conf"))) < pos(&Step::Bind(inner)));
    }

    #[test]
    fn an_image_path_in_a_system_dir_gets_no_mount_target() {
        let pl = plan(&[], "/usr/local/bin/kube-proxy");
        assert!(!bound(&pl).iter().any(|(_, d)| d.contains("kube-proxy")));
        assert!(
            !pl.steps
                .iter()
                .any(|s| matches!(s, Step::Touch(t) if t.starts_with("/r/usr")))
        );
    }

    #[test]
    fn a_host_container_binds_volumes_over_host_paths_without_a_new_root() {
        let vols = [vol("/pods/u/volumes/tmp", "/tmp", false)];
        let pl = plan_host_fs(&vols, None);
        assert_eq!(pl.root, None);
        assert_eq!(pl.steps, vec![Step::Bind(0)]);
        assert_eq!(pl.binds[0].dst, p("/tmp"));
        assert!(!pl.proc_and_sys);
    }

    #[test]
    fn a_host_container_gets_its_own_root_only_for_an_image_kept_outside_the_system_dirs() {
        let sys = system();
        assert!(host_container_needs_own_root("/agnhost", &sys));
        assert!(host_container_needs_own_root("/pause", &sys));
        assert!(!host_container_needs_own_root(
            "/usr/local/bin/kube-proxy",
            &sys
        ));
        assert!(
            !host_container_needs_own_root("/bin/sh", &sys),
            "a symlinked system dir counts"
        );
    }
}
