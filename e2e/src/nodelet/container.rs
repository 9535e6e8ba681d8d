//! What a container needs from the API before it starts, the way a kubelet prepares it from the pod
//! spec: `$(VAR)` expansion, env with the downward API and ConfigMap/Secret references, volumes
//! (hostPath, emptyDir, configMap, secret, projected, downwardAPI) as directories to bind, and the
//! httpGet/tcpSocket probes. Starting the process is `launch`'s.

use super::NodeletConfig;
use super::rootfs::Bind;
use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, Pod, Probe, Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Expands `$(VAR)` references as the kubelet does; `$$` escapes a dollar; unknown references stay.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if env.contains_key(&inner[..end]) => {
                    out.push_str(&env[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a downward-API field path.
pub fn field_ref(pod: &Pod, path: &str) -> Result<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let join_ips = |ips: Option<Vec<String>>| ips.unwrap_or_default().join(",");
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.podIPs" => join_ips(
            status
                .and_then(|s| s.pod_ips.clone())
                .map(|v| v.into_iter().map(|i| i.ip).collect()),
        ),
        "status.hostIPs" => join_ips(
            status
                .and_then(|s| s.host_ips.clone())
                .map(|v| v.into_iter().map(|i| i.ip).collect()),
        ),
        p => {
            let lookup = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
                p.strip_prefix(prefix)
                    .and_then(|k| k.strip_suffix("']"))
                    .map(|k| {
                        map.as_ref()
                            .and_then(|m| m.get(k).cloned())
                            .unwrap_or_default()
                    })
            };
            lookup("metadata.labels['", &m.labels)
                .or_else(|| lookup("metadata.annotations['", &m.annotations))
                .ok_or_else(|| anyhow!("unsupported downward-API field {p:?}"))?
        }
    })
}

/// The process environment of a container: the defaults a kubelet injects, then the container's env.
pub async fn build_env(
    client: &kube::Client,
    cfg: &NodeletConfig,
    pod: &Pod,
    c: &Container,
) -> Result<BTreeMap<String, String>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    env.insert("HOSTNAME".into(), cfg.node.clone());
    env.insert("KUBERNETES_SERVICE_HOST".into(), cfg.api_host.clone());
    env.insert("KUBERNETES_SERVICE_PORT".into(), cfg.api_port.to_string());
    env.insert(
        "KUBERNETES_SERVICE_PORT_HTTPS".into(),
        cfg.api_port.to_string(),
    );
    env.insert(
        "KUBERNETES_PORT".into(),
        format!("tcp://{}:{}", cfg.api_host, cfg.api_port),
    );
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let data = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get(&r.name)
                .await;
            match data {
                Ok(cm) => env.extend(
                    cm.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v)),
                ),
                Err(e) if r.optional != Some(true) => {
                    return Err(anyhow!("configmap {:?} for envFrom: {e}", r.name));
                }
                Err(_) => {}
            }
        }
        if let Some(r) = &from.secret_ref {
            let data = Api::<Secret>::namespaced(client.clone(), &ns)
                .get(&r.name)
                .await;
            match data {
                Ok(s) => env.extend(s.data.unwrap_or_default().into_iter().map(|(k, v)| {
                    (
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v.0).into_owned(),
                    )
                })),
                Err(e) if r.optional != Some(true) => {
                    return Err(anyhow!("secret {:?} for envFrom: {e}", r.name));
                }
                Err(_) => {}
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &env)
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field_ref(pod, &f.field_path)?
            } else if let Some(k) = &src.config_map_key_ref {
                let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                    .get(&k.name)
                    .await;
                match cm
                    .ok()
                    .and_then(|cm| cm.data.and_then(|d| d.get(&k.key).cloned()))
                {
                    Some(v) => v,
                    None if k.optional == Some(true) => continue,
                    None => bail!(
                        "env {}: key {:?} of configmap {:?} not found",
                        e.name,
                        k.key,
                        k.name
                    ),
                }
            } else if let Some(k) = &src.secret_key_ref {
                let s = Api::<Secret>::namespaced(client.clone(), &ns)
                    .get(&k.name)
                    .await;
                match s
                    .ok()
                    .and_then(|s| s.data.and_then(|d| d.get(&k.key).cloned()))
                {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if k.optional == Some(true) => continue,
                    None => bail!(
                        "env {}: key {:?} of secret {:?} not found",
                        e.name,
                        k.key,
                        k.name
                    ),
                }
            } else if src.resource_field_ref.is_some() {
                // Resource limits are not enforced locally; report none.
                "0".to_string()
            } else {
                continue;
            }
        } else {
            String::new()
        };
        env.insert(e.name.clone(), value);
    }
    Ok(env)
}

