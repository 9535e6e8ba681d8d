//! weft's own CNI plugin (`"type": "weft"` in the conflist; the binary `weft-cni`, installed by the
//! agent into the node's CNI bin dir as `weft`).
//!
//! It does in one short-lived Rust process what the reference chain `ptp` → `host-local` does in
//! two Go processes, with the same result on the node and on disk:
//!
//! ```text
//!   CNI_COMMAND + env + stdin (network config)
//!     → parse (pure: [`Invocation::from_env`], [`NetConf`])
//!     → ipam   host-local's allocator and store, in process (or an exec'd IPAM plugin of another type)
//!     → wire   a routed veth: pod side <ip>/<subnet prefix>, a /32 (/128) link route to the
//!              gateway and the subnet via it; host side the gateway /32 (/128) and a host route to
//!              the pod (ptp's layout, so either plugin can delete what the other made)
//!     → stdout a CNI result in the configuration's version, or a CNI error object and exit 1
//! ```
//!
//! Invariants: an ADD that fails leaves nothing behind (no link, no reservation); DEL is idempotent
//! and never fails on what is already gone (the netns, the link, the reservation); the IPAM store is
//! host-local's, byte for byte, so a node switches between this plugin and the reference chain with
//! live pods (ADR 0304).

pub mod cmd;
pub mod ipam;
pub mod wire;

pub use ipam::{Dns, Route};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;
use std::path::PathBuf;

/// The CNI versions the plugin speaks (the configuration's `cniVersion` picks the result format).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The CNI command, from `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach it (idempotent).
    Del,
    /// Verify that the attachment is as ADD left it.
    Check,
    /// Report the supported versions.
    Version,
    /// CNI 1.1: is the plugin ready for ADDs?
    Status,
    /// CNI 1.1: release what belongs to no valid attachment.
    Gc,
}

/// A CNI error: the spec's well-known codes, or the plugin's own from 100 up.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The configuration's `cniVersion` is not one the plugin speaks (code 1).
    #[error("incompatible CNI version {0:?}; this plugin supports {SUPPORTED_VERSIONS:?}")]
    IncompatibleVersion(String),
    /// A required environment variable is missing or malformed (code 4).
    #[error("{0}")]
    InvalidEnv(String),
    /// The configuration on stdin is not valid JSON for this plugin (code 6).
    #[error("failed to decode the network configuration: {0}")]
    Decode(String),
    /// The configuration decodes but cannot be used (code 7).
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// Address management failed.
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
    /// Wiring the interfaces failed (code 100 unless the kernel's answer says otherwise).
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// The delegated IPAM plugin failed; its code and message are passed on.
    #[error("IPAM plugin {plugin:?} failed: {msg}")]
    Delegate {
        /// The IPAM plugin's type.
        plugin: String,
        /// Its error code.
        code: u32,
        /// Its message.
        msg: String,
    },
    /// STATUS: the plugin cannot serve ADDs now (code 50, CNI 1.1 "plugin not available").
    #[error("{0}")]
    NotAvailable(String),
}

impl CniError {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion(_) => 1,
            CniError::InvalidEnv(_) => 4,
            CniError::Decode(_) => 6,
            CniError::InvalidConfig(_) => 7,
            CniError::Ipam(e) => e.cni_code(),
            CniError::Wire(_) => 100,
            CniError::Delegate { code, .. } => *code,
            CniError::NotAvailable(_) => 50,
        }
    }
}

/// Everything the runtime passes in the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (required for ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_NETNS` (required for ADD and CHECK; DEL may leave it empty).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (required for ADD, DEL, CHECK).
    pub ifname: String,
    /// `CNI_ARGS`, `K=V;K=V`.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`, where delegated plugins are searched.
    pub path: Vec<PathBuf>,
}

