//! Starting a container's process: the image's binary held open, and a forked child that enters the
//! pod's network namespace, builds the container's file system from an [`FsPlan`] and executes the
//! planned program.
//!
//! ```text
//!  nodelet (node netns, node mount ns)
//!    fork ─► child: open_tree(every bind source)   ← still sees the node's paths, nothing hidden
//!                   setns(pod netns)  unshare(mount, uts)  sethostname(pod name)
//!                   tmpfs root, mkdir/touch/symlink, move_mount(clones), proc, sysfs, pivot_root
//!                   fexecve(image binary) | execve(first existing candidate)
//! ```
//!
//! Invariant: the child only makes async-signal-safe system calls on memory prepared before the
//! fork; every path it needs is a `CString` built here.

use super::image::Exec;
use super::rootfs::{FsPlan, Step};
use anyhow::{Context, Result, anyhow};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

// From <linux/mount.h>; the libc crate has the syscall numbers but not these flags.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// The binary an image maps to, opened: `<bin dir>/<last path segment without tag or digest>`, from
/// the first bin dir that has it. The file is open before any container's mount namespace exists, so
/// no volume of a pod can hide it (a runtime does not look for an image's files inside the
/// container's volumes either).
pub fn open_image_binary(bin_dirs: &BinDirs, image: &str) -> Result<ImageBinary> {
    let name = super::image::image_binary_name(image);
    bin_dirs
        .find(&name)
        .map(|(path, file)| ImageBinary { path, file })
        .ok_or_else(|| anyhow!("no local binary for image {image:?}: looked for {name:?} in {:?} (build it, or map the image to a binary of that name)", bin_dirs.paths()))
}

/// An image's binary, open for `fexecve` and as a bind source (`/proc/self/fd/<fd>`).
#[derive(Debug)]
pub struct ImageBinary {
    /// Where it was found on the host, for messages only: the path may be hidden from the container.
    pub path: PathBuf,
    pub file: std::fs::File,
}

impl ImageBinary {
    /// A path that names the open file from this process (and its forked children).
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// The nodelet's bin dirs, each held open (`O_PATH`) from before the node's private paths were
/// mounted: a bin dir under a path the node sees privately (`/run`, `/etc/cni/net.d`, …) stays
/// reachable through `/proc/self/fd/<fd>`.
#[derive(Clone, Debug, Default)]
pub struct BinDirs(std::sync::Arc<Vec<(PathBuf, Option<std::os::fd::OwnedFd>)>>);

impl BinDirs {
    /// Opens every dir that exists; missing ones are remembered by name only.
    pub fn open(dirs: &[PathBuf]) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let held = dirs
            .iter()
            .map(|d| {
                let fd = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                    .open(d)
                    .ok()
                    .map(std::os::fd::OwnedFd::from);
                (d.clone(), fd)
            })
            .collect();
        Self(std::sync::Arc::new(held))
    }

    /// The dirs as they were named.
    pub fn paths(&self) -> Vec<&Path> {
        self.0.iter().map(|(p, _)| p.as_path()).collect()
    }

    /// Opens `name` in the first dir that has it as a regular file.
    pub fn find(&self, name: &str) -> Option<(PathBuf, std::fs::File)> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return None;
        }
        self.0.iter().find_map(|(dir, fd)| {
            let fd = fd.as_ref()?;
            let f = std::fs::File::open(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd())).ok()?;
            f.metadata()
                .ok()
                .filter(|m| m.is_file())
                .map(|_| (dir.join(name), f))
        })
    }
}

/// Everything a container's process is started with.
pub struct Launch<'a> {
    pub binary: &'a ImageBinary,
    /// How `argv[0]` is found.
    pub exec: &'a Exec,
    /// The whole argument vector, `argv[0]` included.
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub fs: &'a FsPlan,
    /// The pod's network namespace to enter (None: stay in the node's).
    pub netns: Option<&'a Path>,
    /// A UTS namespace of its own with this host name (the pod's name).
    pub hostname: Option<&'a str>,
    /// stdout and stderr are appended here.
    pub log: &'a Path,
    /// The pod cgroup's `cgroup.procs`, open for writing: the process joins it first thing after
    /// the fork (None: it stays in the nodelet's cgroup).
    pub cgroup_procs: Option<&'a std::fs::File>,
}

