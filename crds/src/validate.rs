//! Pure validation of a `NetworkFabricSpec`, without cluster facts.
//!
//! The CRD's CEL and OpenAPI rules make the API server refuse most bad specs. This module checks the
//! same things in Rust (a fabric stored before a rule existed, or created with validation bypassed,
//! must still never be half-applied) and adds what a CEL rule cannot express well: IntOrString
//! percentages and kube-controller-manager's node-mask limit. Invariant: [`validate_spec`] returns
//! every violation (not just the first), each naming the field path and what to write instead, in a
//! stable order.

use std::fmt;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cidr::{IpCidr, IpFamily};
use crate::fabric::{MAX_MTU, MAX_VNI, MIN_MTU, NetworkFabricSpec};

/// kube-controller-manager refuses node masks more than this many bits longer than the cluster CIDR.
pub const MAX_NODE_MASK_DIFF: i32 = 16;

/// One problem in a spec: the field path and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecViolation {
    /// JSON path of the field below the object, e.g. `spec.podNetwork.cidrs[1]`.
    pub field: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for SpecViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The pod CIDRs of a spec, parsed, at most one per family (IPv4 first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodCidrs {
    /// The IPv4 CIDR, if any.
    pub v4: Option<IpCidr>,
    /// The IPv6 CIDR, if any.
    pub v6: Option<IpCidr>,
}

impl PodCidrs {
    /// The CIDRs present, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = &IpCidr> {
        self.v4.iter().chain(self.v6.iter())
    }
}

/// Parses the pod CIDRs of `spec`, or reports why they are unusable.
pub fn parse_pod_cidrs(spec: &NetworkFabricSpec) -> Result<PodCidrs, Vec<SpecViolation>> {
    let mut out = PodCidrs::default();
    let mut violations = Vec::new();
    if spec.pod_network.cidrs.is_empty() {
        violations.push(violation(
            "spec.podNetwork.cidrs",
            "at least one pod CIDR is required, e.g. 10.244.0.0/16",
        ));
    }
    for (i, raw) in spec.pod_network.cidrs.iter().enumerate() {
        let field = format!("spec.podNetwork.cidrs[{i}]");
        match raw.parse::<IpCidr>() {
            Ok(cidr) => {
                let slot = match cidr.family() {
                    IpFamily::V4 => &mut out.v4,
                    IpFamily::V6 => &mut out.v6,
                };
                if let Some(first) = slot {
                    violations.push(violation(
                        &field,
                        format!(
                            "a second {} CIDR ({cidr}) besides {first}; give at most one IPv4 and one IPv6 CIDR",
                            cidr.family()
                        ),
                    ));
                } else {
                    *slot = Some(cidr);
                }
            }
            Err(e) => violations.push(violation(&field, e.to_string())),
        }
    }
    if violations.is_empty() {
        Ok(out)
    } else {
        Err(violations)
    }
}

