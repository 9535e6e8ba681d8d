//! The renderer: [`Ir`] → one nftables script, applied as one transaction (`nft -f`).
//!
//! ```text
//! table inet weft-policy
//!   counter dropped-ingress, dropped-egress, unprogrammed-ingress, unprogrammed-egress
//!   chain forward (hook forward, priority filter, policy accept; no hook while the cluster has
//!                  no policy object: `Ir::enforcing`)
//!     ct state established,related accept
//!     own node → its pods: accept;  pod → itself: accept
//!     ip saddr vmap @from-pod-v4     ── goto eg-<hash> (egress profile; allow = goto to-pod)
//!     ip saddr @pod-cidr-v4 drop     ── a local address with no profile yet: no unpoliced window
//!     goto to-pod
//!   chain to-pod
//!     ip daddr vmap @to-pod-v4       ── goto in-<hash> (ingress profile; allow = accept)
//!     ip daddr @pod-cidr-v4 drop
//!     accept
//!   chain in-<hash> / eg-<hash>:  fail closed | admin rules | NetworkPolicy allows, drop | baseline | allow
//! ```
//!
//! Every `drop` counts into one of four named counters ([`DROP_COUNTERS`]): by direction, and
//! whether a policy decided it or the pod was not programmed yet. Named counters are objects of the
//! table: element and profile changes (`render_update`) leave them alone; a full replacement
//! recreates them with the values it is given ([`render_ruleset_seeded`]), so that a reader that
//! seeds them with what it last read sees them grow monotonically.
//!
//! Pod traffic of this node crosses the forward hook (routed ptp veths), for same-node and remote
//! peers alike; the node's own traffic to its pods leaves through output and is not filtered (it is
//! always allowed). Per-packet cost: one verdict-map lookup per direction and a profile chain whose
//! length depends on the policies selecting that pod, not on the number of pods.
//!
//! Invariants: the full form replaces the table atomically (add, delete, recreate, fill, in one
//! transaction); the incremental form is produced only when nothing but set and map elements
//! changed. Names are bounded (`<prefix>-<16 hex>-v4`), comments name the source object and are cut
//! to [`COMMENT_MAX`] characters.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use weft_crds::IpFamily;
use weft_crds::cidr::family_of;

use crate::ir::{Chain, Direction, Ir, IrRule, PortMatch, Remote, SetElems};
use crate::model::{Action, Proto};

/// The table weft's policy engine owns.
pub const TABLE: &str = "weft-policy";
/// Its family: one table for IPv4 and IPv6.
pub const FAMILY: &str = "inet";
/// Priority of the forward hook.
pub const FORWARD_PRIORITY: &str = "filter";
/// The dispatch chain to ingress profiles.
pub const TO_POD_CHAIN: &str = "to-pod";
/// The conntrack mark bit that remembers that a connection was allowed. Established and related
/// traffic is accepted first; a flow that sees no reply (one-way UDP: streaming, logs, metrics)
/// stays in conntrack state `new`, so without the mark every one of its packets would walk the
/// profiles again. The final accept of a profile sets it, and the second rule of `forward` accepts
/// a marked flow, exactly as an established one (a later policy change does not cut either).
pub const ALLOWED_CT_MARK: &str = "0x00010000";
/// The final verdict of an allowed connection: mark the flow, accept.
const ALLOW_FLOW: &str = "ct mark set ct mark | 0x00010000 accept";

/// Longest comment rendered (nftables allows 128 bytes).
pub const COMMENT_MAX: usize = 120;
/// Most elements per `add element` statement (keeps lines bounded).
pub const ELEMENTS_PER_STATEMENT: usize = 512;

/// Why a packet counted by a drop counter was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// A policy decided it (a Deny rule, NetworkPolicy isolation, a refused object failing closed).
    Policy,
    /// A local pod address with no profile yet (the agent has not programmed the pod).
    Unprogrammed,
}

impl DropReason {
    /// The label value (`policy`, `unprogrammed`).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Policy => "policy",
            DropReason::Unprogrammed => "unprogrammed",
        }
    }
}

/// A named counter of the table that counts dropped packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCounter {
    /// Its name in the table.
    pub name: &'static str,
    /// The direction of the drops it counts, seen from the local pod.
    pub direction: Direction,
    /// Why they were dropped.
    pub reason: DropReason,
}

/// Every drop counter of the table; every `drop` of the ruleset counts into exactly one.
pub const DROP_COUNTERS: [DropCounter; 4] = [
    DropCounter {
        name: "dropped-ingress",
        direction: Direction::Ingress,
        reason: DropReason::Policy,
    },
    DropCounter {
        name: "dropped-egress",
        direction: Direction::Egress,
        reason: DropReason::Policy,
    },
    DropCounter {
        name: "unprogrammed-ingress",
        direction: Direction::Ingress,
        reason: DropReason::Unprogrammed,
    },
    DropCounter {
        name: "unprogrammed-egress",
        direction: Direction::Egress,
        reason: DropReason::Unprogrammed,
    },
];