/// The environment variables with which agnhost's `porter` serves SCTP (`SERVE_SCTP_PORT_9003=foo`).
pub const SCTP_PORT_PREFIX: &str = "SERVE_SCTP_PORT_";

/// Whether this kernel can open SCTP sockets (a kernel without the protocol answers
/// `EPROTONOSUPPORT`). Probed once.
pub fn kernel_has_sctp() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        // SAFETY: plain syscalls; the descriptor is closed right away.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP);
            if fd >= 0 {
                libc::close(fd);
            }
            fd >= 0
        }
    })
}

/// On a kernel without SCTP, takes agnhost's `SERVE_SCTP_PORT_*` variables out of the environment of
/// an agnhost container and returns their names (empty when nothing was withheld).
///
/// agnhost `porter` exits when it cannot listen on an SCTP port, so every pod of the
/// network-policy-api conformance suites (each has porter containers with SCTP ports) would crash
/// forever on such a kernel and never become Ready. Without the variables porter serves its other
/// ports and stays up; the caller records what was withheld in an Event on the pod, and the suites'
/// SCTP tests are listed as not run on this kernel. Nothing is withheld where SCTP works, and no other
/// image is touched.
pub fn withhold_sctp_ports(
    image_binary: &str,
    env: &mut BTreeMap<String, String>,
    kernel_has_sctp: bool,
) -> Vec<String> {
    if kernel_has_sctp || image_binary != "agnhost" {
        return Vec::new();
    }
    let names: Vec<String> = env
        .keys()
        .filter(|k| k.starts_with(SCTP_PORT_PREFIX))
        .cloned()
        .collect();
    for n in &names {
        env.remove(n);
    }
    names
}

/// The pod as the downward API must see it when a container starts: `status.hostIP(s)` and
/// `status.podIP(s)` are what this node knows, not what the (possibly older) watched object says.
pub fn with_runtime_ips(pod: &Pod, host_ip: &str, pod_ips: &[String]) -> Pod {
    use k8s_openapi::api::core::v1::{HostIP, PodIP, PodStatus};
    let mut p = pod.clone();
    let st = p.status.get_or_insert_with(PodStatus::default);
    st.host_ip = Some(host_ip.to_string());
    st.host_ips = Some(vec![HostIP {
        ip: host_ip.to_string(),
    }]);
    if !pod_ips.is_empty() {
        st.pod_ip = pod_ips.first().cloned();
        st.pod_ips = Some(pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect());
    }
    p
}

/// Materialises the pod's volumes under `pod_dir/volumes` (hostPath volumes are the node's own path).
/// Returns volume name → source path.
pub async fn prepare_volumes(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<BTreeMap<String, PathBuf>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
    {
        let dir = pod_dir.join("volumes").join(&v.name);
        if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            match hp.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&p)?,
                "FileOrCreate" => {
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&p)?;
                }
                "Directory" if !p.is_dir() => bail!("hostPath {:?} is not a directory", hp.path),
                "File" if !p.is_file() => bail!("hostPath {:?} is not a file", hp.path),
                _ => {}
            }
            out.insert(v.name.clone(), p);
            continue;
        }
        std::fs::create_dir_all(&dir)?;
        if v.empty_dir.is_some() {
        } else if let Some(cm) = &v.config_map {
            let data = fetch_configmap(client, &ns, &cm.name, cm.optional, &v.name).await?;
            write_items(&dir, data, cm.items.as_deref())?;
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = fetch_secret(client, &ns, &name, s.optional, &v.name).await?;
            write_items(&dir, data, s.items.as_deref())?;
        } else if let Some(p) = &v.projected {
            for src in p.sources.iter().flatten() {
                if let Some(t) = &src.service_account_token {
                    let token =
                        request_token(client, pod, t.audience.clone(), t.expiration_seconds)
                            .await?;
                    write_file(&dir.join(&t.path), token.as_bytes())?;
                }
                if let Some(cm) = &src.config_map {
                    let data = fetch_configmap(client, &ns, &cm.name, cm.optional, &v.name).await?;
                    write_items(&dir, data, cm.items.as_deref())?;
                }
                if let Some(s) = &src.secret {
                    let data = fetch_secret(client, &ns, &s.name, s.optional, &v.name).await?;
                    write_items(&dir, data, s.items.as_deref())?;
                }
                if let Some(d) = &src.downward_api {
                    write_downward(&dir, pod, d.items.as_deref())?;
                }
            }
        } else if let Some(d) = &v.downward_api {
            write_downward(&dir, pod, d.items.as_deref())?;
        } else {
            bail!(
                "volume {:?}: only hostPath, emptyDir, configMap, secret, projected and downwardAPI volumes are supported locally",
                v.name
            );
        }
        out.insert(v.name.clone(), dir);
    }
    Ok(out)
}