/// Every violation in `spec` that can be found without looking at the cluster.
pub fn validate_spec(spec: &NetworkFabricSpec) -> Vec<SpecViolation> {
    let mut v = Vec::new();
    match parse_pod_cidrs(spec) {
        Ok(cidrs) => validate_node_prefixes(spec, &cidrs, &mut v),
        Err(mut errs) => v.append(&mut errs),
    }
    let npl = &spec.pod_network.node_prefix_length;
    if !(1..=32).contains(&npl.ipv4) {
        v.push(violation(
            "spec.podNetwork.nodePrefixLength.ipv4",
            format!("{} is not an IPv4 prefix length; use 1-32", npl.ipv4),
        ));
    }
    if !(1..=128).contains(&npl.ipv6) {
        v.push(violation(
            "spec.podNetwork.nodePrefixLength.ipv6",
            format!("{} is not an IPv6 prefix length; use 1-128", npl.ipv6),
        ));
    }

    let overlay = &spec.overlay;
    if !(1..=MAX_VNI).contains(&overlay.vni) {
        v.push(violation(
            "spec.overlay.vni",
            format!(
                "{} is not a VXLAN network identifier; use 1-{MAX_VNI}",
                overlay.vni
            ),
        ));
    }
    if !(1..=65_535).contains(&overlay.port) {
        v.push(violation(
            "spec.overlay.port",
            format!("{} is not a UDP port; use 1-65535", overlay.port),
        ));
    }
    if overlay.mtu != 0 && !(MIN_MTU..=MAX_MTU).contains(&overlay.mtu) {
        v.push(violation(
            "spec.overlay.mtu",
            format!(
                "{} is not a usable MTU; use 0 (automatic) or {MIN_MTU}-{MAX_MTU}",
                overlay.mtu
            ),
        ));
    }
    if overlay.direct_routing && overlay.backend != crate::fabric::Backend::Vxlan {
        v.push(violation(
            "spec.overlay.directRouting",
            "directRouting only applies to the vxlan backend; host-gw always routes directly",
        ));
    }
    if let Some(iface) = &overlay.interface
        && IpCidr::parse_lenient(iface).is_err()
        && !is_interface_name(iface)
    {
        v.push(violation(
            "spec.overlay.interface",
            format!(
                "{iface:?} is neither an interface name (at most 15 of letters, digits, '_', '.', '@', '-') nor a CIDR"
            ),
        ));
    }

    let cni = &spec.cni;
    for (field, path) in [
        ("spec.cni.confDir", &cni.conf_dir),
        ("spec.cni.binDir", &cni.bin_dir),
    ] {
        if !path.starts_with('/') {
            v.push(violation(
                field,
                format!("{path:?} is not an absolute path"),
            ));
        }
    }
    if !cni.conf_name.ends_with(".conflist") || cni.conf_name.contains('/') {
        v.push(violation(
            "spec.cni.confName",
            format!(
                "{:?} must be a file name ending in .conflist, e.g. 10-weft.conflist",
                cni.conf_name
            ),
        ));
    }
    let mut plugins = cni.chained_plugins.clone();
    plugins.sort();
    plugins.dedup();
    if plugins.len() != cni.chained_plugins.len() {
        v.push(violation(
            "spec.cni.chainedPlugins",
            "each plugin may be listed once",
        ));
    }

    let agent = &spec.agent;
    for (field, port) in [
        ("spec.agent.metricsPort", agent.metrics_port),
        ("spec.agent.healthPort", agent.health_port),
    ] {
        if !(1..=65_535).contains(&port) {
            v.push(violation(
                field,
                format!("{port} is not a TCP port; use 1-65535"),
            ));
        }
    }
    if agent.metrics_port == agent.health_port {
        v.push(violation(
            "spec.agent.healthPort",
            "metricsPort and healthPort must differ",
        ));
    }
    if let Some(msg) = check_max_unavailable(&agent.max_unavailable) {
        v.push(violation("spec.agent.maxUnavailable", msg));
    }
    if let Some(image) = &agent.image
        && (image.is_empty() || image.chars().any(char::is_whitespace))
    {
        v.push(violation(
            "spec.agent.image",
            format!("{image:?} is not an image reference"),
        ));
    }

    let compat = &spec.compatibility;
    if !is_dns_subdomain(&compat.annotation_prefix) {
        v.push(violation(
            "spec.compatibility.annotationPrefix",
            format!(
                "{:?} must be a DNS subdomain such as flannel.alpha.coreos.com",
                compat.annotation_prefix
            ),
        ));
    }
    let sf = &compat.subnet_file;
    if !sf.starts_with('/') || sf.ends_with('/') || sf.rfind('/') == Some(0) {
        v.push(violation(
            "spec.compatibility.subnetFile",
            format!("{sf:?} must be an absolute file path below a directory, e.g. /run/flannel/subnet.env"),
        ));
    }
    v
}

