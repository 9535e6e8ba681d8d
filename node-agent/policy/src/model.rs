//! One normalized model for the four policy kinds, so that the compiler knows one shape.
//!
//! NetworkPolicy, ClusterNetworkPolicy (Admin and Baseline tiers), AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy are converted here, with every API defaulting rule applied in one
//! place: `policyTypes` defaulting, missing/empty `from`/`to`/`ports` meaning "any", the protocol
//! defaulting to TCP, `endPort` ranges, and the network-policy-api's fail-closed reading of peers
//! with no field set. Invariant: a [`Policy`] with a non-empty `refused` list has no rules in force;
//! its subject pods fail closed in the directions it affects.

use std::fmt;

use k8s_openapi::api::networking::v1 as netv1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_crds::IpCidr;
use weft_crds::policy_api::{v1alpha1, v1beta1};

use crate::Refusal;
use crate::selector::Selector;

/// The API kind of a policy object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// networking.k8s.io/v1 NetworkPolicy (namespaced).
    NetworkPolicy,
    /// policy.networking.k8s.io ClusterNetworkPolicy (v1beta1 / v1alpha2).
    ClusterNetworkPolicy,
    /// policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy.
    AdminNetworkPolicy,
    /// policy.networking.k8s.io/v1alpha1 BaselineAdminNetworkPolicy.
    BaselineAdminNetworkPolicy,
}

/// Names one policy object: the source named in problems, verdicts and ruleset comments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The kind.
    pub kind: Kind,
    /// The namespace (NetworkPolicy only).
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl ObjectRef {
    /// A cluster-scoped object.
    pub fn cluster(kind: Kind, name: &str) -> ObjectRef {
        ObjectRef {
            kind,
            namespace: None,
            name: name.to_owned(),
        }
    }

    /// A NetworkPolicy.
    pub fn network_policy(namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind: Kind::NetworkPolicy,
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::NetworkPolicy => "networkpolicy",
            Kind::ClusterNetworkPolicy => "clusternetworkpolicy",
            Kind::AdminNetworkPolicy => "adminnetworkpolicy",
            Kind::BaselineAdminNetworkPolicy => "baselineadminnetworkpolicy",
        };
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

/// A transport protocol policies can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`).
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// All three.
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];
}

impl fmt::Display for Proto {
    /// The nftables spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        })
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Accept (CNP), Allow (ANP/BANP), or a NetworkPolicy allow.
    Allow,
    /// Deny.
    Deny,
    /// Skip the rest of the tier.
    Pass,
}

/// The tier a policy lives in, in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TierKind {
    /// ClusterNetworkPolicy Admin tier and AdminNetworkPolicy.
    Admin,
    /// NetworkPolicy.
    NetworkPolicy,
    /// ClusterNetworkPolicy Baseline tier and BaselineAdminNetworkPolicy.
    Baseline,
}

/// Namespaces a selection ranges over.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NsScope {
    /// One namespace by name (a NetworkPolicy's own).
    Named(String),
    /// Namespaces whose labels match.
    Selected(Selector),
}

/// Pods selected by namespace AND pod labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodSelection {
    /// The namespaces.
    pub ns: NsScope,
    /// The pods within them.
    pub pods: Selector,
}

/// One peer of a rule (the remote end: source for ingress, destination for egress).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Pods (never host-networked ones).
    Pods(PodSelection),
    /// A NetworkPolicy ipBlock.
    IpBlock {
        /// The block.
        cidr: IpCidr,
        /// Holes in it.
        except: Vec<IpCidr>,
    },
    /// A CNP/ANP `networks` list.
    Networks(Vec<IpCidr>),
    /// A CNP/ANP/BANP `nodes` peer (egress only): the IPs in `status.addresses` of the Nodes whose
    /// labels match (an empty selector selects every Node).
    Nodes(Selector),
    /// Every address (the fail-closed reading of a Deny/Pass peer with no field set).
    All,
}

