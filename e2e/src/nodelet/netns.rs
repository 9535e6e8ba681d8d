//! Pod network namespaces, named by a file under a directory (`/run/netns/cni-<uid>`), made and
//! removed in-process with iproute2's semantics, as containerd's `pkg/netns` does, instead of
//! spawning `ip netns add`, `ip -n … link set lo up` and `ip netns del` for every pod.
//!
//! ```text
//!  create(dir, name)      (a blocking call: run it off the async runtime)
//!    mkdir dir 0755 ── flock(dir) ── mount --make-rshared dir
//!                                    (EINVAL: not a mount point → bind dir onto itself, once, retry)
//!    open dir/name O_CREAT|O_EXCL, mode 0       ← the name is taken here, or AlreadyExists
//!    fresh OS thread ─ unshare(CLONE_NEWNET)
//!                    ─ mount --bind /proc/<pid>/task/<tid>/ns/net dir/name
//!                    ─ lo up: SIOCSIFFLAGS on a socket made in that thread
//!                    ─ exits: the namespace lives on through the bind mount
//!  delete(dir, name)
//!    umount2(dir/name, MNT_DETACH) ── unlink dir/name     (either fine if already gone)
//! ```
//!
//! `dir` is a shared mount so that unmounting the file here also unmounts it in every mount
//! namespace copied from this one (a container's), and the namespace is freed at once.
//!
//! Invariants: when [`create`] returns Ok, `dir/name` is an nsfs bind mount of a new network
//! namespace whose `lo` is up; when it returns an error, it has left no file and no mount behind,
//! except a file that already existed, which it never touches. Only the thread made for the
//! purpose ever enters the new namespace: never a tokio worker nor the main thread, whose namespace
//! would otherwise change under everything else running on it.

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{getpid, gettid, mkdir, unlink};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where pods' network namespaces are named, as `ip netns` and CNI runtimes name them.
pub const NETNS_DIR: &str = "/run/netns";

/// The longest file name (NAME_MAX), the bound `ip netns` puts on a name.
const NAME_MAX: usize = 255;

