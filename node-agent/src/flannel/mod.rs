//! flannel's node annotations and the VTEP MAC: rendering our own, parsing our peers'.
//!
//! In flannel's exact formats so that flannel and weft agents interoperate in one cluster:
//! `<prefix>/backend-type`, `<prefix>/backend-data` (`{"VNI":1,"VtepMAC":"…"}` for vxlan, `null`
//! for host-gw), `<prefix>/kube-subnet-manager`, `<prefix>/public-ip` and, with IPv6,
//! `<prefix>/backend-v6-data` and `<prefix>/public-ipv6`.
//!
//! Invariants: pure (the random bytes for a new MAC are passed in); a VTEP MAC, once chosen, is
//! kept (state file first, then the node's own annotation) so that peers' FDB entries stay valid
//! across agent restarts and reboots (flannel#1795).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use weft_crds::IpFamily;
use weft_crds::fabric::Backend;

use crate::Error;

pub mod peers;
use crate::subnet::Lease;
pub use peers::{Peer, PeerProblem, parse_peer, parse_peers};
use weft_crds::PerFamily;

/// Annotation suffix: the overlay backend (`vxlan` or `host-gw`).
pub const ANNOTATION_BACKEND_TYPE: &str = "backend-type";
/// Annotation suffix: backend data of the IPv4 overlay.
pub const ANNOTATION_BACKEND_DATA: &str = "backend-data";
/// Annotation suffix: backend data of the IPv6 overlay.
pub const ANNOTATION_BACKEND_V6_DATA: &str = "backend-v6-data";
/// Annotation suffix: `"true"`, the subnet comes from the Node object.
pub const ANNOTATION_KUBE_SUBNET_MANAGER: &str = "kube-subnet-manager";
/// Annotation suffix: the node's IPv4 underlay address.
pub const ANNOTATION_PUBLIC_IP: &str = "public-ip";
/// Annotation suffix: the node's IPv6 underlay address.
pub const ANNOTATION_PUBLIC_IPV6: &str = "public-ipv6";
/// Key of the IPv4 VTEP MAC in the state file.
pub const STATE_KEY_VTEP_MAC: &str = "WEFT_VTEP_MAC";
/// Key of the IPv6 VTEP MAC in the state file.
pub const STATE_KEY_VTEP_V6_MAC: &str = "WEFT_VTEP_V6_MAC";
/// Name of the state file, next to subnet.env.
pub const STATE_FILE_NAME: &str = "weft-vtep.env";

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A locally administered unicast MAC from random bytes (bit 1 of the first octet set, bit 0
    /// cleared), the kind the kernel gives a VXLAN device.
    pub fn local_unicast(mut bytes: [u8; 6]) -> Mac {
        bytes[0] = (bytes[0] | 0x02) & !0x01;
        Mac(bytes)
    }

    /// Whether the MAC is unicast and not all zero (usable as a VTEP address).
    pub fn is_usable(&self) -> bool {
        self.0[0] & 0x01 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("{s:?} is not a MAC address like 0a:1b:2c:3d:4e:5f"));
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(format!("{s:?} is not a MAC address like 0a:1b:2c:3d:4e:5f"));
            }
            *slot = u8::from_str_radix(part, 16)
                .map_err(|_| format!("{s:?} is not a MAC address like 0a:1b:2c:3d:4e:5f"))?;
        }
        Ok(Mac(out))
    }
}

/// The VTEP MACs of the node, one per overlay family.
pub type VtepMacs = PerFamily<Mac>;

/// flannel's vxlan backend data: `{"VNI":1,"VtepMAC":"0a:…"}` (field order as Go marshals it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanBackendData {
    /// The VXLAN network identifier.
    #[serde(rename = "VNI")]
    pub vni: i32,
    /// The MAC of the node's VXLAN device.
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// Parses the state file (`KEY=VALUE` lines; unknown keys and bad values are ignored, so a
/// corrupted file costs a new MAC, never a crash).
pub fn parse_vtep_state(text: &str) -> VtepMacs {
    let mut out = VtepMacs::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let Ok(mac) = value.trim().parse::<Mac>() else {
            continue;
        };
        if !mac.is_usable() {
            continue;
        }
        match key.trim() {
            STATE_KEY_VTEP_MAC => out.v4 = Some(mac),
            STATE_KEY_VTEP_V6_MAC => out.v6 = Some(mac),
            _ => {}
        }
    }
    out
}

