//! Reading our peers: a remote Node's lease, underlay address and VTEP MAC, from its
//! `spec.podCIDRs` and flannel's annotations, exactly as flannel's kube subnet manager reads them.
//!
//! A flannel node and a weft node publish the same annotations, so either can be a peer. A node
//! whose annotations are missing or malformed (a flannel node mid-upgrade, a hand edit) is not a
//! peer yet: it is returned as a [`PeerProblem`] naming what is wrong, and the others are unaffected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use weft_crds::fabric::Backend;
use weft_crds::{IpCidr, IpFamily, PerFamily};

use super::{
    ANNOTATION_BACKEND_DATA, ANNOTATION_BACKEND_TYPE, ANNOTATION_BACKEND_V6_DATA,
    ANNOTATION_PUBLIC_IP, ANNOTATION_PUBLIC_IPV6, Mac, VxlanBackendData, annotation_key,
};
use crate::subnet::Networks;

/// A remote node as the overlay needs it, for the families it has a lease in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The Node's name.
    pub node: String,
    /// The backend it announces (`backend-type`).
    pub backend: Backend,
    /// Its pod subnet per family (`spec.podCIDRs`, inside the fabric's network).
    pub subnets: PerFamily<IpCidr>,
    /// Its underlay address per family (`public-ip`, `public-ipv6`).
    pub public: PerFamily<IpAddr>,
    /// Its VTEP MAC per family (vxlan `backend-data`, `backend-v6-data`).
    pub vtep: PerFamily<Mac>,
}

/// Why a Node is not (yet) a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProblem {
    /// The Node's name.
    pub node: String,
    /// What is wrong, in words that say what to fix.
    pub reason: String,
}

impl fmt::Display for PeerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}: {}", self.node, self.reason)
    }
}

/// The peer that `node` is, `Ok(None)` for a node that has no lease yet (kube-controller-manager
/// has not assigned podCIDRs, or the node's agent has not published its annotations: nothing to
/// report, it is coming up), or the problem that keeps it from being one.
pub fn parse_peer(
    node: &Node,
    prefix: &str,
    networks: &Networks,
) -> Result<Option<Peer>, PeerProblem> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let problem = |reason: String| PeerProblem {
        node: name.clone(),
        reason,
    };
    let empty = BTreeMap::new();
    let annotations = node.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |suffix: &str| annotations.get(&annotation_key(prefix, suffix));
    let Some(backend_type) = get(ANNOTATION_BACKEND_TYPE) else {
        return Ok(None);
    };
    let backend = match backend_type.as_str() {
        "vxlan" => Backend::Vxlan,
        "host-gw" => Backend::HostGw,
        other => {
            return Err(problem(format!(
                "annotation {} is {other:?}; weft peers only with vxlan and host-gw nodes",
                annotation_key(prefix, ANNOTATION_BACKEND_TYPE)
            )));
        }
    };
    let mut subnets = PerFamily::default();
    for raw in weft_crds::node::node_pod_cidrs(node) {
        let cidr: IpCidr = raw
            .parse()
            .map_err(|e| problem(format!("spec.podCIDRs entry {raw:?} is not a CIDR: {e}")))?;
        let Some(network) = networks.get(cidr.family()) else {
            continue;
        };
        if !network.contains(&cidr) {
            return Err(problem(format!(
                "podCIDR {cidr} is outside the fabric's pod network {network}; it is not routed"
            )));
        }
        *subnets.slot_mut(cidr.family()) = Some(cidr);
    }
    if subnets.families().is_empty() {
        return Ok(None);
    }
    let mut public = PerFamily::default();
    let mut vtep = PerFamily::default();
    for family in subnets.families() {
        let (ip_key, data_key) = match family {
            IpFamily::V4 => (ANNOTATION_PUBLIC_IP, ANNOTATION_BACKEND_DATA),
            IpFamily::V6 => (ANNOTATION_PUBLIC_IPV6, ANNOTATION_BACKEND_V6_DATA),
        };
        let Some(raw_ip) = get(ip_key) else {
            return Err(problem(format!(
                "annotation {} is missing; its {family} pods are not routed until its agent publishes it",
                annotation_key(prefix, ip_key)
            )));
        };
        let ip: IpAddr = raw_ip.parse().map_err(|_| {
            problem(format!(
                "annotation {} is {raw_ip:?}, not an IP address",
                annotation_key(prefix, ip_key)
            ))
        })?;
        if weft_crds::cidr::family_of(ip) != family {
            return Err(problem(format!(
                "annotation {} is {ip}, not an {family} address",
                annotation_key(prefix, ip_key)
            )));
        }
        *public.slot_mut(family) = Some(ip);
        if backend == Backend::Vxlan {
            let Some(raw) = get(data_key) else {
                return Err(problem(format!(
                    "annotation {} is missing; its VTEP MAC is unknown",
                    annotation_key(prefix, data_key)
                )));
            };
            let data: VxlanBackendData = serde_json::from_str(raw).map_err(|e| {
                problem(format!(
                    "annotation {} is {raw:?}, not vxlan backend data like {{\"VNI\":1,\"VtepMAC\":\"0a:..\"}}: {e}",
                    annotation_key(prefix, data_key)
                ))
            })?;
            let mac: Mac = data.vtep_mac.parse().map_err(|e: String| {
                problem(format!(
                    "annotation {}: {e}",
                    annotation_key(prefix, data_key)
                ))
            })?;
            if !mac.is_usable() {
                return Err(problem(format!(
                    "annotation {}: VtepMAC {mac} is not a unicast MAC",
                    annotation_key(prefix, data_key)
                )));
            }
            *vtep.slot_mut(family) = Some(mac);
        }
    }
    Ok(Some(Peer {
        node: name,
        backend,
        subnets,
        public,
        vtep,
    }))
}

/// Every peer among `nodes` except `own` (sorted by name), and the problems of those that are not
/// peers. Two peers claiming overlapping subnets are both reported and neither is routed.
pub fn parse_peers<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    own: &str,
    prefix: &str,
    networks: &Networks,
) -> (Vec<Peer>, Vec<PeerProblem>) {
    let mut peers = Vec::new();
    let mut problems = Vec::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(own) {
            continue;
        }
        match parse_peer(node, prefix, networks) {
            Ok(Some(p)) => peers.push(p),
            Ok(None) => {}
            Err(e) => problems.push(e),
        }
    }
    peers.sort_by(|a, b| a.node.cmp(&b.node));
    let mut clash = vec![false; peers.len()];
    for i in 0..peers.len() {
        for j in i + 1..peers.len() {
            for family in [IpFamily::V4, IpFamily::V6] {
                if let (Some(a), Some(b)) =
                    (peers[i].subnets.get(family), peers[j].subnets.get(family))
                    && a.overlaps(&b)
                {
                    clash[i] = true;
                    clash[j] = true;
                    problems.push(PeerProblem {
                        node: peers[j].node.clone(),
                        reason: format!(
                            "podCIDR {b} overlaps {a} of node {}; neither is routed until one changes",
                            peers[i].node
                        ),
                    });
                }
            }
        }
    }
    let peers = peers
        .into_iter()
        .zip(clash)
        .filter_map(|(p, c)| (!c).then_some(p))
        .collect();
    problems.sort_by(|a, b| a.node.cmp(&b.node).then(a.reason.cmp(&b.reason)));
    (peers, problems)
}
