//! host-local-compatible address management for weft's own CNI plugin.
//!
//! The reference setup runs two Go binaries per pod (ptp, which execs host-local); weft's plugin
//! does both in one process, and this module is its host-local half. It is a drop-in: it reads the
//! same `ipam` section and keeps the same on-disk store, so a node can switch between the
//! reference plugins and weft's with live pods, and both can allocate from one store at once.
//!
//! ```text
//!   <dataDir>/<network name>/        dataDir defaults to /var/lib/cni/networks
//!     lock                           flock(LOCK_EX) held for a whole allocate/release/gc
//!     10.244.1.5                     one file per reserved IP, named by its canonical string,
//!     fd00::5                        created with O_EXCL (0600); content "<id trimmed>\r\n<ifname>"
//!                                    (older host-local wrote only "<id>")
//!     last_reserved_ip.0             the IP last reserved in range set 0: the next search in
//!     last_reserved_ip.1             that set starts after it (round robin)
//! ```
//!
//! The pure half parses and canonicalises the configuration exactly as host-local's `range.go`,
//! `range_set.go` and `config.go` do ([`plan_ipam`]), places requested IPs
//! ([`place_requested`]) and parses resolv.conf ([`parse_resolv_conf`]). The effectful half
//! ([`Store`], [`Locked`]) reserves, looks up and releases files under the lock.
//!
//! Invariants:
//! - Compatible both ways: what host-local wrote, weft reads, releases and skips over, and the
//!   other way round (the interop test runs `/usr/lib/cni/host-local` against the same store).
//!   Round robin is shared through `last_reserved_ip.<set>`, the search order is host-local's
//!   `RangeIter` (start after the last reserved IP, wrap, skip the gateway, walk the set's ranges
//!   in order).
//! - Nothing half-reserved: an allocation either reserves one IP in every range set or leaves no
//!   file of its own behind (a failed write removes its file; a failure in a later set removes
//!   the earlier sets' files). Unlike host-local, the undo removes only what this call reserved,
//!   never an older reservation of the same container.
//!
//! Deliberate differences from host-local, all refusals of configurations it would accept:
//! a gateway outside its subnet, `rangeStart` after `rangeEnd` (host-local would then walk off the
//! subnet), legacy `rangeStart`/`rangeEnd`/`gateway` given without `subnet` (host-local ignores
//! them silently), and a network name that would escape `dataDir`. JSON keys are matched
//! case-sensitively (Go's decoder also accepts e.g. `DataDir`). Behaviour differences that leave
//! the same files: the lock is held across all range sets of one ADD (host-local takes it per
//! set), and a release runs once (host-local's DEL runs `ReleaseByID` once per range set, so with
//! two or more sets it also drops old-format files of a container that has new-format ones).

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use weft_crds::IpCidr;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Deserializer, Serialize};

/// host-local's default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// The lock file inside a network's store directory (go-filemutex on `<dir>/lock`).
const LOCK_FILE: &str = "lock";
/// Prefix of the round-robin files, followed by the range set's index.
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Between the container ID and the interface name in a reservation file.
const LINE_BREAK: &str = "\r\n";

/// CNI error code 5: I/O failure.
pub const CNI_CODE_IO: u32 = 5;
/// CNI error code 7: invalid network config.
pub const CNI_CODE_INVALID_CONFIG: u32 = 7;
/// First plugin-specific CNI error code; weft uses it for "no address can be given now"
/// (exhaustion and conflicts with existing reservations).
pub const CNI_CODE_ADDRESS_UNAVAILABLE: u32 = 100;

/// Everything that can go wrong in address management; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// A field of the `ipam` section is malformed or inconsistent (CNI code 7).
    #[error("invalid ipam config: {field} = {value:?}: {reason}")]
    InvalidField {
        field: String,
        value: String,
        reason: String,
    },
    /// Neither `ipam.ranges` nor the legacy `ipam.subnet` is given (CNI code 7).
    #[error(
        "invalid ipam config: no IP ranges specified; set ipam.ranges (a list of range sets) \
         or ipam.subnet"
    )]
    NoRanges,
    /// The network name would not name a directory under `dataDir` (CNI code 7).
    #[error(
        "invalid network name {name:?}: it names the store directory under dataDir, so it must \
         be non-empty, not \".\" or \"..\", and contain no '/'"
    )]
    InvalidNetworkName { name: String },
    /// A requested IP is its range's gateway (CNI code 7).
    #[error("requested ip {ip} is subnet's gateway (range {range}); request another address")]
    RequestedGateway { ip: IpAddr, range: String },
    /// Requested IPs that fit no range set, or a second one for a set that already has one
    /// (CNI code 7).
    #[error(
        "failed to allocate all requested IPs: {} fit no range set; each must lie between \
         rangeStart and rangeEnd of a range set, at most one per range set",
        join_ips(.ips)
    )]
    RequestedUnplaced { ips: Vec<IpAddr> },
    /// A requested IP is already reserved (CNI code 100).
    #[error("requested IP address {ip} is not available in range set {range_set}")]
    RequestedTaken { ip: IpAddr, range_set: String },
    /// Every address of a range set is reserved (CNI code 100).
    #[error("no IP addresses available in range set: {range_set}")]
    Exhausted { range_set: String },
    /// The attachment already holds an address in this range set (CNI code 100); the runtime
    /// must DEL before it ADDs again.
    #[error("{ip} has been allocated to {id}, duplicate allocation is not allowed")]
    Duplicate { ip: IpAddr, id: String },
    /// A file or directory of the store could not be read or written (CNI code 5).
    #[error("failed to {action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl IpamError {
    /// The CNI error code the plugin reports: 5 for I/O, 7 for a configuration (or request) the
    /// user must change, 100 when the store cannot give the address now (exhausted, taken,
    /// duplicate), which a retry after a release may cure.
    pub fn cni_code(&self) -> u32 {
        match self {
            IpamError::InvalidField { .. }
            | IpamError::NoRanges
            | IpamError::InvalidNetworkName { .. }
            | IpamError::RequestedGateway { .. }
            | IpamError::RequestedUnplaced { .. } => CNI_CODE_INVALID_CONFIG,
            IpamError::RequestedTaken { .. }
            | IpamError::Exhausted { .. }
            | IpamError::Duplicate { .. } => CNI_CODE_ADDRESS_UNAVAILABLE,
            IpamError::Io { .. } => CNI_CODE_IO,
        }
    }
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IpamError + 'a {
    move |source| IpamError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration (pure)

/// The `ipam` object of a network configuration, as host-local reads it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    /// The IPAM plugin's name (`host-local` in the reference setup).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Range sets; one address is allocated from each.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ranges: Vec<Vec<RangeConf>>,
    /// Legacy single-range form: becomes range set 0, before `ranges`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Legacy single-range form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    /// Legacy single-range form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    /// Legacy single-range form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Routes returned with the result.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub routes: Vec<Route>,
    /// The store's parent directory (default [`DEFAULT_DATA_DIR`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// A resolv.conf whose content becomes the result's DNS (see [`parse_resolv_conf`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<String>,
}

/// One range of a range set as written in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    /// The subnet in CIDR form, with no host bits.
    #[serde(default)]
    pub subnet: String,
    /// First allocatable address (default: subnet + 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    /// Last allocatable address (default: the subnet's last address, IPv4 broadcast excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    /// The gateway, never allocated (default: subnet + 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A route of the configuration, passed through to the result (fields CNI added later, such as
/// `mtu` or `table`, are kept as they are).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Route {
    /// Destination in CIDR form.
    pub dst: String,
    /// Next hop; absent means the range's gateway is up to the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A canonical range: every address filled in and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The network address.
    pub subnet: IpAddr,
    pub prefix_len: u8,
    /// First allocatable address, inclusive.
    pub start: IpAddr,
    /// Last allocatable address, inclusive.
    pub end: IpAddr,
    /// Never allocated; returned as the gateway of addresses from this range.
    pub gateway: IpAddr,
}

