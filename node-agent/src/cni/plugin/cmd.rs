//! The plugin's commands: ADD, DEL, CHECK, VERSION, STATUS and GC, each from an [`Invocation`]
//! and the configuration on stdin to the JSON the runtime reads.
//!
//! Invariant: ADD releases what it reserved when the wiring (or the hostPorts plugin) fails; DEL
//! undoes ADD in reverse (hostPorts, the interface, then the reservation), so an address is never
//! handed out again while a pod still holds it.

use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use super::ipam::{self, IpamConf, IpamPlan, Store};
use super::wire::{self, Attachment};
use super::{
    CniError, CniResult, Command, Invocation, IpConfig, NetConf, render_error, render_version,
};

/// The binary's whole life: reads the environment and stdin, runs the command, prints the result
/// or the error object; returns the exit code.
pub fn main() -> i32 {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = stdin_version(&stdin);
    let out = match read {
        Err(e) => Err(CniError::Decode(format!("failed to read stdin: {e}"))),
        Ok(_) => Invocation::from_env(|k| std::env::var(k).ok()).and_then(|inv| run(&inv, &stdin)),
    };
    let (code, text) = match out {
        Ok(None) => (0, None),
        Ok(Some(v)) => (0, Some(v)),
        Err(e) => (1, Some(render_error(&version, &e))),
    };
    if let Some(v) = text {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{v}");
        let _ = stdout.flush();
    }
    code
}

/// The `cniVersion` of stdin, for the error object; the newest supported when unreadable.
fn stdin_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .unwrap_or_else(|| "1.1.0".to_string())
}