/// A ConfigMap's data as files; empty when it is missing and `optional`.
async fn fetch_configmap(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: Option<bool>,
    volume: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(name)
        .await
    {
        Ok(obj) => Ok(string_data(obj.data, obj.binary_data)),
        Err(_) if optional == Some(true) => Ok(BTreeMap::new()),
        Err(e) => bail!("configmap {name:?} for volume {volume:?}: {e}"),
    }
}

/// A Secret's data as files; empty when it is missing and `optional`.
async fn fetch_secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: Option<bool>,
    volume: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    match Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
    {
        Ok(obj) => Ok(secret_data(obj)),
        Err(_) if optional == Some(true) => Ok(BTreeMap::new()),
        Err(e) => bail!("secret {name:?} for volume {volume:?}: {e}"),
    }
}

fn write_downward(
    dir: &Path,
    pod: &Pod,
    items: Option<&[k8s_openapi::api::core::v1::DownwardAPIVolumeFile]>,
) -> Result<()> {
    for item in items.unwrap_or_default() {
        if let Some(f) = &item.field_ref {
            write_file(
                &dir.join(&item.path),
                field_ref(pod, &f.field_path)?.as_bytes(),
            )?;
        }
    }
    Ok(())
}

fn string_data(
    data: Option<BTreeMap<String, String>>,
    bin: Option<BTreeMap<String, k8s_openapi::ByteString>>,
) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    out.extend(bin.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    out
}

fn secret_data(s: Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    out.extend(
        s.string_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    out
}

fn write_items(
    dir: &Path,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> Result<()> {
    match items {
        Some(items) => {
            for i in items {
                let v = data
                    .get(&i.key)
                    .with_context(|| format!("key {:?} not found", i.key))?;
                write_file(&dir.join(&i.path), v)?;
            }
        }
        None => {
            for (k, v) in &data {
                write_file(&dir.join(k), v)?;
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    let tmp = path.with_extension("weft-tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A bound service-account token for the pod, as the kubelet requests it (TokenRequest bound to the
/// pod object).
async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let req: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
            "expirationSeconds": expiration.unwrap_or(3607),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid}
        }
    }))?;
    let resp: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &req)
        .await
        .with_context(|| format!("failed to request a token for serviceaccount {ns}/{sa}"))?;
    resp.status
        .map(|s| s.token)
        .context("token request returned no token")
}

/// The container's volume mounts resolved against prepared volumes.
pub fn mounts_for(c: &Container, volumes: &BTreeMap<String, PathBuf>) -> Result<Vec<Bind>> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let base = volumes
                .get(&m.name)
                .with_context(|| format!("volumeMount {:?} names no volume of the pod", m.name))?;
            let src = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sp) => base.join(sp),
                None => base.clone(),
            };
            Ok(Bind {
                file: src.is_file(),
                src,
                dst: PathBuf::from(&m.mount_path),
                read_only: m.read_only == Some(true),
            })
        })
        .collect()
}

/// Creates the mount targets that do not exist; returns the paths it created (outermost first) so
/// that teardown can remove them from the host.
pub fn create_targets(mounts: &[Bind]) -> Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    for m in mounts {
        let dir_target = !m.file;
        let parent = if dir_target {
            m.dst.as_path()
        } else {
            m.dst.parent().unwrap_or(Path::new("/"))
        };
        let mut missing: Vec<PathBuf> = parent
            .ancestors()
            .filter(|a| !a.exists())
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create mount target {}", parent.display()))?;
        created.extend(missing);
        if !dir_target && !m.dst.exists() {
            std::fs::File::create(&m.dst)?;
            created.push(m.dst.clone());
        }
    }
    Ok(created)
}