impl Invocation {
    /// Reads the invocation through `var` (the process environment in the binary). Pure.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some(other) => {
                return Err(CniError::InvalidEnv(format!(
                    "unknown CNI_COMMAND {other:?} (ADD, DEL, CHECK, VERSION, STATUS, GC)"
                )));
            }
            None => {
                return Err(CniError::InvalidEnv(
                    "CNI_COMMAND is not set: this is a CNI plugin, run by a container runtime"
                        .into(),
                ));
            }
        };
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let required = |k: &str| {
            get(k).ok_or_else(|| CniError::InvalidEnv(format!("{k} is required for {command:?}")))
        };
        let (container_id, ifname) = if needs_attachment {
            (required("CNI_CONTAINERID")?, required("CNI_IFNAME")?)
        } else {
            (String::new(), String::new())
        };
        if needs_attachment && !valid_ifname(&ifname) {
            return Err(CniError::InvalidEnv(format!(
                "CNI_IFNAME {ifname:?} is not a valid interface name (1-15 bytes, no '/', ':' or whitespace)"
            )));
        }
        let netns = match command {
            Command::Add | Command::Check => Some(PathBuf::from(required("CNI_NETNS")?)),
            _ => get("CNI_NETNS").map(PathBuf::from),
        };
        let args = get("CNI_ARGS")
            .map(|a| {
                a.split(';')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => Ok((k.to_string(), v.to_string())),
                        None => Err(CniError::InvalidEnv(format!(
                            "CNI_ARGS entry {kv:?} is not KEY=VALUE"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let path = get("CNI_PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .filter(|d| !d.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Invocation {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The value of `key` in `CNI_ARGS`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Linux's rules for an interface name.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.contains(['/', ':'])
        && !name.chars().any(char::is_whitespace)
}

/// The network configuration on stdin (the conflist's plugin object, completed by the runtime).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The CNI version of the configuration, which the result must use.
    pub cni_version: String,
    /// The network name (host-local's store subdirectory).
    pub name: String,
    /// `weft`.
    #[serde(rename = "type")]
    pub type_: String,
    /// MTU of both veth ends; 0 or absent: the kernel's default (1500).
    #[serde(default)]
    pub mtu: u32,
    /// Address management: `{"type": "host-local", …}` is done in process, any other type is
    /// exec'd from `CNI_PATH` as a delegated IPAM plugin.
    #[serde(default)]
    pub ipam: Value,
    /// The plugin run for pods with hostPorts (`{"type": "portmap", "snat": true}`), with its
    /// configuration; the runtime passes the mappings because of `capabilities.portMappings`.
    #[serde(default)]
    pub host_ports: Option<Value>,
    /// DNS settings to return (override the IPAM plugin's).
    #[serde(default)]
    pub dns: Option<Dns>,
    /// Capability arguments from the runtime (`ips`).
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// `args.cni.ips`, the other way of asking for addresses.
    #[serde(default)]
    pub args: Option<Value>,
    /// CHECK: the result of the ADD.
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// CNI 1.1 GC: the attachments that are still valid.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// The `runtimeConfig` capability arguments the plugin reads.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    /// Requested addresses (capability `ips`), `10.244.1.7` or `10.244.1.7/24`.
    #[serde(default)]
    pub ips: Vec<String>,
    /// hostPort mappings (capability `portMappings`), handed to the `hostPorts` plugin as they are.
    #[serde(default, rename = "portMappings")]
    pub port_mappings: Vec<Value>,
}

/// One valid attachment in a GC request.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ValidAttachment {
    /// The container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

impl NetConf {
    /// Decodes stdin and checks the version and the name.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let conf: NetConf =
            serde_json::from_slice(stdin).map_err(|e| CniError::Decode(e.to_string()))?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::IncompatibleVersion(conf.cni_version));
        }
        if conf.name.is_empty() {
            return Err(CniError::InvalidConfig("\"name\" is empty".into()));
        }
        if conf.mtu != 0 && !(68..=65535).contains(&conf.mtu) {
            return Err(CniError::InvalidConfig(format!(
                "\"mtu\" {} is out of range (68-65535, or 0 for the default)",
                conf.mtu
            )));
        }
        Ok(conf)
    }

    /// The IPAM plugin type (`host-local` when absent).
    pub fn ipam_type(&self) -> &str {
        self.ipam
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("host-local")
    }

    /// Addresses the runtime asks for: `runtimeConfig.ips`, `args.cni.ips` and `CNI_ARGS` `IP=`
    /// (comma-separated), without prefix lengths.
    pub fn requested_ips(&self, inv: &Invocation) -> Result<Vec<IpAddr>, CniError> {
        let from_args = self
            .args
            .as_ref()
            .and_then(|a| a.pointer("/cni/ips"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string))
            .into_iter()
            .flatten();
        let from_env = inv
            .arg("IP")
            .map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default();
        let mut out = Vec::new();
        for raw in self
            .runtime_config
            .ips
            .iter()
            .cloned()
            .chain(from_args)
            .chain(from_env)
        {
            let addr = raw.split('/').next().unwrap_or_default().trim();
            let ip: IpAddr = addr.parse().map_err(|_| {
                CniError::InvalidConfig(format!("requested IP {raw:?} is not an IP address"))
            })?;
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        Ok(out)
    }
}

/// One interface in a result.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC address, `aa:bb:…`.
    pub mac: String,
    /// The netns path for the container's side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address in a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// The address.
    pub address: IpAddr,
    /// Its prefix length (the subnet's).
    pub prefix_len: u8,
    /// The gateway (the host side of the veth).
    pub gateway: Option<IpAddr>,
    /// Index into the interfaces of the result.
    pub interface: Option<usize>,
}

/// A CNI result, independent of the version it is printed in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CniResult {
    /// Host side first, then the container's side (as ptp reports them).
    pub interfaces: Vec<Interface>,
    /// The addresses.
    pub ips: Vec<IpConfig>,
    /// The routes in the container.
    pub routes: Vec<Route>,
    /// DNS settings.
    pub dns: Dns,
}

