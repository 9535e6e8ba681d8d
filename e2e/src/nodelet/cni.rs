//! Executing a CNI network configuration list exactly as a container runtime does (libcni's
//! semantics): the first configuration file in the conf dir by name wins; ADD runs the plugins in
//! order, each receiving the previous result as `prevResult`; DEL runs them in reverse with the cached
//! result; `runtimeConfig` carries only the capabilities a plugin declares; a plugin's error object
//! becomes the error message.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where plugins are searched, in order.
pub const CNI_PATH: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];

/// A parsed network configuration list.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
    pub source: PathBuf,
}

/// What the runtime knows about the sandbox.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `K8S_POD_NAMESPACE` etc., passed in `CNI_ARGS`.
    pub args: Vec<(String, String)>,
    /// Capability arguments (e.g. `portMappings`), passed as `runtimeConfig` to plugins that declare
    /// the capability.
    pub capabilities: Map<String, Value>,
}

/// The first valid configuration in `dir` (sorted by file name), as libcni's ConfFiles + loader do.
/// `Ok(None)` when there is none yet.
pub fn load_network(dir: &Path) -> Result<Option<NetworkList>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    files.sort();
    let mut last_err = None;
    for f in files {
        match parse_file(&f) {
            Ok(n) => return Ok(Some(n)),
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// Parses one `.conflist` (or a single-plugin `.conf`).
pub fn parse_file(path: &Path) -> Result<NetworkList> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("invalid CNI configuration {}", path.display()))?;
    let name = v["name"]
        .as_str()
        .with_context(|| format!("CNI configuration {} has no \"name\"", path.display()))?
        .to_string();
    let cni_version = v["cniVersion"].as_str().unwrap_or("0.4.0").to_string();
    let plugins = if let Some(list) = v["plugins"].as_array() {
        if list.is_empty() {
            bail!("CNI configuration list {} has no plugins", path.display());
        }
        list.clone()
    } else if v.get("type").is_some() {
        vec![v.clone()]
    } else {
        bail!(
            "CNI configuration {} has neither \"plugins\" nor \"type\"",
            path.display()
        );
    };
    for p in &plugins {
        if p["type"].as_str().is_none() {
            bail!("a plugin in {} has no \"type\"", path.display());
        }
    }
    Ok(NetworkList {
        name,
        cni_version,
        plugins,
        source: path.to_path_buf(),
    })
}

fn find_plugin(kind: &str) -> Result<PathBuf> {
    CNI_PATH
        .iter()
        .map(|d| Path::new(d).join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("failed to find plugin {kind:?} in path {CNI_PATH:?}"))
}

fn plugin_stdin(list: &NetworkList, plugin: &Value, rt: &Runtime, prev: Option<&Value>) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("name".into(), json!(list.name));
    conf.insert("cniVersion".into(), json!(list.cni_version));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let mut runtime_config = Map::new();
    if let Some(caps) = plugin["capabilities"].as_object() {
        for (k, enabled) in caps {
            if enabled.as_bool() == Some(true)
                && let Some(v) = rt.capabilities.get(k)
            {
                runtime_config.insert(k.clone(), v.clone());
            }
        }
    }
    if !runtime_config.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    Value::Object(conf)
}

