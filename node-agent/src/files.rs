//! Writing the files other programs read (subnet.env, the conflist, the VTEP state) atomically.
//!
//! Invariant: a reader (a container runtime loading `/etc/cni/net.d`, flannel's CNI plugin reading
//! subnet.env) sees either the old or the new complete file, never a partial one: the bytes go to a
//! temporary file in the same directory (same filesystem, so `rename` is atomic), which is fsynced,
//! given its final mode, renamed over the target, and then the directory is fsynced so the rename
//! survives a crash. A file whose content is already right is not touched (no mtime churn, no
//! inotify events for runtimes). Files are never deleted here: an agent restart keeps serving pods.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::Error;

/// Mode of the files the agent writes (world-readable, like flannel's and the runtimes' configs).
pub const FILE_MODE: u32 = 0o644;

/// Writes `contents` to `path` unless it already holds exactly that. Returns whether it wrote.
pub fn sync_file(path: &Path, contents: &[u8]) -> Result<bool, Error> {
    match fs::read(path) {
        Ok(current) if current == contents => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::ReadFile {
                path: path.to_owned(),
                source,
            });
        }
    }
    write_atomic(path, contents)?;
    Ok(true)
}

/// Reads `path`, `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::ReadFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces `path` with `contents` atomically (temp file + fsync + rename + directory fsync).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), Error> {
    write_atomic_mode(path, contents, FILE_MODE)
}

/// [`write_atomic`] with the file's final mode (0755 for a program).
pub fn write_atomic_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    replace_atomic(path, mode, |file| file.write_all(contents))
}

/// Replaces `path` with a copy of the file `source`, streamed (a program of tens of MiB is never
/// held in memory), atomically as [`write_atomic`].
pub fn copy_atomic_mode(source: &Path, path: &Path, mode: u32) -> Result<(), Error> {
    replace_atomic(path, mode, |file| {
        std::io::copy(&mut File::open(source)?, file).map(drop)
    })
}

/// The temp file + fsync + rename + directory fsync under [`write_atomic_mode`] and
/// [`copy_atomic_mode`]; `fill` writes the new contents.
fn replace_atomic(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), Error> {
    let err = |source| Error::WriteFile {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| err(std::io::Error::new(ErrorKind::InvalidInput, "no file name")))?;
    fs::create_dir_all(dir).map_err(err)?;
    // A dot name is skipped by runtimes scanning a CNI directory for *.conf/*.conflist.
    let tmp = dir.join(format!(
        ".{}.weft-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        fill(&mut file)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("weft-agent-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn writes_atomically_and_only_on_change() {
        let dir = scratch("files");
        let path = dir.join("sub").join("10-weft.conflist");
        assert!(sync_file(&path, b"one").expect("write"));
        assert_eq!(fs::read(&path).expect("read"), b"one");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
        assert!(!sync_file(&path, b"one").expect("unchanged"));
        assert!(sync_file(&path, b"two").expect("rewrite"));
        assert_eq!(read_optional(&path).expect("read").as_deref(), Some("two"));
        let leftovers: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, ["10-weft.conflist"]);
        assert_eq!(read_optional(&dir.join("absent")).expect("absent"), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