/// One destination-port match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortSpec {
    /// A protocol and an inclusive port range; `0..=65535` is every port of the protocol.
    Range {
        /// The protocol.
        proto: Proto,
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
    },
    /// A container port name, resolved on the destination pod; `proto` None takes the container
    /// port's own protocol (CNP/ANP), Some restricts it (NetworkPolicy).
    Named {
        /// Required protocol, if any.
        proto: Option<Proto>,
        /// The container port name.
        name: String,
    },
}

/// One rule of a policy, for one direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Position in the object's list (for comments and verdicts).
    pub index: usize,
    /// The rule's name (CNP/ANP), empty otherwise.
    pub name: String,
    /// What a match does.
    pub action: Action,
    /// Remote peers (OR); None matches every address.
    pub peers: Option<Vec<Peer>>,
    /// Destination ports (OR); None matches every protocol and port.
    pub ports: Option<Vec<PortSpec>>,
}

/// A normalized policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The object.
    pub source: ObjectRef,
    /// Its tier.
    pub tier: TierKind,
    /// Its priority within the tier (0 for NetworkPolicy and BANP).
    pub priority: i32,
    /// The pods it applies to (over-approximated to "all candidates" when its selector is refused).
    pub subject: PodSelection,
    /// Ingress rules; None when the policy does not affect ingress.
    pub ingress: Option<Vec<Rule>>,
    /// Egress rules; None when the policy does not affect egress.
    pub egress: Option<Vec<Rule>>,
    /// Why the policy is refused; non-empty means: no rule in force, subjects fail closed.
    pub refused: Vec<Refusal>,
}

impl Policy {
    /// The evaluation order within a tier: priority, then kind (CNP before ANP), then name.
    pub fn order_key(&self) -> (i32, Kind, &str) {
        (self.priority, self.source.kind, &self.source.name)
    }
}

/// Collects refusals while converting, so that one object reports all of its problems.
#[derive(Default)]
struct Errs(Vec<Refusal>);

impl Errs {
    fn sel(&mut self, sel: &LabelSelector, field: &str) -> Selector {
        Selector::parse(sel, field).unwrap_or_else(|e| {
            self.0.push(e);
            Selector::everything()
        })
    }

    fn cidr(&mut self, s: &str, field: &str) -> Option<IpCidr> {
        match IpCidr::parse_lenient(s) {
            Ok(c) => Some(c),
            Err(_) => {
                self.0.push(Refusal::Cidr {
                    field: field.to_owned(),
                    value: s.to_owned(),
                });
                None
            }
        }
    }

    fn proto(&mut self, s: &str, field: &str) -> Proto {
        Proto::parse(s).unwrap_or_else(|| {
            self.0.push(Refusal::Protocol {
                field: field.to_owned(),
                value: s.to_owned(),
            });
            Proto::Tcp
        })
    }

    fn port(&mut self, n: i32, field: &str) -> u16 {
        match u16::try_from(n) {
            Ok(p) if p >= 1 => p,
            _ => {
                self.0.push(Refusal::Port {
                    field: field.to_owned(),
                    what: format!("port {n} is outside 1-65535"),
                });
                1
            }
        }
    }

    fn range(&mut self, proto: Proto, start: i32, end: i32, field: &str) -> PortSpec {
        let first = self.port(start, &format!("{field}.start"));
        let last = self.port(end, &format!("{field}.end"));
        if last < first {
            self.0.push(Refusal::Port {
                field: field.to_owned(),
                what: format!("range end {end} is before its start {start}"),
            });
        }
        PortSpec::Range { proto, first, last }
    }

    fn shape(&mut self, field: &str, what: &str) {
        self.0.push(Refusal::Shape {
            field: field.to_owned(),
            what: what.to_owned(),
        });
    }
}