/// The counter of drops in `direction` for `reason` (its entry in [`DROP_COUNTERS`]).
pub fn drop_counter(direction: Direction, reason: DropReason) -> &'static str {
    match (direction, reason) {
        (Direction::Ingress, DropReason::Policy) => "dropped-ingress",
        (Direction::Egress, DropReason::Policy) => "dropped-egress",
        (Direction::Ingress, DropReason::Unprogrammed) => "unprogrammed-ingress",
        (Direction::Egress, DropReason::Unprogrammed) => "unprogrammed-egress",
    }
}

/// Values a full replacement gives the drop counters: counter name → (packets, bytes). Missing
/// counters start at zero.
pub type CounterSeed = BTreeMap<String, (u64, u64)>;

/// The `drop` verdict that counts into the counter of `direction` and `reason`.
fn drop_verdict(direction: Direction, reason: DropReason) -> String {
    format!("counter name \"{}\" drop", drop_counter(direction, reason))
}

const FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

fn fam(f: IpFamily) -> (&'static str, &'static str, &'static str) {
    match f {
        IpFamily::V4 => ("v4", "ip", "ipv4_addr"),
        IpFamily::V6 => ("v6", "ip6", "ipv6_addr"),
    }
}

fn comment(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() > COMMENT_MAX {
        format!("{}~", &clean[..COMMENT_MAX - 1])
    } else {
        clean
    }
}

/// The families the node's pods live in (its pod CIDRs'; both when none are given).
pub(crate) fn node_families(ir: &Ir) -> Vec<IpFamily> {
    let f: BTreeSet<IpFamily> = ir.pod_cidrs.iter().map(|c| c.family()).collect();
    if f.is_empty() {
        FAMILIES.to_vec()
    } else {
        f.into_iter().collect()
    }
}

/// Whether an address set has a version for family `f` (pod sets: every node family; prefix
/// sets: the families of their prefixes, which do not churn).
fn set_has_family(ir: &Ir, name: &str, f: IpFamily, node: &[IpFamily]) -> bool {
    match ir.addr_sets.get(name).map(|s| &s.elems) {
        Some(SetElems::Addrs(_)) => node.contains(&f),
        Some(SetElems::Prefixes(p)) => p.iter().any(|c| c.family() == f),
        None => false,
    }
}

/// One set's or map's elements as rendered entries (`addr`, `addr . addr`, `addr : goto chain`).
type Entries = BTreeMap<String, Vec<String>>;

fn fmt_ip(ip: &IpAddr) -> String {
    ip.to_string()
}

/// The node's pods as (address → (ingress profile, egress profile)), per family present on the node.
fn pod_map<'a>(ir: &'a Ir, node: &[IpFamily]) -> BTreeMap<IpAddr, (&'a str, &'a str)> {
    ir.pods
        .values()
        .flat_map(|p| {
            p.ips
                .iter()
                .map(move |ip| (*ip, (p.ingress.as_str(), p.egress.as_str())))
        })
        .filter(|(ip, _)| node.contains(&family_of(*ip)))
        .collect()
}

/// The elements of every set and map, by rendered set name (empty sets included: rules
/// reference them).
fn elements(ir: &Ir) -> Entries {
    let node = node_families(ir);
    let mut out: Entries = BTreeMap::new();
    for f in &node {
        let sfx = fam(*f).0;
        for base in ["host", "pod-cidr", "self", "from-pod", "to-pod"] {
            out.insert(format!("{base}-{sfx}"), Vec::new());
        }
    }
    let sfx = |ip: &IpAddr| fam(family_of(*ip)).0;
    for ip in &ir.host_addrs {
        if let Some(v) = out.get_mut(&format!("host-{}", sfx(ip))) {
            v.push(fmt_ip(ip));
        }
    }
    for c in &ir.pod_cidrs {
        if let Some(v) = out.get_mut(&format!("pod-cidr-{}", fam(c.family()).0)) {
            v.push(c.to_string());
        }
    }
    for (ip, (ingress, egress)) in pod_map(ir, &node) {
        let (s, a) = (sfx(&ip), fmt_ip(&ip));
        out.entry(format!("self-{s}"))
            .or_default()
            .push(format!("{a} . {a}"));
        out.entry(format!("from-pod-{s}"))
            .or_default()
            .push(format!("{a} : goto {egress}"));
        out.entry(format!("to-pod-{s}"))
            .or_default()
            .push(format!("{a} : goto {ingress}"));
    }
    for name in ir.addr_sets.keys() {
        addr_set_entries(ir, name, &node, &mut out);
    }
    for (name, set) in &ir.port_sets {
        let mut per: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
        for (ip, proto, port) in &set.elems {
            let i = usize::from(family_of(*ip) == IpFamily::V6);
            per[i].push(format!("{} . {proto} . {port}", fmt_ip(ip)));
        }
        for (i, f) in FAMILIES.iter().enumerate() {
            if node.contains(f) {
                out.insert(format!("{name}-{}", fam(*f).0), std::mem::take(&mut per[i]));
            }
        }
    }
    out
}

