//! Running code inside another network namespace from a multi-threaded program.
//!
//! `setns(CLONE_NEWNET)` changes only the calling thread, and a socket stays in the namespace it was
//! created in. So a fresh OS thread enters the namespace, creates sockets (or runs a whole
//! single-threaded runtime) and never returns to the pool: no thread of ours ever carries a foreign
//! namespace by accident.

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};
use std::fs::File;
use std::path::Path;

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_netns(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("failed to open netns {}", path.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("failed to enter netns {}", path.display()))?;
    Ok(())
}

/// Runs `f` on a new thread inside the network namespace at `path` and returns its result.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        enter_netns(&path)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread inside a network namespace panicked"))?
}
