//! The node's subnet lease, `subnet.env` and the `NetworkUnavailable` Node condition, as pure
//! functions.
//!
//! weft uses the kube subnet manager model of flannel (and Canal's `usePodCidr`): the subnet of a
//! node is `Node.spec.podCIDRs` as kube-controller-manager allocated it; the agent never allocates.
//! From the lease it derives `subnet.env` (`FLANNEL_NETWORK`, `FLANNEL_SUBNET` with the first host
//! address, e.g. `10.244.1.1/24`, the IPv6 pair, `FLANNEL_MTU`, `FLANNEL_IPMASQ`) and the
//! `NetworkUnavailable=False` condition (reason [`CONDITION_REASON`]). The flannel annotations
//! published from the lease live in [`crate::flannel`].
//!
//! Invariants: nothing here does I/O or reads the clock (callers pass it in); a lease is only
//! produced when every podCIDR the fabric needs is present and inside the fabric's pod network, so
//! a misconfigured cluster never gets a half-written node.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weft_crds::fabric::PodNetwork;
use weft_crds::{IpCidr, IpFamily, PerFamily};

use crate::Error;

/// Node condition type set once the node's network is configured.
pub const CONDITION_TYPE: &str = "NetworkUnavailable";
/// Reason of the condition (flannel uses `FlannelIsUp`, Calico `CalicoIsUp`).
pub const CONDITION_REASON: &str = "WeftIsUp";
/// Message of the condition.
pub const CONDITION_MESSAGE: &str = "weft is running on this node";

/// The fabric's pod network, at most one CIDR per family.
pub type Networks = PerFamily<IpCidr>;

/// The node's subnets: one per family of the fabric (e.g. 10.244.1.0/24).
pub type Lease = PerFamily<IpCidr>;

/// Parses the fabric's pod CIDRs (at most one per family).
pub fn plan_networks(pod_network: &PodNetwork) -> Result<Networks, Error> {
    let mut out = Networks::default();
    for raw in &pod_network.cidrs {
        let cidr: IpCidr = raw.parse().map_err(|source| Error::BadCidr {
            what: "podNetwork.cidrs entry",
            value: raw.clone(),
            source,
        })?;
        let slot = match cidr.family() {
            IpFamily::V4 => &mut out.v4,
            IpFamily::V6 => &mut out.v6,
        };
        if let Some(prev) = slot {
            return Err(Error::PodNetwork(format!(
                "cidrs holds two {} CIDRs ({prev} and {cidr}); keep one per family",
                cidr.family()
            )));
        }
        *slot = Some(cidr);
    }
    if out.v4.is_none() && out.v6.is_none() {
        return Err(Error::PodNetwork(
            "cidrs is empty; set at least one pod CIDR such as 10.244.0.0/16".to_owned(),
        ));
    }
    Ok(out)
}

/// The node's lease from `Node.spec.podCIDRs`.
///
/// `Ok(None)`: no podCIDR yet (kube-controller-manager has not allocated one); the caller waits.
/// A podCIDR of a family the fabric does not use is ignored (like flannel with IPv6 disabled); a
/// podCIDR outside the fabric's CIDR of its family, or a missing family, is an error that names
/// the fix.
pub fn plan_lease(
    node: &str,
    networks: &Networks,
    pod_cidrs: &[String],
) -> Result<Option<Lease>, Error> {
    if pod_cidrs.is_empty() {
        return Ok(None);
    }
    let mut lease = Lease::default();
    for raw in pod_cidrs {
        let cidr = IpCidr::parse_lenient(raw).map_err(|source| Error::BadCidr {
            what: "Node.spec.podCIDRs entry",
            value: raw.clone(),
            source,
        })?;
        let Some(network) = networks.get(cidr.family()) else {
            continue;
        };
        if !network.contains(&cidr) {
            return Err(Error::PodCidrOutsideNetwork {
                node: node.to_owned(),
                pod_cidr: cidr.to_string(),
                network: networks.to_string(),
            });
        }
        match cidr.family() {
            IpFamily::V4 => lease.v4 = lease.v4.or(Some(cidr)),
            IpFamily::V6 => lease.v6 = lease.v6.or(Some(cidr)),
        }
    }
    for family in networks.families() {
        if lease.get(family).is_none() {
            return Err(Error::MissingPodCidr {
                node: node.to_owned(),
                family,
                network: networks
                    .get(family)
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
            });
        }
    }
    Ok(Some(lease))
}

