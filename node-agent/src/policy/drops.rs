//! Packets dropped by policy, per direction: the ruleset's named drop counters
//! ([`weft_policy::DROP_COUNTERS`]) read from the kernel at every scrape of `/metrics`, exported
//! as `weft_agent_policy_dropped_packets_total` / `_bytes_total` with labels `direction`
//! (ingress, egress) and `reason` (policy, unprogrammed).
//!
//! ```text
//!   scrape ──► sample: a netlink dump of weft-policy's counter objects ──► tally ──► +Δ on the metric
//!   full replacement ──► (one lock) sample, render seeded with the values read, nft -f
//! ```
//!
//! Invariant: the exported totals never decrease, and every packet the kernel counted is exported
//! once. Incremental updates leave the kernel's counters alone. A full replacement recreates them
//! seeded with the values read just before, under the lock that scrapes take too, so no scrape sees
//! the gap between reading and committing. A kernel value below the last one read means someone
//! else recreated the table (its counters restarted from zero): the new value is counted whole.

use std::sync::{Arc, Mutex, MutexGuard};

use weft_policy::{CounterSeed, DROP_COUNTERS};

use crate::Error;
use crate::nft::{Counters, Family, NftApplier, TABLE_POLICY};
use crate::observe::Metrics;

/// What to add to the exported totals of one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Increase {
    /// The counter's name in the table.
    pub counter: &'static str,
    /// Packets to add.
    pub packets: u64,
    /// Bytes to add.
    pub bytes: u64,
}

/// The kernel values last read, per drop counter: a pure accumulator of increases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    last: Counters,
}

impl Tally {
    /// Takes a reading (`None`: no table, its counters are gone) and returns what the exported
    /// totals must grow by, for every drop counter (zero increases included, so that each series
    /// exists from the first reading).
    pub fn observe(&mut self, now: Option<&Counters>) -> Vec<Increase> {
        let Some(now) = now else {
            self.last.clear();
            return Vec::new();
        };
        let out = DROP_COUNTERS
            .iter()
            .map(|c| {
                let (p, b) = now.get(c.name).copied().unwrap_or((0, 0));
                let (lp, lb) = self.last.get(c.name).copied().unwrap_or((0, 0));
                let (packets, bytes) = if p < lp || b < lb {
                    // Restarted below what we saw: everything it holds is new.
                    (p, b)
                } else {
                    (p - lp, b - lb)
                };
                Increase {
                    counter: c.name,
                    packets,
                    bytes,
                }
            })
            .collect();
        self.last = now.clone();
        out
    }

    /// The values a full replacement must seed the counters with: the last reading.
    pub fn seed(&self) -> CounterSeed {
        self.last.clone()
    }
}

/// Reads the kernel's drop counters into the metrics; serializes with full replacements.
pub struct DropCounters {
    nft: Arc<dyn NftApplier>,
    metrics: Arc<Metrics>,
    tally: Mutex<Tally>,
}