/// Converts a NetworkPolicy, applying `policyTypes` defaulting: unset or empty means Ingress, plus
/// Egress when the spec has at least one egress rule.
pub fn from_network_policy(np: &netv1::NetworkPolicy) -> Policy {
    let ns = np.metadata.namespace.clone().unwrap_or_default();
    let name = np.metadata.name.clone().unwrap_or_default();
    let source = ObjectRef::network_policy(&ns, &name);
    let mut errs = Errs::default();
    let spec = np.spec.clone().unwrap_or_default();
    let pods = errs.sel(
        &spec.pod_selector.clone().unwrap_or_default(),
        "spec.podSelector",
    );
    let (mut ingress_on, mut egress_on) = (false, false);
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => {
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => ingress_on = true,
                    "Egress" => egress_on = true,
                    other => {
                        errs.0.push(Refusal::Enum {
                            field: format!("spec.policyTypes[{i}]"),
                            value: other.to_owned(),
                            what: "policy type (Ingress or Egress)",
                        });
                        (ingress_on, egress_on) = (true, true);
                    }
                }
            }
        }
        _ => {
            ingress_on = true;
            egress_on = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        }
    }
    let ingress = ingress_on.then(|| {
        spec.ingress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                np_rule(
                    &mut errs,
                    &ns,
                    i,
                    r.from.as_deref(),
                    r.ports.as_deref(),
                    "ingress",
                    "from",
                )
            })
            .collect()
    });
    let egress = egress_on.then(|| {
        spec.egress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                np_rule(
                    &mut errs,
                    &ns,
                    i,
                    r.to.as_deref(),
                    r.ports.as_deref(),
                    "egress",
                    "to",
                )
            })
            .collect()
    });
    Policy {
        source,
        tier: TierKind::NetworkPolicy,
        priority: 0,
        subject: PodSelection {
            ns: NsScope::Named(ns),
            pods,
        },
        ingress,
        egress,
        refused: errs.0,
    }
}

fn np_rule(
    errs: &mut Errs,
    ns: &str,
    index: usize,
    peers: Option<&[netv1::NetworkPolicyPeer]>,
    ports: Option<&[netv1::NetworkPolicyPort]>,
    dir: &str,
    peer_field: &str,
) -> Rule {
    // Missing and empty `from`/`to` both mean every peer; the same for `ports`.
    let peers = peers.filter(|p| !p.is_empty()).map(|ps| {
        ps.iter()
            .enumerate()
            .map(|(j, p)| {
                np_peer(
                    errs,
                    ns,
                    p,
                    &format!("spec.{dir}[{index}].{peer_field}[{j}]"),
                )
            })
            .collect()
    });
    let ports = ports.filter(|p| !p.is_empty()).map(|ps| {
        ps.iter()
            .enumerate()
            .map(|(j, p)| np_port(errs, p, &format!("spec.{dir}[{index}].ports[{j}]")))
            .collect()
    });
    Rule {
        index,
        name: String::new(),
        action: Action::Allow,
        peers,
        ports,
    }
}

fn np_peer(errs: &mut Errs, ns: &str, p: &netv1::NetworkPolicyPeer, field: &str) -> Peer {
    match (&p.pod_selector, &p.namespace_selector, &p.ip_block) {
        (None, None, Some(b)) => {
            let cidr = errs.cidr(&b.cidr, &format!("{field}.ipBlock.cidr"));
            let mut except = Vec::new();
            for (k, e) in b.except.iter().flatten().enumerate() {
                let f = format!("{field}.ipBlock.except[{k}]");
                if let (Some(c), Some(x)) = (cidr, errs.cidr(e, &f)) {
                    if c.contains(&x) {
                        except.push(x);
                    } else {
                        errs.0.push(Refusal::ExceptOutside {
                            field: f,
                            cidr: c.to_string(),
                            except: x.to_string(),
                        });
                    }
                }
            }
            except.sort();
            except.dedup();
            match cidr {
                Some(cidr) => Peer::IpBlock { cidr, except },
                None => Peer::All,
            }
        }
        (_, _, Some(_)) => {
            errs.shape(
                field,
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            );
            Peer::All
        }
        (None, None, None) => {
            errs.shape(
                field,
                "a peer needs podSelector, namespaceSelector or ipBlock",
            );
            Peer::All
        }
        (pods, nss, None) => {
            let pods = pods
                .as_ref()
                .map(|s| errs.sel(s, &format!("{field}.podSelector")))
                .unwrap_or_default();
            let ns = match nss {
                Some(s) => NsScope::Selected(errs.sel(s, &format!("{field}.namespaceSelector"))),
                None => NsScope::Named(ns.to_owned()),
            };
            Peer::Pods(PodSelection { ns, pods })
        }
    }
}