/// The elements of address set `name` of `ir`, per family the set has, into `out`.
fn addr_set_entries(ir: &Ir, name: &str, node: &[IpFamily], out: &mut Entries) {
    let Some(set) = ir.addr_sets.get(name) else {
        return;
    };
    let mut per: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let slot = |ip: &IpAddr| usize::from(family_of(*ip) == IpFamily::V6);
    match &set.elems {
        SetElems::Addrs(a) => {
            for ip in a {
                per[slot(ip)].push(fmt_ip(ip));
            }
        }
        SetElems::Prefixes(p) => {
            // Without `auto-merge` (which makes nft read the kernel's elements before every
            // change), overlapping intervals are refused: keep only the outermost prefixes.
            for c in p {
                if !p.iter().any(|o| o != c && o.contains(c)) {
                    per[slot(&c.addr())].push(c.to_string());
                }
            }
        }
    }
    for (i, f) in FAMILIES.iter().enumerate() {
        if set_has_family(ir, name, *f, node) {
            out.insert(format!("{name}-{}", fam(*f).0), std::mem::take(&mut per[i]));
        }
    }
}

/// A set's declaration without its closing brace: `\tset NAME { type …; [flags …;] comment "…";`.
struct SetDecl(String);

impl SetDecl {
    /// The declaration, with `elements` inline when there are any (a new set is declared with its
    /// elements: a separate `add element` into a new interval set makes nft read the kernel's
    /// elements first).
    fn render(&self, elements: &[String]) -> String {
        if elements.is_empty() {
            format!("{} }}\n", self.0)
        } else {
            format!("{} elements = {{ {} }}; }}\n", self.0, elements.join(", "))
        }
    }
}

/// The elements of every set and map of the ruleset of `ir`, by rendered set name, each as nft
/// writes it (`addr`, `addr . addr`, `addr . tcp . 80`, `addr : goto chain`): what the kernel
/// holds after [`render_ruleset`], for tests and diagnostics.
pub fn ruleset_elements(ir: &Ir) -> BTreeMap<String, Vec<String>> {
    elements(ir)
}

/// The parts of the table that exist whatever the policies: the drop counters, the base sets,
/// maps and chains.
fn base(ir: &Ir, seed: &CounterSeed) -> String {
    let node = node_families(ir);
    let mut s = String::new();
    for c in DROP_COUNTERS {
        let (packets, bytes) = seed.get(c.name).copied().unwrap_or((0, 0));
        let what = match c.reason {
            DropReason::Policy => "by policy",
            DropReason::Unprogrammed => "for a local pod not programmed yet",
        };
        let _ = writeln!(
            s,
            "\tcounter {} {{ comment \"packets dropped {what}, {}\"; packets {packets} bytes {bytes}; }}",
            c.name, c.direction
        );
    }
    for f in &node {
        let (sfx, _, ty) = fam(*f);
        let _ = writeln!(
            s,
            "\tset host-{sfx} {{ type {ty}; comment \"this node's addresses\"; }}"
        );
        let _ = writeln!(
            s,
            "\tset pod-cidr-{sfx} {{ type {ty}; flags interval; comment \"this node's pod CIDRs\"; }}"
        );
        let _ = writeln!(
            s,
            "\tset self-{sfx} {{ type {ty} . {ty}; comment \"pod to itself\"; }}"
        );
        let _ = writeln!(
            s,
            "\tmap from-pod-{sfx} {{ type {ty} : verdict; comment \"local pod address to egress profile\"; }}"
        );
        let _ = writeln!(
            s,
            "\tmap to-pod-{sfx} {{ type {ty} : verdict; comment \"local pod address to ingress profile\"; }}"
        );
    }
    let _ = writeln!(s, "\tchain forward {{");
    if ir.enforcing {
        let _ = writeln!(
            s,
            "\t\ttype filter hook forward priority {FORWARD_PRIORITY}; policy accept;"
        );
    } else {
        let _ = writeln!(
            s,
            "\t\tcomment \"not attached to the forward hook: the cluster has no policy\""
        );
    }
    let _ = writeln!(s, "\t\tct state established,related accept");
    let _ = writeln!(
        s,
        "\t\tct mark & {ALLOWED_CT_MARK} == {ALLOWED_CT_MARK} accept comment \"allowed before, no reply yet\""
    );
    for f in &node {
        let (sfx, ip, _) = fam(*f);
        let _ = writeln!(
            s,
            "\t\t{ip} saddr @host-{sfx} {ip} daddr @pod-cidr-{sfx} accept comment \"own node to its pods\""
        );
        let _ = writeln!(
            s,
            "\t\t{ip} saddr . {ip} daddr @self-{sfx} accept comment \"pod to itself\""
        );
        let _ = writeln!(s, "\t\t{ip} saddr vmap @from-pod-{sfx}");
        let _ = writeln!(
            s,
            "\t\t{ip} saddr @pod-cidr-{sfx} {} comment \"local pod not programmed yet\"",
            drop_verdict(Direction::Egress, DropReason::Unprogrammed)
        );
    }
    let _ = writeln!(s, "\t\tgoto {TO_POD_CHAIN}");
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "\tchain {TO_POD_CHAIN} {{");
    for f in &node {
        let (sfx, ip, _) = fam(*f);
        let _ = writeln!(s, "\t\t{ip} daddr vmap @to-pod-{sfx}");
        let _ = writeln!(
            s,
            "\t\t{ip} daddr @pod-cidr-{sfx} {} comment \"local pod not programmed yet\"",
            drop_verdict(Direction::Ingress, DropReason::Unprogrammed)
        );
    }
    let _ = writeln!(s, "\t\t{ALLOW_FLOW}");
    let _ = writeln!(s, "\t}}");
    s
}