/// Resolves a probe's port (a number or a container port's name).
fn probe_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16> {
    match port {
        IntOrString::Int(n) => {
            u16::try_from(*n).map_err(|_| anyhow!("probe port {n} is out of range"))
        }
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .with_context(|| {
                format!("probe names port {name:?}, which the container does not declare")
            }),
    }
}

/// Runs one probe against `host`; Ok means success.
pub async fn run_probe(p: &Probe, host: &str, ports: &[ContainerPort]) -> Result<()> {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let connect = |port: u16| {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        async move {
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr))
                .await
                .map_err(|_| anyhow!("dial {addr}: timed out"))?
                .with_context(|| format!("dial {addr}"))
        }
    };
    if let Some(h) = &p.http_get {
        let port = probe_port(&h.port, ports)?;
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let fut = async {
            let mut s = connect(port).await?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\n\r\n").as_bytes()).await?;
            let mut buf = vec![0u8; 256];
            let n = s.read(&mut buf).await?;
            let line = String::from_utf8_lossy(&buf[..n]);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .context("not an HTTP response")?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(anyhow!("HTTP probe failed with statuscode: {code}"))
            }
        };
        return tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| anyhow!("HTTP probe timed out"))?;
    }
    if let Some(t) = &p.tcp_socket {
        connect(probe_port(&t.port, ports)?).await?;
        return Ok(());
    }
    bail!("only httpGet and tcpSocket probes are supported by weft-nodelet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubelet_rules() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn downward_api_fields() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n", "labels": {"app": "x"}},
            "spec": {"nodeName": "node-1", "containers": []},
        }))
        .unwrap();
        assert_eq!(field_ref(&pod, "spec.nodeName").unwrap(), "node-1");
        assert_eq!(field_ref(&pod, "metadata.labels['app']").unwrap(), "x");
        assert!(field_ref(&pod, "spec.bogus").is_err());
    }

    #[test]
    fn sctp_ports_are_withheld_from_agnhost_only_on_a_kernel_without_sctp() {
        let env0: BTreeMap<String, String> = [
            ("SERVE_SCTP_PORT_9003", "foo"),
            ("SERVE_SCTP_PORT_9005", "foo"),
            ("SERVE_PORT_8080", "bar"),
            ("PATH", "/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut env = env0.clone();
        assert_eq!(
            withhold_sctp_ports("agnhost", &mut env, false),
            ["SERVE_SCTP_PORT_9003", "SERVE_SCTP_PORT_9005"]
        );
        assert_eq!(
            env.keys().collect::<Vec<_>>(),
            ["PATH", "SERVE_PORT_8080"],
            "the TCP port and everything else stay"
        );
        let mut env = env0.clone();
        assert!(withhold_sctp_ports("agnhost", &mut env, true).is_empty());
        assert_eq!(env, env0, "a kernel with SCTP gets the pod as written");
        let mut env = env0.clone();
        assert!(withhold_sctp_ports("weft-e2e", &mut env, false).is_empty());
        assert_eq!(env, env0, "only agnhost's porter variables mean SCTP");
    }

    #[test]
    fn the_downward_api_sees_the_node_and_pod_addresses_the_node_knows() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {"containers": []},
            "status": {"phase": "Pending"},
        }))
        .unwrap();
        assert_eq!(field_ref(&pod, "status.hostIP").unwrap(), "");
        let p = with_runtime_ips(&pod, "10.70.0.11", &["10.244.0.5".to_string()]);
        assert_eq!(field_ref(&p, "status.hostIP").unwrap(), "10.70.0.11");
        assert_eq!(field_ref(&p, "status.hostIPs").unwrap(), "10.70.0.11");
        assert_eq!(field_ref(&p, "status.podIP").unwrap(), "10.244.0.5");
        let h = with_runtime_ips(&pod, "10.70.0.11", &[]);
        assert_eq!(field_ref(&h, "status.podIP").unwrap(), "");
    }
}
