//! One nftables transaction applier, shared by masquerade ([`crate::masquerade`]) and the policy
//! engine: a trait ([`NftApplier`]), the real implementation driving nftables ([`Nftables`]: its
//! library in-process, [`LibNft`], for transactions and for listings of the small tables, its
//! `nft` binary for the policy table's listings, native netlink for set elements and counters),
//! and a text fake for tests ([`FakeNft`]).
//!
//! ```text
//!   rendered table (text, nft's own listing format)
//!          │
//!          ▼  sync_table: list_table ──► same as rendered (whitespace-insensitive)? ──► no write
//!          │                                  │ differs / absent
//!          ▼                                  ▼
//!   apply(render_replace_table(..)) = one libnftables run (or `nft -f -`) = one netlink batch
//!                                   = one kernel transaction
//! ```
//!
//! Why nft's text language rather than JSON or native netlink: see
//! `docs/adr/0303-nftables-applier.md` (measured: one transaction costs a few milliseconds through
//! the binary, 0.1 ms through the library with a context that stays open). The one exception is
//! pod churn, element changes of the policy table's sets and maps
//! ([`NftApplier::apply_elements`]), which [`Nftables`] writes as a native nf_tables netlink batch
//! ([`apply_set_elements`], module `netlink`), without an `nft` process (ADR addendum 2026-12-02).
//! Both keep their netlink socket open per network namespace (module `session`): closing one after
//! a transaction that deleted anything waits for an RCU grace period in the kernel.
//!
//! Invariants:
//! - every [`NftApplier::apply`] is one atomic transaction: the kernel commits all of the script or
//!   none of it, so no packet ever sees a half-applied ruleset, and a failed apply leaves the
//!   previous ruleset fully in force;
//! - a table is replaced with [`render_replace_table`] (`table F N {}` + `delete table F N` + the
//!   full definition, in one script), so there is no moment without the table and no leftover rule;
//! - weft only touches the tables named here ([`TABLE_NAT`], [`TABLE_POLICY`], [`TABLE_RAW`]);
//! - [`sync_table`] writes nothing when the kernel already holds exactly the rendered table, which
//!   is why renderers emit nft's canonical listing format (the privileged tests check the round
//!   trip).

mod fake;
mod libnft;
mod netlink;
mod nftables;
mod session;

use std::collections::BTreeMap;
use std::fmt;

pub use fake::FakeNft;
pub use libnft::{LIBRARY as LIBNFTABLES, LibNft};
pub use netlink::{apply_set_elements, read_counters};
pub use nftables::Nftables;

use crate::Error;

/// The table of weft's masquerade rules ([`crate::masquerade`]), family [`Family::Inet`].
pub const TABLE_NAT: &str = "weft-nat";
/// The table of the policy engine, family [`Family::Inet`].
pub const TABLE_POLICY: &str = "weft-policy";
/// The table that keeps the overlay's VXLAN packets out of conntrack
/// ([`crate::overlay::untracked`]), family [`Family::Inet`].
pub const TABLE_RAW: &str = "weft-raw";
/// Every table weft owns, with its family: uninstall removes exactly these.
pub const OWNED_TABLES: [(Family, &str); 3] = [
    (Family::Inet, TABLE_NAT),
    (Family::Inet, TABLE_POLICY),
    (Family::Inet, TABLE_RAW),
];
/// The nftables command, looked up on PATH.
pub const NFT_BINARY: &str = "nft";
/// The Debian package that ships [`NFT_BINARY`]; named in the error when it is missing.
pub const NFT_PACKAGE: &str = "nftables";

/// An nftables address family (the first word after `table`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `ip`: IPv4 only.
    Ip,
    /// `ip6`: IPv6 only.
    Ip6,
    /// `inet`: IPv4 and IPv6 in one table (weft's tables).
    Inet,
}

impl Family {
    /// The keyword nft uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Executes nftables transactions and reads back tables.
///
/// Blocking: one call is one `nft` process of a few milliseconds; async callers run it on a
/// blocking thread (`tokio::task::spawn_blocking`) or accept the short stall.
pub trait NftApplier: Send + Sync {
    /// Executes `script` (nft's text language, as `nft -f` reads it) as one atomic transaction.
    /// On error nothing of the script is in force.
    fn apply(&self, script: &str) -> Result<(), Error>;