/// The first host address of a subnet (`10.244.1.0/24` → `10.244.1.1`): the pods' gateway, and
/// what flannel writes into `FLANNEL_SUBNET`.
pub fn gateway(subnet: IpCidr) -> IpAddr {
    match subnet.addr() {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).wrapping_add(1).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).wrapping_add(1).into()),
    }
}

/// `subnet.env` in flannel's format and key order: the IPv4 pair, the IPv6 pair, MTU, IPMASQ.
pub fn render_subnet_env(networks: &Networks, lease: &Lease, mtu: u32, ip_masq: bool) -> String {
    let mut out = String::new();
    if let (Some(network), Some(subnet)) = (networks.v4, lease.v4) {
        out.push_str(&format!(
            "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={}/{}\n",
            gateway(subnet),
            subnet.prefix_len()
        ));
    }
    if let (Some(network), Some(subnet)) = (networks.v6, lease.v6) {
        out.push_str(&format!(
            "FLANNEL_IPV6_NETWORK={network}\nFLANNEL_IPV6_SUBNET={}/{}\n",
            gateway(subnet),
            subnet.prefix_len()
        ));
    }
    out.push_str(&format!("FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ip_masq}\n"));
    out
}

/// The `NetworkUnavailable=False` condition to write, or `None` when the node already has it with
/// weft's reason. The transition time is kept when the status was already False.
pub fn plan_network_condition(current: Option<&NodeCondition>, now: Time) -> Option<NodeCondition> {
    if let Some(c) = current
        && c.status == "False"
        && c.reason.as_deref() == Some(CONDITION_REASON)
    {
        return None;
    }
    let transition = match current {
        Some(c) if c.status == "False" => c.last_transition_time.clone().unwrap_or(now.clone()),
        _ => now.clone(),
    };
    Some(NodeCondition {
        type_: CONDITION_TYPE.to_owned(),
        status: "False".to_owned(),
        reason: Some(CONDITION_REASON.to_owned()),
        message: Some(CONDITION_MESSAGE.to_owned()),
        last_transition_time: Some(transition),
        last_heartbeat_time: Some(now),
    })
}

/// The strategic-merge status patch that sets only `condition` (Node conditions merge on `type`).
pub fn render_condition_patch(condition: &NodeCondition) -> serde_json::Value {
    serde_json::json!({ "status": { "conditions": [condition] } })
}

/// The `WeftAgentReady` condition to write (see [`weft_crds::agent_config::AGENT_CONDITION_TYPE`]),
/// or `None` when the node already has it with the same status, reason and message. The transition
/// time is kept while the status stays the same.
pub fn plan_agent_condition(
    current: Option<&NodeCondition>,
    ready: bool,
    reason: &str,
    message: &str,
    now: Time,
) -> Option<NodeCondition> {
    let status = if ready { "True" } else { "False" };
    // The API server refuses messages beyond 32 KiB; a long failure list is cut, never refused.
    let message: String = message.chars().take(AGENT_CONDITION_MESSAGE_MAX).collect();
    if let Some(c) = current
        && c.status == status
        && c.reason.as_deref() == Some(reason)
        && c.message.as_deref() == Some(message.as_str())
    {
        return None;
    }
    let transition = match current {
        Some(c) if c.status == status => c.last_transition_time.clone().unwrap_or(now.clone()),
        _ => now.clone(),
    };
    Some(NodeCondition {
        type_: weft_crds::agent_config::AGENT_CONDITION_TYPE.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: Some(transition),
        last_heartbeat_time: Some(now),
    })
}

