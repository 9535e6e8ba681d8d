//! The compiler: index + node facts → [`Ir`].
//!
//! For each pod of this node (the pods it enforces), and each direction: the Admin-tier policies
//! selecting it by ascending priority, the NetworkPolicies selecting it (isolation and the union of
//! their allows), the Baseline-tier policies, then the default allow. Peers become named sets keyed
//! by what they select, so the same selector in many policies is one set; named ports resolve on
//! the destination pod (at compile time for ingress, through a (address, protocol, port) set for
//! egress) and a name that matches nothing matches nothing. A `nodes` peer is a set of the selected
//! Nodes' `status.addresses` IPs. Invariant: deterministic output; set and
//! chain names are hashes of their defining content, so equal content has equal names.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use weft_crds::IpCidr;

use crate::index::{Index, NamedPort, PodInfo, PodKey};
use crate::ir::{
    AddrSet, Chain, Direction, Ir, IrRule, LocalPod, NpTier, PortMatch, PortSet, Remote, SetElems,
};
use crate::model::{
    NsScope, ObjectRef, Peer, PodSelection, Policy, PortSpec, Proto, Rule, TierKind,
};
use crate::selector::{Labels, Selector};

/// Hex digits of the hash in set and chain names (64 bits).
pub const NAME_HASH_LEN: usize = 16;

/// What the compiler needs to know about the node besides the index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInput {
    /// The node's name (`spec.nodeName` of its pods).
    pub node_name: String,
    /// The node's own addresses (node IPs, the overlay device and bridge addresses).
    pub host_addrs: Vec<IpAddr>,
    /// The node's pod CIDRs (one per family).
    pub pod_cidrs: Vec<IpCidr>,
}

/// A deterministic, bounded name: `prefix-` and the first [`NAME_HASH_LEN`] hex digits of the
/// SHA-256 of `content`.
pub fn hashed_name(prefix: &str, content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{}", &hex[..NAME_HASH_LEN])
}

fn ns_matches(scope: &NsScope, ns: &str, labels: &Labels) -> bool {
    match scope {
        NsScope::Named(n) => n == ns,
        NsScope::Selected(sel) => sel.matches(labels),
    }
}

struct Compiler<'a> {
    index: &'a Index,
    ns_labels: BTreeMap<&'a str, &'a Labels>,
    addr_sets: BTreeMap<String, AddrSet>,
    port_sets: BTreeMap<String, PortSet>,
    set_names: BTreeMap<String, String>,
    /// Memo of [`Compiler::pod_set`] by selection, to skip formatting its key again.
    pod_set_names: HashMap<PodSelection, String>,
    /// What the incremental path needs (returned by [`compile_node_memo`]).
    memo: Memo,
    /// A previous compile whose pods, namespaces and nodes are those of the index: a set with
    /// the same key has the same elements ([`compile_node_reusing`]).
    reuse: Option<Reuse<'a>>,
}

/// What a compile after a change of policies only takes from the last one
/// ([`compile_node_reusing`]).
#[derive(Debug, Clone, Copy)]
pub struct Reuse<'a> {
    /// The last compile's result (or what [`crate::incremental::apply_pod_changes`] made of it).
    pub ir: &'a Ir,
    /// Its memo.
    pub memo: &'a Memo,
    /// The policies whose content changed since (added and deleted ones need not be listed:
    /// they change which profiles exist, not what an existing profile holds).
    pub changed: &'a BTreeSet<ObjectRef>,
}

/// Whether `sel` selects the pod `key` (`pod`) whose namespace has `ns_labels`.
pub(crate) fn selects(sel: &PodSelection, key: &PodKey, ns_labels: &Labels, pod: &PodInfo) -> bool {
    pod.is_live() && ns_matches(&sel.ns, &key.namespace, ns_labels) && sel.pods.matches(&pod.labels)
}

