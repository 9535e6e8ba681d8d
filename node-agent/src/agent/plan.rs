//! The node's desired state as one pure function: [`plan`] turns the watched Node, the fabric's
//! configuration and what was gathered from the node into a [`Plan`]: the lease, the uplinks, the MTU,
//! the VTEP MACs, the annotations to publish and the files to write.
//!
//! Invariant: no I/O, no clock, no randomness here (the random bytes come in [`Gathered`]); the
//! same inputs give the same plan, which the golden tests pin through the whole pipeline.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use weft_crds::AgentConfig;
use weft_crds::fabric::Backend;

use crate::Error;
use crate::cni::{ConflistInput, render_conflist};
use crate::flannel::{
    AnnotationInput, VtepMacs, plan_vtep_macs, render_annotations, render_vtep_state,
};
use crate::subnet::{Lease, Networks, plan_lease, plan_networks, render_subnet_env};
use crate::uplink::{Interface, Uplinks, plan_mtu, plan_uplink};

/// Everything one sync reads besides the API objects.
#[derive(Debug, Clone, Copy)]
pub struct Gathered<'a> {
    /// The local interfaces.
    pub interfaces: &'a [Interface],
    /// The VTEP MACs from the state file.
    pub vtep_state: &'a VtepMacs,
    /// Random bytes for new MACs (IPv4, IPv6).
    pub random: [[u8; 6]; 2],
}

/// The desired state of the node, computed purely.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The fabric's pod network.
    pub networks: Networks,
    /// The node's lease.
    pub lease: Lease,
    /// The chosen uplinks.
    pub uplinks: Uplinks,
    /// The pod MTU.
    pub mtu: u32,
    /// The VTEP MACs (empty for host-gw).
    pub macs: VtepMacs,
    /// The annotations the node must carry.
    pub annotations: BTreeMap<String, String>,
    /// subnet.env.
    pub subnet_env: String,
    /// The conflist.
    pub conflist: String,
    /// The VTEP state file (`None` for host-gw: the file is left as it is).
    pub vtep_state: Option<String>,
}

pub use weft_crds::node::node_pod_cidrs;

/// Computes the node's desired state; `Ok(None)` while the node has no podCIDR yet.
pub fn plan(
    config: &AgentConfig,
    node_name: &str,
    node: &Node,
    gathered: &Gathered<'_>,
) -> Result<Option<Plan>, Error> {
    let networks = plan_networks(&config.pod_network)?;
    let Some(lease) = plan_lease(node_name, &networks, &node_pod_cidrs(node))? else {
        return Ok(None);
    };
    let families = networks.families();
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    let uplinks = plan_uplink(
        gathered.interfaces,
        &addresses,
        config.overlay.interface.as_deref(),
        &families,
    )?;
    let mtu = plan_mtu(config.overlay.backend, config.overlay.mtu, &uplinks)?;
    let prefix = config.compatibility.annotation_prefix.as_str();
    let current = node.metadata.annotations.clone().unwrap_or_default();
    let macs = match config.overlay.backend {
        Backend::Vxlan => plan_vtep_macs(
            &families,
            gathered.vtep_state,
            &current,
            prefix,
            gathered.random,
        ),
        Backend::HostGw => VtepMacs::default(),
    };
    let annotations = render_annotations(&AnnotationInput {
        prefix,
        backend: config.overlay.backend,
        vni: config.overlay.vni,
        lease: &lease,
        public_v4: uplinks.v4.as_ref().map(|u| u.addr),
        public_v6: uplinks.v6.as_ref().map(|u| u.addr),
        macs: &macs,
    })?;
    // Not a flannel annotation: weft's report of the MTU it gives pods, read by the operator.
    let mut annotations = annotations;
    annotations.insert(weft_crds::POD_MTU_ANNOTATION.to_owned(), mtu.to_string());
    let subnet_env = render_subnet_env(&networks, &lease, mtu, config.masquerade.enabled);
    let conflist = render_conflist(&ConflistInput {
        lease: &lease,
        mtu,
        plugin: config.cni.plugin,
        chained: &config.cni.chained_plugins,
    })?;
    let vtep_state = (config.overlay.backend == Backend::Vxlan).then(|| render_vtep_state(&macs));
    Ok(Some(Plan {
        networks,
        lease,
        uplinks,
        mtu,
        macs,
        annotations,
        subnet_env,
        conflist,
        vtep_state,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use weft_crds::NetworkFabricSpec;

    fn node(spec: NodeSpec) -> Node {
        Node {
            spec: Some(spec),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: "192.168.0.2".into(),
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    fn ifaces() -> Vec<Interface> {
        vec![Interface {
            name: "eth0".into(),
            mtu: 1500,
            addrs: vec!["192.168.0.2".parse().expect("ip")],
        }]
    }

    fn config(backend: Backend) -> AgentConfig {
        let mut spec = NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]);
        spec.overlay.backend = backend;
        AgentConfig::from_spec("default", &spec)
    }

    #[test]
    fn plans_from_the_node() {
        let ifaces = ifaces();
        let state = VtepMacs::default();
        let gathered = Gathered {
            interfaces: &ifaces,
            vtep_state: &state,
            random: [[0; 6], [0; 6]],
        };
        let vxlan = config(Backend::Vxlan);
        // No podCIDR yet: nothing to do, no error.
        let waiting = plan(&vxlan, "n", &node(NodeSpec::default()), &gathered).expect("plan");
        assert_eq!(waiting, None);
        // The singular spec.podCIDR of older clusters is enough.
        let singular = node(NodeSpec {
            pod_cidr: Some("10.244.9.0/24".into()),
            ..NodeSpec::default()
        });
        let p = plan(&vxlan, "n", &singular, &gathered)
            .expect("plan")
            .expect("lease");
        assert_eq!(p.lease.to_string(), "10.244.9.0/24");
        assert_eq!(p.mtu, 1450);
        assert!(p.macs.v4.is_some_and(|m| m.is_usable()));
        assert!(p.vtep_state.is_some());
        // host-gw: no MAC, the state file is left alone, full uplink MTU.
        let p = plan(&config(Backend::HostGw), "n", &singular, &gathered)
            .expect("plan")
            .expect("lease");
        assert_eq!(p.macs, VtepMacs::default());
        assert_eq!(p.vtep_state, None);
        assert_eq!(p.mtu, 1500);
    }
}