fn np_port(errs: &mut Errs, p: &netv1::NetworkPolicyPort, field: &str) -> PortSpec {
    let proto = errs.proto(
        p.protocol.as_deref().unwrap_or("TCP"),
        &format!("{field}.protocol"),
    );
    match (&p.port, p.end_port) {
        (None, None) => PortSpec::Range {
            proto,
            first: 0,
            last: u16::MAX,
        },
        (None, Some(_)) => {
            errs.shape(field, "endPort needs port");
            PortSpec::Range {
                proto,
                first: 0,
                last: u16::MAX,
            }
        }
        (Some(IntOrString::Int(n)), end) => errs.range(proto, *n, end.unwrap_or(*n), field),
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                errs.shape(field, "endPort cannot be used with a named port");
            }
            PortSpec::Named {
                proto: Some(proto),
                name: name.clone(),
            }
        }
    }
}

/// A CNP/ANP/BANP subject (exactly one of namespaces/pods).
fn cluster_subject(
    errs: &mut Errs,
    namespaces: Option<&LabelSelector>,
    pods: Option<(&LabelSelector, &LabelSelector)>,
) -> PodSelection {
    match (namespaces, pods) {
        (Some(n), None) => PodSelection {
            ns: NsScope::Selected(errs.sel(n, "spec.subject.namespaces")),
            pods: Selector::everything(),
        },
        (None, Some((n, p))) => PodSelection {
            ns: NsScope::Selected(errs.sel(n, "spec.subject.pods.namespaceSelector")),
            pods: errs.sel(p, "spec.subject.pods.podSelector"),
        },
        _ => {
            errs.shape(
                "spec.subject",
                "exactly one of namespaces and pods must be set",
            );
            PodSelection {
                ns: NsScope::Selected(Selector::everything()),
                pods: Selector::everything(),
            }
        }
    }
}

/// The fields of a cluster-wide peer, whichever API version it came from.
struct ClusterPeer<'a> {
    namespaces: Option<&'a LabelSelector>,
    pods: Option<(&'a LabelSelector, &'a LabelSelector)>,
    nodes: Option<&'a LabelSelector>,
    networks: &'a [String],
    domain_names: &'a [String],
}