fn exec(
    command: &str,
    list: &NetworkList,
    plugin: &Value,
    rt: &Runtime,
    prev: Option<&Value>,
) -> Result<Option<Value>> {
    let kind = plugin["type"].as_str().unwrap_or_default();
    let bin = find_plugin(kind)?;
    let stdin = serde_json::to_vec(&plugin_stdin(list, plugin, rt, prev))?;
    let args = std::iter::once("IgnoreUnknown=1".to_string())
        .chain(rt.args.iter().map(|(k, v)| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(";");
    let mut child = Command::new(&bin)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &rt.container_id)
        .env("CNI_NETNS", &rt.netns)
        .env("CNI_IFNAME", &rt.ifname)
        .env("CNI_ARGS", args)
        .env("CNI_PATH", CNI_PATH.join(":"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to execute plugin {}", bin.display()))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(&stdin)?;
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let msg = match serde_json::from_str::<Value>(&stdout) {
            Ok(e) => {
                let m = e["msg"].as_str().unwrap_or("unknown error");
                match e["details"].as_str().filter(|d| !d.is_empty()) {
                    Some(d) => format!("{m}: {d}"),
                    None => m.to_string(),
                }
            }
            Err(_) => format!(
                "{} {}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        };
        bail!(
            "plugin type={kind:?} failed ({}): {msg}",
            command.to_lowercase()
        );
    }
    if stdout.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_str(&stdout).with_context(|| {
        format!("plugin {kind:?} printed an invalid result")
    })?))
}

/// Runs ADD through the whole list; returns the final result.
pub fn add(list: &NetworkList, rt: &Runtime) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for p in &list.plugins {
        if let Some(r) = exec("ADD", list, p, rt, prev.as_ref())? {
            prev = Some(r);
        }
    }
    prev.ok_or_else(|| anyhow!("network {:?} produced no result", list.name))
}

/// Runs DEL through the list in reverse, continuing past failures; returns every error.
pub fn del(list: &NetworkList, rt: &Runtime, prev: Option<&Value>) -> Vec<anyhow::Error> {
    list.plugins
        .iter()
        .rev()
        .filter_map(|p| exec("DEL", list, p, rt, prev).err())
        .collect()
}

/// The IP addresses (without prefix length) of a CNI result, IPv4 first.
pub fn result_ips(result: &Value) -> Vec<String> {
    let mut ips: Vec<String> = result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["address"].as_str())
                .filter_map(|a| a.split('/').next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    ips.sort_by_key(|ip| ip.contains(':'));
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> Runtime {
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        Runtime {
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: vec![],
            capabilities: caps,
        }
    }

    #[test]
    fn stdin_carries_name_version_prev_and_only_declared_capabilities() {
        let list = NetworkList {
            name: "net".into(),
            cni_version: "1.0.0".into(),
            plugins: vec![
                json!({"type": "bridge"}),
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            ],
            source: PathBuf::new(),
        };
        let a = plugin_stdin(&list, &list.plugins[0], &rt(), None);
        assert_eq!(a["name"], "net");
        assert_eq!(a["cniVersion"], "1.0.0");
        assert!(a.get("runtimeConfig").is_none());
        assert!(a.get("prevResult").is_none());
        let prev = json!({"ips": [{"address": "10.0.0.2/24"}]});
        let b = plugin_stdin(&list, &list.plugins[1], &rt(), Some(&prev));
        assert_eq!(b["prevResult"], prev);
        assert_eq!(b["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
    }

    #[test]
    fn result_ips_strip_prefix_and_put_ipv4_first() {
        let r = json!({"ips": [{"address": "fd00::2/64"}, {"address": "10.244.1.2/24"}]});
        assert_eq!(result_ips(&r), vec!["10.244.1.2", "fd00::2"]);
    }

    #[test]
    fn first_file_by_name_wins_and_single_conf_is_wrapped() {
        let d = std::env::temp_dir().join(format!("weft-cni-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("20-b.conflist"),
            r#"{"name":"b","cniVersion":"1.0.0","plugins":[{"type":"ptp"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("10-a.conf"),
            r#"{"name":"a","cniVersion":"0.4.0","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(d.join("README"), "not a config").unwrap();
        let n = load_network(&d).unwrap().unwrap();
        assert_eq!(n.name, "a");
        assert_eq!(n.plugins.len(), 1);
        std::fs::write(
            d.join("05-bad.conflist"),
            r#"{"cniVersion":"1.0.0","plugins":[]}"#,
        )
        .unwrap();
        assert_eq!(
            load_network(&d).unwrap().unwrap().name,
            "a",
            "an invalid file is skipped"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
