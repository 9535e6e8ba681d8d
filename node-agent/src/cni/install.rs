//! Putting weft's CNI plugin where the container runtime finds it: the `weft-cni` binary that
//! ships beside `weft-agent` is copied into `cni.binDir` as `weft` (the conflist's `type`), as
//! flannel's and Calico's install steps copy theirs. Where it cannot be read, the agent installs
//! itself: `weft-agent` run with `CNI_COMMAND` set is the same plugin (as Calico's one binary is
//! both `calico` and `calico-ipam`).
//!
//! Invariants: the runtime never sees a half-written plugin (temp file + rename, see
//! [`crate::files`]), and never a conflist naming a plugin that is not there (the agent installs
//! before it writes the conflist); a plugin that is already right is not rewritten; the plugin stays
//! when weft is uninstalled, because the pods it wired still need it for their DEL.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::files::copy_atomic_mode;

/// The plugin's `type` in the conflist, and its file name in the CNI bin dir.
pub const PLUGIN_TYPE: &str = "weft";
/// The binary's name where it ships, beside `weft-agent`.
pub const PLUGIN_BINARY: &str = "weft-cni";
/// Mode of the installed plugin.
pub const PLUGIN_MODE: u32 = 0o755;

/// The running agent binary, which is the plugin too when run with `CNI_COMMAND` set.
pub const SELF_EXE: &str = "/proc/self/exe";

/// What to install: `explicit` if given; else `weft-cni` beside the running agent when it can be
/// read (the image ships both; the small binary starts faster); else the agent binary itself,
/// through `/proc/self/exe`, which stays readable when the agent's directory is hidden from it
/// (a bin dir under a path the pod's volumes cover).
pub fn plugin_source(explicit: Option<&Path>) -> PathBuf {
    let exe = std::env::current_exe().ok();
    plugin_source_beside(explicit, exe.as_deref().and_then(Path::parent))
}

/// [`plugin_source`] with the agent's directory given.
fn plugin_source_beside(explicit: Option<&Path>, agent_dir: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    agent_dir
        .map(|d| d.join(PLUGIN_BINARY))
        .filter(|p| fs::File::open(p).is_ok())
        .unwrap_or_else(|| PathBuf::from(SELF_EXE))
}

/// How thoroughly [`sync_plugin`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// Byte for byte (at start-up and after a configuration change: an upgrade of the same size).
    Contents,
    /// By size only (every other sync: cheap, catches a deleted or truncated plugin).
    Size,
}

/// Installs `source` as `<bin_dir>/weft` unless it is already there. Returns whether it wrote.
pub fn sync_plugin(source: &Path, bin_dir: &Path, compare: Compare) -> Result<bool, Error> {
    let target = bin_dir.join(PLUGIN_TYPE);
    let missing = |source_err| Error::PluginMissing {
        path: source.to_path_buf(),
        source: source_err,
    };
    let want_len = fs::metadata(source).map_err(missing)?.len();
    let have_len = match fs::metadata(&target) {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(source) => {
            return Err(Error::ReadFile {
                path: target,
                source,
            });
        }
    };
    if have_len == Some(want_len) && compare == Compare::Size {
        return Ok(false);
    }
    if have_len == Some(want_len) {
        match same_contents(source, &target) {
            Ok(true) => return Ok(false),
            Ok(false) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::ReadFile {
                    path: target,
                    source,
                });
            }
        }
    }
    copy_atomic_mode(source, &target, PLUGIN_MODE)?;
    Ok(true)
}

/// Whether the two files hold the same bytes, compared a block at a time (the agent binary, which
/// may be the source, is tens of MiB: reading it whole would be the agent's peak memory).
fn same_contents(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let (na, nb) = (read_block(&mut fa, &mut ba)?, read_block(&mut fb, &mut bb)?);
        if ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// Fills `buf` as far as the file goes; the count read (0 at the end).
fn read_block(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-install-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch");
        dir
    }

    #[test]
    fn installs_once_and_replaces_a_changed_plugin() {
        let dir = scratch("sync");
        let src = dir.join("weft-cni");
        let bin = dir.join("bin");
        fs::write(&src, b"v1 plugin").expect("src");
        assert!(sync_plugin(&src, &bin, Compare::Size).expect("install"));
        let target = bin.join(PLUGIN_TYPE);
        assert_eq!(fs::read(&target).expect("read"), b"v1 plugin");
        let mode = fs::metadata(&target).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, PLUGIN_MODE);
        assert!(!sync_plugin(&src, &bin, Compare::Contents).expect("same"));

        // An upgrade of the same size: only a contents comparison sees it.
        fs::write(&src, b"v2 plugin").expect("src");
        assert!(!sync_plugin(&src, &bin, Compare::Size).expect("size only"));
        assert!(sync_plugin(&src, &bin, Compare::Contents).expect("contents"));
        assert_eq!(fs::read(&target).expect("read"), b"v2 plugin");

        // Larger than a comparison block, differing only in the last byte.
        let mut big = vec![7u8; 200_000];
        fs::write(&src, &big).expect("src");
        assert!(sync_plugin(&src, &bin, Compare::Size).expect("bigger"));
        assert!(!sync_plugin(&src, &bin, Compare::Contents).expect("same"));
        big[199_999] = 8;
        fs::write(&src, &big).expect("src");
        assert!(sync_plugin(&src, &bin, Compare::Contents).expect("last byte"));
        assert_eq!(fs::read(&target).expect("read"), big);

        // Deleted by hand: back on the next cheap check.
        fs::remove_file(&target).expect("rm");
        assert!(sync_plugin(&src, &bin, Compare::Size).expect("again"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_source_is_the_explicit_one_else_a_readable_sibling_else_the_agent_itself() {
        let dir = scratch("source");
        let explicit = dir.join("mine");
        assert_eq!(plugin_source_beside(Some(&explicit), Some(&dir)), explicit);
        // No weft-cni beside the agent (or its directory hidden): the agent installs itself.
        assert_eq!(plugin_source_beside(None, Some(&dir)), Path::new(SELF_EXE));
        assert_eq!(plugin_source_beside(None, None), Path::new(SELF_EXE));
        fs::write(dir.join(PLUGIN_BINARY), b"plugin").expect("sibling");
        assert_eq!(
            plugin_source_beside(None, Some(&dir)),
            dir.join(PLUGIN_BINARY)
        );
        assert!(fs::metadata(SELF_EXE).is_ok_and(|m| m.len() > 0));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_source_names_its_path() {
        let dir = scratch("missing");
        let e = sync_plugin(&dir.join("weft-cni"), &dir, Compare::Size).expect_err("missing");
        assert!(e.to_string().contains("weft-cni"), "{e}");
        assert!(!dir.join(PLUGIN_TYPE).exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
