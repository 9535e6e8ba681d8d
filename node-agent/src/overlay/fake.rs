//! An in-memory kernel for tests of everything above the netlink layer: it holds a [`Datapath`],
//! applies [`Changes`] to it the way the kernel would (a deleted device takes its neighbours, FDB
//! entries and routes with it) and counts the writes.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Mutex;

use super::Datapath;
use super::diff::Changes;
use super::netlink::{ApplyReport, Kernel};
use crate::Error;

/// The fake kernel.
#[derive(Debug, Default)]
pub struct MemoryKernel {
    /// What the kernel holds.
    pub state: Mutex<Datapath>,
    /// Peer addresses on the same segment.
    pub on_link: BTreeSet<IpAddr>,
    /// How many `apply` calls wrote something.
    pub writes: Mutex<usize>,
}

impl Kernel for MemoryKernel {
    async fn observe(&self) -> Result<Datapath, Error> {
        Ok(self.state.lock().map(|s| s.clone()).unwrap_or_default())
    }

    async fn on_link(&self, addrs: &[IpAddr]) -> BTreeSet<IpAddr> {
        addrs
            .iter()
            .filter(|a| self.on_link.contains(a))
            .copied()
            .collect()
    }

    async fn apply(&self, changes: &Changes) -> ApplyReport {
        let mut report = ApplyReport::default();
        let Ok(mut s) = self.state.lock() else {
            return report;
        };
        if let Ok(mut w) = self.writes.lock() {
            *w += 1;
        }
        for (name, _) in &changes.delete_devices {
            s.devices.retain(|d| &d.name != name);
            s.neighbours.retain(|n| &n.device != name);
            s.fdb.retain(|f| &f.device != name);
            s.routes.retain(|r| &r.device != name);
        }
        s.devices.extend(changes.create_devices.iter().cloned());
        for u in &changes.update_devices {
            if let Some(d) = s.devices.iter_mut().find(|d| d.name == u.name) {
                d.mtu = u.mtu.unwrap_or(d.mtu);
                d.mac = u.mac.unwrap_or(d.mac);
                d.up |= u.up;
                d.tx_checksum_offload = u.tx_checksum_offload.unwrap_or(d.tx_checksum_offload);
                d.addresses.retain(|a| !u.del_addresses.contains(a));
                d.addresses.extend(u.add_addresses.iter().copied());
                d.addresses.sort();
            }
        }
        s.devices.sort();
        for f in &changes.add_fdb {
            s.fdb.retain(|x| !(x.device == f.device && x.mac == f.mac));
            s.fdb.insert(f.clone());
        }
        for n in &changes.add_neighbours {
            s.neighbours
                .retain(|x| !(x.device == n.device && x.ip == n.ip));
            s.neighbours.insert(n.clone());
        }
        for r in &changes.add_routes {
            s.routes.retain(|x| x.destination != r.destination);
            s.routes.insert(r.clone());
        }
        for r in &changes.del_routes {
            s.routes.remove(r);
        }
        for n in &changes.del_neighbours {
            s.neighbours.remove(n);
        }
        for f in &changes.del_fdb {
            s.fdb.remove(f);
        }
        *report.done.entry("fake").or_default() += changes.len() as u64;
        report
    }
}