/// The policies selecting `pod` for `dir`, per tier in evaluation order (Admin by priority,
/// NetworkPolicy, Baseline by priority).
pub(crate) fn selecting<'i>(
    index: &'i Index,
    ns_labels: &Labels,
    key: &PodKey,
    pod: &PodInfo,
    dir: Direction,
) -> [Vec<&'i Policy>; 3] {
    let rules_of = |p: &'i Policy| match dir {
        Direction::Ingress => p.ingress.as_ref(),
        Direction::Egress => p.egress.as_ref(),
    };
    let mut admin: Vec<&Policy> = Vec::new();
    let mut baseline: Vec<&Policy> = Vec::new();
    for p in index.cluster_policies() {
        if rules_of(p).is_some() && selects(&p.subject, key, ns_labels, pod) {
            match p.tier {
                TierKind::Admin => admin.push(p),
                _ => baseline.push(p),
            }
        }
    }
    admin.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    baseline.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    let nps: Vec<&Policy> = index
        .network_policies_in(&key.namespace)
        .filter(|p| rules_of(p).is_some() && selects(&p.subject, key, ns_labels, pod))
        .collect();
    [admin, nps, baseline]
}

/// What a profile is a function of: direction, the selecting policies per tier (from
/// [`selecting`]) and, for ingress, the pod's named ports.
pub(crate) fn profile_key(sel: &[Vec<&Policy>; 3], pod: &PodInfo, dir: Direction) -> ProfileKey {
    (
        dir,
        sel.iter()
            .map(|tier| tier.iter().map(|p| p.source.clone()).collect())
            .collect(),
        match dir {
            Direction::Ingress => pod.named_ports.clone(),
            Direction::Egress => Vec::new(),
        },
    )
}

/// What the incremental path ([`crate::incremental`]) needs to know about the compile that made
/// an [`Ir`]: what each churning set holds, and which profile chain each combination of selecting
/// policies got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memo {
    /// Pod-address sets by name: the selection whose live pods' addresses they hold.
    pub pod_sets: BTreeMap<String, PodSelection>,
    /// Named-port sets by name: the port's name and protocol (any when `None`).
    pub port_sets: BTreeMap<String, (String, Option<Proto>)>,
    /// Profile chains by what they are a function of.
    pub profiles: BTreeMap<ProfileKey, String>,
}

impl<'a> Compiler<'a> {
    /// The last compile's chain for `profile`, if none of the profile's policies changed since
    /// (a chain is a function of its policies and, for ingress, the pod's named ports, which the
    /// profile names); the sets it uses come along.
    fn reused_chain(&mut self, profile: &ProfileKey) -> Option<(String, Chain)> {
        let r = self.reuse?;
        if profile.1.iter().flatten().any(|o| r.changed.contains(o)) {
            return None;
        }
        let name = r.memo.profiles.get(profile)?;
        let chain = r.ir.chains.get(name)?.clone();
        for rule in chain_rules(&chain) {
            for set in rule_sets(rule) {
                if let Some(s) = r.ir.addr_sets.get(set) {
                    if let Some(sel) = r.memo.pod_sets.get(set) {
                        self.memo.pod_sets.insert(set.to_owned(), sel.clone());
                    }
                    self.set_names.insert(s.what.clone(), set.to_owned());
                    self.addr_sets
                        .entry(set.to_owned())
                        .or_insert_with(|| s.clone());
                }
                if let Some(s) = r.ir.port_sets.get(set) {
                    if let Some(np) = r.memo.port_sets.get(set) {
                        self.memo.port_sets.insert(set.to_owned(), np.clone());
                    }
                    self.set_names.insert(s.what.clone(), set.to_owned());
                    self.port_sets
                        .entry(set.to_owned())
                        .or_insert_with(|| s.clone());
                }
            }
        }
        Some((name.clone(), chain))
    }

    /// The elements of address set `name` (key `key`) from the compile being reused, if any.
    fn reused(&self, name: &str, key: &str) -> Option<SetElems> {
        self.reuse?
            .ir
            .addr_sets
            .get(name)
            .filter(|s| s.what == key)
            .map(|s| s.elems.clone())
    }