fn validate_node_prefixes(spec: &NetworkFabricSpec, cidrs: &PodCidrs, v: &mut Vec<SpecViolation>) {
    let npl = &spec.pod_network.node_prefix_length;
    for (cidr, node_len, field) in [
        (cidrs.v4, npl.ipv4, "spec.podNetwork.nodePrefixLength.ipv4"),
        (cidrs.v6, npl.ipv6, "spec.podNetwork.nodePrefixLength.ipv6"),
    ] {
        let Some(cidr) = cidr else { continue };
        let cidr_len = i32::from(cidr.prefix_len());
        if node_len <= cidr_len {
            v.push(violation(
                field,
                format!(
                    "/{node_len} is not longer than the pod CIDR {cidr}; node subnets must be smaller than the pod network (e.g. /{})",
                    (cidr_len + 8).min(if cidr.family() == IpFamily::V4 { 32 } else { 128 })
                ),
            ));
        } else if node_len - cidr_len > MAX_NODE_MASK_DIFF {
            v.push(violation(
                field,
                format!(
                    "/{node_len} in {cidr} gives more than 2^{MAX_NODE_MASK_DIFF} node subnets, which kube-controller-manager refuses; use at most /{}",
                    cidr_len + MAX_NODE_MASK_DIFF
                ),
            ));
        }
    }
}

/// Checks an IntOrString maxUnavailable: an integer >= 1 or a percentage 1%-100%.
fn check_max_unavailable(value: &IntOrString) -> Option<String> {
    match value {
        IntOrString::Int(n) if *n >= 1 => None,
        IntOrString::Int(n) => Some(format!(
            "{n} would stop every rollout; use at least 1 or a percentage such as \"10%\""
        )),
        IntOrString::String(s) => match s.strip_suffix('%').map(str::parse::<u32>) {
            Some(Ok(p)) if (1..=100).contains(&p) => None,
            _ => Some(format!(
                "{s:?} is not a number or a percentage from 1% to 100%, e.g. 1 or \"10%\""
            )),
        },
    }
}