/// The longest `WeftAgentReady` message, in characters.
pub const AGENT_CONDITION_MESSAGE_MAX: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> IpCidr {
        s.parse().expect("test cidr")
    }

    fn networks(cidrs: &[&str]) -> Networks {
        plan_networks(&PodNetwork::new(cidrs.iter().copied())).expect("networks")
    }

    /// Expected (IPv4, IPv6) node subnets.
    type WantLease = Option<(Option<&'static str>, Option<&'static str>)>;

    #[test]
    fn plans_leases() {
        struct Case {
            name: &'static str,
            fabric: &'static [&'static str],
            pod_cidrs: &'static [&'static str],
            want: Result<WantLease, &'static str>,
        }
        let cases = [
            Case {
                name: "ipv4",
                fabric: &["10.244.0.0/16"],
                pod_cidrs: &["10.244.1.0/24"],
                want: Ok(Some((Some("10.244.1.0/24"), None))),
            },
            Case {
                name: "not allocated yet",
                fabric: &["10.244.0.0/16"],
                pod_cidrs: &[],
                want: Ok(None),
            },
            Case {
                name: "dual-stack",
                fabric: &["10.244.0.0/16", "fd00:10:244::/56"],
                pod_cidrs: &["10.244.2.0/24", "fd00:10:244:2::/64"],
                want: Ok(Some((Some("10.244.2.0/24"), Some("fd00:10:244:2::/64")))),
            },
            Case {
                name: "ipv6 only",
                fabric: &["fd00:10:244::/56"],
                pod_cidrs: &["fd00:10:244:3::/64"],
                want: Ok(Some((None, Some("fd00:10:244:3::/64")))),
            },
            Case {
                name: "ipv6 podCIDR ignored by an ipv4 fabric",
                fabric: &["10.244.0.0/16"],
                pod_cidrs: &["10.244.1.0/24", "fd00:10:244:2::/64"],
                want: Ok(Some((Some("10.244.1.0/24"), None))),
            },
            Case {
                name: "outside the pod network",
                fabric: &["10.244.0.0/16"],
                pod_cidrs: &["10.99.1.0/24"],
                want: Err("not inside the fabric's podNetwork.cidrs 10.244.0.0/16"),
            },
            Case {
                name: "larger than the pod network",
                fabric: &["10.244.0.0/16"],
                pod_cidrs: &["10.0.0.0/8"],
                want: Err("10.0.0.0/8, which is not inside"),
            },
            Case {
                name: "missing ipv6",
                fabric: &["10.244.0.0/16", "fd00:10:244::/56"],
                pod_cidrs: &["10.244.1.0/24"],
                want: Err("has no IPv6 podCIDR"),
            },
            Case {
                name: "garbage",
                fabric: &["10.244.0.0/16"],
                pod_cidrs: &["10.244.1.0"],
                want: Err("invalid Node.spec.podCIDRs entry"),
            },
        ];
        for c in cases {
            let got = plan_lease("n1", &networks(c.fabric), &owned(c.pod_cidrs));
            match (c.want, got) {
                (Ok(None), Ok(None)) => {}
                (Ok(Some((v4, v6))), Ok(Some(lease))) => {
                    assert_eq!(lease.v4, v4.map(cidr), "{}", c.name);
                    assert_eq!(lease.v6, v6.map(cidr), "{}", c.name);
                }
                (Err(want), Err(e)) => assert!(e.to_string().contains(want), "{}: {e}", c.name),
                (want, got) => panic!("{}: want {want:?}, got {got:?}", c.name),
            }
        }
    }

    fn owned(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn rejects_bad_pod_networks() {
        let cases: &[(&[&str], &str)] = &[
            (&["10.244.0.0/16", "10.245.0.0/16"], "two IPv4 CIDRs"),
            (&[], "cidrs is empty"),
            (&["10.244.1.0/16"], "host bits set"),
        ];
        for (cidrs, want) in cases {
            let err = plan_networks(&PodNetwork::new(cidrs.iter().copied())).expect_err("bad");
            let msg = format!(
                "{err}: {}",
                std::error::Error::source(&err)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            );
            assert!(msg.contains(want), "{cidrs:?}: {msg}");
        }
    }

    #[test]
    fn gateway_is_the_first_host_address() {
        assert_eq!(gateway(cidr("10.244.1.0/24")).to_string(), "10.244.1.1");
        assert_eq!(
            gateway(cidr("fd00:10:244:2::/64")).to_string(),
            "fd00:10:244:2::1"
        );
    }

    #[test]
    fn subnet_env_follows_flannel() {
        let nets = networks(&["10.244.0.0/16"]);
        let lease = Lease {
            v4: Some(cidr("10.244.1.0/24")),
            v6: None,
        };
        assert_eq!(
            render_subnet_env(&nets, &lease, 1450, true),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        let nets = networks(&["fd00:10:244::/56"]);
        let lease = Lease {
            v4: None,
            v6: Some(cidr("fd00:10:244:3::/64")),
        };
        assert_eq!(
            render_subnet_env(&nets, &lease, 1430, false),
            "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
        );
    }

    #[test]
    fn network_condition_is_written_once() {
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(2_000_000_000).expect("ts"));
        let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_000_000_000).expect("ts"));
        let cond = |status: &str, reason: &str| NodeCondition {
            type_: CONDITION_TYPE.into(),
            status: status.into(),
            reason: Some(reason.into()),
            last_transition_time: Some(earlier.clone()),
            ..NodeCondition::default()
        };
        let fresh = plan_network_condition(None, now.clone()).expect("absent → set");
        assert_eq!(fresh.status, "False");
        assert_eq!(fresh.reason.as_deref(), Some(CONDITION_REASON));
        assert_eq!(fresh.last_transition_time, Some(now.clone()));
        assert_eq!(
            plan_network_condition(Some(&cond("False", CONDITION_REASON)), now.clone()),
            None
        );
        let from_true = plan_network_condition(Some(&cond("True", "NoRouteCreated")), now.clone())
            .expect("set");
        assert_eq!(from_true.last_transition_time, Some(now.clone()));
        let from_flannel =
            plan_network_condition(Some(&cond("False", "FlannelIsUp")), now.clone()).expect("set");
        assert_eq!(from_flannel.last_transition_time, Some(earlier));
        let patch = render_condition_patch(&fresh);
        assert_eq!(
            patch["status"]["conditions"][0]["type"],
            "NetworkUnavailable"
        );
        assert_eq!(patch["status"]["conditions"][0]["status"], "False");
        assert_eq!(
            patch["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn agent_condition_changes_only_with_its_content() {
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(2_000_000_000).expect("ts"));
        let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_000_000_000).expect("ts"));
        let bad = plan_agent_condition(
            None,
            false,
            "AgentConfigInvalid",
            "interface \"x\" not found",
            earlier.clone(),
        )
        .expect("absent → set");
        assert_eq!(bad.type_, "WeftAgentReady");
        assert_eq!(bad.status, "False");
        // Same content: no write.
        assert_eq!(
            plan_agent_condition(
                Some(&bad),
                false,
                "AgentConfigInvalid",
                "interface \"x\" not found",
                now.clone()
            ),
            None
        );
        // Another message, same status: rewritten, transition time kept.
        let other = plan_agent_condition(
            Some(&bad),
            false,
            "AgentConfigInvalid",
            "other",
            now.clone(),
        )
        .expect("changed");
        assert_eq!(other.last_transition_time, Some(earlier));
        // Healed: a new transition.
        let good = plan_agent_condition(Some(&other), true, "AgentReady", "ok", now.clone())
            .expect("healed");
        assert_eq!(
            (good.status.as_str(), good.last_transition_time),
            ("True", Some(now.clone()))
        );
        let long = "x".repeat(AGENT_CONDITION_MESSAGE_MAX * 2);
        let cut = plan_agent_condition(None, false, "DatapathFailed", &long, now).expect("set");
        assert_eq!(
            cut.message.map(|m| m.len()),
            Some(AGENT_CONDITION_MESSAGE_MAX)
        );
    }
}
