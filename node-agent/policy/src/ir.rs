//! The compiled form of one node's policy: what the kernel ruleset says, as data.
//!
//! ```text
//!  packet ─► same pod? own node? ─► egress map[src] ─► profile chain ─► ingress map[dst] ─► profile chain
//!                                     (local src)      admin → NP → baseline → allow   (local dst)
//! ```
//!
//! Local pods with the same compiled behaviour share one profile [`Chain`]; peers are named address
//! sets shared between rules. Invariant: [`Ir::verdict`] evaluates exactly the structure the
//! renderer turns into nftables (same order, same sets), so it answers "would A reach B" from the
//! agent's own compiled state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use weft_crds::IpCidr;

use crate::index::PodKey;
use crate::model::{Action, ObjectRef, Proto, TierKind};

/// Traffic direction, seen from a local pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Traffic to the pod.
    Ingress,
    /// Traffic from the pod.
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Elements of an address set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetElems {
    /// Pod addresses (a selector's result).
    Addrs(BTreeSet<IpAddr>),
    /// Prefixes (ipBlock, networks).
    Prefixes(BTreeSet<IpCidr>),
}

impl SetElems {
    /// Whether `ip` is in the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match self {
            SetElems::Addrs(a) => a.contains(&ip),
            SetElems::Prefixes(p) => p.iter().any(|c| c.contains_addr(ip)),
        }
    }
}

/// A named address set, shared by every rule with the same peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddrSet {
    /// What it selects (the rendered comment).
    pub what: String,
    /// Its elements.
    pub elems: SetElems,
}

/// A named set of (destination address, protocol, port): a named port resolved on every pod that
/// declares it (egress rules with named ports).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortSet {
    /// What it resolves (the rendered comment).
    pub what: String,
    /// Its elements.
    pub elems: BTreeSet<(IpAddr, Proto, u16)>,
}

/// The remote end a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Remote {
    /// Any address.
    Any,
    /// An address in the named set.
    In(String),
    /// An address in the first set and not in the second (ipBlock with except).
    InExcept(String, String),
}

/// The protocol and destination port a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMatch {
    /// Any protocol, any port.
    Any,
    /// One protocol, ports in these inclusive ranges (`(0, 65535)` is every port).
    Ranges(Proto, Vec<(u16, u16)>),
    /// (destination, protocol, port) in the named port set.
    Named(String),
}

/// One rule of a profile chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IrRule {
    /// Remote end.
    pub remote: Remote,
    /// Protocol and port.
    pub ports: PortMatch,
    /// What a match does.
    pub action: Action,
    /// The policy it comes from.
    pub source: ObjectRef,
    /// The rule's position in the policy's list for this direction.
    pub rule: usize,
    /// The rule's name (CNP/ANP), if any.
    pub rule_name: String,
}

/// The NetworkPolicy tier of a profile: present when a NetworkPolicy isolates the pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NpTier {
    /// The NetworkPolicies selecting the pod for this direction.
    pub by: Vec<ObjectRef>,
    /// Their allow rules (a union: order does not matter).
    pub allow: Vec<IrRule>,
}

/// A profile: the behaviour of one direction of one or more local pods.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// Its direction.
    pub direction: Direction,
    /// Refused policies selecting the pods: when non-empty, everything is dropped.
    pub fail_closed: Vec<ObjectRef>,
    /// Admin tier, in order (first match wins).
    pub admin: Vec<IrRule>,
    /// NetworkPolicy tier; None when no NetworkPolicy isolates the pods.
    pub np: Option<NpTier>,
    /// Baseline tier, in order (first match wins).
    pub baseline: Vec<IrRule>,
}

/// A local pod and the profiles it is dispatched to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalPod {
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// Its ingress profile chain.
    pub ingress: String,
    /// Its egress profile chain.
    pub egress: String,
}

/// One node's compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ir {
    /// The node's own addresses (always allowed to and from its pods).
    pub host_addrs: BTreeSet<IpAddr>,
    /// The node's pod CIDRs: an address in them without a profile is dropped.
    pub pod_cidrs: Vec<IpCidr>,
    /// Address sets by name.
    pub addr_sets: BTreeMap<String, AddrSet>,
    /// Named-port sets by name.
    pub port_sets: BTreeMap<String, PortSet>,
    /// Profile chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Local pods.
    pub pods: BTreeMap<PodKey, LocalPod>,
    /// Whether the cluster has any policy object (NetworkPolicy, ClusterNetworkPolicy,
    /// AdminNetworkPolicy, BaselineAdminNetworkPolicy; refused ones too). Without one there is
    /// nothing to enforce anywhere: the table is rendered whole but its `forward` chain is not
    /// attached to the forward hook, so pod traffic pays no policy lookup at all. The first policy
    /// attaches it (a full replacement); a pod of any node is dropped as unprogrammed from then on
    /// until its profile is in, so no pod has an unpoliced window. Pod churn never changes it.
    pub enforcing: bool,
}

/// Allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The connection may be opened.
    Allowed,
    /// It is dropped.
    Denied,
}

/// One reason behind a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Because {
    /// Source and destination are the same pod.
    SamePod,
    /// Traffic between a pod and its own node.
    OwnNode,
    /// Neither end is a pod of this node: another node judges it.
    NotEnforcedHere,
    /// The cluster has no policy object: the node filters nothing ([`Ir::enforcing`]).
    NoPolicy,
    /// An address on this node's pod CIDR without a programmed pod.
    Unprogrammed(Direction),
    /// A refused policy selects the pod: fail closed.
    FailClosed(Direction, Vec<ObjectRef>),
    /// An Admin or Baseline rule, or a NetworkPolicy allow rule, matched.
    Rule {
        /// Direction.
        direction: Direction,
        /// Tier.
        tier: TierKind,
        /// The rule's action.
        action: Action,
        /// The policy.
        policy: ObjectRef,
        /// The rule's index.
        rule: usize,
        /// The rule's name, if any.
        name: String,
    },
    /// NetworkPolicies isolate the pod and none of their rules matched.
    Isolated(Direction, Vec<ObjectRef>),
    /// No policy decided: allowed.
    DefaultAllow(Direction),
}

impl fmt::Display for Because {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[ObjectRef]| {
            v.iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Because::SamePod => f.write_str("a pod may always reach itself"),
            Because::OwnNode => f.write_str("a pod and its own node may always talk"),
            Because::NotEnforcedHere => f.write_str("neither end is a pod of this node"),
            Because::NoPolicy => f.write_str(
                "the cluster has no policy object: this node filters nothing (no forward hook)",
            ),
            Because::Unprogrammed(d) => write!(f, "{d}: local address not programmed yet"),
            Because::FailClosed(d, p) => write!(f, "{d}: fail closed, refused {}", list(p)),
            Because::Rule {
                direction,
                tier,
                action,
                policy,
                rule,
                name,
            } => {
                let name = if name.is_empty() {
                    String::new()
                } else {
                    format!(" ({name})")
                };
                write!(
                    f,
                    "{direction}: {action:?} by {policy} {direction}[{rule}]{name}, {tier:?} tier"
                )
            }
            Because::Isolated(d, p) => {
                write!(f, "{d}: isolated by {} and no rule matched", list(p))
            }
            Because::DefaultAllow(d) => write!(f, "{d}: no policy decided (default allow)"),
        }
    }
}

/// The answer to "would this connection be allowed", and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allowed or denied.
    pub decision: Decision,
    /// The reasons, egress before ingress.
    pub because: Vec<Because>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.decision)?;
        for b in &self.because {
            write!(f, "; {b}")?;
        }
        Ok(())
    }
}

/// Size of a compiled ruleset, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size {
    /// Profile chains.
    pub chains: usize,
    /// Rules in the profile chains (before the per-family split of the rendering).
    pub rules: usize,
    /// Named address and port sets.
    pub sets: usize,
    /// Elements of those sets plus the dispatch maps' entries.
    pub elements: usize,
    /// Local pods.
    pub pods: usize,
}

impl Ir {
    /// The ruleset's size (for the ruleset-size metrics).
    pub fn size(&self) -> Size {
        let rules = self
            .chains
            .values()
            .map(|c| c.admin.len() + c.baseline.len() + c.np.as_ref().map_or(0, |n| n.allow.len()))
            .sum();
        let set_elems: usize = self
            .addr_sets
            .values()
            .map(|s| match &s.elems {
                SetElems::Addrs(a) => a.len(),
                SetElems::Prefixes(p) => p.len(),
            })
            .sum::<usize>()
            + self
                .port_sets
                .values()
                .map(|s| s.elems.len())
                .sum::<usize>();
        let pod_ips: usize = self.pods.values().map(|p| p.ips.len()).sum();
        Size {
            chains: self.chains.len(),
            rules,
            sets: self.addr_sets.len() + self.port_sets.len(),
            elements: set_elems + 3 * pod_ips,
            pods: self.pods.len(),
        }
    }

    fn in_pod_cidrs(&self, ip: IpAddr) -> bool {
        self.pod_cidrs.iter().any(|c| c.contains_addr(ip))
    }

