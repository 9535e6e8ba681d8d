//! The renderer: [`Ir`] → one nftables script, applied as one transaction (`nft -f`).
//!
//! ```text
//! table inet weft-policy
//!   chain forward (hook forward, priority filter, policy accept)
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
/// Longest comment rendered (nftables allows 128 bytes).
pub const COMMENT_MAX: usize = 120;
/// Most elements per `add element` statement (keeps lines bounded).
pub const ELEMENTS_PER_STATEMENT: usize = 512;

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
fn node_families(ir: &Ir) -> Vec<IpFamily> {
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

/// Element keys (and map values) of every set and map, by rendered set name.
type Elements = BTreeMap<String, BTreeMap<String, Option<String>>>;

fn elements(ir: &Ir) -> Elements {
    let node = node_families(ir);
    let mut out: Elements = BTreeMap::new();
    fn put(out: &mut Elements, set: String, key: String, val: Option<String>) {
        out.entry(set).or_default().insert(key, val);
    }
    for f in &node {
        let (sfx, _, _) = fam(*f);
        // Declared even when empty: the rules reference them.
        out.entry(format!("host-{sfx}")).or_default();
        out.entry(format!("pod-cidr-{sfx}")).or_default();
        out.entry(format!("self-{sfx}")).or_default();
        out.entry(format!("from-pod-{sfx}")).or_default();
        out.entry(format!("to-pod-{sfx}")).or_default();
    }
    let sfx = |ip: &IpAddr| fam(family_of(*ip)).0;
    for ip in &ir.host_addrs {
        if node.contains(&family_of(*ip)) {
            put(&mut out, format!("host-{}", sfx(ip)), ip.to_string(), None);
        }
    }
    for c in &ir.pod_cidrs {
        put(
            &mut out,
            format!("pod-cidr-{}", fam(c.family()).0),
            c.to_string(),
            None,
        );
    }
    for pod in ir.pods.values() {
        for ip in &pod.ips {
            if !node.contains(&family_of(*ip)) {
                continue;
            }
            let s = sfx(ip);
            put(&mut out, format!("self-{s}"), format!("{ip} . {ip}"), None);
            put(
                &mut out,
                format!("from-pod-{s}"),
                ip.to_string(),
                Some(format!("goto {}", pod.egress)),
            );
            put(
                &mut out,
                format!("to-pod-{s}"),
                ip.to_string(),
                Some(format!("goto {}", pod.ingress)),
            );
        }
    }
    for (name, set) in &ir.addr_sets {
        for f in FAMILIES {
            if set_has_family(ir, name, f, &node) {
                out.entry(format!("{name}-{}", fam(f).0)).or_default();
            }
        }
        match &set.elems {
            SetElems::Addrs(a) => {
                for ip in a {
                    if node.contains(&family_of(*ip)) {
                        put(
                            &mut out,
                            format!("{name}-{}", sfx(ip)),
                            ip.to_string(),
                            None,
                        );
                    }
                }
            }
            SetElems::Prefixes(p) => {
                for c in p {
                    put(
                        &mut out,
                        format!("{name}-{}", fam(c.family()).0),
                        c.to_string(),
                        None,
                    );
                }
            }
        }
    }
    for (name, set) in &ir.port_sets {
        for f in &node {
            out.entry(format!("{name}-{}", fam(*f).0)).or_default();
        }
        for (ip, proto, port) in &set.elems {
            if node.contains(&family_of(*ip)) {
                put(
                    &mut out,
                    format!("{name}-{}", sfx(ip)),
                    format!("{ip} . {proto} . {port}"),
                    None,
                );
            }
        }
    }
    out
}

/// The parts of the table that exist whatever the policies: the base sets, maps and chains.
fn base(ir: &Ir) -> String {
    let node = node_families(ir);
    let mut s = String::new();
    for f in &node {
        let (sfx, _, ty) = fam(*f);
        let _ = writeln!(
            s,
            "\tset host-{sfx} {{ type {ty}; comment \"this node's addresses\"; }}"
        );
        let _ = writeln!(
            s,
            "\tset pod-cidr-{sfx} {{ type {ty}; flags interval; auto-merge; comment \"this node's pod CIDRs\"; }}"
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
    let _ = writeln!(
        s,
        "\t\ttype filter hook forward priority {FORWARD_PRIORITY}; policy accept;"
    );
    let _ = writeln!(s, "\t\tct state established,related accept");
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
            "\t\t{ip} saddr @pod-cidr-{sfx} drop comment \"local pod not programmed yet\""
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
            "\t\t{ip} daddr @pod-cidr-{sfx} drop comment \"local pod not programmed yet\""
        );
    }
    let _ = writeln!(s, "\t\taccept");
    let _ = writeln!(s, "\t}}");
    s
}

/// Declarations of the policy sets, by rendered name.
fn set_decls(ir: &Ir) -> BTreeMap<String, String> {
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
                SetElems::Prefixes(_) => " flags interval; auto-merge;",
            };
            out.insert(
                format!("{name}-{sfx}"),
                format!(
                    "\tset {name}-{sfx} {{ type {ty};{flags} comment \"{}\"; }}\n",
                    comment(&set.what)
                ),
            );
        }
    }
    for (name, set) in &ir.port_sets {
        for f in &node {
            let (sfx, _, ty) = fam(*f);
            out.insert(
                format!("{name}-{sfx}"),
                format!(
                    "\tset {name}-{sfx} {{ type {ty} . inet_proto . inet_service; comment \"{}\"; }}\n",
                    comment(&set.what)
                ),
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
fn skeleton(ir: &Ir) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table {FAMILY} {TABLE} {{");
    s.push_str(&base(ir));
    for decl in set_decls(ir).values() {
        s.push_str(decl);
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
        Direction::Ingress => "accept".to_owned(),
        Direction::Egress => format!("goto {TO_POD_CHAIN}"),
    };
    let dir = c.direction;
    let _ = writeln!(s, "\tchain {name} {{");
    if !c.fail_closed.is_empty() {
        let who: Vec<String> = c.fail_closed.iter().map(|o| o.to_string()).collect();
        let _ = writeln!(
            s,
            "\t\tdrop comment \"{}\"",
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
            Action::Deny => "drop".to_owned(),
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
            "\t\tdrop comment \"{}\"",
            comment(&format!("isolated by {}", who.join(", ")))
        );
    } else {
        for r in &c.baseline {
            let verdict = match r.action {
                Action::Allow | Action::Pass => allow.clone(),
                Action::Deny => "drop".to_owned(),
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
        let _ = writeln!(
            s,
            "{verb} element {FAMILY} {TABLE} {set} {{ {} }}",
            chunk.join(", ")
        );
    }
}

fn entry(k: &str, v: &Option<String>) -> String {
    match v {
        Some(v) => format!("{k} : {v}"),
        None => k.to_owned(),
    }
}

/// The whole ruleset as one `nft -f` script that replaces the table atomically.
pub fn render_ruleset(ir: &Ir) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# weft policy ruleset: one transaction replaces table {FAMILY} {TABLE}"
    );
    let _ = writeln!(s, "add table {FAMILY} {TABLE}");
    let _ = writeln!(s, "delete table {FAMILY} {TABLE}");
    s.push_str(&skeleton(ir));
    for (set, elems) in elements(ir) {
        let items: Vec<String> = elems.iter().map(|(k, v)| entry(k, v)).collect();
        element_statements(&mut s, "add", &set, &items);
    }
    s
}

/// A script that takes the kernel from `prev` to `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// True when the table is replaced (the node's families or base changed); false when the
    /// script only adds and removes elements, sets and profile chains.
    pub full: bool,
    /// The `nft -f` script, one transaction (empty when nothing changes).
    pub script: String,
}

/// The update from `prev` (what the kernel holds) to `next`, without replacing the table: element
/// deletions (including map entries that point at profiles about to go), new sets and profile
/// chains, element additions, then the removal of profiles and sets nothing references any more.
/// Pod churn within existing profiles is element changes only. Falls back to the full replacement
/// when the base of the table changes or a name would change its meaning.
pub fn render_update(prev: &Ir, next: &Ir) -> Update {
    let full = || Update {
        full: true,
        script: render_ruleset(next),
    };
    if base(prev) != base(next) {
        return full();
    }
    let (old_sets, new_sets) = (set_decls(prev), set_decls(next));
    let (old_chains, new_chains) = (chain_decls(prev), chain_decls(next));
    let clash = old_sets
        .iter()
        .any(|(k, v)| new_sets.get(k).is_some_and(|n| n != v))
        || old_chains
            .iter()
            .any(|(k, v)| new_chains.get(k).is_some_and(|n| n != v));
    if clash {
        return full();
    }
    let (old, new) = (elements(prev), elements(next));
    let empty = BTreeMap::new();
    let mut s = String::new();
    for (set, o) in &old {
        let Some(n) = new.get(set) else { continue };
        let gone: Vec<String> = o
            .iter()
            .filter(|(k, v)| n.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        element_statements(&mut s, "delete", set, &gone);
    }
    let added_sets: Vec<&String> = new_sets
        .keys()
        .filter(|k| !old_sets.contains_key(*k))
        .collect();
    let added_chains: Vec<&String> = new_chains
        .keys()
        .filter(|k| !old_chains.contains_key(*k))
        .collect();
    if !added_sets.is_empty() || !added_chains.is_empty() {
        let _ = writeln!(s, "table {FAMILY} {TABLE} {{");
        for k in &added_sets {
            s.push_str(&new_sets[*k]);
        }
        for k in &added_chains {
            s.push_str(&new_chains[*k].1);
        }
        let _ = writeln!(s, "}}");
    }
    for (set, n) in &new {
        let o = old.get(set).unwrap_or(&empty);
        let added: Vec<String> = n
            .iter()
            .filter(|(k, v)| o.get(*k) != Some(*v))
            .map(|(k, v)| entry(k, v))
            .collect();
        element_statements(&mut s, "add", set, &added);
    }
    for (k, (names, _)) in &old_chains {
        if !new_chains.contains_key(k) {
            for c in names {
                let _ = writeln!(s, "flush chain {FAMILY} {TABLE} {c}");
            }
            for c in names {
                let _ = writeln!(s, "delete chain {FAMILY} {TABLE} {c}");
            }
        }
    }
    for k in old_sets.keys() {
        if !new_sets.contains_key(k) {
            let _ = writeln!(s, "delete set {FAMILY} {TABLE} {k}");
        }
    }
    Update {
        full: false,
        script: s,
    }
}
