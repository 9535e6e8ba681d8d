//! A naive reference evaluator, written straight from the API documents and sharing no code with
//! the engine: it reads the raw API objects every time it is asked and walks the tiers by hand.
//! It answers for the whole cluster (the source's egress AND the destination's ingress).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_crds::policy_api::{v1alpha1, v1beta1};

/// The whole cluster as the API server would list it.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub network_policies: Vec<NetworkPolicy>,
    pub cnps: Vec<v1beta1::ClusterNetworkPolicy>,
    pub anps: Vec<v1alpha1::AdminNetworkPolicy>,
    pub banp: Option<v1alpha1::BaselineAdminNetworkPolicy>,
    /// Host addresses per node name (the node's own addresses, always reachable from its pods).
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// The Node objects (what `nodes` peers select).
    pub nodes: Vec<Node>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Act {
    Allow,
    Deny,
    Pass,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &sel.match_labels {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                return false;
            }
        }
    }
    if let Some(exprs) = &sel.match_expressions {
        for e in exprs {
            let values = e.values.clone().unwrap_or_default();
            let have = labels.get(&e.key);
            let ok = match e.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => !have.is_some_and(|v| values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => panic!("the generator makes valid selectors only"),
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let (a, p) = cidr.split_once('/').expect("cidr");
    let a: IpAddr = a.parse().expect("addr");
    let p: u32 = p.parse().expect("prefix");
    match (a, ip) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

impl World {
    fn live(p: &Pod) -> bool {
        let spec = p.spec.as_ref().expect("spec");
        let status = p.status.as_ref().expect("status");
        !spec.host_network.unwrap_or(false)
            && !matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    fn pod_ips(p: &Pod) -> Vec<IpAddr> {
        p.status
            .as_ref()
            .and_then(|s| s.pod_ips.clone())
            .unwrap_or_default()
            .iter()
            .map(|i| i.ip.parse().expect("ip"))
            .collect()
    }

    pub fn pod_at(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| Self::live(p) && Self::pod_ips(p).contains(&ip))
    }

    fn ns_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(ns))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    fn labels(p: &Pod) -> BTreeMap<String, String> {
        p.metadata.labels.clone().unwrap_or_default()
    }

    fn ns(p: &Pod) -> &str {
        p.metadata.namespace.as_deref().expect("ns")
    }

    /// The container port named `name` on `pod` (and its protocol).
    fn named_port(pod: &Pod, name: &str) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for c in &pod.spec.as_ref().expect("spec").containers {
            for p in c.ports.iter().flatten() {
                if p.name.as_deref() == Some(name) {
                    out.push((p.protocol.clone().unwrap_or("TCP".into()), p.container_port));
                }
            }
        }
        out
    }

    // ---- NetworkPolicy ------------------------------------------------------------------

    fn np_types(np: &NetworkPolicy) -> (bool, bool) {
        let spec = np.spec.as_ref().expect("spec");
        match &spec.policy_types {
            Some(t) if !t.is_empty() => (
                t.iter().any(|x| x == "Ingress"),
                t.iter().any(|x| x == "Egress"),
            ),
            _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
        }
    }

    fn np_selects(np: &NetworkPolicy, pod: &Pod) -> bool {
        let spec = np.spec.as_ref().expect("spec");
        np.metadata.namespace.as_deref() == Some(Self::ns(pod))
            && selector_matches(
                &spec.pod_selector.clone().unwrap_or_default(),
                &Self::labels(pod),
            )
    }

    fn np_peer(&self, np: &NetworkPolicy, peer: &NetworkPolicyPeer, remote: IpAddr) -> bool {
        if let Some(b) = &peer.ip_block {
            return cidr_contains(&b.cidr, remote)
                && !b.except.iter().flatten().any(|e| cidr_contains(e, remote));
        }
        let Some(rp) = self.pod_at(remote) else {
            return false;
        };
        let ns_ok = match &peer.namespace_selector {
            Some(s) => selector_matches(s, &self.ns_labels(Self::ns(rp))),
            None => np.metadata.namespace.as_deref() == Some(Self::ns(rp)),
        };
        let pod_ok = match &peer.pod_selector {
            Some(s) => selector_matches(s, &Self::labels(rp)),
            None => true,
        };
        ns_ok && pod_ok
    }

    fn np_port(p: &NetworkPolicyPort, proto: &str, port: i32, dst: Option<&Pod>) -> bool {
        let want = p.protocol.clone().unwrap_or("TCP".into());
        if want != proto {
            return false;
        }
        match &p.port {
            None => true,
            Some(IntOrString::Int(n)) => match p.end_port {
                Some(e) => *n <= port && port <= e,
                None => *n == port,
            },
            Some(IntOrString::String(name)) => dst.is_some_and(|d| {
                Self::named_port(d, name)
                    .iter()
                    .any(|(pr, cp)| *pr == want && *cp == port)
            }),
        }
    }

    /// None: no NetworkPolicy selects the pod for this direction. Some(b): isolated, allowed = b.
    fn np_tier(
        &self,
        local: &Pod,
        dir: Dir,
        remote: IpAddr,
        proto: &str,
        port: i32,
    ) -> Option<bool> {
        let mut isolated = false;
        let mut allowed = false;
        for np in &self.network_policies {
            if !Self::np_selects(np, local) {
                continue;
            }
            let (i, e) = Self::np_types(np);
            let spec = np.spec.as_ref().expect("spec");
            let dst = match dir {
                Dir::In => Some(local),
                Dir::Out => self.pod_at(remote),
            };
            match dir {
                Dir::In if i => {
                    isolated = true;
                    for r in spec.ingress.iter().flatten() {
                        let peer_ok = match &r.from {
                            None => true,
                            Some(v) if v.is_empty() => true,
                            Some(v) => v.iter().any(|p| self.np_peer(np, p, remote)),
                        };
                        let port_ok = match &r.ports {
                            None => true,
                            Some(v) if v.is_empty() => true,
                            Some(v) => v.iter().any(|p| Self::np_port(p, proto, port, dst)),
                        };
                        allowed |= peer_ok && port_ok;
                    }
                }
                Dir::Out if e => {
                    isolated = true;
                    for r in spec.egress.iter().flatten() {
                        let peer_ok = match &r.to {
                            None => true,
                            Some(v) if v.is_empty() => true,
                            Some(v) => v.iter().any(|p| self.np_peer(np, p, remote)),
                        };
                        let port_ok = match &r.ports {
                            None => true,
                            Some(v) if v.is_empty() => true,
                            Some(v) => v.iter().any(|p| Self::np_port(p, proto, port, dst)),
                        };
                        allowed |= peer_ok && port_ok;
                    }
                }
                _ => {}
            }
        }
        isolated.then_some(allowed)
    }

    // ---- ClusterNetworkPolicy / ANP / BANP --------------------------------------------

    fn pods_peer(
        &self,
        ns_sel: &LabelSelector,
        pod_sel: Option<&LabelSelector>,
        remote: IpAddr,
    ) -> bool {
        self.pod_at(remote).is_some_and(|rp| {
            selector_matches(ns_sel, &self.ns_labels(Self::ns(rp)))
                && pod_sel.is_none_or(|s| selector_matches(s, &Self::labels(rp)))
        })
    }

    /// A `nodes` peer: "selects the nodeIPs ... by matching on the IPs present in the
    /// node.Status.Addresses field of the node"; an empty selector selects all Nodes.
    fn nodes_peer(&self, sel: &LabelSelector, remote: IpAddr) -> bool {
        self.nodes.iter().any(|n| {
            selector_matches(sel, &n.metadata.labels.clone().unwrap_or_default())
                && n.status
                    .as_ref()
                    .and_then(|s| s.addresses.as_ref())
                    .is_some_and(|a| {
                        a.iter()
                            .any(|a| a.address.parse::<IpAddr>().ok() == Some(remote))
                    })
        })
    }

    fn subject(
        &self,
        ns: Option<&LabelSelector>,
        pods: Option<(&LabelSelector, &LabelSelector)>,
        p: &Pod,
    ) -> bool {
        let nsl = self.ns_labels(Self::ns(p));
        match (ns, pods) {
            (Some(n), None) => selector_matches(n, &nsl),
            (None, Some((n, s))) => {
                selector_matches(n, &nsl) && selector_matches(s, &Self::labels(p))
            }
            _ => panic!("the generator sets exactly one subject field"),
        }
    }

    fn cnp_protocols(
        ps: &[v1beta1::ClusterNetworkPolicyProtocol],
        proto: &str,
        port: i32,
        dst: Option<&Pod>,
    ) -> bool {
        if ps.is_empty() {
            return true;
        }
        ps.iter().any(|p| {
            let one = |name: &str, pp: &Option<v1beta1::ProtocolPort>| {
                pp.as_ref().is_some_and(|pp| {
                    name == proto
                        && match &pp.destination_port {
                            None => true,
                            Some(d) => match (&d.number, &d.range) {
                                (Some(n), None) => *n == port,
                                (None, Some(r)) => r.start <= port && port <= r.end,
                                _ => panic!("generator"),
                            },
                        }
                })
            };
            one("TCP", &p.tcp)
                || one("UDP", &p.udp)
                || one("SCTP", &p.sctp)
                || (!p.destination_named_port.is_empty()
                    && dst.is_some_and(|d| {
                        Self::named_port(d, &p.destination_named_port)
                            .iter()
                            .any(|(pr, cp)| pr == proto && *cp == port)
                    }))
        })
    }

    fn anp_ports(
        ps: &Option<Vec<v1alpha1::AdminNetworkPolicyPort>>,
        proto: &str,
        port: i32,
        dst: Option<&Pod>,
    ) -> bool {
        let Some(ps) = ps else { return true };
        ps.iter().any(|p| {
            if let Some(n) = &p.port_number {
                return n.protocol == proto && n.port == port;
            }
            if let Some(r) = &p.port_range {
                return r.protocol == proto && r.start <= port && port <= r.end;
            }
            if let Some(name) = &p.named_port {
                return dst.is_some_and(|d| {
                    Self::named_port(d, name)
                        .iter()
                        .any(|(pr, cp)| pr == proto && *cp == port)
                });
            }
            false
        })
    }

    /// The Admin or Baseline tier for one direction: the first matching rule's action, if any.
    fn cluster_tier(
        &self,
        admin: bool,
        local: &Pod,
        dir: Dir,
        remote: IpAddr,
        proto: &str,
        port: i32,
    ) -> Option<Act> {
        // (priority, kind rank, name, rules as closures' results)
        let mut policies: Vec<(i64, u8, String, Vec<Act>)> = Vec::new();
        let dst = match dir {
            Dir::In => Some(local),
            Dir::Out => self.pod_at(remote),
        };
        for c in &self.cnps {
            let s = &c.spec;
            if (s.tier == v1beta1::Tier::Admin) != admin {
                continue;
            }
            if !self.subject(
                s.subject.namespaces.as_ref(),
                s.subject
                    .pods
                    .as_ref()
                    .map(|p| (&p.namespace_selector, &p.pod_selector)),
                local,
            ) {
                continue;
            }
            let act = |a: v1beta1::ClusterNetworkPolicyRuleAction| match a {
                v1beta1::ClusterNetworkPolicyRuleAction::Accept => Act::Allow,
                v1beta1::ClusterNetworkPolicyRuleAction::Deny => Act::Deny,
                v1beta1::ClusterNetworkPolicyRuleAction::Pass => Act::Pass,
                v1beta1::ClusterNetworkPolicyRuleAction::Unknown => panic!("generator"),
            };
            let mut hits = Vec::new();
            match dir {
                Dir::In => {
                    for r in &s.ingress {
                        let peer = r.from.iter().any(|p| match (&p.namespaces, &p.pods) {
                            (Some(n), None) => self.pods_peer(n, None, remote),
                            (None, Some(pp)) => self.pods_peer(
                                &pp.namespace_selector,
                                Some(&pp.pod_selector),
                                remote,
                            ),
                            _ => panic!("generator"),
                        });
                        if peer && Self::cnp_protocols(&r.protocols, proto, port, dst) {
                            hits.push(act(r.action));
                        }
                    }
                }
                Dir::Out => {
                    for r in &s.egress {
                        let peer = r.to.iter().any(|p| {
                            if let Some(n) = &p.namespaces {
                                self.pods_peer(n, None, remote)
                            } else if let Some(pp) = &p.pods {
                                self.pods_peer(
                                    &pp.namespace_selector,
                                    Some(&pp.pod_selector),
                                    remote,
                                )
                            } else if let Some(n) = &p.nodes {
                                self.nodes_peer(n, remote)
                            } else {
                                p.networks.iter().any(|c| cidr_contains(c, remote))
                            }
                        });
                        if peer && Self::cnp_protocols(&r.protocols, proto, port, dst) {
                            hits.push(act(r.action));
                        }
                    }
                }
            }
            let has_rules = match dir {
                Dir::In => !s.ingress.is_empty(),
                Dir::Out => !s.egress.is_empty(),
            };
            if has_rules {
                policies.push((
                    i64::from(s.priority),
                    0,
                    c.metadata.name.clone().expect("name"),
                    hits,
                ));
            }
        }
        let anp_peer_in =
            |p: &v1alpha1::AdminNetworkPolicyIngressPeer| match (&p.namespaces, &p.pods) {
                (Some(n), None) => self.pods_peer(n, None, remote),
                (None, Some(pp)) => {
                    self.pods_peer(&pp.namespace_selector, Some(&pp.pod_selector), remote)
                }
                _ => panic!("generator"),
            };
        if admin {
            for a in &self.anps {
                let s = &a.spec;
                if !self.subject(
                    s.subject.namespaces.as_ref(),
                    s.subject
                        .pods
                        .as_ref()
                        .map(|p| (&p.namespace_selector, &p.pod_selector)),
                    local,
                ) {
                    continue;
                }
                let act = |a: v1alpha1::AdminNetworkPolicyRuleAction| match a {
                    v1alpha1::AdminNetworkPolicyRuleAction::Allow => Act::Allow,
                    v1alpha1::AdminNetworkPolicyRuleAction::Deny => Act::Deny,
                    v1alpha1::AdminNetworkPolicyRuleAction::Pass => Act::Pass,
                    v1alpha1::AdminNetworkPolicyRuleAction::Unknown => panic!("generator"),
                };
                let mut hits = Vec::new();
                let has_rules = match dir {
                    Dir::In => {
                        for r in &s.ingress {
                            if r.from.iter().any(anp_peer_in)
                                && Self::anp_ports(&r.ports, proto, port, dst)
                            {
                                hits.push(act(r.action));
                            }
                        }
                        !s.ingress.is_empty()
                    }
                    Dir::Out => {
                        for r in &s.egress {
                            let peer = r.to.iter().any(|p| {
                                if let Some(n) = &p.namespaces {
                                    self.pods_peer(n, None, remote)
                                } else if let Some(pp) = &p.pods {
                                    self.pods_peer(
                                        &pp.namespace_selector,
                                        Some(&pp.pod_selector),
                                        remote,
                                    )
                                } else if let Some(n) = &p.nodes {
                                    self.nodes_peer(n, remote)
                                } else {
                                    p.networks.iter().any(|c| cidr_contains(c, remote))
                                }
                            });
                            if peer && Self::anp_ports(&r.ports, proto, port, dst) {
                                hits.push(act(r.action));
                            }
                        }
                        !s.egress.is_empty()
                    }
                };
                if has_rules {
                    policies.push((
                        i64::from(s.priority),
                        1,
                        a.metadata.name.clone().expect("name"),
                        hits,
                    ));
                }
            }
        } else if let Some(b) = &self.banp {
            let s = &b.spec;
            if self.subject(
                s.subject.namespaces.as_ref(),
                s.subject
                    .pods
                    .as_ref()
                    .map(|p| (&p.namespace_selector, &p.pod_selector)),
                local,
            ) {
                let act = |a: v1alpha1::BaselineAdminNetworkPolicyRuleAction| match a {
                    v1alpha1::BaselineAdminNetworkPolicyRuleAction::Allow => Act::Allow,
                    v1alpha1::BaselineAdminNetworkPolicyRuleAction::Deny => Act::Deny,
                    v1alpha1::BaselineAdminNetworkPolicyRuleAction::Unknown => panic!("generator"),
                };
                let mut hits = Vec::new();
                match dir {
                    Dir::In => {
                        for r in &s.ingress {
                            if r.from.iter().any(anp_peer_in)
                                && Self::anp_ports(&r.ports, proto, port, dst)
                            {
                                hits.push(act(r.action));
                            }
                        }
                    }
                    Dir::Out => {
                        for r in &s.egress {
                            let peer = r.to.iter().any(|p| {
                                if let Some(n) = &p.namespaces {
                                    self.pods_peer(n, None, remote)
                                } else if let Some(pp) = &p.pods {
                                    self.pods_peer(
                                        &pp.namespace_selector,
                                        Some(&pp.pod_selector),
                                        remote,
                                    )
                                } else if let Some(n) = &p.nodes {
                                    self.nodes_peer(n, remote)
                                } else {
                                    p.networks.iter().any(|c| cidr_contains(c, remote))
                                }
                            });
                            if peer && Self::anp_ports(&r.ports, proto, port, dst) {
                                hits.push(act(r.action));
                            }
                        }
                    }
                }
                // The BANP comes after every Baseline-tier ClusterNetworkPolicy.
                policies.push((i64::MAX, 2, "default".into(), hits));
            }
        }
        policies.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
        policies.into_iter().find_map(|p| p.3.first().copied())
    }

    fn direction_allowed(
        &self,
        local: &Pod,
        dir: Dir,
        remote: IpAddr,
        proto: &str,
        port: i32,
    ) -> bool {
        match self.cluster_tier(true, local, dir, remote, proto, port) {
            Some(Act::Allow) => return true,
            Some(Act::Deny) => return false,
            Some(Act::Pass) | None => {}
        }
        if let Some(allowed) = self.np_tier(local, dir, remote, proto, port) {
            return allowed;
        }
        match self.cluster_tier(false, local, dir, remote, proto, port) {
            Some(Act::Deny) => false,
            // Allow, or Pass in the Baseline tier (on to the default), or nothing: allowed.
            _ => true,
        }
    }

    fn node_of(p: &Pod) -> &str {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("")
    }

    /// Would a new connection from `src` to `dst` be allowed in the cluster?
    pub fn allowed(&self, src: IpAddr, dst: IpAddr, proto: &str, port: i32) -> bool {
        if src == dst {
            return true;
        }
        let (sp, dp) = (self.pod_at(src), self.pod_at(dst));
        let host_of = |p: &Pod| {
            self.hosts
                .get(Self::node_of(p))
                .cloned()
                .unwrap_or_default()
        };
        if dp.is_some_and(|d| host_of(d).contains(&src))
            || sp.is_some_and(|s| host_of(s).contains(&dst))
        {
            return true;
        }
        if let Some(s) = sp
            && !self.direction_allowed(s, Dir::Out, dst, proto, port)
        {
            return false;
        }
        if let Some(d) = dp
            && !self.direction_allowed(d, Dir::In, src, proto, port)
        {
            return false;
        }
        true
    }
}
