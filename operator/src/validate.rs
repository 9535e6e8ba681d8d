//! The validate stage: what the CRD's CEL rules cannot check, as a pure function of the fabric and
//! cluster facts gathered beforehand.
//!
//! A fabric that fails here is reported `Degraded=True, reason InvalidSpec` and nothing of it is
//! rolled out (the agents keep running what they had). Invariant: every violation is reported at
//! once, each naming the field and what to change, in a stable order, so the status message does not
//! flap between reconciles.

use weft_crds::NetworkFabric;
use weft_crds::cidr::IpCidr;
use weft_crds::validate::{SpecViolation, parse_pod_cidrs, validate_spec};

use crate::build::{LIB_MODULES, XTABLES_LOCK, subnet_dir};
use crate::facts::ClusterFacts;

/// Every violation of `fabric` given `facts`; empty when the fabric may be rolled out.
pub fn validate_fabric(fabric: &NetworkFabric, facts: &ClusterFacts) -> Vec<SpecViolation> {
    let mut out = validate_spec(&fabric.spec);
    validate_mount_paths(fabric, &mut out);
    let Ok(cidrs) = parse_pod_cidrs(&fabric.spec) else {
        return out;
    };
    let field_of = |cidr: &IpCidr| {
        let i = fabric
            .spec
            .pod_network
            .cidrs
            .iter()
            .position(|c| c.parse::<IpCidr>().ok().as_ref() == Some(cidr))
            .unwrap_or(0);
        format!("spec.podNetwork.cidrs[{i}]")
    };

    for cidr in cidrs.iter() {
        for (range, source) in &facts.service_ranges {
            if cidr.overlaps(range) {
                out.push(SpecViolation {
                    field: field_of(cidr),
                    message: format!(
                        "pod CIDR {cidr} overlaps the service range {range} ({source}); choose a pod CIDR outside it"
                    ),
                });
            }
        }
        let mut clashing: Vec<String> = facts
            .nodes
            .iter()
            .flat_map(|n| {
                n.internal_ips
                    .iter()
                    .filter(|ip| cidr.contains_addr(**ip))
                    .map(move |ip| format!("{} ({ip})", n.name))
            })
            .collect();
        clashing.sort();
        if !clashing.is_empty() {
            out.push(SpecViolation {
                field: field_of(cidr),
                message: format!(
                    "pod CIDR {cidr} contains the address of node {}; pod and node networks must not overlap",
                    abbreviate(&clashing)
                ),
            });
        }
    }

    let mut outside: Vec<String> = Vec::new();
    for node in &facts.nodes {
        for raw in &node.pod_cidrs {
            let Ok(node_cidr) = IpCidr::parse_lenient(raw) else {
                continue;
            };
            if !cidrs.iter().any(|c| c.contains(&node_cidr)) {
                outside.push(format!("{} ({node_cidr})", node.name));
            }
        }
    }
    outside.sort();
    if !outside.is_empty() {
        let list = cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        out.push(SpecViolation {
            field: "spec.podNetwork.cidrs".to_owned(),
            message: format!(
                "the podCIDRs of node {} lie outside {list}; spec.podNetwork.cidrs must equal kube-controller-manager's --cluster-cidr",
                abbreviate(&outside)
            ),
        });
    }
    out
}

/// The hostPath and config mounts of the agent must not collide (a pod with two mounts at one path
/// is refused by the API server, which would leave a half-applied rollout).
fn validate_mount_paths(fabric: &NetworkFabric, out: &mut Vec<SpecViolation>) {
    let spec = &fabric.spec;
    let mounts = [
        ("spec.cni.confDir", spec.cni.conf_dir.trim_end_matches('/')),
        ("spec.cni.binDir", spec.cni.bin_dir.trim_end_matches('/')),
        (
            "spec.compatibility.subnetFile",
            subnet_dir(&spec.compatibility.subnet_file),
        ),
    ];
    let fixed = [
        weft_crds::agent_config::AGENT_CONFIG_DIR,
        XTABLES_LOCK,
        LIB_MODULES,
        "/tmp",
    ];
    for (i, (field, path)) in mounts.iter().enumerate() {
        let clash_fixed = fixed.iter().find(|f| *f == path);
        let clash_other = mounts[..i].iter().find(|(_, p)| p == path);
        if let Some(f) = clash_fixed {
            out.push(SpecViolation {
                field: (*field).to_owned(),
                message: format!(
                    "{path} is reserved for the agent's own mount of {f}; choose another directory"
                ),
            });
        } else if let Some((other, _)) = clash_other {
            out.push(SpecViolation {
                field: (*field).to_owned(),
                message: format!("{path} is also used by {other}; use separate directories"),
            });
        }
    }
}