impl Range {
    /// Whether `ip` lies in the subnet between start and end (the gateway included), as
    /// host-local's `Range.Contains`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        in_subnet(ip, self.subnet, self.prefix_len)
            && num(ip) >= num(self.start)
            && num(ip) <= num(self.end)
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.subnet.is_ipv4() == other.subnet.is_ipv4()
            && (self.contains(other.start)
                || self.contains(other.end)
                || other.contains(self.start)
                || other.contains(self.end))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Ranges of one family, none overlapping; one allocation is made per set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    /// The range holding `ip`, if any.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Range::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// The checked form of an [`IpamConf`].
#[derive(Debug, Clone, PartialEq)]
pub struct IpamPlan {
    /// Range sets in allocation order (the legacy range first); the index names
    /// `last_reserved_ip.<index>`.
    pub range_sets: Vec<RangeSet>,
    /// The configured routes, each `dst` and `gw` checked to parse.
    pub routes: Vec<Route>,
    /// `dataDir` or [`DEFAULT_DATA_DIR`].
    pub data_dir: PathBuf,
}

/// Checks and canonicalises the `ipam` section as host-local's `LoadIPAMConfig` does.
pub fn plan_ipam(conf: &IpamConf) -> Result<IpamPlan, IpamError> {
    Ok(IpamPlan {
        range_sets: plan_range_sets(conf)?,
        routes: plan_routes(conf)?,
        data_dir: PathBuf::from(
            conf.data_dir
                .as_deref()
                .filter(|d| !d.is_empty())
                .unwrap_or(DEFAULT_DATA_DIR),
        ),
    })
}

/// The canonical range sets: the legacy range (if `subnet` is set) first, then `ranges`.
pub fn plan_range_sets(conf: &IpamConf) -> Result<Vec<RangeSet>, IpamError> {
    let mut sets: Vec<(String, Vec<RangeConf>)> = Vec::new();
    match non_empty(&conf.subnet) {
        Some(subnet) => sets.push((
            "ipam".to_string(),
            vec![RangeConf {
                subnet: subnet.to_string(),
                range_start: conf.range_start.clone(),
                range_end: conf.range_end.clone(),
                gateway: conf.gateway.clone(),
            }],
        )),
        None => {
            for (name, value) in [
                ("rangeStart", &conf.range_start),
                ("rangeEnd", &conf.range_end),
                ("gateway", &conf.gateway),
            ] {
                if let Some(v) = non_empty(value) {
                    return Err(invalid(
                        &format!("ipam.{name}"),
                        v,
                        "the legacy single-range form needs ipam.subnet too; move it into a \
                         range of ipam.ranges",
                    ));
                }
            }
        }
    }
    for (i, set) in conf.ranges.iter().enumerate() {
        sets.push((format!("ipam.ranges[{i}]"), set.clone()));
    }
    if sets.is_empty() {
        return Err(IpamError::NoRanges);
    }

    let mut out: Vec<RangeSet> = Vec::with_capacity(sets.len());
    for (field, set) in &sets {
        out.push(plan_range_set(field, set)?);
    }
    for i in 0..out.len() {
        for j in i + 1..out.len() {
            let overlap = out[i]
                .0
                .iter()
                .any(|a| out[j].0.iter().any(|b| a.overlaps(b)));
            if overlap {
                return Err(invalid(
                    &sets[j].0,
                    &out[j].to_string(),
                    &format!(
                        "range set {j} overlaps with range set {i} ({}); range sets must be \
                         disjoint",
                        out[i]
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn plan_range_set(field: &str, set: &[RangeConf]) -> Result<RangeSet, IpamError> {
    if set.is_empty() {
        return Err(invalid(
            field,
            "[]",
            "empty range set; give at least one range",
        ));
    }
    let mut ranges = Vec::with_capacity(set.len());
    for (j, rc) in set.iter().enumerate() {
        let f = if field == "ipam" {
            field.to_string()
        } else {
            format!("{field}[{j}]")
        };
        let r = plan_range(&f, rc)?;
        if let Some(first) = ranges.first().map(|r: &Range| r.subnet)
            && first.is_ipv4() != r.subnet.is_ipv4()
        {
            return Err(invalid(
                &format!("{f}.subnet"),
                &rc.subnet,
                "mixed address families in one range set; put each family in a set of its own",
            ));
        }
        if let Some(other) = ranges.iter().find(|o: &&Range| o.overlaps(&r)) {
            return Err(invalid(
                &f,
                &r.to_string(),
                &format!("overlaps range {other} of the same set"),
            ));
        }
        ranges.push(r);
    }
    Ok(RangeSet(ranges))
}

/// Canonicalises one range as host-local's `Range.Canonicalize` (`field` locates it in messages).
fn plan_range(field: &str, rc: &RangeConf) -> Result<Range, IpamError> {
    let sf = format!("{field}.subnet");
    let (subnet, prefix_len) = parse_cidr(&sf, &rc.subnet)?;
    if let IpAddr::V6(v6) = subnet
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(invalid(
            &sf,
            &rc.subnet,
            "an IPv4-mapped IPv6 subnet; write it in IPv4 form",
        ));
    }
    let bits = family_bits(subnet);
    if prefix_len > bits - 2 {
        return Err(invalid(
            &sf,
            &rc.subnet,
            &format!(
                "network too small to allocate from; the smallest is /{}",
                bits - 2
            ),
        ));
    }
    let network = from_num(num(subnet) & mask(prefix_len, bits), subnet.is_ipv4());
    if network != subnet {
        return Err(invalid(
            &sf,
            &rc.subnet,
            &format!("network has host bits set; the network address is {network}/{prefix_len}"),
        ));
    }
    let first = from_num(num(subnet) + 1, subnet.is_ipv4());
    let in_net = |name: &str, value: &Option<String>, default: IpAddr| match non_empty(value) {
        None => Ok(default),
        Some(text) => {
            let f = format!("{field}.{name}");
            let ip = parse_ip(&f, text)?;
            if in_subnet(ip, subnet, prefix_len) {
                Ok(ip)
            } else {
                Err(invalid(
                    &f,
                    text,
                    &format!("not in network {subnet}/{prefix_len}"),
                ))
            }
        }
    };
    let gateway = in_net("gateway", &rc.gateway, first)?;
    let start = in_net("rangeStart", &rc.range_start, first)?;
    let end = in_net("rangeEnd", &rc.range_end, last_ip(subnet, prefix_len))?;
    if num(start) > num(end) {
        return Err(invalid(
            &format!("{field}.rangeStart"),
            &start.to_string(),
            &format!("after rangeEnd {end}"),
        ));
    }
    Ok(Range {
        subnet,
        prefix_len,
        start,
        end,
        gateway,
    })
}

fn plan_routes(conf: &IpamConf) -> Result<Vec<Route>, IpamError> {
    for (i, route) in conf.routes.iter().enumerate() {
        parse_cidr(&format!("ipam.routes[{i}].dst"), &route.dst)?;
        if let Some(gw) = non_empty(&route.gw) {
            parse_ip(&format!("ipam.routes[{i}].gw"), gw)?;
        }
    }
    Ok(conf.routes.clone())
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn invalid(field: &str, value: &str, reason: &str) -> IpamError {
    IpamError::InvalidField {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_ip(field: &str, text: &str) -> Result<IpAddr, IpamError> {
    text.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| invalid(field, text, "not an IPv4 or IPv6 address"))
}

/// `addr/len` as Go's `net.ParseCIDR`: the address as written (host bits kept), the length
/// (digits only, as Go reads it). The syntax is weft's one CIDR parser's ([`IpCidr`]).
fn parse_cidr(field: &str, text: &str) -> Result<(IpAddr, u8), IpamError> {
    let bad = || {
        invalid(
            field,
            text,
            "not a CIDR such as 10.244.1.0/24 or fd00:1::/64",
        )
    };
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let cidr = IpCidr::parse_lenient(text).map_err(|_| bad())?;
    let written: IpAddr = addr.parse().map_err(|_| bad())?;
    Ok((written, cidr.prefix_len()))
}

fn family_bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_num(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

fn mask(prefix_len: u8, bits: u8) -> u128 {
    let all = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    if prefix_len == 0 {
        0
    } else {
        (u128::MAX << (bits - prefix_len)) & all
    }
}

fn in_subnet(ip: IpAddr, subnet: IpAddr, prefix_len: u8) -> bool {
    let bits = family_bits(subnet);
    ip.is_ipv4() == subnet.is_ipv4() && num(ip) & mask(prefix_len, bits) == num(subnet)
}

/// The last address of the subnet; for IPv4 the one before the broadcast.
fn last_ip(subnet: IpAddr, prefix_len: u8) -> IpAddr {
    let bits = family_bits(subnet);
    let last = num(subnet) | (!mask(prefix_len, bits) & mask(bits, bits));
    from_num(
        if subnet.is_ipv4() { last - 1 } else { last },
        subnet.is_ipv4(),
    )
}

/// Assigns requested IPs to range sets as host-local's cmdAdd does: each set takes the first
/// requested IP that lies in one of its ranges. An IP left over, or one that is a gateway, is
/// refused before anything is reserved.
pub fn place_requested(
    sets: &[RangeSet],
    requested: &[IpAddr],
) -> Result<Vec<Option<IpAddr>>, IpamError> {
    let mut left: Vec<IpAddr> = Vec::new();
    for ip in requested.iter().map(|ip| ip.to_canonical()) {
        if !left.contains(&ip) {
            left.push(ip);
        }
    }
    let mut placed = Vec::with_capacity(sets.len());
    for set in sets {
        match left.iter().position(|ip| set.contains(*ip)) {
            Some(k) => {
                let ip = left.remove(k);
                if let Some(r) = set.range_for(ip).filter(|r| r.gateway == ip) {
                    return Err(IpamError::RequestedGateway {
                        ip,
                        range: r.to_string(),
                    });
                }
                placed.push(Some(ip));
            }
            None => placed.push(None),
        }
    }
    if left.is_empty() {
        Ok(placed)
    } else {
        Err(IpamError::RequestedUnplaced { ips: left })
    }
}

/// host-local's `RangeIter`: starts after the last reserved IP when it lies in the set (else at
/// the first range's start), walks each range to its end, moves to the next range (wrapping),
/// skips gateways, and stops when it is back where it began.
struct RangeIter<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<IpAddr>,
    begin: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> Self {
        let found = last_reserved.and_then(|ip| {
            set.0
                .iter()
                .position(|r| r.contains(ip))
                .map(|idx| (idx, ip))
        });
        match found {
            Some((idx, ip)) => RangeIter {
                set,
                idx,
                cur: Some(ip),
                begin: None,
            },
            None => RangeIter {
                set,
                idx: 0,
                cur: None,
                begin: set.0.first().map(|r| r.start),
            },
        }
    }
}

impl<'a> Iterator for RangeIter<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        let set = self.set;
        loop {
            let mut r = set.0.get(self.idx)?;
            let cur = match self.cur {
                None => {
                    self.cur = Some(r.start);
                    self.begin = Some(r.start);
                    r.start
                }
                Some(c) => {
                    let next = if c == r.end {
                        self.idx = (self.idx + 1) % set.0.len();
                        r = &set.0[self.idx];
                        r.start
                    } else {
                        from_num(num(c) + 1, c.is_ipv4())
                    };
                    self.cur = Some(next);
                    match self.begin {
                        None => self.begin = Some(next),
                        Some(b) if b == next => return None,
                        Some(_) => {}
                    }
                    next
                }
            };
            if cur != r.gateway {
                return Some((cur, r));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// resolv.conf (pure)

/// The DNS part of a CNI result, with CNI's field names; empty fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

/// Parses resolv.conf text as host-local's dns.go: `nameserver` (first word), `domain` (the last
/// one wins), `search` and `options` (all words, accumulated); comments (`#`, `;`) and lines of
/// fewer than two words are skipped.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [key, values @ ..] = fields.as_slice() else {
            continue;
        };
        let Some(first) = values.first() else {
            continue;
        };
        let owned = || values.iter().map(|s| s.to_string());
        match *key {
            "nameserver" => dns.nameservers.push(first.to_string()),
            "domain" => dns.domain = first.to_string(),
            "search" => dns.search.extend(owned()),
            "options" => dns.options.extend(owned()),
            _ => {}
        }
    }
    dns
}

// ---------------------------------------------------------------------------------------------
// The store (effects)

/// The directory `<dataDir>/<network>` shared with host-local.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// One address reserved by [`Locked::allocate`], one per range set, in set order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub address: IpAddr,
    /// The prefix length of the range's subnet.
    pub prefix_len: u8,
    pub gateway: IpAddr,
}

impl Store {
    /// Opens (creating it, mode 0755, as host-local does) the store of `network` under
    /// `data_dir`. A name that is empty, `.`, `..` or contains `/` is refused: it would put the
    /// store outside `data_dir` or in it.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store, IpamError> {
        if network.is_empty() || network == "." || network == ".." || network.contains('/') {
            return Err(IpamError::InvalidNetworkName {
                name: network.to_string(),
            });
        }
        let dir = data_dir.join(network);
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io_err("create store directory", &dir))?;
        Ok(Store { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store's lock (flock LOCK_EX on `<dir>/lock`, the lock host-local takes),
    /// waiting for other holders. Each call opens the file anew, so two threads of one process
    /// exclude each other as two processes do. The lock is released when the guard drops.
    pub fn lock(&self) -> Result<Locked<'_>, IpamError> {
        let path = self.dir.join(LOCK_FILE);
        // go-filemutex opens it O_CREAT|O_RDONLY; std needs write access to create, which
        // flock does not care about.
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(flock) => {
                    return Ok(Locked {
                        store: self,
                        _flock: flock,
                    });
                }
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(IpamError::Io {
                        action: "lock",
                        path,
                        source: io::Error::from(errno),
                    });
                }
            }
        }
    }
}

/// The store while this process holds its lock; every operation that reads or changes
/// reservations lives here, so none runs unlocked.
#[derive(Debug)]
pub struct Locked<'a> {
    store: &'a Store,
    _flock: Flock<File>,
}

/// A reservation file: its IP and trimmed content.
struct Entry {
    ip: IpAddr,
    path: PathBuf,
    owner: String,
}

impl Locked<'_> {
    /// Reserves one address per range set for the attachment (`id`, `ifname`), honouring the
    /// requested IPs (see [`place_requested`]); all or nothing.
    pub fn allocate(
        &self,
        sets: &[RangeSet],
        id: &str,
        ifname: &str,
        requested: &[IpAddr],
    ) -> Result<Vec<Allocation>, IpamError> {
        let placed = place_requested(sets, requested)?;
        let entries = self.entries()?;
        let held = matching(&entries, id, ifname);
        let mut taken: HashSet<IpAddr> = entries.iter().map(|e| e.ip).collect();
        let mut done: Vec<Allocation> = Vec::with_capacity(sets.len());
        for (idx, (set, want)) in sets.iter().zip(placed).enumerate() {
            match self.allocate_in_set(idx, set, id, ifname, want, &held, &mut taken) {
                Ok(a) => done.push(a),
                Err(e) => {
                    for a in &done {
                        // Best effort: the error that stopped us is the one to report.
                        let _ = fs::remove_file(self.ip_path(a.address));
                    }
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate_in_set(
        &self,
        idx: usize,
        set: &RangeSet,
        id: &str,
        ifname: &str,
        want: Option<IpAddr>,
        held: &[IpAddr],
        taken: &mut HashSet<IpAddr>,
    ) -> Result<Allocation, IpamError> {
        let allocation = |ip: IpAddr, r: &Range| Allocation {
            address: ip,
            prefix_len: r.prefix_len,
            gateway: r.gateway,
        };
        if let Some(ip) = want {
            // place_requested put it in this set, so the range exists.
            let r = set
                .range_for(ip)
                .ok_or_else(|| IpamError::RequestedUnplaced { ips: vec![ip] })?;
            if self.reserve(ip, id, ifname, idx)? {
                return Ok(allocation(ip, r));
            }
            return Err(IpamError::RequestedTaken {
                ip,
                range_set: set.to_string(),
            });
        }
        // host-local checks duplicates only when no IP was requested; so does weft.
        if let Some(ip) = held.iter().find(|ip| set.contains(**ip)) {
            return Err(IpamError::Duplicate {
                ip: *ip,
                id: id.to_string(),
            });
        }
        for (ip, r) in RangeIter::new(set, self.last_reserved(idx)) {
            if taken.contains(&ip) {
                continue;
            }
            if self.reserve(ip, id, ifname, idx)? {
                taken.insert(ip);
                return Ok(allocation(ip, r));
            }
            taken.insert(ip);
        }
        Err(IpamError::Exhausted {
            range_set: set.to_string(),
        })
    }

    /// Releases every address of (`id`, `ifname`): the files whose trimmed content is
    /// `id\r\nifname`, or, only if there are none, the old-format files holding just `id`
    /// (host-local's `ReleaseByID`). Nothing to release is fine. Keeps going past a failed
    /// removal and reports the first.
    pub fn release(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let entries = self.entries()?;
        let new = key(id, ifname);
        let mut hits: Vec<&Entry> = entries.iter().filter(|e| e.owner == new).collect();
        if hits.is_empty() {
            hits = entries.iter().filter(|e| e.owner == id.trim()).collect();
        }
        remove_all(hits)
    }

    /// The addresses held by (`id`, `ifname`) in either format (host-local's `GetByID`), sorted.
    pub fn get(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let mut ips = matching(&self.entries()?, id, ifname);
        ips.sort();
        Ok(ips)
    }

    /// CNI GC: releases every reservation that belongs to none of the `valid` attachments
    /// (container ID, interface name); an old-format file is kept when its ID is valid. Never
    /// touches `lock` or `last_reserved_ip.*`, nor any file not named by an IP.
    pub fn gc(&self, valid: &[(String, String)]) -> Result<Vec<IpAddr>, IpamError> {
        let keys: HashSet<String> = valid.iter().map(|(id, ifn)| key(id, ifn)).collect();
        let ids: HashSet<&str> = valid.iter().map(|(id, _)| id.trim()).collect();
        let entries = self.entries()?;
        let stale = entries
            .iter()
            .filter(|e| !keys.contains(&e.owner) && !ids.contains(e.owner.as_str()))
            .collect();
        remove_all(stale)
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.store.dir.join(ip.to_string())
    }

    /// Creates the IP's file with O_EXCL; `false` when it already exists. On success records the
    /// IP in `last_reserved_ip.<idx>`; if that fails the reservation is undone.
    fn reserve(&self, ip: IpAddr, id: &str, ifname: &str, idx: usize) -> Result<bool, IpamError> {
        let path = self.ip_path(ip);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err("create reservation", &path)(e)),
        };
        let content = format!("{}{LINE_BREAK}{ifname}", id.trim());
        if let Err(e) = file.write_all(content.as_bytes()) {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(io_err("write reservation", &path)(e));
        }
        drop(file);
        // Written in place like host-local: it is only read under the lock, and a torn write
        // costs one round of round robin, not an address. Overwritten, then cut to its length:
        // truncating it to nothing first would free its block and allocate another, the costliest
        // step of an ADD's store work on ext4.
        let last = self.store.dir.join(format!("{LAST_RESERVED_PREFIX}{idx}"));
        let text = ip.to_string();
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&last)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.set_len(text.len() as u64)
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(io_err("write", &last)(e));
        }
        Ok(true)
    }

    /// The set's last reserved IP; a missing or unreadable file only loses round robin.
    fn last_reserved(&self, idx: usize) -> Option<IpAddr> {
        let path = self.store.dir.join(format!("{LAST_RESERVED_PREFIX}{idx}"));
        let text = fs::read_to_string(path).ok()?;
        text.trim()
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical())
    }

    /// The reservation files: regular files named by an IP, with their trimmed content. A file
    /// that vanishes or cannot be read is skipped, as host-local's walk does.
    ///
    /// Every ADD reads them all (host-local's duplicate check), so a node's hundred pods are a
    /// hundred files per ADD: each is opened relative to the directory (no path walk from the
    /// root) and read with one call into a buffer larger than any reservation, three system
    /// calls instead of `fs::read`'s five (it also sizes its buffer with a `statx` and reads
    /// once more to see the end).
    fn entries(&self) -> Result<Vec<Entry>, IpamError> {
        let dir = &self.store.dir;
        let dir_fd = File::open(dir).map_err(io_err("read store directory", dir))?;
        let mut buf = [0u8; 1024];
        let mut out = Vec::new();
        for dirent in fs::read_dir(dir).map_err(io_err("read store directory", dir))? {
            let dirent = dirent.map_err(io_err("read store directory", dir))?;
            let name = dirent.file_name();
            let Some(ip) = name
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
                .map(|ip| ip.to_canonical())
            else {
                continue;
            };
            if !dirent.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let Some(bytes) = read_small(&dir_fd, &name, &mut buf) else {
                continue;
            };
            out.push(Entry {
                ip,
                path: dirent.path(),
                owner: String::from_utf8_lossy(&bytes).trim().to_string(),
            });
        }
        Ok(out)
    }
}

/// The content of `name` in the directory `dir`, read into `buf` when it fits (one `read`: a
/// regular file returns less than asked only at its end), else whole; `None` when it cannot be
/// opened or read.
fn read_small<'b>(
    dir: &File,
    name: &std::ffi::OsStr,
    buf: &'b mut [u8],
) -> Option<std::borrow::Cow<'b, [u8]>> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    use std::io::Read;
    let fd = openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).ok()?;
    let mut file = File::from(fd);
    let n = file.read(buf).ok()?;
    if n < buf.len() {
        return Some(std::borrow::Cow::Borrowed(&buf[..n]));
    }
    let mut whole = buf.to_vec();
    file.read_to_end(&mut whole).ok()?;
    Some(std::borrow::Cow::Owned(whole))
}

