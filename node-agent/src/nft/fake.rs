//! A text fake of [`NftApplier`] for tests: it records every committed script and models just
//! enough of nft to make [`super::sync_table`] meaningful (after kube-router's nftables tests, which
//! read the rendered text of a fake client).
//!
//! Modelled: top-level `table F N { … }` blocks (an empty block creates the table if absent, a
//! non-empty block defines an absent table) and `delete table F N` (an error when absent), applied to
//! a copy and committed only when the whole script succeeds, like the kernel's batch. Other
//! statements (`add element …`, `flush set …`) are recorded, not interpreted; tests of incremental
//! changes read [`FakeNft::scripts`]. Counters are whatever a test set with
//! [`FakeNft::set_counters`], listed while their table exists.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{Counters, Family, NftApplier};
use crate::Error;

type Tables = BTreeMap<(Family, String), String>;

#[derive(Debug, Default)]
struct State {
    tables: Tables,
    counters: BTreeMap<(Family, String), Counters>,
    scripts: Vec<String>,
    fail_next: Option<String>,
}

/// Records scripts and keeps tables as text. See the module docs for what it models.
#[derive(Debug, Default)]
pub struct FakeNft {
    state: Mutex<State>,
}

impl FakeNft {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has already failed; keep its state readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every committed script, oldest first.
    pub fn scripts(&self) -> Vec<String> {
        self.state().scripts.clone()
    }

    /// How many transactions were committed (kernel writes).
    pub fn writes(&self) -> usize {
        self.state().scripts.len()
    }

    /// Puts a table in place without a recorded write, as if someone else (a previous agent, a hand
    /// edit) had left it.
    pub fn set_table(&self, family: Family, name: &str, listing: &str) {
        self.state()
            .tables
            .insert((family, name.to_owned()), listing.to_owned());
    }

    /// Sets the named counters that [`NftApplier::list_counters`] reports for table `family name`
    /// (as the kernel's packets would).
    pub fn set_counters(&self, family: Family, name: &str, counters: Counters) {
        self.state()
            .counters
            .insert((family, name.to_owned()), counters);
    }

    /// Makes the next [`NftApplier::apply`] fail with `message` and commit nothing.
    pub fn fail_next_apply(&self, message: &str) {
        self.state().fail_next = Some(message.to_owned());
    }
}

fn refused(stderr: String) -> Error {
    Error::NftFailed {
        what: "apply a transaction".to_owned(),
        status: "exit status: 1".to_owned(),
        stderr,
    }
}

fn family(word: &str) -> Result<Family, Error> {
    match word {
        "ip" => Ok(Family::Ip),
        "ip6" => Ok(Family::Ip6),
        "inet" => Ok(Family::Inet),
        other => Err(refused(format!("fake nft: unknown family {other:?}"))),
    }
}

/// Applies `script` to `tables`.
fn interpret(tables: &mut Tables, script: &str) -> Result<(), Error> {
    let lines: Vec<&str> = script.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["table", fam, name, rest @ ..] if rest.first().is_some_and(|w| w.starts_with('{')) => {
                let key = (family(fam)?, (*name).to_owned());
                // The block runs to the line where the braces balance.
                let start = i;
                let mut depth = 0i32;
                loop {
                    depth += brace_balance(lines[i]);
                    if depth <= 0 {
                        break;
                    }
                    i += 1;
                    if i == lines.len() {
                        return Err(refused(format!(
                            "fake nft: unbalanced braces in the block of table {fam} {name}"
                        )));
                    }
                }
                let block = lines[start..=i].join("\n") + "\n";
                let empty = block
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect::<String>()
                    == format!("table{fam}{name}{{}}");
                match (tables.contains_key(&key), empty) {
                    (_, true) => {
                        tables
                            .entry(key)
                            .or_insert_with(|| format!("table {fam} {name} {{\n}}\n"));
                    }
                    (false, false) => {
                        tables.insert(key, block);
                    }
                    (true, false) => {
                        return Err(refused(format!(
                            "fake nft: merging into the existing table {fam} {name} is not modelled; replace it (nft::render_replace_table)"
                        )));
                    }
                }
            }
            ["delete", "table", fam, name] => {
                let key = (family(fam)?, (*name).to_owned());
                tables.remove(&key).ok_or_else(|| {
                    refused(format!(
                        "Error: No such file or directory\ndelete table {fam} {name}"
                    ))
                })?;
            }
            _ => {} // recorded, not modelled
        }
        i += 1;
    }
    Ok(())
}

/// Opening minus closing braces outside double-quoted strings.
fn brace_balance(line: &str) -> i32 {
    let mut quoted = false;
    let mut n = 0;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            '{' if !quoted => n += 1,
            '}' if !quoted => n -= 1,
            _ => {}
        }
    }
    n
}

impl NftApplier for FakeNft {
    fn apply(&self, script: &str) -> Result<(), Error> {
        let mut state = self.state();
        if let Some(message) = state.fail_next.take() {
            return Err(refused(message));
        }
        let mut tables = state.tables.clone();
        interpret(&mut tables, script)?;
        state.tables = tables;
        state.scripts.push(script.to_owned());
        Ok(())
    }

    fn list_table(&self, family: Family, name: &str) -> Result<Option<String>, Error> {
        Ok(self.state().tables.get(&(family, name.to_owned())).cloned())
    }

    fn list_counters(&self, family: Family, name: &str) -> Result<Option<Counters>, Error> {
        let state = self.state();
        let key = (family, name.to_owned());
        if !state.tables.contains_key(&key) {
            return Ok(None);
        }
        Ok(Some(state.counters.get(&key).cloned().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_commits_whole_or_not_at_all() {
        let nft = FakeNft::default();
        nft.apply("table inet a {\n\tchain c {\n\t\tcomment \"}{\"\n\t}\n}\n")
            .expect("define");
        assert_eq!(
            nft.list_table(Family::Inet, "a").expect("list").as_deref(),
            Some("table inet a {\n\tchain c {\n\t\tcomment \"}{\"\n\t}\n}\n")
        );
        // The second statement fails: the first must not be in force either.
        let err = nft
            .apply("delete table inet a\ndelete table inet b\n")
            .expect_err("b is absent");
        assert!(err.to_string().contains("No such file"), "{err}");
        assert!(nft.list_table(Family::Inet, "a").expect("list").is_some());
        assert_eq!(nft.writes(), 1);
    }

    #[test]
    fn merging_into_an_existing_table_is_refused_not_guessed() {
        let nft = FakeNft::default();
        nft.apply("table inet a {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n")
            .expect("define");
        nft.apply("table inet a {}\n")
            .expect("empty block is a no-op");
        assert!(nft.apply("table inet a {\n\tchain c {\n\t}\n}\n").is_err());
        nft.apply("add element inet a s { 10.0.0.1 }\n")
            .expect("recorded");
        assert_eq!(nft.scripts().len(), 3);
    }
}