/// Declarations of the policy sets, by rendered name.
fn set_decls(ir: &Ir) -> BTreeMap<String, SetDecl> {
    let node = node_families(ir);
    let mut out = BTreeMap::new();
    for (name, set) in &ir.addr_sets {
        for f in FAMILIES {
            if !set_has_family(ir, name, f, &node) {
                continue;
            }
            let (sfx, _, ty) = fam(f);
            let flags = match set.elems {
                SetElems::Addrs(_) => "",
                SetElems::Prefixes(_) => " flags interval;",
            };
            out.insert(
                format!("{name}-{sfx}"),
                SetDecl(format!(
                    "\tset {name}-{sfx} {{ type {ty};{flags} comment \"{}\";",
                    comment(&set.what)
                )),
            );
        }
    }
    for (name, set) in &ir.port_sets {
        for f in &node {
            let (sfx, _, ty) = fam(*f);
            out.insert(
                format!("{name}-{sfx}"),
                SetDecl(format!(
                    "\tset {name}-{sfx} {{ type {ty} . inet_proto . inet_service; comment \"{}\";",
                    comment(&set.what)
                )),
            );
        }
    }
    out
}

/// The profile chains, by profile name: the chain names it declares (a profile with a Pass rule
/// has a second chain) and their text.
fn chain_decls(ir: &Ir) -> BTreeMap<String, (Vec<String>, String)> {
    let node = node_families(ir);
    ir.chains
        .iter()
        .map(|(name, chain)| {
            let mut text = String::new();
            let names = render_chain(&mut text, ir, &node, name, chain);
            (name.clone(), (names, text))
        })
        .collect()
}

/// The table block with every declaration (no elements).
fn skeleton(ir: &Ir, seed: &CounterSeed) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table {FAMILY} {TABLE} {{");
    s.push_str(&base(ir, seed));
    for decl in set_decls(ir).values() {
        s.push_str(&decl.render(&[]));
    }
    for (_, text) in chain_decls(ir).values() {
        s.push_str(text);
    }
    let _ = writeln!(s, "}}");
    s
}

/// Renders one profile; returns the names of the chains it declares, the main chain first.
fn render_chain(s: &mut String, ir: &Ir, node: &[IpFamily], name: &str, c: &Chain) -> Vec<String> {
    let allow = match c.direction {
        Direction::Ingress => ALLOW_FLOW.to_owned(),
        Direction::Egress => format!("goto {TO_POD_CHAIN}"),
    };
    let dir = c.direction;
    let drop = drop_verdict(dir, DropReason::Policy);
    let _ = writeln!(s, "\tchain {name} {{");
    if !c.fail_closed.is_empty() {
        let who: Vec<String> = c.fail_closed.iter().map(|o| o.to_string()).collect();
        let _ = writeln!(
            s,
            "\t\t{drop} comment \"{}\"",
            comment(&format!("fail closed: refused {}", who.join(", ")))
        );
        let _ = writeln!(s, "\t}}");
        return vec![name.to_owned()];
    }
    let has_pass = c.admin.iter().any(|r| r.action == Action::Pass);
    let rest = format!("{name}-np");
    for r in &c.admin {
        let verdict = match r.action {
            Action::Allow => allow.clone(),
            Action::Deny => drop.clone(),
            Action::Pass => format!("goto {rest}"),
        };
        render_rule(s, ir, node, dir, r, &verdict);
    }
    if has_pass {
        let _ = writeln!(s, "\t\tgoto {rest}");
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "\tchain {rest} {{");
    }
    if let Some(np) = &c.np {
        for r in &np.allow {
            render_rule(s, ir, node, dir, r, &allow);
        }
        let who: Vec<String> = np.by.iter().map(|o| o.to_string()).collect();
        let _ = writeln!(
            s,
            "\t\t{drop} comment \"{}\"",
            comment(&format!("isolated by {}", who.join(", ")))
        );
    } else {
        for r in &c.baseline {
            let verdict = match r.action {
                Action::Allow | Action::Pass => allow.clone(),
                Action::Deny => drop.clone(),
            };
            render_rule(s, ir, node, dir, r, &verdict);
        }
        let _ = writeln!(s, "\t\t{allow} comment \"default allow\"");
    }
    let _ = writeln!(s, "\t}}");
    if has_pass {
        vec![name.to_owned(), rest]
    } else {
        vec![name.to_owned()]
    }
}