/// Pointers into `CString`s owned by the same closure, null-terminated, for `execve` after fork.
struct CPtrs(Vec<*const libc::c_char>);
// SAFETY: the pointers are only read in the forked child; the strings they point into are moved into
// the same closure and outlive it.
unsafe impl Send for CPtrs {}
// SAFETY: as above; nothing writes through them.
unsafe impl Sync for CPtrs {}

impl CPtrs {
    fn as_ptr(&self) -> *const *const libc::c_char {
        self.0.as_ptr()
    }
}

fn cptrs(strings: &[CString]) -> CPtrs {
    CPtrs(
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
    )
}

fn cstring(s: impl AsRef<std::ffi::OsStr>) -> Result<CString> {
    let s = s.as_ref();
    CString::new(s.as_bytes()).map_err(|_| anyhow!("{s:?} has a NUL byte"))
}

/// A step with its paths as C strings.
enum CStep {
    Mkdir(CString),
    Touch(CString),
    Symlink(CString, CString),
    Bind(usize),
}

/// Spawns the container process (see the module docs): its own session, output appended to the log.
///
/// Every path is resolved before anything of the container is mounted: the binary is executed from
/// its open file (`fexecve`), and each bind's source is cloned (`open_tree`) before the first one is
/// attached (`move_mount`), so neither a volume mounted over a directory (an emptyDir on `/tmp`) nor
/// an earlier bind of the same container can hide them.
pub fn spawn(l: &Launch<'_>) -> Result<tokio::process::Child> {
    use std::os::unix::process::CommandExt;
    let fs = l.fs;
    let srcs: Vec<CString> = fs
        .binds
        .iter()
        .map(|b| cstring(&b.src))
        .collect::<Result<_>>()?;
    let dsts: Vec<(CString, bool)> = fs
        .binds
        .iter()
        .map(|b| Ok((cstring(&b.dst)?, b.read_only)))
        .collect::<Result<_>>()?;
    let steps: Vec<CStep> = fs
        .steps
        .iter()
        .map(|s| {
            Ok(match s {
                Step::Mkdir(p) => CStep::Mkdir(cstring(p)?),
                Step::Touch(p) => CStep::Touch(cstring(p)?),
                Step::Symlink(t, p) => CStep::Symlink(cstring(t)?, cstring(p)?),
                Step::Bind(i) => CStep::Bind(*i),
            })
        })
        .collect::<Result<_>>()?;
    let mut trees: Vec<libc::c_int> = vec![-1; srcs.len()];
    let root = fs.root.as_ref().map(cstring).transpose()?;
    let (proc_dir, sys_dir) = match &fs.root {
        Some(r) if fs.proc_and_sys => (
            Some(cstring(r.join("proc"))?),
            Some(cstring(r.join("sys"))?),
        ),
        _ => (None, None),
    };
    let netns = l
        .netns
        .map(|p| {
            std::fs::File::open(p)
                .with_context(|| format!("failed to open network namespace {}", p.display()))
        })
        .transpose()?;
    let netns_fd = netns.as_ref().map(|f| f.as_raw_fd());
    let cgroup_fd = l.cgroup_procs.map(|f| f.as_raw_fd());
    let hostname = l.hostname.map(cstring).transpose()?;
    let cwd = fs.workdir.as_ref().map(cstring).transpose()?;
    let candidates: Vec<CString> = match l.exec {
        Exec::Image => Vec::new(),
        Exec::Search(c) => c.iter().map(cstring).collect::<Result<_>>()?,
    };
    let argv_c: Vec<CString> = l.argv.iter().map(cstring).collect::<Result<_>>()?;
    let env_c: Vec<CString> = l
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect::<Result<_>>()?;
    let (argv_p, env_p) = (cptrs(&argv_c), cptrs(&env_c));
    let exe_fd = l.binary.file.as_raw_fd();
    let by_fd = matches!(l.exec, Exec::Image);
    let (slash, dot, empty) = (CString::new("/")?, CString::new(".")?, CString::new("")?);
    let (tmpfs, proc_fs, sysfs) = (
        CString::new("tmpfs")?,
        CString::new("proc")?,
        CString::new("sysfs")?,
    );
    let mode = CString::new("mode=755")?;
    if let Some(d) = l.log.parent() {
        std::fs::create_dir_all(d)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(l.log)?;
    let err = out.try_clone()?;
    // std's own exec is never reached: the closure below replaces the process image itself.
    let mut cmd = std::process::Command::new(&l.binary.path);
    cmd.env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: only async-signal-safe syscalls on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = (&argv_c, &env_c);
            let check = |r: libc::c_int| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            libc::setsid();
            // Into the pod's cgroup before anything else runs (`0`: the writing process).
            if let Some(fd) = cgroup_fd
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(std::io::Error::last_os_error());
            }
            // Every source is cloned while the node's mounts are all there is, then attached.
            for (src, tree) in srcs.iter().zip(trees.iter_mut()) {
                let fd = libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    src.as_ptr(),
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
                );
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                *tree = fd as libc::c_int;
            }
            if let Some(fd) = netns_fd {
                check(libc::setns(fd, libc::CLONE_NEWNET))?;
            }
            let uts = if hostname.is_some() {
                libc::CLONE_NEWUTS
            } else {
                0
            };
            check(libc::unshare(libc::CLONE_NEWNS | uts))?;
            if let Some(h) = &hostname {
                check(libc::sethostname(h.as_ptr(), h.as_bytes().len()))?;
            }
            check(libc::mount(
                std::ptr::null(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            if let Some(r) = &root {
                check(libc::mount(
                    tmpfs.as_ptr(),
                    r.as_ptr(),
                    tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    mode.as_ptr().cast(),
                ))?;
            }
            for step in &steps {
                match step {
                    CStep::Mkdir(p) => {
                        if libc::mkdir(p.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    CStep::Touch(p) => {
                        let fd = libc::open(
                            p.as_ptr(),
                            libc::O_CREAT | libc::O_RDONLY | libc::O_CLOEXEC,
                            0o644,
                        );
                        if fd < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        libc::close(fd);
                    }
                    CStep::Symlink(t, p) => {
                        if libc::symlink(t.as_ptr(), p.as_ptr()) != 0 && errno() != libc::EEXIST {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    CStep::Bind(i) => {
                        let (dst, ro) = &dsts[*i];
                        let r = libc::syscall(
                            libc::SYS_move_mount,
                            trees[*i],
                            empty.as_ptr(),
                            libc::AT_FDCWD,
                            dst.as_ptr(),
                            MOVE_MOUNT_F_EMPTY_PATH,
                        );
                        if r != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        if *ro {
                            check(libc::mount(
                                std::ptr::null(),
                                dst.as_ptr(),
                                std::ptr::null(),
                                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                                std::ptr::null(),
                            ))?;
                        }
                    }
                }
            }
            if let (Some(p), Some(s)) = (&proc_dir, &sys_dir) {
                let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                check(libc::mount(
                    proc_fs.as_ptr(),
                    p.as_ptr(),
                    proc_fs.as_ptr(),
                    flags,
                    std::ptr::null(),
                ))?;
                // sysfs shows the network namespace of whoever mounts it: the pod's.
                check(libc::mount(
                    sysfs.as_ptr(),
                    s.as_ptr(),
                    sysfs.as_ptr(),
                    flags | libc::MS_RDONLY,
                    std::ptr::null(),
                ))?;
            }
            if let Some(r) = &root {
                check(libc::chdir(r.as_ptr()))?;
                check(
                    libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as libc::c_int,
                )?;
                check(libc::umount2(dot.as_ptr(), libc::MNT_DETACH))?;
                check(libc::chdir(slash.as_ptr()))?;
            }
            if let Some(cwd) = &cwd {
                check(libc::chdir(cwd.as_ptr()))?;
            }
            if by_fd {
                libc::fexecve(exe_fd, argv_p.as_ptr(), env_p.as_ptr());
                return Err(std::io::Error::last_os_error());
            }
            let mut last = libc::ENOENT;
            for c in &candidates {
                libc::execve(c.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
                last = errno();
                if last != libc::ENOENT && last != libc::ENOTDIR {
                    break;
                }
            }
            Err(std::io::Error::from_raw_os_error(last))
        });
    }
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "failed to start {}",
                l.argv.first().map(String::as_str).unwrap_or_default()
            )
        })?;
    drop(netns);
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::super::image::{DEFAULT_PATH, image_spec, plan_exec};
    use super::super::rootfs::{
        Bind, HostEntry, SYSTEM_DIRS, SandboxFs, plan_host_fs, plan_sandbox_fs,
    };
    use super::*;

    fn is_root() -> bool {
        // SAFETY: plain syscall.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("skipped: needs root (mount namespaces)");
        }
        root
    }

    /// `spawn`, retried while the binary a test just copied is still open for writing in a child
    /// that another test forked meanwhile (ETXTBSY).
    fn spawn_in_test(l: &Launch<'_>) -> Result<tokio::process::Child> {
        for _ in 0..20 {
            match spawn(l) {
                Err(e) if format!("{e:#}").contains("Text file busy") => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                other => return other,
            }
        }
        spawn(l)
    }

    fn run(l: &Launch<'_>) -> Option<i32> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { spawn_in_test(l).unwrap().wait().await.unwrap().code() })
    }

    #[test]
    fn bin_dirs_find_only_plain_names_and_regular_files() {
        let d = std::env::temp_dir().join(format!("weft-bindirs-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("tool"), b"x").unwrap();
        let dirs = BinDirs::open(&[d.join("missing"), d.clone()]);
        let (path, _) = dirs.find("tool").expect("found in the second dir");
        assert_eq!(path, d.join("tool"));
        assert!(dirs.find("sub").is_none(), "a directory is no binary");
        assert!(dirs.find("../tool").is_none());
        assert!(dirs.find("nope").is_none());
        let err = open_image_binary(&dirs, "example.com/nope:1").unwrap_err();
        assert!(format!("{err:#}").contains("\"nope\""), "{err:#}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The case of issue 7: the image's binary and a volume's source live under a directory that the
    /// container's first volume hides (an emptyDir on /tmp over a checkout in /tmp).
    #[test]
    fn a_host_container_runs_a_binary_and_binds_a_source_that_a_volume_hides() {
        if !is_root() {
            return;
        }
        let base = std::env::temp_dir().join(format!("weft-spawn {}", std::process::id()));
        let (hidden, empty, target) = (base.join("checkout"), base.join("empty"), base.join("t"));
        for d in [hidden.join("data"), empty.clone(), target.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::copy("/bin/sh", hidden.join("sh")).unwrap();
        std::fs::write(hidden.join("data/marker"), b"seen").unwrap();
        let dirs = BinDirs::open(std::slice::from_ref(&hidden));
        let bin = open_image_binary(&dirs, "example.com/sh:1").unwrap();
        let volumes = [
            Bind {
                src: empty.clone(),
                dst: hidden.clone(),
                read_only: false,
                file: false,
            },
            Bind {
                src: hidden.join("data"),
                dst: target.clone(),
                read_only: true,
                file: false,
            },
        ];
        let script = format!(
            "test ! -e '{}' || exit 10; test \"$(cat '{}/marker')\" = seen || exit 11; test \"$GREETING\" = hi || exit 12; exit 7",
            hidden.join("sh").display(),
            target.display()
        );
        let env: BTreeMap<String, String> = [("GREETING".to_string(), "hi".to_string())].into();
        let log = base.join("log");
        let code = run(&Launch {
            binary: &bin,
            exec: &Exec::Image,
            argv: &["sh".into(), "-c".into(), script],
            env: &env,
            fs: &plan_host_fs(&volumes, None),
            netns: None,
            hostname: None,
            log: &log,
            cgroup_procs: None,
        });
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(code, Some(7), "container output: {out}");
    }

    /// A sandboxed container: its own root with the image's binary at the image's path, a shell from
    /// the shared system dirs, the pod's files, a volume, the pod's host name, a writable /tmp.
    #[test]
    fn a_sandboxed_container_sees_the_image_layout() {
        if !is_root() {
            return;
        }
        let base = std::env::temp_dir().join(format!("weft-sandbox-{}", std::process::id()));
        let (bins, root, vol) = (base.join("bin"), base.join("root"), base.join("vol"));
        for d in [&bins, &root, &vol] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::copy("/bin/true", bins.join("agnhost")).unwrap();
        std::fs::write(vol.join("token"), b"t0k").unwrap();
        std::fs::write(base.join("hosts"), b"10.0.0.9 pod-a\n").unwrap();
        let dirs = BinDirs::open(std::slice::from_ref(&bins));
        let image = image_spec("registry.k8s.io/e2e-test-images/agnhost:2.56");
        let bin = open_image_binary(&dirs, "registry.k8s.io/e2e-test-images/agnhost:2.56").unwrap();
        let system: Vec<(&str, HostEntry)> = SYSTEM_DIRS
            .iter()
            .map(|d| {
                let p = Path::new(d);
                let e = match std::fs::read_link(p) {
                    Ok(t) => HostEntry::Symlink(t),
                    Err(_) if p.is_dir() => HostEntry::Dir,
                    Err(_) => HostEntry::Missing,
                };
                (*d, e)
            })
            .collect();
        let etc = [(base.join("hosts"), "/etc/hosts")];
        let volumes = [Bind {
            src: vol.clone(),
            dst: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount"),
            read_only: true,
            file: false,
        }];
        let fs = plan_sandbox_fs(&SandboxFs {
            root: &root,
            system: &system,
            image_binary: Some((bin.fd_path(), image.path.as_str())),
            etc_files: &etc,
            volumes: &volumes,
            workdir: Some("/work"),
        });
        let script = [
            "test -x /agnhost || exit 10",
            "test \"$(cat /proc/sys/kernel/hostname)\" = pod-a || exit 11",
            "grep -q pod-a /etc/hosts || exit 12",
            "test \"$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)\" = t0k || exit 13",
            "echo x > /tmp/x || exit 14",
            "test \"$(pwd)\" = /work || exit 15",
            &format!("test ! -e '{}' || exit 16", base.display()),
            "/agnhost || exit 17",
            "exit 7",
        ]
        .join("; ");
        let argv = vec!["/bin/sh".to_string(), "-c".into(), script];
        let exec = plan_exec(&image, &argv[0], DEFAULT_PATH);
        let env: BTreeMap<String, String> = [("PATH".to_string(), DEFAULT_PATH.to_string())].into();
        let log = base.join("log");
        let code = run(&Launch {
            binary: &bin,
            exec: &exec,
            argv: &argv,
            env: &env,
            fs: &fs,
            netns: None,
            hostname: Some("pod-a"),
            log: &log,
            cgroup_procs: None,
        });
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        let left = std::fs::read_dir(&root).unwrap().count();
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(code, Some(7), "container output: {out}");
        assert_eq!(left, 0, "nothing is created on the host under the root dir");
    }

    #[test]
    fn a_missing_program_fails_to_start_with_enoent() {
        if !is_root() {
            return;
        }
        let base = std::env::temp_dir().join(format!("weft-enoent-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::copy("/bin/true", base.join("agnhost")).unwrap();
        let dirs = BinDirs::open(std::slice::from_ref(&base));
        let bin = open_image_binary(&dirs, "agnhost").unwrap();
        let env = BTreeMap::new();
        let exec = Exec::Search(vec!["/nonexistent/prog".into()]);
        let err = spawn_in_test(&Launch {
            binary: &bin,
            exec: &exec,
            argv: &["prog".into()],
            env: &env,
            fs: &plan_host_fs(&[], None),
            netns: None,
            hostname: None,
            log: &base.join("log"),
            cgroup_procs: None,
        })
        .unwrap_err();
        std::fs::remove_dir_all(&base).unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("failed to start prog") && msg.contains("No such file"),
            "{msg}"
        );
    }
}
