//! Running a host-network pod's container as a local process, the way a container runtime would
//! from the pod spec: image → local binary, command/args with `$(VAR)` expansion, env with the
//! downward API and ConfigMap/Secret references, volumes bind-mounted at their mount paths in a private
//! mount namespace of the process, and httpGet/tcpSocket probes.

use super::NodeletConfig;
use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, Pod, Probe, Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The binary an image maps to, opened: `<bin dir>/<last path segment without tag or digest>`, from
/// the first bin dir that has it. The file is open before any container's mount namespace exists, so
/// no volume of a pod can hide it (a runtime does not look for an image's files inside the
/// container's volumes either).
pub fn open_image_binary(bin_dirs: &BinDirs, image: &str) -> Result<ImageBinary> {
    let name = image_binary_name(image);
    bin_dirs
        .find(&name)
        .map(|(path, file)| ImageBinary { path, file })
        .ok_or_else(|| anyhow!("no local binary for image {image:?}: looked for {name:?} in {:?} (build it, or map the image to a binary of that name)", bin_dirs.paths()))
}

/// An image's binary, open for `fexecve`.
#[derive(Debug)]
pub struct ImageBinary {
    /// Where it was found on the host, for messages only: the path may be hidden from the container.
    pub path: PathBuf,
    pub file: std::fs::File,
}

/// The nodelet's bin dirs, each held open (`O_PATH`) from before the node's private mount namespace
/// was set up: a bin dir under a path the node sees privately (`/run`, `/etc/cni/net.d`, …) stays
/// reachable through `/proc/self/fd/<fd>`.
#[derive(Clone, Debug, Default)]
pub struct BinDirs(std::sync::Arc<Vec<(PathBuf, Option<std::os::fd::OwnedFd>)>>);

impl BinDirs {
    /// Opens every dir that exists; missing ones are remembered by name only.
    pub fn open(dirs: &[PathBuf]) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let held = dirs
            .iter()
            .map(|d| {
                let fd = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                    .open(d)
                    .ok()
                    .map(std::os::fd::OwnedFd::from);
                (d.clone(), fd)
            })
            .collect();
        Self(std::sync::Arc::new(held))
    }

    /// The dirs as they were named.
    pub fn paths(&self) -> Vec<&Path> {
        self.0.iter().map(|(p, _)| p.as_path()).collect()
    }

    /// Opens `name` in the first dir that has it as a regular file.
    pub fn find(&self, name: &str) -> Option<(PathBuf, std::fs::File)> {
        use std::os::fd::AsRawFd;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return None;
        }
        self.0.iter().find_map(|(dir, fd)| {
            let fd = fd.as_ref()?;
            let f = std::fs::File::open(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd())).ok()?;
            f.metadata()
                .ok()
                .filter(|m| m.is_file())
                .map(|_| (dir.join(name), f))
        })
    }
}

/// `registry:5000/org/weft-agent:v1@sha256:…` → `weft-agent`.
pub fn image_binary_name(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last).to_string()
}

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

/// A bind mount for the process: `src` on `dst`.
#[derive(Clone, Debug)]
pub struct Mount {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub read_only: bool,
}

/// The container's volume mounts resolved against prepared volumes.
pub fn mounts_for(c: &Container, volumes: &BTreeMap<String, PathBuf>) -> Result<Vec<Mount>> {
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
            Ok(Mount {
                src,
                dst: PathBuf::from(&m.mount_path),
                read_only: m.read_only == Some(true),
            })
        })
        .collect()
}

