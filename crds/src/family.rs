//! One value per IP family: the rule "at most one IPv4 and one IPv6" in one type.
//!
//! The fabric's pod CIDRs, a node's subnets, its uplinks and its VTEP MACs are all "one per family";
//! they share this type instead of each keeping its own pair.

use std::fmt;

use crate::IpFamily;

/// One value per address family: the fabric's pod CIDRs, the node's subnets, its VTEP MACs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerFamily<T> {
    /// The IPv4 value.
    pub v4: Option<T>,
    /// The IPv6 value.
    pub v6: Option<T>,
}

// Not derived: the derive would demand `T: Default`, and "no value" needs none.
impl<T> Default for PerFamily<T> {
    fn default() -> Self {
        Self { v4: None, v6: None }
    }
}

impl<T: Copy> PerFamily<T> {
    /// The value of `family`.
    pub fn get(&self, family: IpFamily) -> Option<T> {
        match family {
            IpFamily::V4 => self.v4,
            IpFamily::V6 => self.v6,
        }
    }

    /// The slot of `family`, to set or clear it.
    pub fn slot_mut(&mut self, family: IpFamily) -> &mut Option<T> {
        match family {
            IpFamily::V4 => &mut self.v4,
            IpFamily::V6 => &mut self.v6,
        }
    }

    /// The families that have a value, IPv4 first.
    pub fn families(&self) -> Vec<IpFamily> {
        [IpFamily::V4, IpFamily::V6]
            .into_iter()
            .filter(|f| self.get(*f).is_some())
            .collect()
    }

    /// Whether both families are present.
    pub fn is_dual_stack(&self) -> bool {
        self.v4.is_some() && self.v6.is_some()
    }
}

/// Comma-separated, IPv4 first.
impl<T: fmt::Display> fmt::Display for PerFamily<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = [&self.v4, &self.v6]
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        f.write_str(&all.join(","))
    }
}