/// Converts the peers of one CNP/ANP/BANP rule. Returns None when a peer has no field set: the API
/// then says the rule fails closed (see [`cluster_rule`]).
fn cluster_peers(errs: &mut Errs, peers: &[ClusterPeer<'_>], field: &str) -> Option<Vec<Peer>> {
    if peers.is_empty() {
        errs.shape(field, "at least one peer is required");
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for (j, p) in peers.iter().enumerate() {
        let f = format!("{field}[{j}]");
        let set = usize::from(p.namespaces.is_some())
            + usize::from(p.pods.is_some())
            + usize::from(p.nodes.is_some())
            + usize::from(!p.networks.is_empty())
            + usize::from(!p.domain_names.is_empty());
        if set == 0 {
            return None;
        }
        if set > 1 {
            errs.shape(
                &f,
                "exactly one of namespaces, pods, nodes, networks, domainNames must be set",
            );
            continue;
        }
        if let Some(n) = p.namespaces {
            out.push(Peer::Pods(PodSelection {
                ns: NsScope::Selected(errs.sel(n, &format!("{f}.namespaces"))),
                pods: Selector::everything(),
            }));
        } else if let Some((n, s)) = p.pods {
            out.push(Peer::Pods(PodSelection {
                ns: NsScope::Selected(errs.sel(n, &format!("{f}.pods.namespaceSelector"))),
                pods: errs.sel(s, &format!("{f}.pods.podSelector")),
            }));
        } else if let Some(n) = p.nodes {
            out.push(Peer::Nodes(errs.sel(n, &format!("{f}.nodes"))));
        } else if !p.domain_names.is_empty() {
            errs.0.push(Refusal::Unsupported {
                field: format!("{f}.domainNames"),
                what: "a domainNames peer",
            });
        } else {
            let mut nets: Vec<IpCidr> = p
                .networks
                .iter()
                .enumerate()
                .filter_map(|(k, c)| errs.cidr(c, &format!("{f}.networks[{k}]")))
                .collect();
            nets.sort();
            nets.dedup();
            out.push(Peer::Networks(nets));
        }
    }
    Some(out)
}

/// Builds one CNP/ANP/BANP rule, applying the API's fail-closed reading of a peer with no field set
/// (an API version newer than this engine): an Allow rule matches nothing (None is returned, the
/// rule is dropped), a Deny or Pass rule denies everything.
fn cluster_rule(
    index: usize,
    name: &str,
    action: Action,
    peers: Option<Vec<Peer>>,
    ports: Option<Vec<PortSpec>>,
) -> Option<Rule> {
    match (peers, action) {
        (Some(peers), action) => Some(Rule {
            index,
            name: name.to_owned(),
            action,
            peers: Some(peers),
            ports,
        }),
        (None, Action::Allow) => None,
        (None, _) => Some(Rule {
            index,
            name: name.to_owned(),
            action: Action::Deny,
            peers: Some(vec![Peer::All]),
            ports: None,
        }),
    }
}

fn cnp_protocols(
    errs: &mut Errs,
    protocols: &[v1beta1::ClusterNetworkPolicyProtocol],
    field: &str,
) -> Option<Vec<PortSpec>> {
    if protocols.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (j, p) in protocols.iter().enumerate() {
        let f = format!("{field}[{j}]");
        let named = (!p.destination_named_port.is_empty()).then_some(&p.destination_named_port);
        let set = [
            p.tcp.is_some(),
            p.udp.is_some(),
            p.sctp.is_some(),
            named.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            errs.shape(
                &f,
                "exactly one of tcp, udp, sctp, destinationNamedPort must be set",
            );
            continue;
        }
        if let Some(name) = named {
            out.push(PortSpec::Named {
                proto: None,
                name: name.clone(),
            });
            continue;
        }
        let (proto, pp, key) = match (&p.tcp, &p.udp, &p.sctp) {
            (Some(pp), _, _) => (Proto::Tcp, pp, "tcp"),
            (_, Some(pp), _) => (Proto::Udp, pp, "udp"),
            (_, _, Some(pp)) => (Proto::Sctp, pp, "sctp"),
            _ => continue,
        };
        let f = format!("{f}.{key}.destinationPort");
        match &pp.destination_port {
            None => out.push(PortSpec::Range {
                proto,
                first: 0,
                last: u16::MAX,
            }),
            Some(v1beta1::Port {
                number: Some(n),
                range: None,
            }) => out.push(errs.range(proto, *n, *n, &format!("{f}.number"))),
            Some(v1beta1::Port {
                number: None,
                range: Some(r),
            }) => out.push(errs.range(proto, r.start, r.end, &format!("{f}.range"))),
            Some(_) => errs.shape(&f, "exactly one of number and range must be set"),
        }
    }
    Some(out)
}

/// Converts a ClusterNetworkPolicy (v1beta1; convert v1alpha2 with `From` first).
pub fn from_cluster_network_policy(cnp: &v1beta1::ClusterNetworkPolicy) -> Policy {
    let name = cnp.metadata.name.clone().unwrap_or_default();
    let mut errs = Errs::default();
    let spec = &cnp.spec;
    let tier = match spec.tier {
        v1beta1::Tier::Admin => TierKind::Admin,
        v1beta1::Tier::Baseline => TierKind::Baseline,
        v1beta1::Tier::Unknown => {
            errs.0.push(Refusal::Enum {
                field: "spec.tier".into(),
                value: "(missing or unknown)".into(),
                what: "tier (Admin or Baseline)",
            });
            TierKind::Admin
        }
    };
    let subject = cluster_subject(
        &mut errs,
        spec.subject.namespaces.as_ref(),
        spec.subject
            .pods
            .as_ref()
            .map(|p| (&p.namespace_selector, &p.pod_selector)),
    );
    let action = |errs: &mut Errs, a: v1beta1::ClusterNetworkPolicyRuleAction, f: String| match a {
        v1beta1::ClusterNetworkPolicyRuleAction::Accept => Action::Allow,
        v1beta1::ClusterNetworkPolicyRuleAction::Deny => Action::Deny,
        v1beta1::ClusterNetworkPolicyRuleAction::Pass => Action::Pass,
        v1beta1::ClusterNetworkPolicyRuleAction::Unknown => {
            errs.0.push(Refusal::Enum {
                field: f,
                value: "(missing or unknown)".into(),
                what: "action (Accept, Deny or Pass)",
            });
            Action::Deny
        }
    };
    let ingress: Vec<Rule> = spec
        .ingress
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let a = action(&mut errs, r.action, format!("spec.ingress[{i}].action"));
            let peers: Vec<ClusterPeer<'_>> = r
                .from
                .iter()
                .map(|p| ClusterPeer {
                    namespaces: p.namespaces.as_ref(),
                    pods: p
                        .pods
                        .as_ref()
                        .map(|p| (&p.namespace_selector, &p.pod_selector)),
                    nodes: None,
                    networks: &[],
                    domain_names: &[],
                })
                .collect();
            let peers = cluster_peers(&mut errs, &peers, &format!("spec.ingress[{i}].from"));
            let ports = cnp_protocols(
                &mut errs,
                &r.protocols,
                &format!("spec.ingress[{i}].protocols"),
            );
            cluster_rule(i, &r.name, a, peers, ports)
        })
        .collect();
    let egress: Vec<Rule> = spec
        .egress
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let a = action(&mut errs, r.action, format!("spec.egress[{i}].action"));
            let peers: Vec<ClusterPeer<'_>> =
                r.to.iter()
                    .map(|p| ClusterPeer {
                        namespaces: p.namespaces.as_ref(),
                        pods: p
                            .pods
                            .as_ref()
                            .map(|p| (&p.namespace_selector, &p.pod_selector)),
                        nodes: p.nodes.as_ref(),
                        networks: &p.networks,
                        domain_names: &p.domain_names,
                    })
                    .collect();
            let peers = cluster_peers(&mut errs, &peers, &format!("spec.egress[{i}].to"));
            let ports = cnp_protocols(
                &mut errs,
                &r.protocols,
                &format!("spec.egress[{i}].protocols"),
            );
            cluster_rule(i, &r.name, a, peers, ports)
        })
        .collect();
    Policy {
        source: ObjectRef::cluster(Kind::ClusterNetworkPolicy, &name),
        tier,
        priority: spec.priority,
        subject,
        // "CNPs with no ingress rules do not affect ingress traffic."
        ingress: (!spec.ingress.is_empty()).then_some(ingress),
        egress: (!spec.egress.is_empty()).then_some(egress),
        refused: errs.0,
    }
}