impl CniResult {
    /// The result as JSON in `version` (0.3.x and 0.4.0 add each address's IP `version`).
    pub fn render(&self, version: &str) -> Value {
        let legacy = version.starts_with("0.");
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = serde_json::Map::new();
                if legacy {
                    let v = if ip.address.is_ipv4() { "4" } else { "6" };
                    o.insert("version".into(), v.into());
                }
                if let Some(i) = ip.interface {
                    o.insert("interface".into(), i.into());
                }
                o.insert(
                    "address".into(),
                    format!("{}/{}", ip.address, ip.prefix_len).into(),
                );
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), gw.to_string().into());
                }
                Value::Object(o)
            })
            .collect();
        let mut out = serde_json::json!({
            "cniVersion": version,
            "interfaces": self.interfaces,
            "ips": ips,
        });
        if !self.routes.is_empty() {
            out["routes"] = serde_json::json!(self.routes);
        }
        if !self.dns.is_empty() {
            out["dns"] = serde_json::json!(self.dns);
        }
        out
    }

    /// Reads a result of any supported version (a delegated IPAM plugin's, or a `prevResult`).
    pub fn parse(v: &Value) -> Result<CniResult, CniError> {
        let bad = |what: &str| CniError::Decode(format!("IPAM result: {what}"));
        let mut out = CniResult::default();
        for ip in v["ips"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let cidr = ip["address"]
                .as_str()
                .ok_or_else(|| bad("an ip without address"))?;
            let (addr, len) = cidr
                .split_once('/')
                .ok_or_else(|| bad(&format!("address {cidr:?} has no prefix length")))?;
            out.ips.push(IpConfig {
                address: addr
                    .parse()
                    .map_err(|_| bad(&format!("address {cidr:?}")))?,
                prefix_len: len.parse().map_err(|_| bad(&format!("address {cidr:?}")))?,
                gateway: ip["gateway"].as_str().and_then(|g| g.parse().ok()),
                interface: None,
            });
        }
        if let Some(routes) = v.get("routes").filter(|r| !r.is_null()) {
            out.routes =
                serde_json::from_value(routes.clone()).map_err(|e| bad(&format!("routes: {e}")))?;
        }
        if let Some(dns) = v.get("dns").filter(|d| !d.is_null()) {
            out.dns = serde_json::from_value(dns.clone()).map_err(|e| bad(&format!("dns: {e}")))?;
        }
        Ok(out)
    }
}

/// The CNI error object printed on stdout.
pub fn render_error(version: &str, e: &CniError) -> Value {
    let mut msg = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cur = s.source();
    }
    serde_json::json!({ "cniVersion": version, "code": e.code(), "msg": msg })
}