fn key(id: &str, ifname: &str) -> String {
    format!("{}{LINE_BREAK}{ifname}", id.trim())
}

/// host-local's `GetByID`: files in the new format or the old one.
fn matching(entries: &[Entry], id: &str, ifname: &str) -> Vec<IpAddr> {
    let new = key(id, ifname);
    entries
        .iter()
        .filter(|e| e.owner == new || e.owner == id.trim())
        .map(|e| e.ip)
        .collect()
}

fn remove_all(entries: Vec<&Entry>) -> Result<Vec<IpAddr>, IpamError> {
    let mut removed = Vec::new();
    let mut first_err = None;
    for e in entries {
        match fs::remove_file(&e.path) {
            Ok(()) => removed.push(e.ip),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                first_err.get_or_insert_with(|| io_err("remove reservation", &e.path)(err));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => {
            removed.sort();
            Ok(removed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A scratch directory under the system temp dir, removed on drop (also when a test fails).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = std::env::temp_dir().join(format!(
                "weft-ipam-{tag}-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// One read for a reservation that fits the buffer, the whole file for one that does not
    /// (a container ID longer than the buffer), nothing for a file that cannot be opened.
    #[test]
    fn small_files_are_read_whole_whatever_their_size() {
        let tmp = TempDir::new("read-small");
        let dir = File::open(&tmp.0).unwrap();
        let mut buf = [0u8; 16];
        for len in [0usize, 15, 16, 17, 100] {
            let content: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            fs::write(tmp.0.join("f"), &content).unwrap();
            let got = read_small(&dir, std::ffi::OsStr::new("f"), &mut buf).expect("read");
            assert_eq!(&*got, &content[..], "a file of {len} bytes");
        }
        assert!(read_small(&dir, std::ffi::OsStr::new("missing"), &mut buf).is_none());
    }

    /// `last_reserved_ip` is overwritten in place: a shorter address leaves no tail of the longer
    /// one before it (host-local parses the whole file as one IP).
    #[test]
    fn a_shorter_last_reserved_ip_leaves_no_tail() {
        let tmp = TempDir::new("last-shorter");
        let store = open(&tmp);
        let locked = store.lock().unwrap();
        assert!(locked.reserve(ip("10.1.100.100"), "a", "eth0", 0).unwrap());
        assert!(locked.reserve(ip("10.1.0.9"), "b", "eth0", 0).unwrap());
        let last =
            fs::read_to_string(store.dir().join(format!("{LAST_RESERVED_PREFIX}0"))).unwrap();
        assert_eq!(last, "10.1.0.9");
        assert_eq!(locked.last_reserved(0), Some(ip("10.1.0.9")));
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| ip(s)).collect()
    }

    fn conf(ipam: serde_json::Value) -> IpamConf {
        serde_json::from_value(ipam).unwrap()
    }

    /// Range sets from the `ranges` JSON of an ipam section.
    fn sets(ranges: serde_json::Value) -> Vec<RangeSet> {
        plan_range_sets(&conf(json!({ "type": "host-local", "ranges": ranges }))).unwrap()
    }

    fn one_set(ranges: serde_json::Value) -> Vec<RangeSet> {
        sets(json!([ranges]))
    }

    fn open(tmp: &TempDir) -> Store {
        Store::open(&tmp.0, "net").unwrap()
    }

    fn alloc(store: &Store, sets: &[RangeSet], id: &str) -> Result<Vec<IpAddr>, IpamError> {
        let got = store.lock()?.allocate(sets, id, "eth0", &[])?;
        Ok(got.into_iter().map(|a| a.address).collect())
    }

    /// The names of the reservation files in the store, sorted.
    fn reserved(store: &Store) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.parse::<IpAddr>().is_ok())
            .collect();
        names.sort();
        names
    }

    fn read(store: &Store, name: &str) -> String {
        fs::read_to_string(store.dir().join(name)).unwrap()
    }

    #[test]
    fn canonicalises_ranges_as_host_local() {
        let r = |subnet: &str, p: u8, start: &str, end: &str, gw: &str| Range {
            subnet: ip(subnet),
            prefix_len: p,
            start: ip(start),
            end: ip(end),
            gateway: ip(gw),
        };
        let cases = [
            (
                json!({"subnet": "10.244.1.0/24"}),
                r("10.244.1.0", 24, "10.244.1.1", "10.244.1.254", "10.244.1.1"),
            ),
            (
                json!({"subnet": "10.0.0.0/30"}),
                r("10.0.0.0", 30, "10.0.0.1", "10.0.0.2", "10.0.0.1"),
            ),
            (
                json!({"subnet": "fd00::/120"}),
                r("fd00::", 120, "fd00::1", "fd00::ff", "fd00::1"),
            ),
            (
                json!({"subnet": "fd00::/126"}),
                r("fd00::", 126, "fd00::1", "fd00::3", "fd00::1"),
            ),
            (
                json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.100",
                       "rangeEnd": "10.0.0.200", "gateway": "10.0.0.254"}),
                r("10.0.0.0", 24, "10.0.0.100", "10.0.0.200", "10.0.0.254"),
            ),
            (
                json!({"subnet": "10.0.0.0/24", "gateway": "", "rangeStart": null}),
                r("10.0.0.0", 24, "10.0.0.1", "10.0.0.254", "10.0.0.1"),
            ),
            (
                json!({"subnet": "10.0.0.0/24", "rangeStart": "::ffff:10.0.0.5"}),
                r("10.0.0.0", 24, "10.0.0.5", "10.0.0.254", "10.0.0.1"),
            ),
        ];
        for (input, want) in cases {
            let got = one_set(json!([input.clone()]));
            assert_eq!(got, vec![RangeSet(vec![want])], "for {input}");
        }
        assert_eq!(
            one_set(json!([{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.0.9"}]))[0].to_string(),
            "10.0.0.1-10.0.0.9"
        );
    }

    #[test]
    fn legacy_range_comes_first_and_defaults_apply() {
        let c = conf(json!({
            "type": "host-local",
            "subnet": "10.1.0.0/16",
            "gateway": "10.1.0.254",
            "ranges": [[{"subnet": "fd00::/64"}]],
            "routes": null,
        }));
        let plan = plan_ipam(&c).unwrap();
        assert_eq!(plan.range_sets.len(), 2);
        assert_eq!(plan.range_sets[0].0[0].gateway, ip("10.1.0.254"));
        assert_eq!(plan.range_sets[0].to_string(), "10.1.0.1-10.1.255.254");
        assert_eq!(plan.range_sets[1].0[0].end, ip("fd00::ffff:ffff:ffff:ffff"));
        assert_eq!(plan.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(plan.routes.is_empty());
    }

    #[test]
    fn routes_and_other_fields_pass_through() {
        let c = conf(json!({
            "type": "host-local",
            "ranges": null,
            "subnet": "10.0.0.0/24",
            "dataDir": "/run/x",
            "resolvConf": "/etc/resolv.conf",
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd00::/8", "gw": "fd00::1", "mtu": 1400}],
        }));
        let plan = plan_ipam(&c).unwrap();
        assert_eq!(plan.data_dir, PathBuf::from("/run/x"));
        assert_eq!(c.resolv_conf.as_deref(), Some("/etc/resolv.conf"));
        assert_eq!(
            serde_json::to_value(&plan.routes).unwrap(),
            json!([{"dst": "0.0.0.0/0"}, {"dst": "fd00::/8", "gw": "fd00::1", "mtu": 1400}])
        );
    }

    #[test]
    fn refuses_bad_configs_naming_the_field() {
        let cases: Vec<(serde_json::Value, &str, &str)> = vec![
            (json!({}), "", "no IP ranges specified"),
            (json!({"ranges": []}), "", "no IP ranges specified"),
            (json!({"ranges": [[]]}), "ipam.ranges[0]", "empty range set"),
            (
                json!({"ranges": [[{"subnet": "10.0.0.1/24"}]]}),
                "ipam.ranges[0][0].subnet",
                "host bits set; the network address is 10.0.0.0/24",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/31"}]]}),
                "ipam.ranges[0][0].subnet",
                "too small to allocate from; the smallest is /30",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/32"}]]}),
                "ipam.ranges[0][0].subnet",
                "too small",
            ),
            (
                json!({"ranges": [[{"subnet": "fd00::/127"}]]}),
                "ipam.ranges[0][0].subnet",
                "the smallest is /126",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0"}]]}),
                "subnet",
                "not a CIDR",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/33"}]]}),
                "subnet",
                "not a CIDR",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/+24"}]]}),
                "subnet",
                "not a CIDR",
            ),
            (
                json!({"ranges": [[{"subnet": "banana/24"}]]}),
                "subnet",
                "not a CIDR",
            ),
            (
                json!({"ranges": [[{"rangeStart": "10.0.0.2"}]]}),
                "subnet",
                "not a CIDR",
            ),
            (
                json!({"ranges": [[{"subnet": "::ffff:10.0.0.0/120"}]]}),
                "subnet",
                "IPv4-mapped",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}]]}),
                "ipam.ranges[0][0].gateway",
                "not in network 10.0.0.0/24",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1"}]]}),
                "ipam.ranges[0][0].rangeStart",
                "not in network",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "fd00::1"}]]}),
                "ipam.ranges[0][0].rangeEnd",
                "not in network",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "ten"}]]}),
                "ipam.ranges[0][0].rangeStart",
                "not an IPv4 or IPv6 address",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9",
                                    "rangeEnd": "10.0.0.8"}]]}),
                "ipam.ranges[0][0].rangeStart",
                "after rangeEnd 10.0.0.8",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}),
                "ipam.ranges[0][1].subnet",
                "mixed address families",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]}),
                "ipam.ranges[0][1]",
                "overlaps range 10.0.0.1-10.0.0.254",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/16"}]]}),
                "ipam.ranges[1]",
                "range set 1 overlaps with range set 0",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "ranges": [[{"subnet": "10.0.0.128/25"}]]}),
                "ipam.ranges[0]",
                "range set 1 overlaps with range set 0",
            ),
            (
                json!({"rangeStart": "10.0.0.2", "ranges": [[{"subnet": "10.0.0.0/24"}]]}),
                "ipam.rangeStart",
                "needs ipam.subnet",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0"}]}),
                "ipam.routes[0].dst",
                "not a CIDR",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "x"}]}),
                "ipam.routes[0].gw",
                "not an IPv4 or IPv6 address",
            ),
        ];
        for (input, field, reason) in cases {
            let err = plan_ipam(&conf(input.clone())).unwrap_err();
            let msg = err.to_string();
            assert_eq!(err.cni_code(), CNI_CODE_INVALID_CONFIG, "{input}: {msg}");
            assert!(
                msg.contains(field),
                "{input}: {msg:?} should name {field:?}"
            );
            assert!(
                msg.contains(reason),
                "{input}: {msg:?} should say {reason:?}"
            );
        }
    }

    #[test]
    fn refuses_network_names_that_leave_the_data_dir() {
        let tmp = TempDir::new("names");
        for name in ["", ".", "..", "a/b", "../etc"] {
            let err = Store::open(&tmp.0, name).unwrap_err();
            assert!(
                matches!(err, IpamError::InvalidNetworkName { .. }),
                "{name}: {err}"
            );
            assert_eq!(err.cni_code(), CNI_CODE_INVALID_CONFIG);
        }
        let store = Store::open(&tmp.0.join("deep"), "cbr0").unwrap();
        assert!(store.dir().is_dir());
        assert_eq!(store.dir(), tmp.0.join("deep/cbr0"));
    }

    #[test]
    fn io_errors_name_the_path() {
        let tmp = TempDir::new("io");
        let file = tmp.0.join("plain-file");
        fs::write(&file, "").unwrap();
        let err = Store::open(&file, "net").unwrap_err();
        assert_eq!(err.cni_code(), CNI_CODE_IO);
        assert!(err.to_string().contains("plain-file/net"), "{err}");
    }

    #[test]
    fn allocates_in_order_skipping_the_gateway_and_records_the_last() {
        let tmp = TempDir::new("order");
        let store = open(&tmp);
        let s = one_set(json!([{"subnet": "10.0.0.0/24"}]));
        assert_eq!(alloc(&store, &s, "a").unwrap(), ips(&["10.0.0.2"]));
        assert_eq!(alloc(&store, &s, "b").unwrap(), ips(&["10.0.0.3"]));
        assert_eq!(read(&store, "10.0.0.2"), "a\r\neth0");
        assert_eq!(read(&store, "last_reserved_ip.0"), "10.0.0.3");
        let mode = fs::metadata(store.dir().join("10.0.0.2"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let got = store
            .lock()
            .unwrap()
            .allocate(&s, "c", "eth0", &[])
            .unwrap();
        assert_eq!(
            got,
            vec![Allocation {
                address: ip("10.0.0.4"),
                prefix_len: 24,
                gateway: ip("10.0.0.1"),
            }]
        );
    }

    #[test]
    fn round_robin_continues_after_the_last_reserved_ip_and_wraps() {
        let tmp = TempDir::new("rr");
        let store = open(&tmp);
        let s = one_set(json!([{"subnet": "10.0.0.0/28"}]));
        fs::write(store.dir().join("last_reserved_ip.0"), "10.0.0.7").unwrap();
        assert_eq!(alloc(&store, &s, "a").unwrap(), ips(&["10.0.0.8"]));
        // A released address is not handed out again before the range has been walked.
        store.lock().unwrap().release("a", "eth0").unwrap();
        assert_eq!(alloc(&store, &s, "b").unwrap(), ips(&["10.0.0.9"]));
        // From the range's end it wraps to its start, skipping the gateway .1.
        fs::write(store.dir().join("last_reserved_ip.0"), "10.0.0.14").unwrap();
        assert_eq!(alloc(&store, &s, "c").unwrap(), ips(&["10.0.0.2"]));
        // A last reserved IP outside the set (ranges changed) restarts from the beginning.
        fs::write(store.dir().join("last_reserved_ip.0"), "192.168.0.1").unwrap();
        assert_eq!(alloc(&store, &s, "d").unwrap(), ips(&["10.0.0.3"]));
    }

    #[test]
    fn skips_a_gateway_inside_the_range() {
        let tmp = TempDir::new("gw");
        let store = open(&tmp);
        let s = one_set(json!([{"subnet": "10.0.0.0/29", "gateway": "10.0.0.3"}]));
        let got: Vec<IpAddr> = (0..5)
            .flat_map(|i| alloc(&store, &s, &format!("c{i}")).unwrap())
            .collect();
        assert_eq!(
            got,
            ips(&["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"])
        );
        let err = alloc(&store, &s, "full").unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    }

    #[test]
    fn walks_the_ranges_of_a_set_in_order_and_wraps_across_them() {
        let tmp = TempDir::new("two");
        let store = open(&tmp);
        let s = one_set(json!([
            {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.11"},
            {"subnet": "10.0.1.0/24", "rangeStart": "10.0.1.10", "rangeEnd": "10.0.1.11"},
        ]));
        let got: Vec<IpAddr> = (0..4)
            .flat_map(|i| alloc(&store, &s, &format!("c{i}")).unwrap())
            .collect();
        assert_eq!(
            got,
            ips(&["10.0.0.10", "10.0.0.11", "10.0.1.10", "10.0.1.11"])
        );
        let err = alloc(&store, &s, "full").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no IP addresses available in range set: 10.0.0.10-10.0.0.11,10.0.1.10-10.0.1.11"
        );
        store.lock().unwrap().release("c0", "eth0").unwrap();
        store.lock().unwrap().release("c2", "eth0").unwrap();
        // last is 10.0.1.11, the end of the last range: wrap to the first range.
        assert_eq!(alloc(&store, &s, "x").unwrap(), ips(&["10.0.0.10"]));
        assert_eq!(alloc(&store, &s, "y").unwrap(), ips(&["10.0.1.10"]));
    }

    #[test]
    fn allocates_ipv6_and_dual_stack() {
        let tmp = TempDir::new("v6");
        let store = open(&tmp);
        let s = sets(json!([[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00:1::/120"}]]));
        let a = store
            .lock()
            .unwrap()
            .allocate(&s, "a", "eth0", &[])
            .unwrap();
        assert_eq!(
            a,
            vec![
                Allocation {
                    address: ip("10.0.0.2"),
                    prefix_len: 24,
                    gateway: ip("10.0.0.1"),
                },
                Allocation {
                    address: ip("fd00:1::2"),
                    prefix_len: 120,
                    gateway: ip("fd00:1::1"),
                },
            ]
        );
        assert_eq!(
            alloc(&store, &s, "b").unwrap(),
            ips(&["10.0.0.3", "fd00:1::3"])
        );
        assert_eq!(
            reserved(&store),
            ["10.0.0.2", "10.0.0.3", "fd00:1::2", "fd00:1::3"]
        );
        assert_eq!(read(&store, "fd00:1::3"), "b\r\neth0");
        assert_eq!(read(&store, "last_reserved_ip.1"), "fd00:1::3");
        assert_eq!(
            store.lock().unwrap().get("a", "eth0").unwrap(),
            ips(&["10.0.0.2", "fd00:1::2"])
        );
    }

    #[test]
    fn exhausts_a_slash_30() {
        let tmp = TempDir::new("small");
        let store = open(&tmp);
        let s = one_set(json!([{"subnet": "10.0.0.0/30"}]));
        assert_eq!(alloc(&store, &s, "a").unwrap(), ips(&["10.0.0.2"]));
        let err = alloc(&store, &s, "b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no IP addresses available in range set: 10.0.0.1-10.0.0.2"
        );
        assert_eq!(err.cni_code(), CNI_CODE_ADDRESS_UNAVAILABLE);
        assert_eq!(reserved(&store), ["10.0.0.2"]);
    }

    #[test]
    fn refuses_a_duplicate_allocation_of_one_attachment() {
        let tmp = TempDir::new("dup");
        let store = open(&tmp);
        let s = one_set(json!([{"subnet": "10.0.0.0/24"}]));
        alloc(&store, &s, "a").unwrap();
        let err = alloc(&store, &s, "a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.0.0.2 has been allocated to a, duplicate allocation is not allowed"
        );
        assert_eq!(err.cni_code(), CNI_CODE_ADDRESS_UNAVAILABLE);
        // Another interface of the same container is another attachment.
        let other = store
            .lock()
            .unwrap()
            .allocate(&s, "a", "net1", &[])
            .unwrap();
        assert_eq!(other[0].address, ip("10.0.0.3"));
        // An old-format file counts for every interface of its container.
        fs::write(store.dir().join("10.0.0.50"), "old").unwrap();
        let err = alloc(&store, &s, "old").unwrap_err();
        assert!(matches!(err, IpamError::Duplicate { ip, .. } if ip == self::ip("10.0.0.50")));
    }

    #[test]
    fn honours_requested_ips_and_refuses_bad_ones_before_reserving() {
        let tmp = TempDir::new("req");
        let store = open(&tmp);
        let s = sets(json!([
            [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.99"}],
            [{"subnet": "fd00::/120"}],
        ]));
        let req = |id: &str, want: &[&str]| {
            store
                .lock()
                .unwrap()
                .allocate(&s, id, "eth0", &ips(want))
                .map(|v| v.into_iter().map(|a| a.address).collect::<Vec<_>>())
        };
        assert_eq!(
            req("a", &["10.0.0.50"]).unwrap(),
            ips(&["10.0.0.50", "fd00::2"])
        );
        assert_eq!(
            req("b", &["fd00::77", "10.0.0.51"]).unwrap(),
            ips(&["10.0.0.51", "fd00::77"])
        );
        let before = reserved(&store);
        let refusals: [(&[&str], u32, &str); 5] = [
            (
                &["fd00::1"],
                CNI_CODE_INVALID_CONFIG,
                "requested ip fd00::1 is subnet's gateway",
            ),
            (
                &["10.0.0.50"],
                CNI_CODE_ADDRESS_UNAVAILABLE,
                "requested IP address 10.0.0.50 is not available in range set 10.0.0.10-10.0.0.99",
            ),
            (
                &["10.9.9.9"],
                CNI_CODE_INVALID_CONFIG,
                "failed to allocate all requested IPs: 10.9.9.9 fit no range set",
            ),
            // In the subnet but before rangeStart: not in the set.
            (
                &["10.0.0.5"],
                CNI_CODE_INVALID_CONFIG,
                "10.0.0.5 fit no range set",
            ),
            (
                &["10.0.0.60", "10.0.0.61"],
                CNI_CODE_INVALID_CONFIG,
                "10.0.0.61 fit no range set",
            ),
        ];
        for (want, code, msg) in refusals {
            let err = req("c", want).unwrap_err();
            assert_eq!(err.cni_code(), code, "{want:?}: {err}");
            assert!(err.to_string().contains(msg), "{want:?}: {err}");
            assert_eq!(reserved(&store), before, "{want:?} left a reservation");
        }
    }

    #[test]
    fn a_failure_in_a_later_set_undoes_only_this_calls_reservations() {
        let tmp = TempDir::new("undo");
        let store = open(&tmp);
        let s = sets(json!([[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/30"}]]));
        let only = one_set(json!([{"subnet": "10.1.0.0/30"}]));
        // Fill the second set's only address under another id.
        let taken = store
            .lock()
            .unwrap()
            .allocate(&only, "other", "eth0", &[])
            .unwrap();
        assert_eq!(taken[0].address, ip("10.1.0.2"));
        let err = alloc(&store, &s, "x").unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
        assert_eq!(reserved(&store), ["10.1.0.2"]);
        // Now the attachment itself holds the second set's address: its duplicate refusal
        // undoes the first set's new reservation and keeps the older one.
        store.lock().unwrap().release("other", "eth0").unwrap();
        store
            .lock()
            .unwrap()
            .allocate(&only, "x", "eth0", &[])
            .unwrap();
        let err = alloc(&store, &s, "x").unwrap_err();
        assert!(matches!(err, IpamError::Duplicate { .. }), "{err}");
        assert_eq!(reserved(&store), ["10.1.0.2"]);
        assert_eq!(read(&store, "10.1.0.2"), "x\r\neth0");
    }

    #[test]
    fn releases_the_new_format_else_the_old_one() {
        let tmp = TempDir::new("release");
        let store = open(&tmp);
        let dir = store.dir();
        fs::write(dir.join("10.0.0.2"), "a\r\neth0").unwrap();
        fs::write(dir.join("10.0.0.3"), "  a\r\neth0\n").unwrap();
        fs::write(dir.join("10.0.0.4"), "a\r\neth1").unwrap();
        fs::write(dir.join("10.0.0.5"), "a").unwrap();
        fs::write(dir.join("fd00::6"), "b\r\neth0").unwrap();
        fs::write(dir.join("last_reserved_ip.0"), "10.0.0.5").unwrap();
        let locked = store.lock().unwrap();
        assert_eq!(
            locked.get("a", "eth0").unwrap(),
            ips(&["10.0.0.2", "10.0.0.3", "10.0.0.5"])
        );
        assert_eq!(
            locked.release(" a ", "eth0").unwrap(),
            ips(&["10.0.0.2", "10.0.0.3"])
        );
        // No new-format match for eth9: the old-format file goes, eth1's stays.
        assert_eq!(locked.release("a", "eth9").unwrap(), ips(&["10.0.0.5"]));
        assert_eq!(locked.release("a", "eth9").unwrap(), Vec::<IpAddr>::new());
        assert_eq!(
            locked.release("nobody", "eth0").unwrap(),
            Vec::<IpAddr>::new()
        );
        drop(locked);
        assert_eq!(reserved(&store), ["10.0.0.4", "fd00::6"]);
        assert!(dir.join("last_reserved_ip.0").exists());
        assert!(dir.join("lock").exists());
    }

    #[test]
    fn gc_releases_what_no_valid_attachment_holds() {
        let tmp = TempDir::new("gc");
        let store = open(&tmp);
        let dir = store.dir();
        for (name, content) in [
            ("10.0.0.2", "a\r\neth0"),
            ("10.0.0.3", "b\r\neth0"),
            ("10.0.0.4", "a\r\neth1"),
            ("10.0.0.5", "d"),
            ("10.0.0.6", "e"),
            ("fd00::7", "c\r\neth0"),
            ("last_reserved_ip.0", "10.0.0.6"),
            ("notes", "zzz"),
        ] {
            fs::write(dir.join(name), content).unwrap();
        }
        let valid = vec![
            ("a".to_string(), "eth0".to_string()),
            ("d".to_string(), "eth0".to_string()),
        ];
        let released = store.lock().unwrap().gc(&valid).unwrap();
        assert_eq!(
            released,
            ips(&["10.0.0.3", "10.0.0.4", "10.0.0.6", "fd00::7"])
        );
        assert_eq!(reserved(&store), ["10.0.0.2", "10.0.0.5"]);
        for kept in ["lock", "last_reserved_ip.0", "notes"] {
            assert!(dir.join(kept).exists(), "{kept}");
        }
        assert_eq!(
            store.lock().unwrap().gc(&valid).unwrap(),
            Vec::<IpAddr>::new()
        );
    }

    #[test]
    fn the_lock_excludes_another_holder_in_the_same_process() {
        let tmp = TempDir::new("lock");
        let store = open(&tmp);
        let held = store.lock().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _second = store.lock().unwrap();
                tx.send(()).unwrap();
            });
            assert!(
                rx.recv_timeout(Duration::from_millis(300)).is_err(),
                "a second lock was granted while the first was held"
            );
            drop(held);
            rx.recv_timeout(Duration::from_secs(10))
                .expect("the second lock was not granted after the first was dropped");
        });
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let tmp = TempDir::new("conc");
        let store = open(&tmp);
        let s = one_set(json!([{"subnet": "10.0.0.0/24"}]));
        let all: Vec<IpAddr> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let (store, s) = (&store, &s);
                    scope.spawn(move || {
                        (0..25)
                            .map(|i| alloc(store, s, &format!("c{t}-{i}")).unwrap()[0])
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let distinct: HashSet<IpAddr> = all.iter().copied().collect();
        assert_eq!(all.len(), 200);
        assert_eq!(distinct.len(), 200);
        assert_eq!(reserved(&store).len(), 200);
        // Round robin from .2 with no gaps: exactly .2 through .201.
        let nums: HashSet<u128> = distinct.iter().map(|ip| num(*ip)).collect();
        let want: HashSet<u128> = (2..=201).map(|n| num(ip("10.0.0.0")) + n).collect();
        assert_eq!(nums, want);
    }

    #[test]
    fn parses_resolv_conf_as_host_local() {
        let text = "# generated\n; also a comment\nnameserver 10.96.0.10\nnameserver  \
                    fd00::a extra\nnameserver\ndomain first.example\ndomain cluster.local\n\
                    search a.svc b.svc\nsearch c.svc\noptions ndots:5 edns0\n  options attempts:2\n\
                    sortlist 1.2.3.4\n";
        let dns = parse_resolv_conf(text);
        assert_eq!(
            dns,
            Dns {
                nameservers: vec!["10.96.0.10".into(), "fd00::a".into()],
                domain: "cluster.local".into(),
                search: vec!["a.svc".into(), "b.svc".into(), "c.svc".into()],
                options: vec!["ndots:5".into(), "edns0".into(), "attempts:2".into()],
            }
        );
        assert_eq!(
            serde_json::to_value(parse_resolv_conf("nameserver 1.1.1.1\n")).unwrap(),
            json!({"nameservers": ["1.1.1.1"]})
        );
        assert!(parse_resolv_conf("# nothing\n\n").is_empty());
    }

    // -----------------------------------------------------------------------------------------
    // Interop with the reference plugin on one store.

    const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

    /// Runs the reference host-local; its stdout as JSON and whether it succeeded.
    fn host_local(
        command: &str,
        netconf: &serde_json::Value,
        id: &str,
    ) -> (bool, serde_json::Value) {
        assert!(
            Path::new(HOST_LOCAL).exists(),
            "{HOST_LOCAL} is missing: install Debian's containernetworking-plugins \
             (apt-get install containernetworking-plugins; .ci/install-deps.sh does) to run the \
             host-local interop test"
        );
        let mut child = Command::new(HOST_LOCAL)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", "/var/run/netns/weft-ipam-interop-unused")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(netconf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let value = if stdout.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
        };
        (out.status.success(), value)
    }

    fn host_local_add(netconf: &serde_json::Value, id: &str) -> Vec<String> {
        let (ok, out) = host_local("ADD", netconf, id);
        assert!(ok, "host-local ADD {id} failed: {out}");
        out["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn shares_one_store_with_the_reference_host_local() {
        let tmp = TempDir::new("interop");
        let netconf = json!({
            "cniVersion": "1.0.0",
            "name": "interop",
            "type": "ptp",
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/120"}]],
                "dataDir": tmp.0.to_str().unwrap(),
            },
        });
        let plan = plan_ipam(&conf(netconf["ipam"].clone())).unwrap();
        let store = Store::open(&plan.data_dir, "interop").unwrap();
        let weft = |id: &str| alloc(&store, &plan.range_sets, id).unwrap();

        assert_eq!(
            host_local_add(&netconf, "a"),
            ["10.77.0.2/24", "fd00:77::2/120"]
        );
        assert_eq!(weft("b"), ips(&["10.77.0.3", "fd00:77::3"]));
        assert_eq!(
            host_local_add(&netconf, "c"),
            ["10.77.0.4/24", "fd00:77::4/120"]
        );
        assert_eq!(weft("d"), ips(&["10.77.0.5", "fd00:77::5"]));

        // Byte-identical files either way.
        assert_eq!(read(&store, "10.77.0.2"), "a\r\neth0");
        assert_eq!(read(&store, "fd00:77::4"), "c\r\neth0");
        assert_eq!(read(&store, "last_reserved_ip.1"), "fd00:77::5");

        // Each sees the other's reservations.
        let locked = store.lock().unwrap();
        assert_eq!(
            locked.get("a", "eth0").unwrap(),
            ips(&["10.77.0.2", "fd00:77::2"])
        );
        let err = locked
            .allocate(&plan.range_sets, "c", "eth0", &[])
            .unwrap_err();
        assert!(matches!(err, IpamError::Duplicate { .. }), "{err}");
        drop(locked);
        let (ok, out) = host_local("ADD", &netconf, "b");
        assert!(
            !ok,
            "host-local accepted a duplicate of weft's reservation: {out}"
        );
        assert!(
            out["msg"]
                .as_str()
                .unwrap_or("")
                .contains("duplicate allocation"),
            "{out}"
        );

        // host-local's DEL releases what weft reserved, and weft's release what host-local did.
        let (ok, out) = host_local("DEL", &netconf, "b");
        assert!(ok, "host-local DEL b failed: {out}");
        assert_eq!(
            store.lock().unwrap().release("c", "eth0").unwrap(),
            ips(&["10.77.0.4", "fd00:77::4"])
        );
        assert_eq!(
            reserved(&store),
            ["10.77.0.2", "10.77.0.5", "fd00:77::2", "fd00:77::5"]
        );

        // Round robin stays shared after the releases: both continue after .5.
        assert_eq!(
            host_local_add(&netconf, "e"),
            ["10.77.0.6/24", "fd00:77::6/120"]
        );
        assert_eq!(weft("f"), ips(&["10.77.0.7", "fd00:77::7"]));
    }
}