fn anp_ports(
    errs: &mut Errs,
    ports: Option<&[v1alpha1::AdminNetworkPolicyPort]>,
    field: &str,
) -> Option<Vec<PortSpec>> {
    let ports = ports?;
    if ports.is_empty() {
        errs.shape(field, "ports, when set, needs at least one entry");
    }
    let mut out = Vec::new();
    for (j, p) in ports.iter().enumerate() {
        let f = format!("{field}[{j}]");
        match (&p.port_number, &p.named_port, &p.port_range) {
            (Some(n), None, None) => {
                let proto = errs.proto(&n.protocol, &format!("{f}.portNumber.protocol"));
                out.push(errs.range(proto, n.port, n.port, &format!("{f}.portNumber.port")));
            }
            (None, Some(name), None) => out.push(PortSpec::Named {
                proto: None,
                name: name.clone(),
            }),
            (None, None, Some(r)) => {
                let proto = errs.proto(
                    if r.protocol.is_empty() {
                        "TCP"
                    } else {
                        &r.protocol
                    },
                    &format!("{f}.portRange.protocol"),
                );
                out.push(errs.range(proto, r.start, r.end, &format!("{f}.portRange")));
            }
            _ => errs.shape(
                &f,
                "exactly one of portNumber, namedPort, portRange must be set",
            ),
        }
    }
    Some(out)
}