/// Renders the state file.
pub fn render_vtep_state(macs: &VtepMacs) -> String {
    let mut out = String::new();
    if let Some(mac) = macs.v4 {
        out.push_str(&format!("{STATE_KEY_VTEP_MAC}={mac}\n"));
    }
    if let Some(mac) = macs.v6 {
        out.push_str(&format!("{STATE_KEY_VTEP_V6_MAC}={mac}\n"));
    }
    out
}

/// The full name of annotation `suffix` under `prefix` (flannel appends `/` to a prefix without
/// one, and `-` to a prefix that already has a path part).
pub fn annotation_key(prefix: &str, suffix: &str) -> String {
    if prefix.ends_with('/') || prefix.ends_with('-') {
        format!("{prefix}{suffix}")
    } else if prefix.contains('/') {
        format!("{prefix}-{suffix}")
    } else {
        format!("{prefix}/{suffix}")
    }
}

/// The MAC recorded in the node's own vxlan `backend-data` annotation of `family`, if any.
fn annotated_mac(
    annotations: &BTreeMap<String, String>,
    prefix: &str,
    family: IpFamily,
) -> Option<Mac> {
    let backend = annotations.get(&annotation_key(prefix, ANNOTATION_BACKEND_TYPE))?;
    if backend != Backend::Vxlan.as_str() {
        return None;
    }
    let key = match family {
        IpFamily::V4 => ANNOTATION_BACKEND_DATA,
        IpFamily::V6 => ANNOTATION_BACKEND_V6_DATA,
    };
    let data: VxlanBackendData =
        serde_json::from_str(annotations.get(&annotation_key(prefix, key))?).ok()?;
    data.vtep_mac.parse::<Mac>().ok().filter(Mac::is_usable)
}

/// The VTEP MAC per family: the state file's, else the one already announced in the node's
/// annotation, else a new one from `random` (index 0 for IPv4, 1 for IPv6).
pub fn plan_vtep_macs(
    families: &[IpFamily],
    state: &VtepMacs,
    annotations: &BTreeMap<String, String>,
    prefix: &str,
    random: [[u8; 6]; 2],
) -> VtepMacs {
    let mut out = VtepMacs::default();
    for &family in families {
        let fresh = match family {
            IpFamily::V4 => random[0],
            IpFamily::V6 => random[1],
        };
        *out.slot_mut(family) = Some(
            state
                .get(family)
                .or_else(|| annotated_mac(annotations, prefix, family))
                .unwrap_or_else(|| Mac::local_unicast(fresh)),
        );
    }
    out
}

/// What the annotations are rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationInput<'a> {
    /// The annotation prefix (compatibility.annotationPrefix).
    pub prefix: &'a str,
    /// The overlay backend.
    pub backend: Backend,
    /// The VXLAN network identifier.
    pub vni: i32,
    /// The node's lease.
    pub lease: &'a Lease,
    /// The node's underlay address per family (public-ip, public-ipv6).
    pub public_v4: Option<IpAddr>,
    /// The IPv6 underlay address.
    pub public_v6: Option<IpAddr>,
    /// The VTEP MACs (vxlan only).
    pub macs: &'a VtepMacs,
}

/// The flannel-format annotations the node should carry.
pub fn render_annotations(input: &AnnotationInput<'_>) -> Result<BTreeMap<String, String>, Error> {
    let key = |suffix| annotation_key(input.prefix, suffix);
    let mut out = BTreeMap::new();
    out.insert(
        key(ANNOTATION_BACKEND_TYPE),
        input.backend.as_str().to_owned(),
    );
    out.insert(key(ANNOTATION_KUBE_SUBNET_MANAGER), "true".to_owned());
    let families = [
        (
            IpFamily::V4,
            ANNOTATION_BACKEND_DATA,
            ANNOTATION_PUBLIC_IP,
            input.public_v4,
        ),
        (
            IpFamily::V6,
            ANNOTATION_BACKEND_V6_DATA,
            ANNOTATION_PUBLIC_IPV6,
            input.public_v6,
        ),
    ];
    for (family, data_key, ip_key, public) in families {
        if input.lease.get(family).is_none() {
            continue;
        }
        let data = match (input.backend, input.macs.get(family)) {
            (Backend::Vxlan, Some(mac)) => serde_json::to_string(&VxlanBackendData {
                vni: input.vni,
                vtep_mac: mac.to_string(),
            })
            .map_err(|source| Error::RenderJson {
                what: "vxlan backend data",
                source,
            })?,
            // host-gw has no backend data; flannel marshals its empty RawMessage as null.
            _ => "null".to_owned(),
        };
        out.insert(key(data_key), data);
        if let Some(ip) = public {
            out.insert(key(ip_key), ip.to_string());
        }
    }
    Ok(out)
}