impl DropCounters {
    /// A reader of table `inet weft-policy` through `nft`, exporting into `metrics`.
    pub fn new(nft: Arc<dyn NftApplier>, metrics: Arc<Metrics>) -> Self {
        DropCounters {
            nft,
            metrics,
            tally: Mutex::new(Tally::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tally> {
        // A panic while holding the lock left a consistent tally (it is replaced whole).
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sample_locked(&self, tally: &mut Tally) -> Result<(), Error> {
        let now = self.nft.list_counters(Family::Inet, TABLE_POLICY)?;
        for inc in tally.observe(now.as_ref()) {
            if let Some(c) = DROP_COUNTERS.iter().find(|c| c.name == inc.counter) {
                let direction = match c.direction {
                    weft_policy::Direction::Ingress => "ingress",
                    weft_policy::Direction::Egress => "egress",
                };
                self.metrics
                    .policy_dropped(direction, c.reason.as_str(), inc.packets, inc.bytes);
            }
        }
        Ok(())
    }

    /// Reads the kernel's counters and adds what they gained to the exported totals (blocking:
    /// one `nft` process).
    pub fn sample(&self) -> Result<(), Error> {
        let mut tally = self.lock();
        self.sample_locked(&mut tally)
    }

    /// Replaces the table with the script `render` makes from the counters' current values
    /// (blocking), so that the new table's counters continue where the old ones were. On failure
    /// the old table and its counters stay.
    pub fn apply_full(&self, render: impl FnOnce(&CounterSeed) -> String) -> Result<(), Error> {
        let mut tally = self.lock();
        if let Err(e) = self.sample_locked(&mut tally) {
            // Without a reading the counters restart from zero, which the tally then counts as
            // a restart; the replacement itself must not wait on it.
            tracing::warn!(error = %e, "could not read the policy drop counters before replacing the table");
            tally.observe(None);
        }
        let script = render(&tally.seed());
        self.nft.apply(&script)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::FakeNft;

    fn reading(pairs: &[(&str, u64, u64)]) -> Counters {
        pairs
            .iter()
            .map(|(n, p, b)| ((*n).to_owned(), (*p, *b)))
            .collect()
    }

    fn gained(incs: &[Increase]) -> Vec<(&'static str, u64, u64)> {
        incs.iter()
            .filter(|i| i.packets > 0 || i.bytes > 0)
            .map(|i| (i.counter, i.packets, i.bytes))
            .collect()
    }

    /// (what happened, the reading, the increases expected).
    type Case = (
        &'static str,
        Option<Counters>,
        Vec<(&'static str, u64, u64)>,
    );

    #[test]
    fn the_tally_adds_growth_counts_a_restart_whole_and_forgets_a_vanished_table() {
        let mut t = Tally::default();
        let first = t.observe(Some(&reading(&[("dropped-ingress", 2, 168)])));
        assert_eq!(first.len(), DROP_COUNTERS.len(), "every series, zeros too");
        assert_eq!(gained(&first), [("dropped-ingress", 2, 168)]);
        let cases: [Case; 6] = [
            (
                "growth in two counters",
                Some(reading(&[
                    ("dropped-ingress", 3, 252),
                    ("dropped-egress", 1, 60),
                ])),
                vec![("dropped-ingress", 1, 84), ("dropped-egress", 1, 60)],
            ),
            (
                "no change",
                Some(reading(&[
                    ("dropped-ingress", 3, 252),
                    ("dropped-egress", 1, 60),
                ])),
                vec![],
            ),
            (
                "recreated by someone else: counted from zero",
                Some(reading(&[
                    ("dropped-ingress", 1, 84),
                    ("dropped-egress", 1, 60),
                ])),
                vec![("dropped-ingress", 1, 84)],
            ),
            ("table gone", None, vec![]),
            (
                "table back: its values are new",
                Some(reading(&[("unprogrammed-egress", 4, 240)])),
                vec![("unprogrammed-egress", 4, 240)],
            ),
            (
                "a counter missing from the reading restarts at zero",
                Some(reading(&[])),
                vec![],
            ),
        ];
        for (what, now, want) in cases {
            assert_eq!(gained(&t.observe(now.as_ref())), want, "{what}");
        }
    }

    fn exported(m: &Metrics) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| l.starts_with("weft_agent_policy_dropped_"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_full_replacement_is_seeded_with_the_last_values_and_the_totals_keep_growing() {
        let nft = Arc::new(FakeNft::default());
        let metrics = Arc::new(Metrics::new());
        let drops = DropCounters::new(nft.clone(), metrics.clone());
        drops.sample().expect("no table yet");
        assert!(exported(&metrics).is_empty(), "{:?}", exported(&metrics));
        let table = "table inet weft-policy {\n}\n";
        drops
            .apply_full(|seed| {
                assert!(seed.is_empty(), "no table: nothing to seed");
                table.to_owned()
            })
            .expect("create");
        nft.set_counters(
            Family::Inet,
            TABLE_POLICY,
            reading(&[("dropped-ingress", 5, 420), ("unprogrammed-egress", 1, 84)]),
        );
        drops.sample().expect("sample");
        let text = exported(&metrics).join("\n");
        assert!(
            text.contains(
                "weft_agent_policy_dropped_packets_total{direction=\"ingress\",reason=\"policy\"} 5"
            ) && text.contains(
                "weft_agent_policy_dropped_bytes_total{direction=\"ingress\",reason=\"policy\"} 420"
            ) && text.contains(
                "weft_agent_policy_dropped_packets_total{direction=\"egress\",reason=\"unprogrammed\"} 1"
            ) && text.contains(
                "weft_agent_policy_dropped_packets_total{direction=\"egress\",reason=\"policy\"} 0"
            ),
            "{text}"
        );
        // Two more drops before the replacement: they are read, seeded, and counted once.
        nft.set_counters(
            Family::Inet,
            TABLE_POLICY,
            reading(&[("dropped-ingress", 7, 588), ("unprogrammed-egress", 1, 84)]),
        );
        let mut seeded = CounterSeed::new();
        drops
            .apply_full(|seed| {
                seeded = seed.clone();
                format!("table inet weft-policy {{}}\ndelete table inet weft-policy\n{table}")
            })
            .expect("replace");
        assert_eq!(
            seeded,
            reading(&[("dropped-ingress", 7, 588), ("unprogrammed-egress", 1, 84)])
        );
        // The kernel now holds the seeded values (what the fake already reports): no double count.
        drops.sample().expect("sample");
        let text = exported(&metrics).join("\n");
        assert!(
            text.contains(
                "weft_agent_policy_dropped_packets_total{direction=\"ingress\",reason=\"policy\"} 7"
            ),
            "{text}"
        );
        // A failed replacement keeps the old table and counts nothing twice.
        nft.fail_next_apply("Error: boom");
        assert!(drops.apply_full(|_| table.to_owned()).is_err());
        drops.sample().expect("sample");
        assert!(exported(&metrics).join("\n").contains(
            "weft_agent_policy_dropped_packets_total{direction=\"ingress\",reason=\"policy\"} 7"
        ));
    }
}