/// One rule of an AdminNetworkPolicy or a BaselineAdminNetworkPolicy, as the shared converter
/// reads it. The two kinds differ only in their action enum (BANP has no Pass) and in the egress
/// peers they allow (BANP has no domainNames); everything else, and the order in which refusals are
/// found, is [`admin_policy`]'s.
struct AdminRule<'a> {
    name: &'a str,
    /// The action, or what the field accepts when it was missing or unknown.
    action: Result<Action, &'static str>,
    peers: Vec<ClusterPeer<'a>>,
    ports: Option<&'a [v1alpha1::AdminNetworkPolicyPort]>,
}

/// The action of an ANP or BANP rule.
trait RuleAction {
    fn read(self) -> Result<Action, &'static str>;
}

impl RuleAction for v1alpha1::AdminNetworkPolicyRuleAction {
    fn read(self) -> Result<Action, &'static str> {
        match self {
            Self::Allow => Ok(Action::Allow),
            Self::Deny => Ok(Action::Deny),
            Self::Pass => Ok(Action::Pass),
            Self::Unknown => Err("action (Allow, Deny or Pass)"),
        }
    }
}

impl RuleAction for v1alpha1::BaselineAdminNetworkPolicyRuleAction {
    fn read(self) -> Result<Action, &'static str> {
        match self {
            Self::Allow => Ok(Action::Allow),
            Self::Deny => Ok(Action::Deny),
            Self::Unknown => Err("action (Allow or Deny)"),
        }
    }
}

fn pod_peer(p: Option<&v1alpha1::NamespacedPod>) -> Option<(&LabelSelector, &LabelSelector)> {
    p.map(|p| (&p.namespace_selector, &p.pod_selector))
}

impl<'a> From<&'a v1alpha1::AdminNetworkPolicyIngressPeer> for ClusterPeer<'a> {
    fn from(p: &'a v1alpha1::AdminNetworkPolicyIngressPeer) -> Self {
        ClusterPeer {
            namespaces: p.namespaces.as_ref(),
            pods: pod_peer(p.pods.as_ref()),
            nodes: None,
            networks: &[],
            domain_names: &[],
        }
    }
}

impl<'a> From<&'a v1alpha1::AdminNetworkPolicyEgressPeer> for ClusterPeer<'a> {
    fn from(p: &'a v1alpha1::AdminNetworkPolicyEgressPeer) -> Self {
        ClusterPeer {
            namespaces: p.namespaces.as_ref(),
            pods: pod_peer(p.pods.as_ref()),
            nodes: p.nodes.as_ref(),
            networks: &p.networks,
            domain_names: &p.domain_names,
        }
    }
}

impl<'a> From<&'a v1alpha1::BaselineAdminNetworkPolicyEgressPeer> for ClusterPeer<'a> {
    fn from(p: &'a v1alpha1::BaselineAdminNetworkPolicyEgressPeer) -> Self {
        ClusterPeer {
            namespaces: p.namespaces.as_ref(),
            pods: pod_peer(p.pods.as_ref()),
            nodes: p.nodes.as_ref(),
            networks: &p.networks,
            domain_names: &[],
        }
    }
}