    /// The set of addresses of the pods `sel` selects (shared by key).
    fn pod_set(&mut self, sel: &PodSelection) -> String {
        if let Some(n) = self.pod_set_names.get(sel) {
            return n.clone();
        }
        let name = self.pod_set_uncached(sel);
        self.pod_set_names.insert(sel.clone(), name.clone());
        name
    }

    fn pod_set_uncached(&mut self, sel: &PodSelection) -> String {
        let ns = match &sel.ns {
            NsScope::Named(n) => format!("namespace {n}"),
            NsScope::Selected(s) => format!("namespaces {s}"),
        };
        let key = format!("pods {} in {ns}", sel.pods);
        if let Some(n) = self.set_names.get(&key) {
            return n.clone();
        }
        let name = hashed_name("p", &key);
        let elems = self.reused(&name, &key).unwrap_or_else(|| {
            let mut addrs = BTreeSet::new();
            for (ns, labels) in &self.ns_labels {
                if !ns_matches(&sel.ns, ns, labels) {
                    continue;
                }
                for (_, pod) in self.index.pods_in(ns) {
                    if pod.is_live() && sel.pods.matches(&pod.labels) {
                        addrs.extend(pod.ips.iter().copied());
                    }
                }
            }
            SetElems::Addrs(addrs)
        });
        self.memo.pod_sets.insert(name.clone(), sel.clone());
        self.add_addr_set(name, key, elems)
    }

    /// Records address set `name` (key `key`) with `elems`; returns its name.
    fn add_addr_set(&mut self, name: String, key: String, elems: SetElems) -> String {
        self.addr_sets.insert(
            name.clone(),
            AddrSet {
                what: key.clone(),
                elems,
            },
        );
        self.set_names.insert(key, name.clone());
        name
    }

    /// The set of the addresses of the Nodes `sel` selects (shared by key, like pod sets: node
    /// churn changes its elements only).
    fn node_set(&mut self, sel: &Selector) -> String {
        let key = format!("nodes {sel}");
        if let Some(n) = self.set_names.get(&key) {
            return n.clone();
        }
        let name = hashed_name("h", &key);
        let elems = self.reused(&name, &key).unwrap_or_else(|| {
            SetElems::Addrs(
                self.index
                    .nodes()
                    .filter(|(_, n)| sel.matches(&n.labels))
                    .flat_map(|(_, n)| n.ips.iter().copied())
                    .collect(),
            )
        });
        self.add_addr_set(name, key, elems)
    }

    fn cidr_set(&mut self, cidrs: &[IpCidr]) -> String {
        let list: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
        let key = format!("cidrs {}", list.join(","));
        if let Some(n) = self.set_names.get(&key) {
            return n.clone();
        }
        let name = hashed_name("c", &key);
        self.add_addr_set(
            name,
            key,
            SetElems::Prefixes(cidrs.iter().copied().collect()),
        )
    }

    /// The (address, protocol, port) set of a named port on every live pod.
    fn named_port_set(&mut self, name: &str, proto: Option<Proto>) -> String {
        let key = match proto {
            Some(p) => format!("named port {name}/{p}"),
            None => format!("named port {name}"),
        };
        if let Some(n) = self.set_names.get(&key) {
            return n.clone();
        }
        let set = hashed_name("n", &key);
        let reused = self
            .reuse
            .and_then(|r| r.ir.port_sets.get(&set))
            .filter(|p| p.what == key)
            .map(|p| p.elems.clone());
        let elems = reused.unwrap_or_else(|| {
            let mut elems = BTreeSet::new();
            for pod in self
                .ns_labels
                .keys()
                .flat_map(|ns| self.index.pods_in(ns).map(|(_, p)| p))
            {
                if !pod.is_live() {
                    continue;
                }
                for np in &pod.named_ports {
                    if np.name == name && proto.is_none_or(|p| p == np.proto) {
                        elems.extend(pod.ips.iter().map(|ip| (*ip, np.proto, np.port)));
                    }
                }
            }
            elems
        });
        self.memo
            .port_sets
            .insert(set.clone(), (name.to_owned(), proto));
        self.port_sets.insert(
            set.clone(),
            PortSet {
                what: key.clone(),
                elems,
            },
        );
        self.set_names.insert(key, set.clone());
        set
    }