    /// The local pod with address `ip`, if any.
    pub fn local_pod(&self, ip: IpAddr) -> Option<(&PodKey, &LocalPod)> {
        self.pods.iter().find(|(_, p)| p.ips.contains(&ip))
    }

    /// Would a new connection from `src` to `dst` on `proto`/`port` pass this node's ruleset?
    /// Judges only the ends that are this node's pods; a connection needs the verdict of both
    /// ends' nodes.
    pub fn verdict(&self, src: IpAddr, dst: IpAddr, proto: Proto, port: u16) -> Verdict {
        let done = |decision, b| Verdict {
            decision,
            because: vec![b],
        };
        if src == dst {
            return done(Decision::Allowed, Because::SamePod);
        }
        if !self.enforcing {
            return done(Decision::Allowed, Because::NoPolicy);
        }
        let src_pod = self.local_pod(src);
        let dst_pod = self.local_pod(dst);
        if (self.host_addrs.contains(&src) && (dst_pod.is_some() || self.in_pod_cidrs(dst)))
            || (self.host_addrs.contains(&dst) && (src_pod.is_some() || self.in_pod_cidrs(src)))
        {
            return done(Decision::Allowed, Because::OwnNode);
        }
        let mut because = Vec::new();
        for (dir, me, remote) in [
            (Direction::Egress, src, dst),
            (Direction::Ingress, dst, src),
        ] {
            let chain = self.local_pod(me).map(|(_, p)| match dir {
                Direction::Egress => &p.egress,
                Direction::Ingress => &p.ingress,
            });
            let (d, b) = match chain.and_then(|c| self.chains.get(c)) {
                Some(c) => self.eval_chain(c, remote, proto, port),
                None if self.in_pod_cidrs(me) => (Decision::Denied, Because::Unprogrammed(dir)),
                None => continue,
            };
            because.push(b);
            if d == Decision::Denied {
                return Verdict {
                    decision: d,
                    because,
                };
            }
        }
        if because.is_empty() {
            because.push(Because::NotEnforcedHere);
        }
        Verdict {
            decision: Decision::Allowed,
            because,
        }
    }

    fn rule_matches(&self, r: &IrRule, remote: IpAddr, proto: Proto, port: u16) -> bool {
        let set = |n: &str| {
            self.addr_sets
                .get(n)
                .is_some_and(|s| s.elems.contains(remote))
        };
        let remote_ok = match &r.remote {
            Remote::Any => true,
            Remote::In(s) => set(s),
            Remote::InExcept(s, x) => set(s) && !set(x),
        };
        remote_ok
            && match &r.ports {
                PortMatch::Any => true,
                PortMatch::Ranges(p, ranges) => {
                    *p == proto && ranges.iter().any(|(a, b)| (*a..=*b).contains(&port))
                }
                PortMatch::Named(s) => self
                    .port_sets
                    .get(s)
                    .is_some_and(|s| s.elems.contains(&(remote, proto, port))),
            }
    }

    fn eval_chain(
        &self,
        c: &Chain,
        remote: IpAddr,
        proto: Proto,
        port: u16,
    ) -> (Decision, Because) {
        let dir = c.direction;
        if !c.fail_closed.is_empty() {
            return (
                Decision::Denied,
                Because::FailClosed(dir, c.fail_closed.clone()),
            );
        }
        let by = |r: &IrRule, tier| Because::Rule {
            direction: dir,
            tier,
            action: r.action,
            policy: r.source.clone(),
            rule: r.rule,
            name: r.rule_name.clone(),
        };
        for r in &c.admin {
            if self.rule_matches(r, remote, proto, port) {
                match r.action {
                    Action::Allow => return (Decision::Allowed, by(r, TierKind::Admin)),
                    Action::Deny => return (Decision::Denied, by(r, TierKind::Admin)),
                    Action::Pass => break,
                }
            }
        }
        if let Some(np) = &c.np {
            return match np
                .allow
                .iter()
                .find(|r| self.rule_matches(r, remote, proto, port))
            {
                Some(r) => (Decision::Allowed, by(r, TierKind::NetworkPolicy)),
                None => (Decision::Denied, Because::Isolated(dir, np.by.clone())),
            };
        }
        for r in &c.baseline {
            if self.rule_matches(r, remote, proto, port) {
                match r.action {
                    // Pass in the Baseline tier goes on to the default: allow.
                    Action::Allow | Action::Pass => {
                        return (Decision::Allowed, by(r, TierKind::Baseline));
                    }
                    Action::Deny => return (Decision::Denied, by(r, TierKind::Baseline)),
                }
            }
        }
        (Decision::Allowed, Because::DefaultAllow(dir))
    }
}
