//! Long-lived kernel handles, one per network namespace: the libnftables context of
//! [`super::libnft`] and the `NETLINK_NETFILTER` socket of the element writer
//! ([`super::apply_set_elements`]).
//!
//! Why keep them open: closing a `NETLINK_NETFILTER` socket after a transaction that deleted
//! anything (a rule, a chain, a set element) makes the kernel wait for an RCU grace period (its
//! `NETLINK_URELEASE` handler flushes nf_tables' destroy work), 10-20 ms on these machines, while
//! the transaction itself took well under a millisecond. An `nft` process pays that at its exit,
//! every time; a socket that stays open never does.
//!
//! Invariants:
//! - a handle is used only from a thread in the network namespace it was opened in (keyed by the
//!   namespace's device and inode, which stay unique while the handle's socket holds the
//!   namespace);
//! - a handle whose use failed is dropped, so the next use starts from a fresh one;
//! - one user at a time (the lock is held for the whole use), at most [`MAX_NAMESPACES`] handles.

use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use crate::Error;

/// Handles kept at once; more namespaces (privileged tests make many) close the least recent.
pub const MAX_NAMESPACES: usize = 4;

/// The identity of the calling thread's network namespace: (device, inode) of its nsfs file.
pub type NetnsId = (u64, u64);

/// The calling thread's network namespace.
pub fn current_netns() -> std::io::Result<NetnsId> {
    let m = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((m.dev(), m.ino()))
}

/// Handles of type `T` by network namespace, most recently used last.
pub struct PerNetns<T> {
    slots: Mutex<Vec<(NetnsId, T)>>,
}

impl<T> PerNetns<T> {
    /// No handle yet.
    pub const fn new() -> Self {
        PerNetns {
            slots: Mutex::new(Vec::new()),
        }
    }

    /// Runs `use_it` with the calling thread's namespace's handle, opened by `open` when there is
    /// none. The handle is kept when `use_it` succeeds and dropped when it fails.
    pub fn with<R>(
        &self,
        open: impl FnOnce() -> Result<T, Error>,
        use_it: impl FnOnce(&mut T) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let netns = current_netns().map_err(|source| Error::NftNetlinkIo {
            what: "identify the network namespace (/proc/thread-self/ns/net)".to_owned(),
            source,
        })?;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut handle = match slots.iter().position(|(id, _)| *id == netns) {
            Some(i) => slots.remove(i).1,
            None => open()?,
        };
        let out = use_it(&mut handle)?;
        slots.push((netns, handle));
        if slots.len() > MAX_NAMESPACES {
            slots.remove(0);
        }
        Ok(out)
    }
}

impl<T> Default for PerNetns<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(what: &str) -> Error {
        Error::NftNetlinkIo {
            what: what.to_owned(),
            source: std::io::Error::other("test"),
        }
    }

    #[test]
    fn a_handle_is_reused_in_its_namespace_and_dropped_after_a_failure() {
        let cache: PerNetns<u32> = PerNetns::new();
        let mut opened = 0;
        // Uses the namespace's handle, opening a new one (numbered by `opened`) when there is none.
        let use_counting = |cache: &PerNetns<u32>, opened: &mut u32| {
            cache
                .with(
                    || {
                        *opened += 1;
                        Ok(*opened)
                    },
                    |h| Ok(*h),
                )
                .expect("use")
        };
        for _ in 0..3 {
            use_counting(&cache, &mut opened);
        }
        assert_eq!(opened, 1, "one handle for three uses in one namespace");
        let err = cache
            .with(
                || unreachable!("the kept handle is used"),
                |_| -> Result<(), _> { Err(failing("use")) },
            )
            .expect_err("the use fails");
        assert!(err.to_string().contains("use"), "{err}");
        let h = use_counting(&cache, &mut opened);
        assert_eq!(
            (opened, h),
            (2, 2),
            "a failed handle is replaced by a fresh one"
        );
        let kept = cache.with(|| Err(failing("open")), |_: &mut u32| Ok(()));
        assert!(kept.is_ok(), "the kept handle is used, open is not called");
    }
}