fn ports_clause(p: Proto, ranges: &[(u16, u16)]) -> String {
    if ranges == [(0, u16::MAX)] {
        return format!("meta l4proto {p}");
    }
    let items: Vec<String> = ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if items.len() == 1 {
        format!("{p} dport {}", items[0])
    } else {
        format!("{p} dport {{ {} }}", items.join(", "))
    }
}

fn render_rule(
    s: &mut String,
    ir: &Ir,
    node: &[IpFamily],
    dir: Direction,
    r: &IrRule,
    verdict: &str,
) {
    let field = match dir {
        Direction::Ingress => "saddr",
        Direction::Egress => "daddr",
    };
    let name = if r.rule_name.is_empty() {
        String::new()
    } else {
        format!(" {}", r.rule_name)
    };
    let note = comment(&format!("{} {dir}[{}]{name}", r.source, r.rule));
    let family_specific =
        !matches!(r.remote, Remote::Any) || matches!(r.ports, PortMatch::Named(_));
    let families: Vec<Option<IpFamily>> = if family_specific {
        FAMILIES.iter().map(|f| Some(*f)).collect()
    } else {
        vec![None]
    };
    for f in families {
        let mut parts: Vec<String> = Vec::new();
        if let Some(f) = f {
            let (sfx, ip, _) = fam(f);
            match &r.remote {
                Remote::Any => {
                    if !node.contains(&f) {
                        continue;
                    }
                }
                Remote::In(set) => {
                    if !set_has_family(ir, set, f, node) {
                        continue;
                    }
                    parts.push(format!("{ip} {field} @{set}-{sfx}"));
                }
                Remote::InExcept(set, except) => {
                    if !set_has_family(ir, set, f, node) {
                        continue;
                    }
                    parts.push(format!("{ip} {field} @{set}-{sfx}"));
                    if set_has_family(ir, except, f, node) {
                        parts.push(format!("{ip} {field} != @{except}-{sfx}"));
                    }
                }
            }
            if let PortMatch::Named(set) = &r.ports {
                if !node.contains(&f) {
                    continue;
                }
                parts.push(format!("{ip} daddr . meta l4proto . th dport @{set}-{sfx}"));
            }
        }
        if let PortMatch::Ranges(p, ranges) = &r.ports {
            parts.push(ports_clause(*p, ranges));
        }
        parts.push(verdict.to_owned());
        let _ = writeln!(s, "\t\t{} comment \"{note}\"", parts.join(" "));
    }
}

fn element_statements(s: &mut String, verb: &str, set: &str, items: &[String]) {
    for chunk in items.chunks(ELEMENTS_PER_STATEMENT) {
        let _ = write!(s, "{verb} element {FAMILY} {TABLE} {set} {{ ");
        for (i, item) in chunk.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(item);
        }
        s.push_str(" }\n");
    }
}

/// One element of a set or verdict map of the policy table, as the kernel keys it. The set's
/// rendered name (with its `-v4`/`-v6` suffix) is in [`ElemOp::set`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    /// An address: pod and node sets, `host-*` (`type ipv4_addr` / `ipv6_addr`).
    Addr(IpAddr),
    /// An address twice: `self-*` (`type ipv4_addr . ipv4_addr`).
    Pair(IpAddr),
    /// Address, protocol and port: named-port sets (`type ipv4_addr . inet_proto .
    /// inet_service`).
    AddrPort(IpAddr, Proto, u16),
    /// An address mapped to `goto <chain>`: the `from-pod-*` and `to-pod-*` verdict maps. A
    /// deletion only needs the address; the chain is ignored.
    Goto(IpAddr, String),
}

impl Elem {
    /// The address the element is about (the key's first field).
    pub fn addr(&self) -> IpAddr {
        match self {
            Elem::Addr(ip) | Elem::Pair(ip) | Elem::AddrPort(ip, _, _) | Elem::Goto(ip, _) => *ip,
        }
    }

    /// The element in nft's syntax: the whole element for an addition, the key for a deletion.
    pub fn render(&self, add: bool) -> String {
        match self {
            Elem::Addr(ip) => ip.to_string(),
            Elem::Pair(ip) => format!("{ip} . {ip}"),
            Elem::AddrPort(ip, proto, port) => format!("{ip} . {proto} . {port}"),
            Elem::Goto(ip, chain) if add => format!("{ip} : goto {chain}"),
            Elem::Goto(ip, _) => ip.to_string(),
        }
    }
}

/// One element added to or deleted from a set or map of the policy table ([`FAMILY`] [`TABLE`]).
/// Pod churn is a list of these, applied in order as one transaction: the deletions of a change
/// come before its additions (a map entry whose verdict changes is deleted, then added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElemOp {
    /// Added (true) or deleted.
    pub add: bool,
    /// The set's rendered name, e.g. `p-15a1a44accb3a72d-v4` or `to-pod-v6`.
    pub set: String,
    /// The element.
    pub elem: Elem,
}

