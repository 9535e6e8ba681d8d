//! A small, dependency-free IP prefix type.
//!
//! weft checks CIDRs in three places: the API server (CEL `isCIDR()`/`cidr()`), the operator (overlap
//! with the service range and node addresses) and the agent (subnet arithmetic). This module is the
//! Rust side of that contract. Invariant: an [`IpCidr`] is always canonical, i.e. its address has no
//! bits set beyond the prefix, exactly like CEL's `cidr(x).masked() == cidr(x)` requirement in the CRD.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::Error;

/// IP family of an address or prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// A canonical IP prefix such as `10.244.0.0/16` or `fd00:10:244::/56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

impl IpCidr {
    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// The address family.
    pub fn family(&self) -> IpFamily {
        family_of(self.addr)
    }

    /// Whether `ip` lies inside this prefix.
    pub fn contains_addr(&self, ip: IpAddr) -> bool {
        family_of(ip) == self.family() && mask(ip, self.prefix) == self.addr
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn contains(&self, other: &IpCidr) -> bool {
        other.family() == self.family()
            && other.prefix >= self.prefix
            && mask(other.addr, self.prefix) == self.addr
    }

    /// Whether the two prefixes share at least one address.
    pub fn overlaps(&self, other: &IpCidr) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// Parses `s`, accepting host bits and returning the masked prefix (like CEL's `cidr(s).masked()`).
    pub fn parse_lenient(s: &str) -> Result<IpCidr, Error> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| Error::MissingPrefix(s.to_owned()))?;
        let addr: IpAddr = addr.parse().map_err(|_| Error::BadAddress(s.to_owned()))?;
        let prefix: u8 = prefix.parse().map_err(|_| Error::BadPrefix(s.to_owned()))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > max {
            return Err(Error::BadPrefix(s.to_owned()));
        }
        Ok(IpCidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// A single-address prefix (`/32` or `/128`) for `ip`.
    pub fn host(ip: IpAddr) -> IpCidr {
        let prefix = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        IpCidr { addr: ip, prefix }
    }
}

impl FromStr for IpCidr {
    type Err = Error;

    /// Parses a canonical CIDR; host bits are an error that names the canonical form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cidr = IpCidr::parse_lenient(s)?;
        let (given_addr, _) = s.split_once('/').unwrap_or((s, ""));
        let given: IpAddr = given_addr
            .parse()
            .map_err(|_| Error::BadAddress(s.to_owned()))?;
        if given != cidr.addr {
            return Err(Error::HostBitsSet {
                given: s.to_owned(),
                canonical: cidr.to_string(),
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The family of an address.
pub fn family_of(ip: IpAddr) -> IpFamily {
    match ip {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_and_rejects_bad_input() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("10.244.0.0/16", Ok("10.244.0.0/16")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("fd00:10:244::/56", Ok("fd00:10:244::/56")),
            ("10.244.1.0/16", Err("host bits set; use 10.244.0.0/16")),
            ("10.244.0.0", Err("expected ADDRESS/PREFIX")),
            ("10.244.0.0/33", Err("prefix length")),
            ("fd00::/129", Err("prefix length")),
            ("10.244.0/16", Err("address part")),
            ("10.244.0.0/abc", Err("prefix length")),
        ];
        for (input, want) in cases {
            let got = input.parse::<IpCidr>();
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(g.to_string(), *w, "{input}"),
                (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{input}: {e}"),
                (w, g) => panic!("{input}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn containment_and_overlap() {
        let c = |s: &str| s.parse::<IpCidr>().expect("test cidr");
        assert!(c("10.0.0.0/8").contains(&c("10.244.0.0/16")));
        assert!(!c("10.244.0.0/16").contains(&c("10.0.0.0/8")));
        assert!(c("10.244.0.0/16").overlaps(&c("10.0.0.0/8")));
        assert!(!c("10.244.0.0/16").overlaps(&c("10.96.0.0/12")));
        assert!(!c("10.244.0.0/16").overlaps(&c("fd00::/8")));
        assert!(c("10.244.0.0/16").contains_addr("10.244.3.4".parse().expect("ip")));
        assert!(!c("10.244.0.0/16").contains_addr("10.245.0.1".parse().expect("ip")));
        assert!(c("fd00::/8").contains(&c("fd00:10:244::/56")));
        assert_eq!(
            IpCidr::host("10.1.2.3".parse().expect("ip")).to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            IpCidr::parse_lenient("10.96.0.1/12")
                .expect("lenient")
                .to_string(),
            "10.96.0.0/12"
        );
    }
}
