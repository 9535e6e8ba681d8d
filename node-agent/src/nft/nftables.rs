//! The real [`NftApplier`]: nftables of the Debian package `nftables`, its library in-process for
//! transactions and for listings of the small tables ([`super::LibNft`]), and its `nft` binary for
//! listings of the policy table and for everything where the library cannot be loaded; counters
//! are a native netlink dump (`super::read_counters`).
//!
//! A script is parsed whole, turned into one netlink batch and committed as one kernel
//! transaction; when any command of the batch fails, nft reports it and the kernel aborts the batch.
//! Both ways work in the network namespace of the calling thread, which is how the privileged
//! tests and the benchmark point them at a namespace of their own. Element changes of the policy
//! table ([`NftApplier::apply_elements`]) skip the process: they go to the kernel as one native
//! netlink batch (`super::netlink`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::{Counters, Family, LibNft, NFT_BINARY, NftApplier, TABLE_NAT, TABLE_POLICY, TABLE_RAW};
use crate::Error;

/// What nft prints (with `LC_ALL=C`) when the table to list does not exist (ENOENT).
const NO_SUCH_TABLE: &str = "No such file or directory";

/// The largest script run in-process. Parsing costs about 80 bytes of heap per byte of script
/// (a 450 KB table replacement took the process from 15 to 51 MiB), which the agent would keep as
/// its peak and, fragmented, as its resident size; bigger scripts (full replacements of a policy
/// table, the new chains of a large policy change) run in an `nft` process, whose memory is its
/// own. The steps of a policy change are a few KB.
pub const IN_PROCESS_MAX_BYTES: usize = 16 * 1024;

/// Whether a table's listing is read in-process: the masquerade and untracked tables hold a few
/// rules per pod network, and the masquerade table one set element per node (about 8 KB of
/// listing with 500 nodes); every node sync reads both, and a process each would cost more than
/// the sync's netlink work. The policy table grows with pods and policies to megabytes; a listing
/// parsed in-process would leave its peak in the agent (see [`IN_PROCESS_MAX_BYTES`]), so an
/// `nft` process lists it.
fn listed_in_process(name: &str) -> bool {
    matches!(name, TABLE_NAT | TABLE_RAW)
}

/// Drives nftables: the library for transactions up to [`IN_PROCESS_MAX_BYTES`] when it loads,
/// the `nft` binary otherwise.
#[derive(Debug, Clone)]
pub struct Nftables {
    binary: PathBuf,
    lib: Option<LibNft>,
}

impl Default for Nftables {
    fn default() -> Self {
        let lib = match LibNft::load() {
            Ok(lib) => Some(lib),
            Err(e) => {
                tracing::info!(
                    error = e,
                    binary = NFT_BINARY,
                    "libnftables cannot be loaded; every nftables transaction runs the nft binary"
                );
                None
            }
        };
        Nftables {
            binary: PathBuf::from(NFT_BINARY),
            lib,
        }
    }
}

impl Nftables {
    /// `nft` from PATH, transactions through libnftables where it loads.
    pub fn new() -> Self {
        Self::default()
    }

    /// A specific binary for everything (tests use a missing path to check the error).
    pub fn with_binary(binary: impl Into<PathBuf>) -> Self {
        Nftables {
            binary: binary.into(),
            lib: None,
        }
    }

    /// Whether transactions go through the library (in-process) rather than the binary.
    pub fn in_process(&self) -> bool {
        self.lib.is_some()
    }

    fn run(&self, args: &[&str], stdin: Option<&str>, what: &str) -> Result<Output, Error> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let run_err = |source| Error::NftRun {
            binary: self.binary.clone(),
            what: what.to_owned(),
            source,
        };
        let mut child = cmd.spawn().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::NftMissing {
                    binary: self.binary.clone(),
                    source,
                }
            } else {
                run_err(source)
            }
        })?;
        if let Some(input) = stdin {
            // Dropped at the end of the block: nft sees end of file and starts the transaction.
            let mut pipe = child
                .stdin
                .take()
                .ok_or_else(|| run_err(std::io::Error::other("the child's stdin was not piped")))?;
            if let Err(e) = pipe.write_all(input.as_bytes()) {
                // nft exits early on a parse error and closes its stdin; its stderr says why.
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(run_err(e));
                }
            }
        }
        child.wait_with_output().map_err(run_err)
    }
}

fn failed(what: &str, output: &Output) -> Error {
    Error::NftFailed {
        what: what.to_owned(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    }
}

impl NftApplier for Nftables {
    fn apply(&self, script: &str) -> Result<(), Error> {
        let what = "apply a transaction";
        if let Some(lib) = &self.lib
            && script.len() <= IN_PROCESS_MAX_BYTES
        {
            tracing::trace!(script, "libnftables");
            return lib.run(script, what).map(drop);
        }
        tracing::trace!(script, "nft -f -");
        let output = self.run(&["-f", "-"], Some(script), what)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(failed(what, &output))
        }
    }

    fn list_table(&self, family: Family, name: &str) -> Result<Option<String>, Error> {
        let what = format!("list table {family} {name}");
        if let Some(lib) = &self.lib
            && listed_in_process(name)
        {
            return match lib.run(&what, &what) {
                Ok(listing) => {
                    tracing::trace!(listing, "{what} (libnftables)");
                    Ok(Some(listing))
                }
                Err(Error::NftFailed { stderr, .. }) if stderr.contains(NO_SUCH_TABLE) => Ok(None),
                Err(e) => Err(e),
            };
        }
        let output = self.run(
            &["--stateless", "list", "table", family.as_str(), name],
            None,
            &what,
        )?;
        if output.status.success() {
            let listing = String::from_utf8(output.stdout).map_err(|e| Error::NftFailed {
                what: what.clone(),
                status: output.status.to_string(),
                stderr: format!("the listing is not UTF-8: {e}"),
            })?;
            tracing::trace!(listing, "{what}");
            return Ok(Some(listing));
        }
        if String::from_utf8_lossy(&output.stderr).contains(NO_SUCH_TABLE) {
            return Ok(None);
        }
        Err(failed(&what, &output))
    }

    /// A netlink dump of the table's counter objects (`super::read_counters`): no process and
    /// no listing of the table's sets, which `nft -j list counters` would fill its cache with.
    fn list_counters(&self, family: Family, name: &str) -> Result<Option<Counters>, Error> {
        super::read_counters(family, name)
    }

    /// Pod churn without a process: one native nf_tables netlink batch in the calling thread's
    /// network namespace ([`super::apply_set_elements`]), all or nothing like [`Self::apply`].
    fn apply_elements(&self, ops: &[weft_policy::ElemOp]) -> Result<(), Error> {
        super::apply_set_elements(Family::Inet, TABLE_POLICY, ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_the_debian_package() {
        let nft = Nftables::with_binary("/nonexistent/weft-test/nft");
        let err = nft.apply("table inet x {}\n").expect_err("no binary");
        assert!(matches!(err, Error::NftMissing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("Debian package `nftables`") && msg.contains("/nonexistent/weft-test/nft"),
            "{msg}"
        );
        let err = nft
            .list_table(Family::Inet, "weft-nat")
            .expect_err("no binary");
        assert!(matches!(err, Error::NftMissing { .. }), "{err:?}");
    }
}