/// The `nft -f` script of `ops`, one statement per element, in order (one transaction).
pub fn render_elem_ops(ops: &[ElemOp]) -> String {
    let mut s = String::new();
    for op in ops {
        let verb = if op.add { "add" } else { "delete" };
        let _ = writeln!(
            s,
            "{verb} element {FAMILY} {TABLE} {} {{ {} }}",
            op.set,
            op.elem.render(op.add)
        );
    }
    s
}

/// The whole ruleset as one `nft -f` script that replaces the table atomically; the drop counters
/// start at zero.
pub fn render_ruleset(ir: &Ir) -> String {
    render_ruleset_seeded(ir, &CounterSeed::new())
}

/// [`render_ruleset`] with the drop counters starting at the values of `seed` (what the table
/// being replaced last held), so that their values survive the replacement.
pub fn render_ruleset_seeded(ir: &Ir, seed: &CounterSeed) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# weft policy ruleset: one transaction replaces table {FAMILY} {TABLE}"
    );
    let _ = writeln!(s, "add table {FAMILY} {TABLE}");
    let _ = writeln!(s, "delete table {FAMILY} {TABLE}");
    s.push_str(&skeleton(ir, seed));
    for (set, items) in elements(ir) {
        element_statements(&mut s, "add", &set, &items);
    }
    s
}

/// A script that takes the kernel from `prev` to `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// True when the table is replaced (the node's families changed, or a name would change its
    /// meaning); false when the script only changes elements and adds or removes sets and profiles.
    pub full: bool,
    /// The `nft -f` script, one transaction (empty when nothing changes).
    pub script: String,
    /// The same change in three steps, where every element change can be written as an
    /// [`ElemOp`] (`None` for a full replacement, or when this node's pod CIDRs change).
    pub staged: Option<Staged>,
}

/// An incremental update as make-before-break: what packets see changes in one atomic
/// transaction, [`Staged::elements`]; the other two only add or remove objects nothing references.
/// The engine writes the elements as native netlink (an element statement makes nft read every
/// element of the table into its cache first: tens of MiB and tens of ms at 10,000 pods).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Staged {
    /// New sets (with their elements inline) and new profile chains: referenced by nothing yet.
    pub create: String,
    /// Every element change, deletions first (map entries are moved to the new chains here).
    pub elements: Vec<ElemOp>,
    /// Profile chains and sets that nothing references any more, flushed and deleted.
    pub remove: String,
}

/// The element changes of an update, as statements (for the one-transaction script) and as
/// [`ElemOp`]s (for [`Staged`]).
#[derive(Default)]
struct Changes {
    dels: String,
    adds: String,
    del_ops: Vec<ElemOp>,
    add_ops: Vec<ElemOp>,
    /// False once a change has no [`Elem`] form.
    stageable: bool,
}

impl Changes {
    fn new() -> Self {
        Changes {
            stageable: true,
            ..Changes::default()
        }
    }

    /// Deletions and additions that turn `old` into `new`, for a set (`V` = `()`) or a map:
    /// `fmt` renders an element to add, `key` one to delete, `elem` either as an [`Elem`] (`None`:
    /// it has none).
    #[allow(clippy::too_many_arguments)]
    fn diff<K: Ord + Copy, V: PartialEq + Copy>(
        &mut self,
        set: &str,
        old: &BTreeMap<K, V>,
        new: &BTreeMap<K, V>,
        fmt: impl Fn(K, V) -> String,
        key: impl Fn(K) -> String,
        elem: impl Fn(K, V) -> Option<Elem>,
    ) {
        let gone: Vec<(K, V)> = old
            .iter()
            .filter(|(k, v)| new.get(*k) != Some(*v))
            .map(|(k, v)| (*k, *v))
            .collect();
        let added: Vec<(K, V)> = new
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(*v))
            .map(|(k, v)| (*k, *v))
            .collect();
        let texts: Vec<String> = gone.iter().map(|(k, _)| key(*k)).collect();
        element_statements(&mut self.dels, "delete", set, &texts);
        let texts: Vec<String> = added.iter().map(|(k, v)| fmt(*k, *v)).collect();
        element_statements(&mut self.adds, "add", set, &texts);
        for (add, items) in [(false, &gone), (true, &added)] {
            for (k, v) in items {
                let Some(e) = elem(*k, *v) else {
                    self.stageable = false;
                    continue;
                };
                let op = ElemOp {
                    add,
                    set: set.to_owned(),
                    elem: e,
                };
                if add {
                    self.add_ops.push(op)
                } else {
                    self.del_ops.push(op)
                }
            }
        }
    }
}

fn by_family<T: Copy + Ord>(
    items: impl Iterator<Item = (IpAddr, T)>,
    f: IpFamily,
) -> BTreeMap<T, ()> {
    items
        .filter(|(ip, _)| family_of(*ip) == f)
        .map(|(_, t)| (t, ()))
        .collect()
}