/// Why a network namespace could not be created or removed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "invalid network namespace name {0:?}: it must be a file name (1 to 255 bytes, no '/', not '.' or '..')"
    )]
    InvalidName(String),
    #[error("failed to create the network namespace directory {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("failed to make {} a shared mount point (mount --make-rshared)", .path.display())]
    MakeShared {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("network namespace {} already exists", .path.display())]
    AlreadyExists { path: PathBuf },
    #[error("failed to create the network namespace file {}", .path.display())]
    CreateFile {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("failed to start a thread to create network namespace {}", .path.display())]
    Thread {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread creating network namespace {} panicked", .path.display())]
    ThreadPanicked { path: PathBuf },
    #[error("failed to create a new network namespace for {} (unshare)", .path.display())]
    Unshare {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("failed to bind the new network namespace onto {}", .path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("failed to set up network namespace {} (bring lo up)", .path.display())]
    Setup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to remove the network namespace file {}", .path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Moves the calling thread into a mount namespace of its own whose mounts do not propagate back
/// (`unshare(CLONE_NEWNS)`, then `/` made private recursively), as the nodelet does for its node
/// and the tests and the cost example do for their scratch netns dirs.
pub fn private_mount_namespace() -> std::io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    Ok(())
}

/// Checks a namespace name as `ip netns` does: a single, non-empty path component.
pub fn validate_name(name: &str) -> Result<(), NetnsError> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains('/') || name == "." || name == ".."
    {
        return Err(NetnsError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// The file naming namespace `name` under `dir`.
pub fn netns_path(dir: &Path, name: &str) -> Result<PathBuf, NetnsError> {
    validate_name(name)?;
    Ok(dir.join(name))
}

/// Creates network namespace `name` under `dir` with `lo` up (`ip netns add name` followed by
/// `ip -n name link set lo up`) and returns its path. Blocks (mounts, a thread join).
pub fn create(dir: &Path, name: &str) -> Result<PathBuf, NetnsError> {
    create_with(dir, name, bring_lo_up)
}

/// [`create`], with `setup` run inside the new namespace, on the thread that made it, once the
/// namespace is bound to its file; an error from `setup` undoes everything.
fn create_with(
    dir: &Path,
    name: &str,
    setup: fn() -> std::io::Result<()>,
) -> Result<PathBuf, NetnsError> {
    let path = netns_path(dir, name)?;
    prepare_dir(dir)?;
    match open(
        &path,
        OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => drop(fd),
        Err(Errno::EEXIST) => return Err(NetnsError::AlreadyExists { path }),
        Err(source) => return Err(NetnsError::CreateFile { path, source }),
    }
    // From here on the file is ours: any failure removes it (and the mount, if made).
    let target = path.clone();
    let made = std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || bind_new_netns(&target, setup))
        .map_err(|source| NetnsError::Thread {
            path: path.clone(),
            source,
        })
        .and_then(|t| {
            t.join()
                .unwrap_or_else(|_| Err(NetnsError::ThreadPanicked { path: path.clone() }))
        });
    match made {
        Ok(()) => Ok(path),
        Err(e) => {
            if let Err(cleanup) = delete_path(&path) {
                tracing::warn!(error = %format!("{cleanup:#}"), "after a failed netns creation");
            }
            Err(e)
        }
    }
}

/// Makes `dir` exist and be a shared mount point, as `ip netns add` does each time, under an
/// exclusive lock on the directory: concurrent creators would otherwise bind it onto itself
/// several times over (Debian bug 949235).
fn prepare_dir(dir: &Path) -> Result<(), NetnsError> {
    match mkdir(dir, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(source) => {
            return Err(NetnsError::CreateDir {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    let fd = open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| NetnsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    // `ip` goes on without the lock if it cannot take it; so do we.
    let _lock = Flock::lock(fd, FlockArg::LockExclusive).ok();
    let mut made_mount_point = false;
    loop {
        match mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            // Not a mount point yet: make it one, once.
            Err(Errno::EINVAL) if !made_mount_point => {
                mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|source| NetnsError::MakeShared {
                    path: dir.to_path_buf(),
                    source,
                })?;
                made_mount_point = true;
            }
            Err(source) => {
                return Err(NetnsError::MakeShared {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Runs on a thread of its own, which it leaves in the new namespace: the thread ends right after.
fn bind_new_netns(path: &Path, setup: fn() -> std::io::Result<()>) -> Result<(), NetnsError> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Unshare {
        path: path.to_path_buf(),
        source,
    })?;
    // This thread's namespace, not /proc/self/ns/net: that is the main thread's.
    let own = format!("/proc/{}/task/{}/ns/net", getpid(), gettid());
    mount(
        Some(own.as_str()),
        path,
        Some("none"),
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| NetnsError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    setup().map_err(|source| NetnsError::Setup {
        path: path.to_path_buf(),
        source,
    })
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace (`ip link set lo up`); the kernel
/// then gives it 127.0.0.1/8 and ::1/128.
fn bring_lo_up() -> std::io::Result<()> {
    // SAFETY: plain syscall; the descriptor is owned right after.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut ifr = lo_ifreq();
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of a properly sized ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and the flags of a properly sized ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// An `ifreq` naming `lo`, everything else zero.
fn lo_ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain data for which all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    ifr
}

/// Removes network namespace `name` under `dir` (`ip netns del name`); already gone is fine.
pub fn delete(dir: &Path, name: &str) -> Result<(), NetnsError> {
    delete_path(&netns_path(dir, name)?)
}

fn delete_path(path: &Path) -> Result<(), NetnsError> {
    // Not mounted (EINVAL) or not there (ENOENT) is what `ip` ignores too.
    let _ = umount2(path, MntFlags::MNT_DETACH);
    match unlink(path) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(source) => Err(NetnsError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    #[test]
    fn names_are_single_path_components() {
        for ok in [
            "cni-0b5c9e1e-3d1f-4a57-9a0e-2f1a0c7d9b10",
            "a",
            ".a",
            "a.b",
            &"x".repeat(255),
        ] {
            assert!(validate_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".", "..", "a/b", "/a", "a/", &"x".repeat(256)] {
            let err = validate_name(bad).unwrap_err();
            assert!(matches!(err, NetnsError::InvalidName(_)), "{bad:?}: {err}");
        }
        assert_eq!(
            netns_path(Path::new("/run/netns"), "cni-1").unwrap(),
            PathBuf::from("/run/netns/cni-1")
        );
        assert!(netns_path(Path::new("/run/netns"), "../etc").is_err());
        assert!(delete(Path::new("/run/netns"), "..").is_err());
    }

    #[test]
    fn lo_ifreq_names_lo_and_nothing_else() {
        let ifr = lo_ifreq();
        assert_eq!(ifr.ifr_name[..3], [b'l' as libc::c_char, b'o' as _, 0]);
        assert!(ifr.ifr_name[3..].iter().all(|&c| c == 0));
    }

    fn is_root() -> bool {
        // SAFETY: plain syscall.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("skipped: needs root (network and mount namespaces)");
        }
        root
    }

    /// Runs `f` on a thread with a private mount namespace (everything it mounts vanishes with the
    /// thread, also when it panics) in a fresh directory of its own, removed afterwards. Its name
    /// has a space, which mountinfo escapes.
    fn in_scratch(test: &str, f: impl FnOnce(&Path) + Send + 'static) {
        let base = std::env::temp_dir().join(format!("weft-netns {test}-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let dir = base.join("netns");
        let outcome = std::thread::spawn(move || {
            private_mount_namespace().expect("private mount namespace");
            f(&dir)
        })
        .join();
        let _ = std::fs::remove_dir_all(&base);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Runs `f` on a new thread inside the namespace at `path`, as `ip netns exec` enters it.
    fn inside<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
        crate::netns::in_netns(path, move || Ok(f())).expect("enter the namespace")
    }

    /// Links of the calling thread's namespace: name → flags.
    fn links() -> Vec<(String, libc::c_short)> {
        // SAFETY: if_nameindex returns an array ended by a zero entry, freed below.
        let list = unsafe { libc::if_nameindex() };
        assert!(!list.is_null(), "if_nameindex failed");
        let mut names = Vec::new();
        let mut p = list;
        // SAFETY: walking the array up to its terminator.
        unsafe {
            while (*p).if_index != 0 {
                names.push(
                    std::ffi::CStr::from_ptr((*p).if_name)
                        .to_string_lossy()
                        .into_owned(),
                );
                p = p.add(1);
            }
            libc::if_freenameindex(list);
        }
        names
            .into_iter()
            .map(|n| {
                let flags = ifreq_of(&n, libc::SIOCGIFFLAGS);
                // SAFETY: SIOCGIFFLAGS filled the flags member.
                (n, unsafe { flags.ifr_ifru.ifru_flags })
            })
            .collect()
    }

    /// The ifreq an SIOCGIF* ioctl returns for link `name`.
    fn ifreq_of(name: &str, request: libc::c_ulong) -> libc::ifreq {
        let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        // SAFETY: zeroed ifreq is valid; the name fits (asserted) and the ioctl fills the union.
        unsafe {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            assert!(name.len() < libc::IFNAMSIZ);
            for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
                *d = s as libc::c_char;
            }
            let rc = libc::ioctl(sock.as_raw_fd(), request, &mut ifr);
            assert_eq!(
                rc,
                0,
                "ioctl on {name}: {}",
                std::io::Error::last_os_error()
            );
            ifr
        }
    }

    fn lo_ipv4() -> Ipv4Addr {
        let ifr = ifreq_of("lo", libc::SIOCGIFADDR);
        // SAFETY: SIOCGIFADDR fills ifru_addr with a sockaddr_in.
        let sin: libc::sockaddr_in = unsafe { std::mem::transmute_copy(&ifr.ifr_ifru.ifru_addr) };
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))
    }

    /// A TCP round trip over 127.0.0.1 in the calling thread's namespace.
    fn loopback_works() -> std::io::Result<()> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let mut c = TcpStream::connect(l.local_addr()?)?;
        let (mut s, _) = l.accept()?;
        c.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }

    fn is_nsfs(path: &Path) -> bool {
        nix::sys::statfs::statfs(path)
            .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
            .unwrap_or(false)
    }

    /// This thread's mount points (mountinfo's field 5, its octal escapes decoded), each with
    /// whether it is shared (an optional field `shared:N`).
    fn mount_points() -> Vec<(PathBuf, bool)> {
        let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        info.lines()
            .filter_map(|l| {
                let fields: Vec<&str> = l.split(' ').collect();
                let optional = fields.get(6..)?.iter().take_while(|f| **f != "-");
                let shared = optional.clone().any(|f| f.starts_with("shared:"));
                Some((PathBuf::from(unescape(fields.get(4)?)), shared))
            })
            .collect()
    }

    /// Decodes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
    fn unescape(field: &str) -> String {
        let mut out = Vec::new();
        let b = field.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let octal = b
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok());
            match (b[i], octal) {
                (b'\\', Some(c)) => {
                    out.push(c);
                    i += 4;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Mount points at or under `dir`, from this thread's mount namespace.
    fn mounts_under(dir: &Path) -> Vec<PathBuf> {
        mount_points()
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| m.starts_with(dir))
            .collect()
    }

    #[test]
    fn a_created_namespace_is_entered_with_lo_up_and_nothing_else() {
        if !is_root() {
            return;
        }
        in_scratch("create", |dir| {
            let path = create(dir, "pod-a").unwrap();
            assert_eq!(path, dir.join("pod-a"));
            assert!(is_nsfs(&path), "{} is an nsfs mount", path.display());
            let ours = crate::sys::ns_id(Path::new("/proc/thread-self/ns/net")).unwrap();
            assert_ne!(
                crate::sys::ns_id(&path),
                Some(ours),
                "a new namespace, not ours"
            );
            // What a bare new namespace has (lo, and on some kernels fallback tunnels), down.
            let bare: BTreeSet<String> = std::thread::spawn(|| {
                unshare(CloneFlags::CLONE_NEWNET).unwrap();
                links().into_iter().map(|(n, _)| n).collect()
            })
            .join()
            .unwrap();
            let (found, addr, lo_ok) = inside(&path, || {
                (
                    links(),
                    lo_ipv4(),
                    loopback_works().map_err(|e| e.to_string()),
                )
            });
            let names: BTreeSet<String> = found.iter().map(|(n, _)| n.clone()).collect();
            assert_eq!(names, bare, "no links besides those of any new namespace");
            for (n, flags) in &found {
                let up = flags & libc::IFF_UP as libc::c_short != 0;
                assert_eq!(up, n == "lo", "{n} up: {up}");
            }
            assert_eq!(addr, Ipv4Addr::LOCALHOST);
            lo_ok.unwrap();
            // The directory is one shared mount point, the file a mount below it.
            let mounts = mounts_under(dir);
            assert_eq!(
                mounts.iter().filter(|m| m.as_path() == dir).count(),
                1,
                "{mounts:?}"
            );
            assert!(mounts.contains(&path), "{mounts:?}");
            let shared = mount_points()
                .into_iter()
                .any(|(m, shared)| m == dir && shared);
            assert!(shared, "{} is a shared mount", dir.display());

            delete(dir, "pod-a").unwrap();
            assert!(!path.exists());
            assert_eq!(mounts_under(dir), vec![dir.to_path_buf()]);
            delete(dir, "pod-a").expect("deleting twice is fine");
        });
    }

    #[test]
    fn creating_a_name_twice_fails_and_leaves_the_first() {
        if !is_root() {
            return;
        }
        in_scratch("twice", |dir| {
            let path = create(dir, "pod-b").unwrap();
            let id = crate::sys::ns_id(&path);
            let err = create(dir, "pod-b").unwrap_err();
            assert!(matches!(err, NetnsError::AlreadyExists { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!("network namespace {} already exists", path.display())
            );
            assert!(is_nsfs(&path), "the first one is untouched");
            assert_eq!(crate::sys::ns_id(&path), id);
            delete(dir, "pod-b").unwrap();
        });
    }

    #[test]
    fn a_failure_midway_leaves_no_file_and_no_mount() {
        if !is_root() {
            return;
        }
        in_scratch("midway", |dir| {
            // Fails after the namespace is bound to its file: the undo has a mount to remove.
            let err = create_with(dir, "pod-c", || Err(std::io::Error::other("no lo today")))
                .unwrap_err();
            assert!(matches!(err, NetnsError::Setup { .. }), "{err:?}");
            assert!(!dir.join("pod-c").exists());
            assert_eq!(mounts_under(dir), vec![dir.to_path_buf()]);
            // And the name is free again.
            create(dir, "pod-c").unwrap();
            delete(dir, "pod-c").unwrap();
            // A directory that cannot be made: nothing at all.
            let file = dir.join("plain-file");
            std::fs::write(&file, b"").unwrap();
            let err = create(&file, "pod-d").unwrap_err();
            assert!(matches!(err, NetnsError::CreateDir { .. }), "{err:?}");
            assert!(!file.join("pod-d").exists());
        });
    }

    #[test]
    fn concurrent_creations_share_one_mount_point() {
        if !is_root() {
            return;
        }
        in_scratch("concurrent", |dir| {
            let dir = dir.to_path_buf();
            // All at once on a directory that is no mount point yet: each finds it unshared.
            let start = std::sync::Arc::new(std::sync::Barrier::new(16));
            let threads: Vec<_> = (0..16)
                .map(|i| {
                    let (dir, start) = (dir.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        create(&dir, &format!("pod-{i}")).map(drop)
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
            let mounts = mounts_under(&dir);
            assert_eq!(
                mounts.iter().filter(|m| m.as_path() == dir).count(),
                1,
                "{mounts:?}"
            );
            let ids: BTreeSet<_> = (0..16)
                .map(|i| crate::sys::ns_id(&dir.join(format!("pod-{i}"))).unwrap())
                .collect();
            assert_eq!(ids.len(), 16, "16 distinct namespaces");
            for i in 0..16 {
                delete(&dir, &format!("pod-{i}")).unwrap();
            }
            assert_eq!(mounts_under(&dir), vec![dir.to_path_buf()]);
        });
    }
}