fn abbreviate(items: &[String]) -> String {
    const SHOWN: usize = 3;
    if items.len() <= SHOWN {
        items.join(", ")
    } else {
        format!(
            "{} and {} more",
            items[..SHOWN].join(", "),
            items.len() - SHOWN
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::NodeFacts;
    use weft_crds::NetworkFabricSpec;

    fn cidr(s: &str) -> IpCidr {
        s.parse().expect("test cidr")
    }

    fn node(name: &str, ip: &str, pod_cidrs: &[&str]) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            internal_ips: vec![ip.parse().expect("ip")],
            pod_cidrs: pod_cidrs.iter().map(|s| (*s).to_owned()).collect(),
            pod_mtu: None,
            agent: None,
        }
    }

    fn facts() -> ClusterFacts {
        ClusterFacts {
            service_ranges: vec![(cidr("10.96.0.0/12"), "ServiceCIDR kubernetes".into())],
            nodes: vec![
                node("node-1", "192.168.0.11", &["10.244.0.0/24"]),
                node("node-2", "192.168.0.12", &["10.244.1.0/24"]),
            ],
        }
    }

    fn fabric(cidrs: &[&str]) -> NetworkFabric {
        NetworkFabric::new(
            "default",
            NetworkFabricSpec::with_cidrs(cidrs.iter().copied()),
        )
    }

    #[test]
    fn table() {
        type Mutate = fn(&mut NetworkFabric, &mut ClusterFacts);
        type Want<'a> = Option<(&'a str, &'a str)>;
        let cases: &[(&str, Mutate, Want)] = &[
            ("valid", |_, _| {}, None),
            (
                "nodes without podCIDRs yet",
                |_, f| f.nodes.iter_mut().for_each(|n| n.pod_cidrs.clear()),
                None,
            ),
            (
                "dual-stack valid",
                |fab, f| {
                    *fab = fabric(&["10.244.0.0/16", "fd00:10:244::/56"]);
                    f.nodes[0].pod_cidrs.push("fd00:10:244::/64".into());
                },
                None,
            ),
            (
                "overlaps services",
                |fab, _| *fab = fabric(&["10.96.0.0/16"]),
                Some((
                    "spec.podNetwork.cidrs[0]",
                    "overlaps the service range 10.96.0.0/12 (ServiceCIDR kubernetes)",
                )),
            ),
            (
                "contains the services",
                |fab, _| *fab = fabric(&["10.0.0.0/8"]),
                Some(("spec.podNetwork.cidrs[0]", "overlaps the service range")),
            ),
            (
                "fallback service IP",
                |fab, f| {
                    *fab = fabric(&["10.96.0.0/16"]);
                    f.service_ranges = vec![(
                        cidr("10.96.0.1/32"),
                        "Service default/kubernetes clusterIP".into(),
                    )];
                },
                Some((
                    "spec.podNetwork.cidrs[0]",
                    "Service default/kubernetes clusterIP",
                )),
            ),
            (
                "contains node address",
                |fab, _| *fab = fabric(&["192.168.0.0/16"]),
                Some((
                    "spec.podNetwork.cidrs[0]",
                    "contains the address of node node-1 (192.168.0.11), node-2 (192.168.0.12)",
                )),
            ),
            (
                "node podCIDR outside (controller-manager uses another cluster CIDR)",
                |fab, _| *fab = fabric(&["10.245.0.0/16"]),
                Some((
                    "spec.podNetwork.cidrs",
                    "podCIDRs of node node-1 (10.244.0.0/24), node-2 (10.244.1.0/24) lie outside 10.245.0.0/16",
                )),
            ),
            (
                "v6 node podCIDR outside a v4-only fabric",
                |_, f| f.nodes[1].pod_cidrs.push("fd00::/64".into()),
                Some(("spec.podNetwork.cidrs", "node-2 (fd00::/64)")),
            ),
            (
                "spec rules still apply",
                |fab, _| fab.spec.overlay.mtu = 100,
                Some(("spec.overlay.mtu", "576-9000")),
            ),
            (
                "confDir collides with subnet dir",
                |fab, _| fab.spec.cni.conf_dir = "/run/flannel".into(),
                Some((
                    "spec.compatibility.subnetFile",
                    "also used by spec.cni.confDir",
                )),
            ),
            (
                "binDir on a reserved mount",
                |fab, _| fab.spec.cni.bin_dir = "/lib/modules".into(),
                Some(("spec.cni.binDir", "reserved")),
            ),
        ];
        for (name, mutate, want) in cases {
            let mut fab = fabric(&["10.244.0.0/16"]);
            let mut f = facts();
            mutate(&mut fab, &mut f);
            let got = validate_fabric(&fab, &f);
            match want {
                None => assert!(got.is_empty(), "{name}: {got:?}"),
                Some((field, needle)) => assert!(
                    got.iter()
                        .any(|v| v.field == *field && v.message.contains(needle)),
                    "{name}: want {field} containing {needle:?}, got {got:?}"
                ),
            }
        }
    }

    #[test]
    fn long_lists_are_abbreviated() {
        let mut f = facts();
        f.nodes = (0..10)
            .map(|i| node(&format!("n{i}"), "192.168.0.1", &["10.1.0.0/24"]))
            .collect();
        let got = validate_fabric(&fabric(&["10.244.0.0/16"]), &f);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].message.contains("and 7 more"), "{got:?}");
    }
}