/// Runs one command; `Ok(None)` prints nothing (DEL, CHECK, STATUS and GC on success).
pub fn run(inv: &Invocation, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if inv.command == Command::Version {
        return Ok(Some(render_version(&stdin_version(stdin))));
    }
    let conf = NetConf::parse(stdin)?;
    match inv.command {
        Command::Add => add(inv, &conf, stdin).map(Some),
        Command::Del => del(inv, &conf, stdin).map(|()| None),
        Command::Check => check(inv, &conf, stdin).map(|()| None),
        Command::Status => status(&conf).map(|()| None),
        Command::Gc => gc(inv, &conf, stdin).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}

/// Address management: host-local's, in process, or another IPAM plugin, exec'd.
enum Ipam {
    HostLocal {
        plan: IpamPlan,
        resolv_conf: Option<String>,
        store: Store,
    },
    Delegate(String),
}

impl Ipam {
    fn of(conf: &NetConf) -> Result<Ipam, CniError> {
        if conf.ipam_type() != "host-local" {
            return Ok(Ipam::Delegate(conf.ipam_type().to_string()));
        }
        let ipam_conf: IpamConf = serde_json::from_value(conf.ipam.clone())
            .map_err(|e| CniError::InvalidConfig(format!("ipam: {e}")))?;
        let plan = ipam::plan_ipam(&ipam_conf)?;
        let store = Store::open(&plan.data_dir, &conf.name)?;
        Ok(Ipam::HostLocal {
            plan,
            resolv_conf: ipam_conf.resolv_conf.filter(|p| !p.is_empty()),
            store,
        })
    }

    fn add(&self, inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<CniResult, CniError> {
        match self {
            Ipam::HostLocal {
                plan,
                resolv_conf,
                store,
            } => {
                let requested = conf.requested_ips(inv)?;
                let dns = match resolv_conf {
                    Some(path) => {
                        ipam::parse_resolv_conf(&std::fs::read_to_string(path).map_err(|e| {
                            CniError::InvalidConfig(format!("ipam.resolvConf {path}: {e}"))
                        })?)
                    }
                    None => ipam::Dns::default(),
                };
                let allocs = store.lock()?.allocate(
                    &plan.range_sets,
                    &inv.container_id,
                    &inv.ifname,
                    &requested,
                )?;
                Ok(CniResult {
                    ips: allocs
                        .iter()
                        .map(|a| IpConfig {
                            address: a.address,
                            prefix_len: a.prefix_len,
                            gateway: Some(a.gateway),
                            interface: None,
                        })
                        .collect(),
                    routes: plan.routes.clone(),
                    dns,
                    ..CniResult::default()
                })
            }
            Ipam::Delegate(plugin) => {
                let out =
                    delegate(inv, plugin, "ADD", stdin)?.ok_or_else(|| CniError::Delegate {
                        plugin: plugin.clone(),
                        code: 100,
                        msg: "returned no result".into(),
                    })?;
                CniResult::parse(&out)
            }
        }
    }

    fn release(&self, inv: &Invocation, stdin: &[u8]) -> Result<(), CniError> {
        match self {
            Ipam::HostLocal { store, .. } => {
                store.lock()?.release(&inv.container_id, &inv.ifname)?;
                Ok(())
            }
            Ipam::Delegate(plugin) => delegate(inv, plugin, "DEL", stdin).map(drop),
        }
    }
}

fn add(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<Value, CniError> {
    let netns = inv.netns.clone().unwrap_or_default();
    let ipam = Ipam::of(conf)?;
    let mut result = ipam.add(inv, conf, stdin)?;
    if result.ips.is_empty() {
        let _ = ipam.release(inv, stdin);
        return Err(CniError::InvalidConfig(
            "the IPAM configuration gave no address (ipam.ranges is empty?)".into(),
        ));
    }
    if let Some(gap) = result.ips.iter().find(|ip| ip.gateway.is_none()) {
        let _ = ipam.release(inv, stdin);
        return Err(CniError::InvalidConfig(format!(
            "the IPAM result gives {} no gateway; a routed veth needs one",
            gap.address
        )));
    }
    let attachment = Attachment {
        netns: &netns,
        ifname: &inv.ifname,
        host_ifname: wire::host_veth_name(&inv.container_id, &inv.ifname),
        mtu: conf.mtu,
        ips: &result.ips,
        routes: &result.routes,
    };
    let (host, pod) = match wire::add(&attachment) {
        Ok(ends) => ends,
        Err(e) => {
            let _ = ipam.release(inv, stdin);
            return Err(e.into());
        }
    };
    result.interfaces = vec![host, pod];
    for ip in &mut result.ips {
        ip.interface = Some(1);
    }
    if let Some(dns) = conf.dns.clone().filter(|d| *d != super::Dns::default()) {
        result.dns = dns;
    }
    let rendered = result.render(&conf.cni_version);
    if let Err(e) = host_ports(inv, conf, "ADD", Some(&rendered)) {
        // As a runtime would after a failed chained plugin: DEL everything, then report.
        let _ = host_ports(inv, conf, "DEL", None);
        let _ = wire::del(&netns, &inv.ifname);
        let _ = ipam.release(inv, stdin);
        return Err(e);
    }
    Ok(rendered)
}

fn del(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    // The reverse of ADD: hostPorts, the interface, then the address.
    host_ports(inv, conf, "DEL", None)?;
    if let Some(netns) = &inv.netns {
        wire::del(netns, &inv.ifname)?;
    }
    Ipam::of(conf)?.release(inv, stdin)
}

/// Runs the `hostPorts` plugin (portmap) for a pod with hostPort mappings, as a runtime runs a
/// chained plugin: its own configuration with the network's name and version, the mappings as
/// `runtimeConfig`, and the result so far as `prevResult`. Pods without mappings skip it (portmap
/// does nothing for them either).
fn host_ports(
    inv: &Invocation,
    conf: &NetConf,
    command: &str,
    prev: Option<&Value>,
) -> Result<(), CniError> {
    if conf.runtime_config.port_mappings.is_empty() {
        return Ok(());
    }
    let plugin_conf = conf
        .host_ports
        .as_ref()
        .and_then(Value::as_object)
        .ok_or_else(|| {
            CniError::InvalidConfig(
                "the runtime passed hostPort mappings but \"hostPorts\" names no plugin \
                 (the fabric's cni.chainedPlugins lacks portmap)"
                    .into(),
            )
        })?;
    let plugin = plugin_conf
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut stdin = plugin_conf.clone();
    stdin.insert("name".into(), conf.name.clone().into());
    stdin.insert("cniVersion".into(), conf.cni_version.clone().into());
    stdin.insert(
        "runtimeConfig".into(),
        serde_json::json!({ "portMappings": conf.runtime_config.port_mappings }),
    );
    if let Some(prev) = prev {
        stdin.insert("prevResult".into(), prev.clone());
    }
    let bytes = serde_json::to_vec(&Value::Object(stdin))
        .map_err(|e| CniError::InvalidConfig(format!("hostPorts: {e}")))?;
    delegate(inv, &plugin, command, &bytes).map(drop)
}

fn check(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::InvalidConfig("CHECK needs prevResult (the result of the ADD)".into())
    })?;
    let prev_result = CniResult::parse(prev)?;
    let host_ifname = prev["interfaces"]
        .as_array()
        .and_then(|ifs| {
            ifs.iter()
                .find(|i| i.get("sandbox").is_none_or(Value::is_null))
                .and_then(|i| i["name"].as_str())
        })
        .ok_or_else(|| CniError::InvalidConfig("prevResult names no host-side interface".into()))?
        .to_string();
    match Ipam::of(conf)? {
        Ipam::HostLocal { store, .. } => {
            let held = store.lock()?.get(&inv.container_id, &inv.ifname)?;
            if let Some(lost) = prev_result
                .ips
                .iter()
                .find(|ip| !held.contains(&ip.address))
            {
                return Err(wire::WireError::Mismatch(format!(
                    "{} is not reserved for {} {} in the IPAM store",
                    lost.address, inv.container_id, inv.ifname
                ))
                .into());
            }
        }
        Ipam::Delegate(plugin) => {
            delegate(inv, &plugin, "CHECK", stdin)?;
        }
    }
    let netns = inv.netns.clone().unwrap_or_default();
    wire::check(&netns, &inv.ifname, &host_ifname, &prev_result.ips)?;
    host_ports(inv, conf, "CHECK", Some(prev))
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    let not_available = |e: CniError| CniError::NotAvailable(e.to_string());
    match Ipam::of(conf).map_err(not_available)? {
        // Ipam::of checked the configuration and opened (made) the store.
        Ipam::HostLocal { .. } => Ok(()),
        Ipam::Delegate(_) => Ok(()),
    }
}

fn gc(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let valid: Vec<(String, String)> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    match Ipam::of(conf)? {
        Ipam::HostLocal { store, .. } => {
            store.lock()?.gc(&valid)?;
            Ok(())
        }
        Ipam::Delegate(plugin) => delegate(inv, &plugin, "GC", stdin).map(drop),
    }
}

/// Runs the IPAM plugin `plugin` from `CNI_PATH` with the same environment and stdin, as
/// libcni's `ipam.ExecAdd` does; its error object becomes ours.
fn delegate(
    inv: &Invocation,
    plugin: &str,
    command: &str,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    let fail = |code: u32, msg: String| CniError::Delegate {
        plugin: plugin.to_string(),
        code,
        msg,
    };
    if plugin.is_empty() || plugin.contains('/') {
        return Err(CniError::InvalidConfig(format!(
            "ipam.type {plugin:?} is not a plugin name"
        )));
    }
    let path: PathBuf = inv
        .path
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            fail(
                100,
                format!(
                    "not found in CNI_PATH {:?}; install it or use ipam.type host-local",
                    inv.path
                ),
            )
        })?;
    let mut child = Process::new(&path)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(100, format!("failed to run {}: {e}", path.display())))?;
    if let Some(mut w) = child.stdin.take() {
        w.write_all(stdin)
            .map_err(|e| fail(100, format!("failed to write its stdin: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(100, format!("failed to wait for it: {e}")))?;
    let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        let (code, msg) = parsed
            .as_ref()
            .map(|v| {
                (
                    v["code"]
                        .as_u64()
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(100),
                    v["msg"].as_str().unwrap_or_default().to_string(),
                )
            })
            .unwrap_or((100, String::from_utf8_lossy(&out.stdout).trim().to_string()));
        return Err(fail(code, msg));
    }
    Ok(parsed)
}
