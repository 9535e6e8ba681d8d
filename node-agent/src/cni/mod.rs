//! The node's CNI configuration: one conflist, rendered as a pure function of the lease, the MTU
//! and the chained plugins.
//!
//! Pods are wired by weft's own plugin ([`plugin`], installed by the agent as `weft` in the CNI bin
//! dir, [`install`]), which does what the reference chain ptp → host-local does, in one process;
//! the chained plugins are the reference ones (Debian's containernetworking-plugins in
//! `/usr/lib/cni`; runtimes search `/opt/cni/bin` first):
//!
//! ```text
//!   weft (routed veth, like Canal; host side holds the gateway <subnet>.1/32, pod gets a /32 route)
//!    ├─ ipam host-local: one range set per family over the node's podCIDRs, default routes
//!    │                   (host-local's section and on-disk store, done by weft in process)
//!    └─ hostPorts portmap (capabilities.portMappings, snat), run by weft only for pods with
//!                   hostPorts, when cni.chainedPlugins lists portmap
//!   bandwidth (capabilities.bandwidth)               when cni.chainedPlugins lists it
//!
//! With `cni.plugin: ptp`, portmap is chained after ptp instead, as the reference setup does.
//! ```
//!
//! `cni.plugin: ptp` renders the reference chain instead; the two conflists differ only in the
//! plugin `type` (`weft` for `ptp`), so either plugin takes over the other's pods and address
//! store (ADR 0304).
//!
//! Invariant: the output is deterministic (typed structs serialise in declaration order, plugins
//! in a fixed order whatever the order of `chainedPlugins`), so an unchanged lease rewrites nothing
//! and golden files pin the exact bytes. No per-pod masquerading (ptp's `ipMasq`): masquerade
//! belongs to weft's nftables table.

pub mod install;
pub mod plugin;

use serde::Serialize;
use weft_crds::fabric::{ChainedPlugin, CniPlugin};

use crate::Error;
use crate::subnet::Lease;

/// CNI spec version of the conflist.
pub const CNI_VERSION: &str = "1.0.0";
/// Network name in the conflist (also the host-local data directory's subdirectory).
pub const NETWORK_NAME: &str = "weft";
/// Where host-local keeps its allocations (the reference default, made explicit).
pub const HOST_LOCAL_DATA_DIR: &str = "/var/lib/cni/networks";
/// The plugins the conflist can reference.
pub const PLUGINS: &[&str] = &[
    install::PLUGIN_TYPE,
    "ptp",
    "host-local",
    "portmap",
    "bandwidth",
];
/// Directories the runtime searches for plugins besides `cni.binDir`.
pub const FALLBACK_BIN_DIRS: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];

/// What the conflist is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflistInput<'a> {
    /// The node's subnets.
    pub lease: &'a Lease,
    /// The pod MTU.
    pub mtu: u32,
    /// The plugin that wires pods.
    pub plugin: CniPlugin,
    /// Plugins chained after it.
    pub chained: &'a [ChainedPlugin],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Conflist {
    cni_version: &'static str,
    name: &'static str,
    plugins: Vec<Plugin>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Plugin {
    Wiring(Wiring),
    Portmap(Portmap),
    Bandwidth(Bandwidth),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wiring {
    #[serde(rename = "type")]
    type_: &'static str,
    /// weft's plugin only, with portmap configured: hostPorts come to it, and it runs portmap for
    /// the pods that have some.
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<PortmapCapabilities>,
    mtu: u32,
    ipam: HostLocal,
    /// The plugin weft's plugin runs for pods with hostPorts (portmap), and its configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    host_ports: Option<Portmap>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HostLocal {
    #[serde(rename = "type")]
    type_: &'static str,
    ranges: Vec<Vec<Range>>,
    routes: Vec<Route>,
    data_dir: &'static str,
}

#[derive(Serialize)]
struct Range {
    subnet: String,
}

#[derive(Serialize)]
struct Route {
    dst: &'static str,
}

#[derive(Serialize)]
struct Portmap {
    #[serde(rename = "type")]
    type_: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<PortmapCapabilities>,
    snat: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PortmapCapabilities {
    port_mappings: bool,
}

#[derive(Serialize)]
struct Bandwidth {
    #[serde(rename = "type")]
    type_: &'static str,
    capabilities: BandwidthCapabilities,
}

#[derive(Serialize)]
struct BandwidthCapabilities {
    bandwidth: bool,
}

/// The `type` of `plugin` in the conflist.
pub fn plugin_type(plugin: CniPlugin) -> &'static str {
    match plugin {
        CniPlugin::Weft => install::PLUGIN_TYPE,
        CniPlugin::Ptp => "ptp",
    }
}

/// The plugin types the conflist needs (to check that the node has them).
pub fn plan_plugin_types(plugin: CniPlugin, chained: &[ChainedPlugin]) -> Vec<&'static str> {
    let mut out = match plugin {
        CniPlugin::Weft => vec![install::PLUGIN_TYPE],
        CniPlugin::Ptp => vec!["ptp", "host-local"],
    };
    if chained.contains(&ChainedPlugin::Portmap) {
        out.push("portmap");
    }
    if chained.contains(&ChainedPlugin::Bandwidth) {
        out.push("bandwidth");
    }
    out
}

