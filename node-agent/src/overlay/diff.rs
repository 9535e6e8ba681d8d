//! What must change in the kernel to turn the observed overlay state into the desired one.
//!
//! Invariants: pure; an observed state equal to the desired one gives [`Changes::is_empty`] (a
//! re-sync writes nothing); only objects in the observed state (weft-owned, see [`super`]) are ever
//! deleted; adds replace in place (`NLM_F_REPLACE`), so a neighbour, FDB entry or route whose value
//! changed is rewritten in one operation and never briefly missing. A device whose identity (VNI,
//! port, local address, uplink, learning) is wrong cannot be changed in place and is recreated;
//! its neighbours, FDB entries and routes go with it, so they are all re-added.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use weft_crds::IpCidr;

use super::{Datapath, FdbEntry, Neighbour, Route, VxlanDevice};
use crate::flannel::Mac;

/// In-place changes to an existing device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceUpdate {
    /// The device.
    pub name: String,
    /// A new MTU.
    pub mtu: Option<u32>,
    /// A new MAC.
    pub mac: Option<Mac>,
    /// Set the device up.
    pub up: bool,
    /// A new TX checksum offload setting.
    pub tx_checksum_offload: Option<bool>,
    /// Addresses to add.
    pub add_addresses: Vec<IpCidr>,
    /// Addresses to remove.
    pub del_addresses: Vec<IpCidr>,
}

impl DeviceUpdate {
    fn is_empty(&self) -> bool {
        self.mtu.is_none()
            && self.mac.is_none()
            && !self.up
            && self.tx_checksum_offload.is_none()
            && self.add_addresses.is_empty()
            && self.del_addresses.is_empty()
    }
}

/// The difference, in the order the netlink layer applies it: devices first (deleted, created,
/// updated), then FDB entries, neighbours and routes added, then routes, neighbours and FDB
/// entries removed (a route never points at a neighbour that is not there yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Devices to delete (stale names, or recreated), with the reason.
    pub delete_devices: Vec<(String, String)>,
    /// Devices to create (absent or recreated).
    pub create_devices: Vec<VxlanDevice>,
    /// Devices to change in place.
    pub update_devices: Vec<DeviceUpdate>,
    /// FDB entries to add or replace.
    pub add_fdb: Vec<FdbEntry>,
    /// Neighbours to add or replace.
    pub add_neighbours: Vec<Neighbour>,
    /// Routes to add or replace.
    pub add_routes: Vec<Route>,
    /// Routes to remove.
    pub del_routes: Vec<Route>,
    /// Neighbours to remove.
    pub del_neighbours: Vec<Neighbour>,
    /// FDB entries to remove.
    pub del_fdb: Vec<FdbEntry>,
}

impl Changes {
    /// Why each device that is deleted and made again with the fabric's values is replaced:
    /// someone else's device under weft's name (an old flannel, a hand edit). A device the fabric
    /// no longer wants (a backend switch, an old VNI) is removed as part of the fabric's change
    /// and is not listed.
    pub fn replaced(&self) -> Vec<String> {
        self.delete_devices
            .iter()
            .filter(|(name, _)| self.create_devices.iter().any(|d| &d.name == name))
            .map(|(_, reason)| reason.clone())
            .collect()
    }

    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.delete_devices.is_empty()
            && self.create_devices.is_empty()
            && self.update_devices.is_empty()
            && self.add_fdb.is_empty()
            && self.add_neighbours.is_empty()
            && self.add_routes.is_empty()
            && self.del_routes.is_empty()
            && self.del_neighbours.is_empty()
            && self.del_fdb.is_empty()
    }

    /// How many kernel objects are written (for logs and metrics).
    pub fn len(&self) -> usize {
        self.delete_devices.len()
            + self.create_devices.len()
            + self.update_devices.len()
            + self.add_fdb.len()
            + self.add_neighbours.len()
            + self.add_routes.len()
            + self.del_routes.len()
            + self.del_neighbours.len()
            + self.del_fdb.len()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "devices -{} +{} ~{}, fdb +{} -{}, neighbours +{} -{}, routes +{} -{}",
            self.delete_devices.len(),
            self.create_devices.len(),
            self.update_devices.len(),
            self.add_fdb.len(),
            self.del_fdb.len(),
            self.add_neighbours.len(),
            self.del_neighbours.len(),
            self.add_routes.len(),
            self.del_routes.len()
        )
    }
}