fn is_interface_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn violation(field: &str, message: impl Into<String>) -> SpecViolation {
    SpecViolation {
        field: field.to_owned(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabric::Backend;

    fn spec() -> NetworkFabricSpec {
        NetworkFabricSpec::with_cidrs(["10.244.0.0/16"])
    }

    #[test]
    fn valid_specs_pass() {
        let mut dual = NetworkFabricSpec::with_cidrs(["10.244.0.0/16", "fd00:10:244::/56"]);
        dual.overlay.interface = Some("192.168.0.0/24".into());
        let mut hostgw = spec();
        hostgw.overlay.backend = Backend::HostGw;
        hostgw.overlay.mtu = 9000;
        hostgw.agent.max_unavailable = IntOrString::String("25%".into());
        for s in [spec(), dual, hostgw] {
            assert_eq!(validate_spec(&s), vec![], "{s:?}");
        }
    }

    #[test]
    fn each_bad_field_is_reported_with_its_path() {
        type Mutate = fn(&mut NetworkFabricSpec);
        let cases: &[(&str, Mutate, &str, &str)] = &[
            (
                "no cidrs",
                |s| s.pod_network.cidrs.clear(),
                "spec.podNetwork.cidrs",
                "at least one",
            ),
            (
                "garbage cidr",
                |s| s.pod_network.cidrs = vec!["banana".into()],
                "spec.podNetwork.cidrs[0]",
                "not a CIDR",
            ),
            (
                "host bits",
                |s| s.pod_network.cidrs = vec!["10.244.1.0/16".into()],
                "spec.podNetwork.cidrs[0]",
                "use 10.244.0.0/16",
            ),
            (
                "two v4",
                |s| s.pod_network.cidrs.push("10.245.0.0/16".into()),
                "spec.podNetwork.cidrs[1]",
                "at most one IPv4",
            ),
            (
                "node prefix too short",
                |s| s.pod_network.node_prefix_length.ipv4 = 16,
                "spec.podNetwork.nodePrefixLength.ipv4",
                "not longer",
            ),
            (
                "node prefix too many subnets",
                |s| {
                    s.pod_network.cidrs = vec!["10.0.0.0/8".into()];
                    s.pod_network.node_prefix_length.ipv4 = 30;
                },
                "spec.podNetwork.nodePrefixLength.ipv4",
                "at most /24",
            ),
            (
                "v6 prefix out of range",
                |s| s.pod_network.node_prefix_length.ipv6 = 129,
                "spec.podNetwork.nodePrefixLength.ipv6",
                "1-128",
            ),
            (
                "vni zero",
                |s| s.overlay.vni = 0,
                "spec.overlay.vni",
                "1-16777215",
            ),
            (
                "vni too big",
                |s| s.overlay.vni = 16_777_216,
                "spec.overlay.vni",
                "1-16777215",
            ),
            (
                "port zero",
                |s| s.overlay.port = 0,
                "spec.overlay.port",
                "1-65535",
            ),
            (
                "mtu small",
                |s| s.overlay.mtu = 575,
                "spec.overlay.mtu",
                "0 (automatic)",
            ),
            (
                "mtu big",
                |s| s.overlay.mtu = 9001,
                "spec.overlay.mtu",
                "0 (automatic)",
            ),
            (
                "direct routing on host-gw",
                |s| {
                    s.overlay.backend = Backend::HostGw;
                    s.overlay.direct_routing = true;
                },
                "spec.overlay.directRouting",
                "only applies",
            ),
            (
                "bad interface",
                |s| s.overlay.interface = Some("eth0 with spaces".into()),
                "spec.overlay.interface",
                "neither",
            ),
            (
                "relative confDir",
                |s| s.cni.conf_dir = "etc/cni".into(),
                "spec.cni.confDir",
                "absolute",
            ),
            (
                "relative binDir",
                |s| s.cni.bin_dir = "bin".into(),
                "spec.cni.binDir",
                "absolute",
            ),
            (
                "bad confName",
                |s| s.cni.conf_name = "weft.conf".into(),
                "spec.cni.confName",
                ".conflist",
            ),
            (
                "duplicate plugins",
                |s| s.cni.chained_plugins = vec![crate::fabric::ChainedPlugin::Portmap; 2],
                "spec.cni.chainedPlugins",
                "once",
            ),
            (
                "same ports",
                |s| s.agent.health_port = s.agent.metrics_port,
                "spec.agent.healthPort",
                "differ",
            ),
            (
                "port out of range",
                |s| s.agent.metrics_port = 70_000,
                "spec.agent.metricsPort",
                "1-65535",
            ),
            (
                "maxUnavailable zero",
                |s| s.agent.max_unavailable = IntOrString::Int(0),
                "spec.agent.maxUnavailable",
                "at least 1",
            ),
            (
                "maxUnavailable bad percent",
                |s| s.agent.max_unavailable = IntOrString::String("120%".into()),
                "spec.agent.maxUnavailable",
                "percentage",
            ),
            (
                "image with space",
                |s| s.agent.image = Some("a b".into()),
                "spec.agent.image",
                "not an image",
            ),
            (
                "annotation prefix",
                |s| s.compatibility.annotation_prefix = "Flannel_X".into(),
                "spec.compatibility.annotationPrefix",
                "DNS subdomain",
            ),
            (
                "subnet file in root",
                |s| s.compatibility.subnet_file = "/subnet.env".into(),
                "spec.compatibility.subnetFile",
                "below a directory",
            ),
        ];
        for (name, mutate, field, needle) in cases {
            let mut s = spec();
            mutate(&mut s);
            let got = validate_spec(&s);
            assert!(
                got.iter()
                    .any(|v| v.field == *field && v.message.contains(needle)),
                "{name}: want {field} containing {needle:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn parses_dual_stack_in_family_order() {
        let s = NetworkFabricSpec::with_cidrs(["fd00::/48", "10.244.0.0/16"]);
        let cidrs = parse_pod_cidrs(&s).expect("valid");
        assert_eq!(
            cidrs.v4.map(|c| c.to_string()).as_deref(),
            Some("10.244.0.0/16")
        );
        assert_eq!(
            cidrs.v6.map(|c| c.to_string()).as_deref(),
            Some("fd00::/48")
        );
        assert_eq!(cidrs.iter().count(), 2);
    }
}
