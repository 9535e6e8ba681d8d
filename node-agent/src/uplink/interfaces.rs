//! The uplink room's I/O: listing the node's interfaces, their addresses and MTUs.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use super::Interface;
use crate::Error;

/// Where interface MTUs are read from.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// Lists the local interfaces with their addresses (getifaddrs) and MTUs (`<sys_class_net>/<if>/mtu`).
/// An interface without an MTU file is skipped: it vanished in between. (`/sys` must be a sysfs of
/// the node's network namespace, which host-network pods get.)
pub fn read_interfaces(sys_class_net: &Path) -> Result<Vec<Interface>, Error> {
    let mut order: Vec<String> = Vec::new();
    let mut addrs: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(Error::ListInterfaces)? {
        let entry = addrs.entry(ifa.interface_name.clone()).or_insert_with(|| {
            order.push(ifa.interface_name.clone());
            Vec::new()
        });
        let Some(addr) = ifa.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            entry.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            entry.push(IpAddr::V6(v6.ip()));
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for name in order {
        let path = sys_class_net.join(&name).join("mtu");
        let mtu = match std::fs::read_to_string(&path) {
            // Gone since getifaddrs (a pod's veth being deleted): not a candidate uplink.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            read => read.and_then(|s| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            }),
        }
        .map_err(|source| Error::ReadMtu {
            interface: name.clone(),
            path: path.clone(),
            source,
        })?;
        let addrs = addrs.remove(&name).unwrap_or_default();
        out.push(Interface { name, mtu, addrs });
    }
    Ok(out)
}