/// The four rule types (ANP and BANP, ingress and egress) have the same fields; only the types of
/// their action ([`RuleAction`]) and of their peers (`From` for [`ClusterPeer`]) differ.
macro_rules! admin_rule_from {
    ($rule:ty, $peers:ident) => {
        impl<'a> From<&'a $rule> for AdminRule<'a> {
            fn from(r: &'a $rule) -> Self {
                AdminRule {
                    name: &r.name,
                    action: r.action.read(),
                    peers: r.$peers.iter().map(ClusterPeer::from).collect(),
                    ports: r.ports.as_deref(),
                }
            }
        }
    };
}
admin_rule_from!(v1alpha1::AdminNetworkPolicyIngressRule, from);
admin_rule_from!(v1alpha1::AdminNetworkPolicyEgressRule, to);
admin_rule_from!(v1alpha1::BaselineAdminNetworkPolicyIngressRule, from);
admin_rule_from!(v1alpha1::BaselineAdminNetworkPolicyEgressRule, to);

/// Reads the rules of one direction (`ingress` with peers in `from`, `egress` with `to`). None
/// when the direction has no rules: it is then not affected.
fn admin_rules(errs: &mut Errs, rules: Vec<AdminRule<'_>>, dir: &str) -> Option<Vec<Rule>> {
    if rules.is_empty() {
        return None;
    }
    let peers_field = if dir == "ingress" { "from" } else { "to" };
    let mut out = Vec::new();
    for (i, r) in rules.into_iter().enumerate() {
        let action = r.action.unwrap_or_else(|what| {
            errs.0.push(Refusal::Enum {
                field: format!("spec.{dir}[{i}].action"),
                value: "(missing or unknown)".into(),
                what,
            });
            Action::Deny
        });
        let peers = cluster_peers(errs, &r.peers, &format!("spec.{dir}[{i}].{peers_field}"));
        let ports = anp_ports(errs, r.ports, &format!("spec.{dir}[{i}].ports"));
        out.extend(cluster_rule(i, r.name, action, peers, ports));
    }
    Some(out)
}

/// The shared converter of AdminNetworkPolicy and BaselineAdminNetworkPolicy: `source` names the
/// object, `tier` and `priority` place it.
fn admin_policy<'a, I, E>(
    (source, tier, priority): (ObjectRef, TierKind, i32),
    subject: &v1alpha1::AdminNetworkPolicySubject,
    ingress: &'a [I],
    egress: &'a [E],
) -> Policy
where
    AdminRule<'a>: From<&'a I> + From<&'a E>,
{
    let mut errs = Errs::default();
    let subject = cluster_subject(
        &mut errs,
        subject.namespaces.as_ref(),
        pod_peer(subject.pods.as_ref()),
    );
    let ingress = admin_rules(
        &mut errs,
        ingress.iter().map(AdminRule::from).collect(),
        "ingress",
    );
    let egress = admin_rules(
        &mut errs,
        egress.iter().map(AdminRule::from).collect(),
        "egress",
    );
    Policy {
        source,
        tier,
        priority,
        subject,
        ingress,
        egress,
        refused: errs.0,
    }
}

/// Converts an AdminNetworkPolicy.
pub fn from_admin_network_policy(anp: &v1alpha1::AdminNetworkPolicy) -> Policy {
    let name = anp.metadata.name.as_deref().unwrap_or_default();
    let place = (
        ObjectRef::cluster(Kind::AdminNetworkPolicy, name),
        TierKind::Admin,
        anp.spec.priority,
    );
    admin_policy(
        place,
        &anp.spec.subject,
        &anp.spec.ingress,
        &anp.spec.egress,
    )
}

/// Converts a BaselineAdminNetworkPolicy. It sorts after every Baseline-tier CNP (their priorities
/// are at most 1000).
pub fn from_baseline_admin_network_policy(banp: &v1alpha1::BaselineAdminNetworkPolicy) -> Policy {
    let name = banp.metadata.name.as_deref().unwrap_or_default();
    let place = (
        ObjectRef::cluster(Kind::BaselineAdminNetworkPolicy, name),
        TierKind::Baseline,
        i32::MAX,
    );
    admin_policy(
        place,
        &banp.spec.subject,
        &banp.spec.ingress,
        &banp.spec.egress,
    )
}