/// The update from `prev` (what the kernel holds) to `next`, without replacing the table: element
/// deletions (including map entries that point at profiles about to go), new sets and profile
/// chains, element additions, then the removal of profiles and sets nothing references any more.
/// Pod churn within existing profiles is element changes only. Falls back to the full replacement
/// when the node's families change or a name would change its meaning (a hash collision).
pub fn render_update(prev: &Ir, next: &Ir) -> Update {
    let full = || Update {
        full: true,
        script: render_ruleset(next),
        staged: None,
    };
    let node = node_families(next);
    // Attaching `forward` to its hook or detaching it changes a chain's type: a replacement.
    if node_families(prev) != node || prev.enforcing != next.enforcing {
        return full();
    }
    let same_set = |name: &String| {
        let (a, b) = (&prev.addr_sets[name], &next.addr_sets[name]);
        a.what == b.what
            && matches!(a.elems, SetElems::Addrs(_)) == matches!(b.elems, SetElems::Addrs(_))
            && FAMILIES.iter().all(|f| {
                set_has_family(prev, name, *f, &node) == set_has_family(next, name, *f, &node)
            })
    };
    let clash = prev
        .addr_sets
        .keys()
        .any(|k| next.addr_sets.contains_key(k) && !same_set(k))
        || prev
            .port_sets
            .iter()
            .any(|(k, v)| next.port_sets.get(k).is_some_and(|n| n.what != v.what))
        || prev
            .chains
            .iter()
            .any(|(k, v)| next.chains.get(k).is_some_and(|n| n != v));
    if clash {
        return full();
    }
    let mut ch = Changes::new();
    let (old_pods, new_pods) = (pod_map(prev, &node), pod_map(next, &node));
    for f in &node {
        let sfx = fam(*f).0;
        let ip_key = |ip: IpAddr| ip.to_string();
        let plain = |ip: IpAddr, _: ()| ip.to_string();
        let hosts = |ir: &Ir| by_family(ir.host_addrs.iter().map(|ip| (*ip, *ip)), *f);
        ch.diff(
            &format!("host-{sfx}"),
            &hosts(prev),
            &hosts(next),
            plain,
            ip_key,
            |ip, ()| Some(Elem::Addr(ip)),
        );
        let cidrs = |ir: &Ir| by_family(ir.pod_cidrs.iter().map(|c| (c.addr(), *c)), *f);
        // A CIDR has no element form: a change of this node's pod CIDRs is one transaction.
        ch.diff(
            &format!("pod-cidr-{sfx}"),
            &cidrs(prev),
            &cidrs(next),
            |c, _| c.to_string(),
            |c| c.to_string(),
            |_, _| None,
        );
        let keep = |m: &BTreeMap<IpAddr, (&str, &str)>, pick: usize| -> BTreeMap<IpAddr, String> {
            m.iter()
                .filter(|(ip, _)| family_of(**ip) == *f)
                .map(|(ip, v)| {
                    (
                        *ip,
                        if pick == 0 {
                            v.0.to_owned()
                        } else {
                            v.1.to_owned()
                        },
                    )
                })
                .collect()
        };
        let selfs = |m: &BTreeMap<IpAddr, (&str, &str)>| -> BTreeMap<IpAddr, ()> {
            m.keys()
                .filter(|ip| family_of(**ip) == *f)
                .map(|ip| (*ip, ()))
                .collect()
        };
        ch.diff(
            &format!("self-{sfx}"),
            &selfs(&old_pods),
            &selfs(&new_pods),
            |ip, _| format!("{ip} . {ip}"),
            |ip| format!("{ip} . {ip}"),
            |ip, ()| Some(Elem::Pair(ip)),
        );
        for (map, pick) in [("from-pod", 1), ("to-pod", 0)] {
            let (o, n) = (keep(&old_pods, pick), keep(&new_pods, pick));
            let o: BTreeMap<IpAddr, &str> = o.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let n: BTreeMap<IpAddr, &str> = n.iter().map(|(k, v)| (*k, v.as_str())).collect();
            ch.diff(
                &format!("{map}-{sfx}"),
                &o,
                &n,
                |ip, chain| format!("{ip} : goto {chain}"),
                |ip| ip.to_string(),
                |ip, chain| Some(Elem::Goto(ip, chain.to_owned())),
            );
        }
    }
    // New sets are declared with their elements inline: a separate `add element` into a new
    // interval set makes nft read the elements the kernel holds first (tens of ms at 80k).
    let mut new_decls = String::new();
    let decls = set_decls(next);
    let mut new_entries = Entries::new();
    for (name, set) in &next.addr_sets {
        let Some(old) = prev.addr_sets.get(name) else {
            addr_set_entries(next, name, &node, &mut new_entries);
            for f in FAMILIES {
                let set = format!("{name}-{}", fam(f).0);
                if let Some(d) = decls.get(&set) {
                    new_decls.push_str(&d.render(new_entries.get(&set).map_or(&[], Vec::as_slice)));
                }
            }
            continue;
        };
        if let (SetElems::Addrs(a), SetElems::Addrs(b)) = (&old.elems, &set.elems) {
            if a == b {
                continue;
            }
            for f in &node {
                let pick = |s: &BTreeSet<IpAddr>| by_family(s.iter().map(|ip| (*ip, *ip)), *f);
                ch.diff(
                    &format!("{name}-{}", fam(*f).0),
                    &pick(a),
                    &pick(b),
                    |ip, _| ip.to_string(),
                    |ip| ip.to_string(),
                    |ip, ()| Some(Elem::Addr(ip)),
                );
            }
        }
    }
    for (name, set) in &next.port_sets {
        let old = prev.port_sets.get(name);
        if old.is_some_and(|o| o.elems == set.elems) {
            continue;
        }
        for f in &node {
            let pick =
                |s: Option<&BTreeSet<(IpAddr, Proto, u16)>>| -> BTreeMap<(IpAddr, Proto, u16), ()> {
                    s.into_iter()
                        .flatten()
                        .filter(|e| family_of(e.0) == *f)
                        .map(|e| (*e, ()))
                        .collect()
                };
            let set_name = format!("{name}-{}", fam(*f).0);
            let fmt = |(ip, p, n): (IpAddr, Proto, u16)| format!("{ip} . {p} . {n}");
            match old {
                None => {
                    let items: Vec<String> = pick(Some(&set.elems)).into_keys().map(fmt).collect();
                    if let Some(d) = decls.get(&set_name) {
                        new_decls.push_str(&d.render(&items));
                    }
                }
                Some(o) => ch.diff(
                    &set_name,
                    &pick(Some(&o.elems)),
                    &pick(Some(&set.elems)),
                    |e, _| fmt(e),
                    fmt,
                    |(ip, proto, port), ()| Some(Elem::AddrPort(ip, proto, port)),
                ),
            }
        }
    }
    let new_chains: Vec<(&String, &Chain)> = next
        .chains
        .iter()
        .filter(|(k, _)| !prev.chains.contains_key(*k))
        .collect();
    let mut create = String::new();
    if !new_decls.is_empty() || !new_chains.is_empty() {
        let _ = writeln!(create, "table {FAMILY} {TABLE} {{");
        create.push_str(&new_decls);
        for (name, chain) in new_chains {
            render_chain(&mut create, next, &node, name, chain);
        }
        let _ = writeln!(create, "}}");
    }
    let mut remove = String::new();
    for (name, chain) in &prev.chains {
        if !next.chains.contains_key(name) {
            let names = render_chain(&mut String::new(), prev, &node, name, chain);
            for c in &names {
                let _ = writeln!(remove, "flush chain {FAMILY} {TABLE} {c}");
            }
            for c in &names {
                let _ = writeln!(remove, "delete chain {FAMILY} {TABLE} {c}");
            }
        }
    }
    let old_decls = set_decls(prev);
    for k in old_decls.keys() {
        if !decls.contains_key(k) {
            let _ = writeln!(remove, "delete set {FAMILY} {TABLE} {k}");
        }
    }
    // One transaction: deletions (map entries leave the chains about to go), new objects,
    // additions, removals.
    let script = [ch.dels.as_str(), &create, &ch.adds, &remove].concat();
    let staged = ch.stageable.then(|| Staged {
        create,
        elements: ch.del_ops.into_iter().chain(ch.add_ops).collect(),
        remove,
    });
    Update {
        full: false,
        script,
        staged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_counter_is_the_one_its_direction_and_reason_name() {
        for c in DROP_COUNTERS {
            assert_eq!(drop_counter(c.direction, c.reason), c.name, "{c:?}");
        }
        let names: BTreeSet<&str> = DROP_COUNTERS.iter().map(|c| c.name).collect();
        assert_eq!(
            names.len(),
            DROP_COUNTERS.len(),
            "counter names are distinct"
        );
    }

    #[test]
    fn a_seeded_replacement_starts_the_counters_at_the_seed() {
        let ir = Ir {
            host_addrs: BTreeSet::new(),
            pod_cidrs: Vec::new(),
            addr_sets: BTreeMap::new(),
            port_sets: BTreeMap::new(),
            chains: BTreeMap::new(),
            pods: BTreeMap::new(),
            enforcing: true,
        };
        let seed: CounterSeed = [("dropped-egress".to_owned(), (7, 420))].into();
        let text = render_ruleset_seeded(&ir, &seed);
        assert!(
            text.contains("counter dropped-egress { comment \"packets dropped by policy, egress\"; packets 7 bytes 420; }"),
            "{text}"
        );
        assert!(
            text.contains("counter dropped-ingress { comment \"packets dropped by policy, ingress\"; packets 0 bytes 0; }"),
            "{text}"
        );
        assert_eq!(
            render_ruleset(&ir),
            render_ruleset_seeded(&ir, &CounterSeed::new())
        );
    }
}