    /// The table as the kernel holds it, in nft's listing format without stateful data
    /// (`nft --stateless list table`, so counters do not make an unchanged table look changed),
    /// or `None` when there is no such table.
    fn list_table(&self, family: Family, name: &str) -> Result<Option<String>, Error>;

    /// The named counters of the table (what `nft -j list counters table …` lists): name →
    /// (packets, bytes), or `None` when there is no such table.
    fn list_counters(&self, family: Family, name: &str) -> Result<Option<Counters>, Error>;

    /// Removes the table if it exists (uninstall); removing an absent table is not an error.
    fn delete_table(&self, family: Family, name: &str) -> Result<(), Error> {
        self.apply(&render_delete_table(family, name))
    }

    /// Adds and deletes elements of the policy table's sets and maps, in order, as one atomic
    /// transaction (pod churn). The default renders them for [`NftApplier::apply`]; an
    /// implementation may write them more directly (same semantics: all or nothing).
    fn apply_elements(&self, ops: &[weft_policy::ElemOp]) -> Result<(), Error> {
        self.apply(&weft_policy::render_elem_ops(ops))
    }
}

/// Named counters of a table: name → (packets, bytes).
pub type Counters = BTreeMap<String, (u64, u64)>;

/// The script that replaces table `family name` with `definition` in one transaction: create it
/// empty if absent, delete it, then add the full definition. Between the old and the new table no
/// packet is evaluated (the kernel commits the batch at once), and nothing of the old table
/// survives.
///
/// `definition` is a complete `table <family> <name> { … }` block.
pub fn render_replace_table(family: Family, name: &str, definition: &str) -> String {
    let mut out = format!("table {family} {name} {{}}\ndelete table {family} {name}\n");
    out.push_str(definition);
    if !definition.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The script that removes table `family name` whether or not it exists (nft 1.0.6 has no
/// `destroy table`; creating it empty first makes the delete always succeed).
pub fn render_delete_table(family: Family, name: &str) -> String {
    format!("table {family} {name} {{}}\ndelete table {family} {name}\n")
}

/// A listing reduced to its tokens: nft indents with tabs and wraps long set element lists at a
/// width of its choosing, neither of which changes the ruleset.
pub fn normalize(listing: &str) -> String {
    listing.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether two listings describe the same ruleset (equal up to whitespace).
pub fn same_ruleset(a: &str, b: &str) -> bool {
    normalize(a) == normalize(b)
}

/// What [`sync_table`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableChange {
    /// The kernel already held the desired state (the table, or its absence); nothing was written.
    Unchanged,
    /// The table did not exist and was created.
    Created,
    /// The table existed with other content and was replaced in one transaction.
    Replaced,
    /// The table existed and was removed.
    Deleted,
}

impl TableChange {
    /// Whether the kernel was written to.
    pub fn wrote(self) -> bool {
        self != TableChange::Unchanged
    }
}

/// Brings table `family name` to `desired` (a complete table definition in nft's listing format),
/// or removes it when `desired` is `None`. Reads the table first and writes nothing when the kernel
/// already holds it (compared with [`same_ruleset`]); otherwise one transaction.
pub fn sync_table(
    nft: &dyn NftApplier,
    family: Family,
    name: &str,
    desired: Option<&str>,
) -> Result<TableChange, Error> {
    let current = nft.list_table(family, name)?;
    let change = match (current.as_deref(), desired) {
        (None, None) => TableChange::Unchanged,
        (Some(_), None) => {
            nft.delete_table(family, name)?;
            TableChange::Deleted
        }
        (Some(current), Some(desired)) if same_ruleset(current, desired) => TableChange::Unchanged,
        (current, Some(desired)) => {
            tracing::debug!(table = %format_args!("{family} {name}"), current = ?current, desired, "nftables table differs");
            nft.apply(&render_replace_table(family, name, desired))?;
            if current.is_some() {
                TableChange::Replaced
            } else {
                TableChange::Created
            }
        }
    };
    if change.wrote() {
        tracing::info!(table = %format_args!("{family} {name}"), ?change, "nftables table synced");
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "table inet weft-nat {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t}\n}\n";
    const T2: &str = "table inet weft-nat {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 10.0.0.0/8 masquerade\n\t}\n}\n";

    #[test]
    fn replace_script_creates_deletes_and_defines_in_one_script() {
        assert_eq!(
            render_replace_table(Family::Inet, "weft-nat", "table inet weft-nat {\n}"),
            "table inet weft-nat {}\ndelete table inet weft-nat\ntable inet weft-nat {\n}\n"
        );
        assert_eq!(
            render_delete_table(Family::Ip6, "x"),
            "table ip6 x {}\ndelete table ip6 x\n"
        );
    }

    #[test]
    fn listings_compare_up_to_whitespace_only() {
        assert!(same_ruleset(T1, &T1.replace('\t', "  ")));
        assert!(same_ruleset(
            "elements = { 10.0.0.1, 10.0.0.2,\n\t\t\t10.0.0.3 }",
            "elements = { 10.0.0.1, 10.0.0.2, 10.0.0.3 }"
        ));
        assert!(!same_ruleset(T1, T2));
        assert!(!same_ruleset("ip saddr 10.0.0.0/8", "ip saddr 10.0.0.0/16"));
    }

    #[test]
    fn sync_creates_then_leaves_alone_then_replaces_then_deletes() {
        let nft = FakeNft::default();
        let f = Family::Inet;
        let sync = |d: Option<&str>| sync_table(&nft, f, TABLE_NAT, d).expect("sync");

        assert_eq!(sync(None), TableChange::Unchanged);
        assert_eq!(nft.writes(), 0, "removing an absent table writes nothing");

        assert_eq!(sync(Some(T1)), TableChange::Created);
        assert_eq!(nft.writes(), 1);
        assert_eq!(sync(Some(T1)), TableChange::Unchanged);
        assert_eq!(
            sync(Some(&T1.replace('\t', "    "))),
            TableChange::Unchanged
        );
        assert_eq!(nft.writes(), 1, "an unchanged table causes no write");

        assert_eq!(sync(Some(T2)), TableChange::Replaced);
        assert_eq!(nft.writes(), 2);
        assert_eq!(
            nft.scripts().last().map(String::as_str),
            Some(render_replace_table(f, TABLE_NAT, T2).as_str()),
            "the replacement is one script of the replace idiom"
        );
        assert!(same_ruleset(
            &nft.list_table(f, TABLE_NAT)
                .expect("list")
                .expect("present"),
            T2
        ));

        assert_eq!(sync(None), TableChange::Deleted);
        assert_eq!(nft.list_table(f, TABLE_NAT).expect("list"), None);
        assert_eq!(nft.writes(), 3);
    }

    #[test]
    fn a_hand_edit_is_reconciled() {
        let nft = FakeNft::default();
        nft.set_table(Family::Inet, TABLE_NAT, T2);
        assert_eq!(
            sync_table(&nft, Family::Inet, TABLE_NAT, Some(T1)).expect("sync"),
            TableChange::Replaced
        );
        assert!(same_ruleset(
            &nft.list_table(Family::Inet, TABLE_NAT)
                .expect("list")
                .expect("present"),
            T1
        ));
    }

    #[test]
    fn a_failed_apply_is_reported_and_changes_nothing() {
        let nft = FakeNft::default();
        sync_table(&nft, Family::Inet, TABLE_NAT, Some(T1)).expect("first sync");
        nft.fail_next_apply("Error: Could not process rule: No such file or directory");
        let err = sync_table(&nft, Family::Inet, TABLE_NAT, Some(T2)).expect_err("fails");
        assert!(err.to_string().contains("No such file"), "{err}");
        assert!(same_ruleset(
            &nft.list_table(Family::Inet, TABLE_NAT)
                .expect("list")
                .expect("present"),
            T1
        ));
        // The failure was one-shot: the next sync goes through.
        assert_eq!(
            sync_table(&nft, Family::Inet, TABLE_NAT, Some(T2)).expect("sync"),
            TableChange::Replaced
        );
    }
}