/// The annotation suffixes the agent owns under its prefix (and removes when no longer desired,
/// e.g. the IPv6 pair after IPv6 leaves the fabric).
pub const OWNED_ANNOTATIONS: &[&str] = &[
    ANNOTATION_BACKEND_TYPE,
    ANNOTATION_BACKEND_DATA,
    ANNOTATION_BACKEND_V6_DATA,
    ANNOTATION_KUBE_SUBNET_MANAGER,
    ANNOTATION_PUBLIC_IP,
    ANNOTATION_PUBLIC_IPV6,
];

/// The annotation patch: desired entries whose current value differs (`Some`), and owned entries
/// present but no longer desired (`None`, a deletion in a JSON merge patch). Annotations the agent
/// does not own are never touched. `None` when nothing differs (no write, so no watch event, so no
/// loop).
pub fn plan_annotation_patch(
    prefix: &str,
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> Option<BTreeMap<String, Option<String>>> {
    let mut patch: BTreeMap<String, Option<String>> = desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    for suffix in OWNED_ANNOTATIONS {
        let key = annotation_key(prefix, suffix);
        if current.contains_key(&key) && !desired.contains_key(&key) {
            patch.insert(key, None);
        }
    }
    (!patch.is_empty()).then_some(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_crds::IpCidr;

    fn cidr(s: &str) -> IpCidr {
        s.parse().expect("test cidr")
    }

    #[test]
    fn annotation_keys_follow_flannel_prefix_rules() {
        let cases = [
            (
                "flannel.alpha.coreos.com",
                "flannel.alpha.coreos.com/public-ip",
            ),
            ("weft.dev/", "weft.dev/public-ip"),
            ("example.com/net", "example.com/net-public-ip"),
        ];
        for (prefix, want) in cases {
            assert_eq!(annotation_key(prefix, ANNOTATION_PUBLIC_IP), want);
        }
    }

    const P: &str = "flannel.alpha.coreos.com";

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{P}/{k}"), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn renders_annotations() {
        let mac = Mac([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x01]);
        let mac6 = Mac([0x0e, 0x00, 0x00, 0x00, 0x00, 0x06]);
        let v4 = Lease {
            v4: Some(cidr("10.244.1.0/24")),
            v6: None,
        };
        let dual = Lease {
            v4: Some(cidr("10.244.1.0/24")),
            v6: Some(cidr("fd00:10:244:1::/64")),
        };
        let macs = VtepMacs {
            v4: Some(mac),
            v6: Some(mac6),
        };
        let ip4: IpAddr = "192.168.0.2".parse().expect("ip");
        let ip6: IpAddr = "fd00::2".parse().expect("ip");
        struct Case<'a> {
            name: &'a str,
            backend: Backend,
            lease: &'a Lease,
            want: BTreeMap<String, String>,
        }
        let cases = [
            Case {
                name: "vxlan ipv4",
                backend: Backend::Vxlan,
                lease: &v4,
                want: ann(&[
                    ("backend-type", "vxlan"),
                    ("backend-data", r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}"#),
                    ("kube-subnet-manager", "true"),
                    ("public-ip", "192.168.0.2"),
                ]),
            },
            Case {
                name: "vxlan dual-stack",
                backend: Backend::Vxlan,
                lease: &dual,
                want: ann(&[
                    ("backend-type", "vxlan"),
                    ("backend-data", r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}"#),
                    (
                        "backend-v6-data",
                        r#"{"VNI":1,"VtepMAC":"0e:00:00:00:00:06"}"#,
                    ),
                    ("kube-subnet-manager", "true"),
                    ("public-ip", "192.168.0.2"),
                    ("public-ipv6", "fd00::2"),
                ]),
            },
            Case {
                name: "host-gw",
                backend: Backend::HostGw,
                lease: &v4,
                want: ann(&[
                    ("backend-type", "host-gw"),
                    ("backend-data", "null"),
                    ("kube-subnet-manager", "true"),
                    ("public-ip", "192.168.0.2"),
                ]),
            },
        ];
        for c in cases {
            let got = render_annotations(&AnnotationInput {
                prefix: P,
                backend: c.backend,
                vni: 1,
                lease: c.lease,
                public_v4: Some(ip4),
                public_v6: Some(ip6),
                macs: &macs,
            })
            .expect("render");
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn patches_only_what_differs() {
        let desired = ann(&[("backend-type", "vxlan"), ("public-ip", "10.0.0.1")]);
        assert_eq!(plan_annotation_patch(P, &desired, &desired), None);
        let mut current = desired.clone();
        current.insert(format!("{P}/public-ip"), "10.0.0.9".into());
        current.insert(format!("{P}/public-ipv6"), "fd00::9".into());
        current.insert(format!("{P}/public-ip-overwrite"), "1.2.3.4".into());
        current.insert("unrelated".into(), "kept".into());
        let want: BTreeMap<String, Option<String>> = [
            (format!("{P}/public-ip"), Some("10.0.0.1".to_owned())),
            (format!("{P}/public-ipv6"), None),
        ]
        .into_iter()
        .collect();
        assert_eq!(plan_annotation_patch(P, &current, &desired), Some(want));
    }

    #[test]
    fn macs_are_local_unicast() {
        for first in [0x00u8, 0x01, 0xff, 0x03, 0xfe] {
            let mac = Mac::local_unicast([first, 1, 2, 3, 4, 5]);
            assert_eq!(mac.0[0] & 0x02, 0x02, "{mac}");
            assert_eq!(mac.0[0] & 0x01, 0, "{mac}");
            assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
        }
        assert!("0a:58:0a:f4:01".parse::<Mac>().is_err());
        assert!("0a:58:0a:f4:01:zz".parse::<Mac>().is_err());
    }

    #[test]
    fn vtep_macs_are_stable() {
        let from_state = Mac([0x0a, 1, 1, 1, 1, 1]);
        let from_annotation = Mac([0x0a, 2, 2, 2, 2, 2]);
        let random = [[0xff, 3, 3, 3, 3, 3], [0x00, 4, 4, 4, 4, 4]];
        let fresh_v4 = Mac([0xfe, 3, 3, 3, 3, 3]);
        let fresh_v6 = Mac([0x02, 4, 4, 4, 4, 4]);
        let vxlan_ann = ann(&[
            ("backend-type", "vxlan"),
            ("backend-data", r#"{"VNI":1,"VtepMAC":"0a:02:02:02:02:02"}"#),
        ]);
        let hostgw_ann = ann(&[
            ("backend-type", "host-gw"),
            ("backend-data", r#"{"VNI":1,"VtepMAC":"0a:02:02:02:02:02"}"#),
        ]);
        let broken_ann = ann(&[("backend-type", "vxlan"), ("backend-data", "null")]);
        let state = VtepMacs {
            v4: Some(from_state),
            v6: None,
        };
        let none = VtepMacs::default();
        let cases: &[(&str, &VtepMacs, &BTreeMap<String, String>, VtepMacs)] = &[
            (
                "state wins",
                &state,
                &vxlan_ann,
                VtepMacs {
                    v4: Some(from_state),
                    v6: None,
                },
            ),
            (
                "annotation read back",
                &none,
                &vxlan_ann,
                VtepMacs {
                    v4: Some(from_annotation),
                    v6: None,
                },
            ),
            (
                "host-gw annotation ignored",
                &none,
                &hostgw_ann,
                VtepMacs {
                    v4: Some(fresh_v4),
                    v6: None,
                },
            ),
            (
                "null data ignored",
                &none,
                &broken_ann,
                VtepMacs {
                    v4: Some(fresh_v4),
                    v6: None,
                },
            ),
        ];
        for (name, state, annotations, want) in cases {
            let got = plan_vtep_macs(&[IpFamily::V4], state, annotations, P, random);
            assert_eq!(got, *want, "{name}");
        }
        let dual = plan_vtep_macs(
            &[IpFamily::V4, IpFamily::V6],
            &state,
            &BTreeMap::new(),
            P,
            random,
        );
        assert_eq!(
            dual,
            VtepMacs {
                v4: Some(from_state),
                v6: Some(fresh_v6)
            }
        );
        // What a restart reads back is what was written.
        assert_eq!(parse_vtep_state(&render_vtep_state(&dual)), dual);
        assert_eq!(
            parse_vtep_state(
                "WEFT_VTEP_MAC=garbage\nWEFT_VTEP_V6_MAC=01:00:00:00:00:01\nOTHER=x\n"
            ),
            VtepMacs::default()
        );
    }
}
