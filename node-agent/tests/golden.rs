//! Golden files of what the agent renders for a node: the conflist, subnet.env and the node
//! annotations, for a few fabrics (IPv4 vxlan, dual-stack vxlan with both chained plugins, IPv6
//! host-gw, a fixed MTU with a named interface). Each case goes through the whole pure pipeline
//! (`agent::plan`) from an AgentConfig, a Node and a fixed set of local interfaces. Review a diff
//! like code; regenerate with `WEFT_UPDATE_GOLDEN=1 cargo test -p weft-node-agent --test golden`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weft_crds::fabric::{Backend, ChainedPlugin};
use weft_crds::{AgentConfig, NetworkFabricSpec};
use weft_node_agent::agent::{Gathered, Plan, plan};
use weft_node_agent::flannel::VtepMacs;
use weft_node_agent::uplink::Interface;

fn check(path: &Path, generated: &str) {
    if let Err(e) = weft_crds::golden::check_golden(
        path,
        generated,
        "cargo test -p weft-node-agent --test golden",
    ) {
        panic!("{e}");
    }
}

fn interfaces() -> Vec<Interface> {
    let iface = |name: &str, mtu, addrs: &[&str]| Interface {
        name: name.into(),
        mtu,
        addrs: addrs.iter().map(|a| a.parse().expect("ip")).collect(),
    };
    vec![
        iface("lo", 65536, &["127.0.0.1", "::1"]),
        iface("eth0", 1500, &["192.168.0.2", "fd00:192:168::2", "fe80::1"]),
        iface("eth1", 9000, &["10.10.0.2", "fd00:10:10::2"]),
    ]
}

fn node(pod_cidrs: &[&str], internal_ips: &[&str]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some("node-1".into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: pod_cidrs.first().map(|s| (*s).to_owned()),
            pod_cidrs: Some(pod_cidrs.iter().map(|s| (*s).to_owned()).collect()),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(
                internal_ips
                    .iter()
                    .map(|ip| NodeAddress {
                        type_: "InternalIP".into(),
                        address: (*ip).into(),
                    })
                    .collect(),
            ),
            ..NodeStatus::default()
        }),
    }
}

struct Case {
    name: &'static str,
    config: AgentConfig,
    node: Node,
}

fn cases() -> Vec<Case> {
    let config = |cidrs: &[&str], tweak: &dyn Fn(&mut NetworkFabricSpec)| {
        let mut spec = NetworkFabricSpec::with_cidrs(cidrs.iter().copied());
        tweak(&mut spec);
        AgentConfig::from_spec("default", &spec)
    };
    vec![
        Case {
            name: "vxlan-ipv4",
            config: config(&["10.244.0.0/16"], &|_| {}),
            node: node(&["10.244.1.0/24"], &["192.168.0.2"]),
        },
        Case {
            name: "vxlan-dual-stack",
            config: config(&["10.244.0.0/16", "fd00:10:244::/56"], &|s| {
                s.cni.chained_plugins = vec![ChainedPlugin::Bandwidth, ChainedPlugin::Portmap];
            }),
            node: node(
                &["10.244.2.0/24", "fd00:10:244:2::/64"],
                &["192.168.0.2", "fd00:192:168::2"],
            ),
        },
        Case {
            name: "host-gw-ipv6",
            config: config(&["fd00:10:244::/56"], &|s| {
                s.overlay.backend = Backend::HostGw;
                s.overlay.interface = Some("fd00:10:10::/64".into());
                s.masquerade.enabled = false;
                s.cni.chained_plugins = vec![];
            }),
            node: node(&["fd00:10:244:3::/64"], &["fd00:192:168::2"]),
        },
        Case {
            name: "vxlan-fixed-mtu-named-interface",
            config: config(&["10.244.0.0/16"], &|s| {
                s.overlay.mtu = 8950;
                s.overlay.vni = 4096;
                s.overlay.interface = Some("eth1".into());
                s.compatibility.annotation_prefix = "weft.dev".into();
            }),
            node: node(&["10.244.4.0/24"], &["192.168.0.2"]),
        },
    ]
}

fn render(p: &Plan) -> (String, String, String) {
    let mut annotations = serde_json::to_string_pretty(&p.annotations).expect("json");
    annotations.push('\n');
    (p.conflist.clone(), p.subnet_env.clone(), annotations)
}

#[test]
fn rendered_files_match_golden() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let ifaces = interfaces();
    for case in cases() {
        let gathered = Gathered {
            interfaces: &ifaces,
            vtep_state: &VtepMacs::default(),
            random: [
                [0x00, 0x11, 0x22, 0x33, 0x44, 0x55],
                [0x01, 0x66, 0x77, 0x88, 0x99, 0xaa],
            ],
        };
        let p = plan(&case.config, "node-1", &case.node, &gathered)
            .expect("plan")
            .expect("lease");
        let (conflist, env, annotations) = render(&p);
        let base = dir.join(case.name);
        check(&base.join(&case.config.cni.conf_name), &conflist);
        check(&base.join("subnet.env"), &env);
        check(&base.join("annotations.json"), &annotations);
        // Deterministic: the same inputs give the same bytes.
        let again = plan(&case.config, "node-1", &case.node, &gathered)
            .expect("plan")
            .expect("lease");
        assert_eq!(
            render(&again),
            (conflist, env, annotations),
            "{}",
            case.name
        );
    }
}