    fn remotes(&mut self, peers: &Option<Vec<Peer>>) -> Vec<Remote> {
        let Some(peers) = peers else {
            return vec![Remote::Any];
        };
        let mut out = Vec::new();
        for p in peers {
            match p {
                Peer::All => out.push(Remote::Any),
                Peer::Pods(sel) => out.push(Remote::In(self.pod_set(sel))),
                Peer::IpBlock { cidr, except } if except.is_empty() => {
                    out.push(Remote::In(self.cidr_set(&[*cidr])))
                }
                Peer::IpBlock { cidr, except } => out.push(Remote::InExcept(
                    self.cidr_set(&[*cidr]),
                    self.cidr_set(except),
                )),
                Peer::Networks(n) if n.is_empty() => {}
                Peer::Networks(n) => out.push(Remote::In(self.cidr_set(n))),
                Peer::Nodes(sel) => out.push(Remote::In(self.node_set(sel))),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Port alternatives of a rule. `local` is the destination pod for ingress (named ports
    /// resolve on it now); for egress named ports become a port set.
    fn port_matches(
        &mut self,
        ports: &Option<Vec<PortSpec>>,
        local: Option<&PodInfo>,
    ) -> Vec<PortMatch> {
        let Some(ports) = ports else {
            return vec![PortMatch::Any];
        };
        let mut ranges: BTreeMap<Proto, Vec<(u16, u16)>> = BTreeMap::new();
        let mut named = Vec::new();
        for p in ports {
            match p {
                PortSpec::Range { proto, first, last } => {
                    ranges.entry(*proto).or_default().push((*first, *last))
                }
                PortSpec::Named { proto, name } => match local {
                    Some(pod) => {
                        for np in &pod.named_ports {
                            if &np.name == name && proto.is_none_or(|p| p == np.proto) {
                                ranges.entry(np.proto).or_default().push((np.port, np.port));
                            }
                        }
                    }
                    None => named.push(PortMatch::Named(self.named_port_set(name, *proto))),
                },
            }
        }
        let mut out: Vec<PortMatch> = ranges
            .into_iter()
            .map(|(proto, r)| PortMatch::Ranges(proto, merge_ranges(r)))
            .collect();
        named.sort();
        named.dedup();
        out.extend(named);
        out
    }

    fn ir_rules(
        &mut self,
        p: &Policy,
        rules: &[Rule],
        dir: Direction,
        local: &PodInfo,
    ) -> Vec<IrRule> {
        let mut out = Vec::new();
        for r in rules {
            let remotes = self.remotes(&r.peers);
            let ports = self.port_matches(&r.ports, (dir == Direction::Ingress).then_some(local));
            for remote in &remotes {
                for port in &ports {
                    out.push(IrRule {
                        remote: remote.clone(),
                        ports: port.clone(),
                        action: r.action,
                        source: p.source.clone(),
                        rule: r.index,
                        rule_name: r.name.clone(),
                    });
                }
            }
        }
        out
    }

    /// The policies selecting `pod` for `dir`, per tier in evaluation order.
    fn selecting(&self, key: &PodKey, pod: &PodInfo, dir: Direction) -> [Vec<&'a Policy>; 3] {
        let labels = self.index.namespace_labels(&key.namespace);
        selecting(self.index, labels, key, pod, dir)
    }

    /// The profile chain of the policies `sel` (from [`Compiler::selecting`]) for a pod with
    /// the named ports of `pod`.
    fn chain(&mut self, sel: [Vec<&'a Policy>; 3], pod: &PodInfo, dir: Direction) -> Chain {
        let rules_of = |p: &'a Policy| match dir {
            Direction::Ingress => p.ingress.as_ref(),
            Direction::Egress => p.egress.as_ref(),
        };
        let [admin, nps, baseline] = sel;
        let fail_closed: Vec<_> = admin
            .iter()
            .chain(&nps)
            .chain(&baseline)
            .filter(|p| !p.refused.is_empty())
            .map(|p| p.source.clone())
            .collect();
        let mut chain = Chain {
            direction: dir,
            fail_closed,
            admin: Vec::new(),
            np: None,
            baseline: Vec::new(),
        };
        if !chain.fail_closed.is_empty() {
            return chain;
        }
        for p in admin {
            let r = self.ir_rules(p, rules_of(p).map_or(&[][..], |v| v), dir, pod);
            chain.admin.extend(r);
        }
        if !nps.is_empty() {
            let mut allow = Vec::new();
            for p in &nps {
                allow.extend(self.ir_rules(p, rules_of(p).map_or(&[][..], |v| v), dir, pod));
            }
            chain.np = Some(NpTier {
                by: nps.iter().map(|p| p.source.clone()).collect(),
                allow,
            });
        }
        for p in baseline {
            let r = self.ir_rules(p, rules_of(p).map_or(&[][..], |v| v), dir, pod);
            chain.baseline.extend(r);
        }
        chain
    }
}

/// What a profile is a function of: direction, the selecting policies per tier, the named ports.
pub type ProfileKey = (Direction, Vec<Vec<ObjectRef>>, Vec<NamedPort>);

/// Every rule of a chain, whatever its tier.
fn chain_rules(ch: &Chain) -> impl Iterator<Item = &IrRule> {
    ch.admin
        .iter()
        .chain(&ch.baseline)
        .chain(ch.np.iter().flat_map(|t| &t.allow))
}

/// The names of the sets a rule uses.
fn rule_sets(r: &IrRule) -> impl Iterator<Item = &str> {
    let remote = match &r.remote {
        Remote::Any => [None, None],
        Remote::In(a) => [Some(a.as_str()), None],
        Remote::InExcept(a, b) => [Some(a.as_str()), Some(b.as_str())],
    };
    let port = match &r.ports {
        PortMatch::Named(n) => Some(n.as_str()),
        _ => None,
    };
    remote.into_iter().chain([port]).flatten()
}

/// Sorts and merges overlapping or adjacent inclusive ranges.
fn merge_ranges(mut r: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    r.sort();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Compiles the policy of the node described by `node`: every live pod of the index scheduled to
/// `node.node_name` gets an ingress and an egress profile.
pub fn compile_node(index: &Index, node: &NodeInput) -> Ir {
    compile_node_memo(index, node).0
}

/// [`compile_node`], and what [`crate::incremental::apply_pod_changes`] needs to follow pod churn
/// from the result without compiling again.
pub fn compile_node_memo(index: &Index, node: &NodeInput) -> (Ir, Memo) {
    compile(index, node, None)
}

/// [`compile_node_memo`] after a change of policies only: `reuse.ir` is the result of a compile
/// (or of [`crate::incremental::apply_pod_changes`] since) of an index with the same pods,
/// namespaces and nodes as `index`, so the address and named-port sets of selectors it had are
/// taken from it instead of being computed from every pod again, and so are the profile chains
/// none of whose policies are in `reuse.changed`. Same result as [`compile_node_memo`] under
/// that condition (checked by `tests/agree.rs`).
pub fn compile_node_reusing(index: &Index, node: &NodeInput, reuse: Reuse<'_>) -> (Ir, Memo) {
    compile(index, node, Some(reuse))
}

fn compile<'a>(index: &'a Index, node: &NodeInput, reuse: Option<Reuse<'a>>) -> (Ir, Memo) {
    let mut c = Compiler {
        index,
        ns_labels: index.namespaces().map(|(n, l)| (n.as_str(), l)).collect(),
        addr_sets: BTreeMap::new(),
        port_sets: BTreeMap::new(),
        set_names: BTreeMap::new(),
        pod_set_names: HashMap::new(),
        memo: Memo::default(),
        reuse,
    };
    let mut chains = BTreeMap::new();
    let mut pods = BTreeMap::new();
    // A profile is a function of the selecting policies and, for ingress, of the pod's named
    // ports: pods that agree on those share the chain without compiling it again.
    let mut profiles: BTreeMap<ProfileKey, String> = BTreeMap::new();
    let local = c.ns_labels.keys().flat_map(|ns| {
        index
            .pods_in(ns)
            .filter(|(_, p)| p.node == node.node_name && p.is_live())
            .map(move |(name, p)| {
                let key = PodKey {
                    namespace: (*ns).to_owned(),
                    name: name.clone(),
                };
                (key, p)
            })
    });
    let local: Vec<(PodKey, &PodInfo)> = local.collect();
    for (key, pod) in local {
        let mut names = Vec::new();
        for dir in [Direction::Ingress, Direction::Egress] {
            let sel = c.selecting(&key, pod, dir);
            let profile = profile_key(&sel, pod, dir);
            if let Some(name) = profiles.get(&profile) {
                names.push(name.clone());
                continue;
            }
            if let Some((name, chain)) = c.reused_chain(&profile) {
                chains.entry(name.clone()).or_insert(chain);
                profiles.insert(profile, name.clone());
                names.push(name);
                continue;
            }
            let chain = c.chain(sel, pod, dir);
            let prefix = match dir {
                Direction::Ingress => "in",
                Direction::Egress => "eg",
            };
            let name = hashed_name(prefix, &format!("{chain:?}"));
            chains.entry(name.clone()).or_insert(chain);
            profiles.insert(profile, name.clone());
            names.push(name);
        }
        let (ingress, egress) = (names[0].clone(), names[1].clone());
        pods.insert(
            key,
            LocalPod {
                ips: pod.ips.clone(),
                ingress,
                egress,
            },
        );
    }
    // A rule whose ports resolve to nothing (a named port the pod lacks) or whose peers are
    // empty makes sets that no chain uses; drop them, so that the sets are a function of the
    // chains alone (the incremental path relies on it).
    let used: BTreeSet<&str> = chains
        .values()
        .flat_map(chain_rules)
        .flat_map(rule_sets)
        .collect();
    c.addr_sets.retain(|k, _| used.contains(k.as_str()));
    c.port_sets.retain(|k, _| used.contains(k.as_str()));
    let mut memo = c.memo;
    memo.pod_sets.retain(|k, _| used.contains(k.as_str()));
    memo.port_sets.retain(|k, _| used.contains(k.as_str()));
    memo.profiles = profiles;
    let ir = Ir {
        host_addrs: node.host_addrs.iter().copied().collect(),
        pod_cidrs: node.pod_cidrs.clone(),
        addr_sets: c.addr_sets,
        port_sets: c.port_sets,
        chains,
        pods,
        enforcing: index.policies().next().is_some(),
    };
    (ir, memo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_when_they_overlap_or_touch() {
        assert_eq!(
            merge_ranges(vec![(80, 80), (81, 90), (100, 200), (150, 160), (1, 2)]),
            vec![(1, 2), (80, 90), (100, 200)]
        );
        assert_eq!(merge_ranges(vec![(0, 65535), (80, 80)]), vec![(0, 65535)]);
    }

    #[test]
    fn names_are_bounded_and_deterministic() {
        let a = hashed_name("p", "pods app=web in namespace x");
        assert_eq!(a, hashed_name("p", "pods app=web in namespace x"));
        assert_ne!(a, hashed_name("p", "pods app=web in namespace y"));
        assert_eq!(a.len(), 2 + NAME_HASH_LEN);
    }
}