/// Creates the mount targets that do not exist; returns the paths it created (outermost first) so
/// that teardown can remove them from the host.
pub fn create_targets(mounts: &[Mount]) -> Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    for m in mounts {
        let dir_target = m.src.is_dir();
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

// From <linux/mount.h>; the libc crate has the syscall numbers but not these flags.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Pointers into `CString`s owned by the same closure, null-terminated, for `fexecve` after fork.
struct CPtrs(Vec<*const libc::c_char>);
// SAFETY: the pointers are only read in the forked child; the strings they point into are moved into
// the same closure and outlive it.
unsafe impl Send for CPtrs {}
// SAFETY: as above; nothing writes through them.
unsafe impl Sync for CPtrs {}

impl CPtrs {
    fn as_ptr(&self) -> *const *const libc::c_char {
        self.0.as_ptr()
    }
}

fn cptrs(strings: &[CString]) -> CPtrs {
    CPtrs(
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
    )
}

fn cstring(s: impl AsRef<std::ffi::OsStr>) -> Result<CString> {
    let s = s.as_ref();
    CString::new(s.as_bytes()).map_err(|_| anyhow!("{s:?} has a NUL byte"))
}

/// Spawns the container process: its own session, a private mount namespace with the volume bind
/// mounts, the given environment only, output appended to `log`.
///
/// Every path is resolved before a volume is mounted: the binary is executed from its open file
/// (`fexecve`), and each bind mount's source is cloned (`open_tree`) before the first one is
/// attached (`move_mount`), so neither a volume mounted over a directory (an emptyDir on `/tmp`)
/// nor an earlier bind of the same container can hide them.
pub fn spawn(
    binary: &ImageBinary,
    argv: &[String],
    env: &BTreeMap<String, String>,
    mounts: &[Mount],
    workdir: Option<&str>,
    log: &Path,
) -> Result<tokio::process::Child> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let binds: Vec<(CString, CString, bool)> = mounts
        .iter()
        .map(|m| Ok((cstring(&m.src)?, cstring(&m.dst)?, m.read_only)))
        .collect::<Result<_>>()?;
    let mut trees: Vec<libc::c_int> = vec![-1; binds.len()];
    let empty = CString::new("")?;
    let cwd = workdir.map(cstring).transpose()?;
    let root = CString::new("/")?;
    let argv_c: Vec<CString> = std::iter::once(cstring(&binary.path)?)
        .chain(argv.iter().map(cstring).collect::<Result<Vec<_>>>()?)
        .collect();
    let env_c: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect::<Result<_>>()?;
    let (argv_p, env_p) = (cptrs(&argv_c), cptrs(&env_c));
    let exe_fd = binary.file.as_raw_fd();
    if let Some(d) = log.parent() {
        std::fs::create_dir_all(d)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    // std's own exec is never reached: the closure below replaces the process image itself.
    let mut cmd = std::process::Command::new(&binary.path);
    cmd.env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: only async-signal-safe syscalls on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = (&argv_c, &env_c);
            let check = |r: libc::c_int| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            libc::setsid();
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            // Every source is cloned while nothing of the container is mounted yet, then attached:
            // an earlier volume cannot hide a later volume's source.
            for ((src, _, _), tree) in binds.iter().zip(trees.iter_mut()) {
                let fd = libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    src.as_ptr(),
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
                );
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                *tree = fd as libc::c_int;
            }
            for ((_, dst, ro), tree) in binds.iter().zip(trees.iter()) {
                let r = libc::syscall(
                    libc::SYS_move_mount,
                    *tree,
                    empty.as_ptr(),
                    libc::AT_FDCWD,
                    dst.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                );
                if r != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if *ro {
                    check(libc::mount(
                        std::ptr::null(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            if let Some(cwd) = &cwd {
                check(libc::chdir(cwd.as_ptr()))?;
            }
            libc::fexecve(exe_fd, argv_p.as_ptr(), env_p.as_ptr());
            Err(std::io::Error::last_os_error())
        });
    }
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("failed to start {}", binary.path.display()))?;
    Ok(child)
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
    fn image_names_map_to_binaries() {
        assert_eq!(image_binary_name("weft.dev/weft-agent:0.1.0"), "weft-agent");
        assert_eq!(
            image_binary_name("localhost:5000/a/b/weft-operator@sha256:abc"),
            "weft-operator"
        );
        assert_eq!(image_binary_name("busybox"), "busybox");
    }

    #[test]
    fn expansion_follows_kubelet_rules() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn bin_dirs_find_only_plain_names_and_regular_files() {
        let d = std::env::temp_dir().join(format!("weft-bindirs-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("tool"), b"x").unwrap();
        let dirs = BinDirs::open(&[d.join("missing"), d.clone()]);
        let (path, _) = dirs.find("tool").expect("found in the second dir");
        assert_eq!(path, d.join("tool"));
        assert!(dirs.find("sub").is_none(), "a directory is no binary");
        assert!(dirs.find("../tool").is_none());
        assert!(dirs.find("nope").is_none());
        let err = open_image_binary(&dirs, "example.com/nope:1").unwrap_err();
        assert!(format!("{err:#}").contains("\"nope\""), "{err:#}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The case of issue 7: the image's binary and a volume's source live under a directory that the
    /// container's first volume hides (an emptyDir on /tmp over a checkout in /tmp).
    #[test]
    fn spawn_runs_a_binary_and_binds_a_source_that_a_volume_hides() {
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (mount namespaces)");
            return;
        }
        let base = std::env::temp_dir().join(format!("weft-spawn {}", std::process::id()));
        let (hidden, empty, target) = (base.join("checkout"), base.join("empty"), base.join("t"));
        for d in [hidden.join("data"), empty.clone(), target.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::copy("/bin/sh", hidden.join("sh")).unwrap();
        std::fs::write(hidden.join("data/marker"), b"seen").unwrap();
        let dirs = BinDirs::open(std::slice::from_ref(&hidden));
        let bin = open_image_binary(&dirs, "example.com/sh:1").unwrap();
        let mounts = vec![
            Mount {
                src: empty.clone(),
                dst: hidden.clone(),
                read_only: false,
            },
            Mount {
                src: hidden.join("data"),
                dst: target.clone(),
                read_only: true,
            },
        ];
        let script = format!(
            "test ! -e '{}' || exit 10; test \"$(cat '{}/marker')\" = seen || exit 11; test \"$GREETING\" = hi || exit 12; exit 7",
            hidden.join("sh").display(),
            target.display()
        );
        let env: BTreeMap<String, String> = [("GREETING".to_string(), "hi".to_string())].into();
        let log = base.join("log");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let code = rt.block_on(async {
            let mut child = spawn(&bin, &["-c".into(), script], &env, &mounts, None, &log).unwrap();
            child.wait().await.unwrap().code()
        });
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(code, Some(7), "container output: {out}");
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
}