/// The VERSION answer.
pub fn render_version(version: &str) -> Value {
    serde_json::json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn invocation_from_env() {
        let inv = Invocation::from_env(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;IP=10.0.0.5",
            ),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ]))
        .expect("valid");
        assert_eq!(inv.command, Command::Add);
        assert_eq!(
            inv.netns.as_deref(),
            Some(std::path::Path::new("/run/netns/x"))
        );
        assert_eq!(inv.arg("K8S_POD_NAMESPACE"), Some("x"));
        assert_eq!(inv.path.len(), 2);

        // DEL without a netns is fine (the runtime may have lost it); VERSION needs nothing else.
        let del = Invocation::from_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .expect("del");
        assert_eq!(del.netns, None);
        assert!(Invocation::from_env(env(&[("CNI_COMMAND", "VERSION")])).is_ok());
    }

    #[test]
    fn invocation_refusals_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "CNI_COMMAND is not set"),
            (&[("CNI_COMMAND", "UP")], "unknown CNI_COMMAND \"UP\""),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_NETNS", "/x"),
                ],
                "CNI_CONTAINERID is required for Add",
            ),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "a"),
                    ("CNI_IFNAME", "eth0"),
                ],
                "CNI_NETNS is required for Add",
            ),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "a"),
                    ("CNI_NETNS", "/x"),
                    ("CNI_IFNAME", "a-name-far-too-long"),
                ],
                "not a valid interface name",
            ),
            (
                &[
                    ("CNI_COMMAND", "DEL"),
                    ("CNI_CONTAINERID", "a"),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_ARGS", "novalue"),
                ],
                "CNI_ARGS entry \"novalue\"",
            ),
        ];
        for (pairs, want) in cases {
            let e = Invocation::from_env(env(pairs)).expect_err(want);
            assert_eq!(e.code(), 4, "{e}");
            assert!(e.to_string().contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn netconf_parse_and_requested_ips() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"weft","type":"weft","mtu":1450,
                "ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.1.0/24"}]]},
                "runtimeConfig":{"ips":["10.244.1.9/24"]},
                "args":{"cni":{"ips":["fd00::9"]}}}"#,
        )
        .expect("parse");
        assert_eq!(conf.ipam_type(), "host-local");
        let inv = Invocation::from_env(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IP=10.244.1.9,10.244.1.10"),
        ]))
        .expect("inv");
        let ips = conf.requested_ips(&inv).expect("ips");
        let want: Vec<IpAddr> = ["10.244.1.9", "fd00::9", "10.244.1.10"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        assert_eq!(ips, want);
    }

    #[test]
    fn netconf_refusals() {
        let cases: &[(&str, u32, &str)] = &[
            ("{", 6, "failed to decode"),
            (
                r#"{"cniVersion":"0.2.0","name":"n","type":"weft"}"#,
                1,
                "incompatible CNI version \"0.2.0\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"","type":"weft"}"#,
                7,
                "\"name\" is empty",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"weft","mtu":20}"#,
                7,
                "\"mtu\" 20 is out of range",
            ),
        ];
        for (text, code, want) in cases {
            let e = NetConf::parse(text.as_bytes()).expect_err(want);
            assert_eq!(e.code(), *code, "{e}");
            assert!(e.to_string().contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn result_renders_per_version_and_reads_back() {
        let r = CniResult {
            interfaces: vec![
                Interface {
                    name: "veth1234abcd".into(),
                    mac: "aa:bb:cc:dd:ee:ff".into(),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    sandbox: Some("/run/netns/x".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.1.2".parse().expect("ip"),
                prefix_len: 24,
                gateway: Some("10.244.1.1".parse().expect("ip")),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                ..Route::default()
            }],
            dns: Dns::default(),
        };
        let v1 = r.render("1.0.0");
        assert_eq!(
            v1,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "veth1234abcd", "mac": "aa:bb:cc:dd:ee:ff"},
                    {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/x"}
                ],
                "ips": [{"interface": 1, "address": "10.244.1.2/24", "gateway": "10.244.1.1"}],
                "routes": [{"dst": "0.0.0.0/0"}]
            })
        );
        assert_eq!(r.render("0.4.0")["ips"][0]["version"], "4");
        let back = CniResult::parse(&v1).expect("parse");
        assert_eq!(back.ips[0].address, r.ips[0].address);
        assert_eq!(back.ips[0].gateway, r.ips[0].gateway);
        assert_eq!(back.routes, r.routes);
    }

    #[test]
    fn error_object_carries_code_and_causes() {
        let e = CniError::InvalidConfig("\"mtu\" 20 is out of range".into());
        assert_eq!(
            render_error("1.0.0", &e),
            serde_json::json!({"cniVersion": "1.0.0", "code": 7,
                "msg": "invalid network configuration: \"mtu\" 20 is out of range"})
        );
        assert_eq!(
            render_version("1.0.0")["supportedVersions"],
            serde_json::json!(SUPPORTED_VERSIONS)
        );
    }
}