/// Why `have` cannot be turned into `want` in place, if it cannot.
fn recreate_reason(want: &VxlanDevice, have: &VxlanDevice) -> Option<String> {
    let mut wrong = Vec::new();
    if want.vni != have.vni {
        wrong.push(format!("VNI {} (want {})", have.vni, want.vni));
    }
    if want.port != have.port {
        wrong.push(format!("port {} (want {})", have.port, want.port));
    }
    if want.local != have.local {
        wrong.push(format!(
            "local address {} (want {})",
            have.local, want.local
        ));
    }
    if want.uplink != have.uplink {
        wrong.push(format!("uplink {} (want {})", have.uplink, want.uplink));
    }
    (!wrong.is_empty()).then(|| format!("device {} has {}", have.name, wrong.join(", ")))
}

/// The changes that turn `observed` (weft-owned kernel state) into `desired`.
pub fn diff_datapath(desired: &Datapath, observed: &Datapath) -> Changes {
    let mut out = Changes::default();
    let have: BTreeMap<&str, &VxlanDevice> = observed
        .devices
        .iter()
        .map(|d| (d.name.as_str(), d))
        .collect();
    let want_names: BTreeSet<&str> = desired.devices.iter().map(|d| d.name.as_str()).collect();
    // Devices whose dependent entries are gone (created, recreated or deleted now).
    let mut fresh: BTreeSet<&str> = BTreeSet::new();
    for d in &observed.devices {
        if !want_names.contains(d.name.as_str()) {
            out.delete_devices.push((
                d.name.clone(),
                format!("device {} is not part of the fabric's overlay", d.name),
            ));
            fresh.insert(d.name.as_str());
        }
    }
    for want in &desired.devices {
        match have.get(want.name.as_str()) {
            None => {
                out.create_devices.push(want.clone());
                fresh.insert(want.name.as_str());
            }
            Some(have) => {
                if let Some(reason) = recreate_reason(want, have) {
                    out.delete_devices.push((want.name.clone(), reason));
                    out.create_devices.push(want.clone());
                    fresh.insert(want.name.as_str());
                    continue;
                }
                let update = DeviceUpdate {
                    name: want.name.clone(),
                    mtu: (want.mtu != have.mtu).then_some(want.mtu),
                    mac: (want.mac != have.mac).then_some(want.mac),
                    up: want.up && !have.up,
                    tx_checksum_offload: (want.tx_checksum_offload != have.tx_checksum_offload)
                        .then_some(want.tx_checksum_offload),
                    add_addresses: want
                        .addresses
                        .iter()
                        .filter(|a| !have.addresses.contains(a))
                        .copied()
                        .collect(),
                    del_addresses: have
                        .addresses
                        .iter()
                        .filter(|a| !want.addresses.contains(a))
                        .copied()
                        .collect(),
                };
                if !update.is_empty() {
                    out.update_devices.push(update);
                }
            }
        }
    }
    let gone = |device: &str| fresh.contains(device);

    // Neighbours: keyed by (device, ip).
    let have_neigh: BTreeMap<(&str, _), &Neighbour> = observed
        .neighbours
        .iter()
        .filter(|n| !gone(&n.device))
        .map(|n| ((n.device.as_str(), n.ip), n))
        .collect();
    let want_neigh: BTreeSet<(&str, _)> = desired
        .neighbours
        .iter()
        .map(|n| (n.device.as_str(), n.ip))
        .collect();
    out.add_neighbours = desired
        .neighbours
        .iter()
        .filter(|n| have_neigh.get(&(n.device.as_str(), n.ip)) != Some(n))
        .cloned()
        .collect();
    out.del_neighbours = have_neigh
        .iter()
        .filter(|(k, _)| !want_neigh.contains(k))
        .map(|(_, n)| (*n).clone())
        .collect();

    // FDB: keyed by (device, mac).
    let have_fdb: BTreeMap<(&str, Mac), &FdbEntry> = observed
        .fdb
        .iter()
        .filter(|f| !gone(&f.device))
        .map(|f| ((f.device.as_str(), f.mac), f))
        .collect();
    let want_fdb: BTreeSet<(&str, Mac)> = desired
        .fdb
        .iter()
        .map(|f| (f.device.as_str(), f.mac))
        .collect();
    out.add_fdb = desired
        .fdb
        .iter()
        .filter(|f| have_fdb.get(&(f.device.as_str(), f.mac)) != Some(f))
        .cloned()
        .collect();
    out.del_fdb = have_fdb
        .iter()
        .filter(|(k, _)| !want_fdb.contains(k))
        .map(|(_, f)| (*f).clone())
        .collect();

    // Routes: keyed by destination (one route per remote subnet in the main table).
    let have_routes: BTreeMap<IpCidr, &Route> = observed
        .routes
        .iter()
        .filter(|r| !gone(&r.device))
        .map(|r| (r.destination, r))
        .collect();
    let want_routes: BTreeSet<IpCidr> = desired.routes.iter().map(|r| r.destination).collect();
    out.add_routes = desired
        .routes
        .iter()
        .filter(|r| have_routes.get(&r.destination) != Some(r))
        .cloned()
        .collect();
    out.del_routes = have_routes
        .iter()
        .filter(|(k, _)| !want_routes.contains(k))
        .map(|(_, r)| (*r).clone())
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }
    fn cidr(s: &str) -> IpCidr {
        s.parse().expect("cidr")
    }

    fn device() -> VxlanDevice {
        VxlanDevice {
            name: "flannel.1".into(),
            vni: 1,
            port: 8472,
            local: ip("10.99.0.10"),
            uplink: "eth0".into(),
            mtu: 1450,
            mac: Mac([0x0a, 0, 0, 0, 0, 1]),
            addresses: vec![cidr("10.244.0.0/32")],
            up: true,
            tx_checksum_offload: true,
        }
    }

    fn route(dst: &str, gw: &str, dev: &str) -> Route {
        Route {
            destination: cidr(dst),
            gateway: ip(gw),
            device: dev.into(),
            onlink: dev.starts_with("flannel"),
        }
    }

    fn desired() -> Datapath {
        let mac = Mac([0x0a, 0, 0, 0, 0, 2]);
        Datapath {
            devices: vec![device()],
            neighbours: [Neighbour {
                device: "flannel.1".into(),
                ip: ip("10.244.1.0"),
                mac,
            }]
            .into(),
            fdb: [FdbEntry {
                device: "flannel.1".into(),
                mac,
                remote: ip("10.99.0.11"),
            }]
            .into(),
            routes: [route("10.244.1.0/24", "10.244.1.0", "flannel.1")].into(),
        }
    }

    #[test]
    fn equal_states_change_nothing() {
        let c = diff_datapath(&desired(), &desired());
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn from_scratch_adds_everything() {
        let c = diff_datapath(&desired(), &Datapath::default());
        assert_eq!(c.create_devices.len(), 1);
        assert_eq!(
            (c.add_fdb.len(), c.add_neighbours.len(), c.add_routes.len()),
            (1, 1, 1)
        );
        assert!(c.delete_devices.is_empty() && c.del_routes.is_empty());
        assert_eq!(
            c.to_string(),
            "devices -0 +1 ~0, fdb +1 -0, neighbours +1 -0, routes +1 -0"
        );
    }

    #[test]
    fn stale_entries_of_gone_nodes_are_removed() {
        let mut observed = desired();
        let old = Mac([0x0a, 0, 0, 0, 0, 9]);
        observed.neighbours.insert(Neighbour {
            device: "flannel.1".into(),
            ip: ip("10.244.9.0"),
            mac: old,
        });
        observed.fdb.insert(FdbEntry {
            device: "flannel.1".into(),
            mac: old,
            remote: ip("10.99.0.19"),
        });
        observed
            .routes
            .insert(route("10.244.9.0/24", "10.244.9.0", "flannel.1"));
        let c = diff_datapath(&desired(), &observed);
        assert_eq!(
            (c.del_fdb.len(), c.del_neighbours.len(), c.del_routes.len()),
            (1, 1, 1)
        );
        assert_eq!(c.del_routes[0].destination, cidr("10.244.9.0/24"));
        assert!(c.add_routes.is_empty() && c.create_devices.is_empty());
    }

    #[test]
    fn changed_values_are_replaced_not_deleted() {
        let mut observed = desired();
        // The peer's VTEP MAC changed (a reboot of a flannel node) and its node address moved.
        let stale = Mac([0x0a, 0, 0, 0, 0, 7]);
        observed.neighbours = [Neighbour {
            device: "flannel.1".into(),
            ip: ip("10.244.1.0"),
            mac: stale,
        }]
        .into();
        observed.fdb = [FdbEntry {
            device: "flannel.1".into(),
            mac: Mac([0x0a, 0, 0, 0, 0, 2]),
            remote: ip("10.99.0.99"),
        }]
        .into();
        observed.routes = [route("10.244.1.0/24", "10.99.0.11", "eth0")].into();
        let c = diff_datapath(&desired(), &observed);
        assert_eq!(
            (c.add_fdb.len(), c.add_neighbours.len(), c.add_routes.len()),
            (1, 1, 1)
        );
        // Replaced in place: the route's key is kept, nothing is deleted.
        assert!(c.del_routes.is_empty() && c.del_neighbours.is_empty() && c.del_fdb.is_empty());
    }

    #[test]
    fn a_device_with_the_wrong_identity_is_recreated_with_its_entries() {
        let mut observed = desired();
        observed.devices[0].vni = 2;
        observed.devices[0].local = ip("10.99.0.77");
        let c = diff_datapath(&desired(), &observed);
        assert_eq!(c.delete_devices.len(), 1);
        assert!(c.delete_devices[0].1.contains("VNI 2 (want 1)"), "{c:?}");
        assert!(c.delete_devices[0].1.contains("local address 10.99.0.77"));
        assert_eq!(c.create_devices.len(), 1);
        assert_eq!(c.replaced(), [c.delete_devices[0].1.clone()]);
        // Entries die with the device: all re-added, none deleted.
        assert_eq!(
            (c.add_fdb.len(), c.add_neighbours.len(), c.add_routes.len()),
            (1, 1, 1)
        );
        assert!(c.del_routes.is_empty());
    }

    #[test]
    fn in_place_fixes_for_mtu_mac_addresses_state_and_offload() {
        let mut observed = desired();
        let d = &mut observed.devices[0];
        d.mtu = 1500;
        d.mac = Mac([0x0a, 0, 0, 0, 0, 5]);
        d.up = false;
        d.tx_checksum_offload = false;
        d.addresses = vec![cidr("10.244.7.0/32")];
        let c = diff_datapath(&desired(), &observed);
        assert!(c.delete_devices.is_empty() && c.create_devices.is_empty());
        let u = &c.update_devices[0];
        assert_eq!(u.mtu, Some(1450));
        assert_eq!(u.mac, Some(Mac([0x0a, 0, 0, 0, 0, 1])));
        assert!(u.up);
        assert_eq!(u.tx_checksum_offload, Some(true));
        assert_eq!(u.add_addresses, [cidr("10.244.0.0/32")]);
        assert_eq!(u.del_addresses, [cidr("10.244.7.0/32")]);
    }

    #[test]
    fn devices_left_from_another_vni_or_backend_are_deleted() {
        let mut observed = desired();
        let mut old = device();
        old.name = "flannel.7".into();
        old.vni = 7;
        observed.devices.push(old);
        observed
            .routes
            .insert(route("10.244.5.0/24", "10.244.5.0", "flannel.7"));
        let c = diff_datapath(&desired(), &observed);
        assert_eq!(c.delete_devices.len(), 1);
        assert_eq!(c.delete_devices[0].0, "flannel.7");
        // Removed by the fabric's change, not replaced: no news for the node's condition.
        assert!(c.replaced().is_empty());
        // Its routes go with the device: no separate delete.
        assert!(c.del_routes.is_empty());
        // host-gw: the vxlan device goes.
        let c = diff_datapath(&Datapath::default(), &desired());
        assert_eq!(c.delete_devices.len(), 1);
        assert!(c.replaced().is_empty());
        assert!(c.del_routes.is_empty() && c.del_fdb.is_empty());
    }
}