/// Renders the conflist (pretty JSON with a trailing newline).
pub fn render_conflist(input: &ConflistInput<'_>) -> Result<String, Error> {
    let mut ranges = Vec::new();
    let mut routes = Vec::new();
    if let Some(v4) = input.lease.v4 {
        ranges.push(vec![Range {
            subnet: v4.to_string(),
        }]);
        routes.push(Route { dst: "0.0.0.0/0" });
    }
    if let Some(v6) = input.lease.v6 {
        ranges.push(vec![Range {
            subnet: v6.to_string(),
        }]);
        routes.push(Route { dst: "::/0" });
    }
    let portmap = input.chained.contains(&ChainedPlugin::Portmap);
    // weft's plugin runs portmap itself, only for pods with hostPorts (portmap does nothing for
    // the others, but it is a process per ADD and DEL); ptp needs it chained.
    let delegated = portmap && input.plugin == CniPlugin::Weft;
    let mut plugins = vec![Plugin::Wiring(Wiring {
        type_: plugin_type(input.plugin),
        capabilities: delegated.then_some(PortmapCapabilities {
            port_mappings: true,
        }),
        mtu: input.mtu,
        ipam: HostLocal {
            type_: "host-local",
            ranges,
            routes,
            data_dir: HOST_LOCAL_DATA_DIR,
        },
        host_ports: delegated.then_some(Portmap {
            type_: "portmap",
            capabilities: None,
            snat: true,
        }),
    })];
    if portmap && !delegated {
        plugins.push(Plugin::Portmap(Portmap {
            type_: "portmap",
            capabilities: Some(PortmapCapabilities {
                port_mappings: true,
            }),
            snat: true,
        }));
    }
    if input.chained.contains(&ChainedPlugin::Bandwidth) {
        plugins.push(Plugin::Bandwidth(Bandwidth {
            type_: "bandwidth",
            capabilities: BandwidthCapabilities { bandwidth: true },
        }));
    }
    let conflist = Conflist {
        cni_version: CNI_VERSION,
        name: NETWORK_NAME,
        plugins,
    };
    let mut out = serde_json::to_string_pretty(&conflist).map_err(|source| Error::RenderJson {
        what: "CNI conflist",
        source,
    })?;
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_plugin_order_is_fixed() {
        let lease = Lease {
            v4: Some("10.244.1.0/24".parse().expect("cidr")),
            v6: None,
        };
        let render = |chained: &[ChainedPlugin]| {
            render_conflist(&ConflistInput {
                lease: &lease,
                mtu: 1450,
                plugin: CniPlugin::Weft,
                chained,
            })
            .expect("render")
        };
        let a = render(&[ChainedPlugin::Bandwidth, ChainedPlugin::Portmap]);
        let b = render(&[ChainedPlugin::Portmap, ChainedPlugin::Bandwidth]);
        assert_eq!(a, b);
        let list: serde_json::Value = serde_json::from_str(&a).expect("json");
        let types: Vec<&str> = list["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .map(|p| p["type"].as_str().unwrap_or_default())
            .collect();
        // portmap is run by weft's plugin for pods with hostPorts, not chained for every pod.
        assert_eq!(types, ["weft", "bandwidth"]);
        assert_eq!(list["plugins"][0]["capabilities"]["portMappings"], true);
        assert_eq!(
            list["plugins"][0]["hostPorts"],
            serde_json::json!({"type": "portmap", "snat": true})
        );
        let none = render(&[]);
        assert!(
            !none.contains("portmap")
                && !none.contains("bandwidth")
                && !none.contains("capabilities"),
            "{none}"
        );
        assert_eq!(
            plan_plugin_types(CniPlugin::Weft, &[ChainedPlugin::Bandwidth]),
            ["weft", "bandwidth"]
        );
        assert_eq!(
            plan_plugin_types(CniPlugin::Ptp, &[]),
            ["ptp", "host-local"]
        );
        let reference = render_conflist(&ConflistInput {
            lease: &lease,
            mtu: 1450,
            plugin: CniPlugin::Ptp,
            chained: &[],
        })
        .expect("render");
        // The same plugin object but for its type: the two wire pods alike and share the store.
        assert_eq!(reference.replacen("\"ptp\"", "\"weft\"", 1), none);
        // ptp cannot run portmap itself: it is chained.
        let reference_portmap = render_conflist(&ConflistInput {
            lease: &lease,
            mtu: 1450,
            plugin: CniPlugin::Ptp,
            chained: &[ChainedPlugin::Portmap],
        })
        .expect("render");
        let list: serde_json::Value = serde_json::from_str(&reference_portmap).expect("json");
        assert_eq!(list["plugins"][1]["type"], "portmap");
        assert_eq!(list["plugins"][1]["capabilities"]["portMappings"], true);
        assert!(list["plugins"][0].get("hostPorts").is_none());
    }
}
