//! Builds the Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
//! kubectl) from the pinned Go module in `e2e/controlplane`.
//!
//! The result lands in the clone-independent cache (`~/.cache/weft-e2e/bin`) with a stamp of the
//! module's go.mod and go.sum; an unchanged module costs nothing, and a changed one reuses Go's own
//! build cache.

use crate::sys::run;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Go packages the control-plane module builds, by output binary name.
pub const CONTROL_PLANE: &[(&str, &str)] = &[
    ("etcd", "./cmd/etcd"),
    ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
    (
        "kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
    ),
    ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
    ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
];

/// The directory of the pinned control-plane Go module.
pub fn controlplane_module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane")
}

/// Hash of the files that decide what a Go module builds.
pub fn module_stamp(module: &Path, extra: &[&str]) -> Result<String> {
    let mut h = Sha256::new();
    for f in ["go.mod", "go.sum"].iter().chain(extra) {
        let p = module.join(f);
        h.update(std::fs::read(&p).with_context(|| format!("failed to read {}", p.display()))?);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Builds `packages` (binary name, Go package) of `module` into `<cache>/bin`, unless the stamp says
/// they are current. `env` is added to the build's environment (and to the stamp). Returns the bin
/// directory.
pub fn ensure_go_binaries(
    module: &Path,
    packages: &[(&str, &str)],
    stamp_name: &str,
    extra_stamp_files: &[&str],
    ldflags: &str,
    env: &[(&str, &str)],
    cache_dir: &Path,
) -> Result<PathBuf> {
    let bin = cache_dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let stamp_file = cache_dir.join(format!("{stamp_name}.stamp"));
    let env_text: String = env.iter().map(|(k, v)| format!(" {k}={v}")).collect();
    let stamp = format!(
        "{}-{:x}",
        module_stamp(module, extra_stamp_files)?,
        Sha256::digest(format!("{ldflags}{env_text}"))
    );
    let current = std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str())
        && packages.iter().all(|(name, _)| bin.join(name).exists());
    if current {
        return Ok(bin);
    }
    if which("go").is_none() {
        bail!(
            "the Go toolchain is needed to build {stamp_name} (install Go 1.24 or newer and put `go` on PATH)"
        );
    }
    eprintln!("building {stamp_name} from its Go module (first time: several minutes)…");
    let mut cmd = Command::new("go");
    cmd.current_dir(module)
        .envs(env.iter().copied())
        .arg("build")
        .arg("-trimpath")
        .arg(format!("-ldflags={ldflags}"))
        .arg("-o")
        .arg(format!("{}/", bin.display()));
    for (_, pkg) in packages {
        cmd.arg(pkg);
    }
    run(&mut cmd).with_context(|| format!("failed to build {stamp_name}"))?;
    std::fs::write(&stamp_file, stamp)?;
    Ok(bin)
}

/// The Kubernetes version the control-plane module pins, read from its go.mod.
pub fn kube_version() -> Result<String> {
    let gomod = std::fs::read_to_string(controlplane_module().join("go.mod"))?;
    gomod
        .lines()
        .find_map(|l| {
            let l = l.trim().trim_start_matches("require").trim();
            l.strip_prefix("k8s.io/kubernetes ")
                .map(|v| v.split_whitespace().next().unwrap_or(v).to_string())
        })
        .context("e2e/controlplane/go.mod does not require k8s.io/kubernetes")
}

/// Link flags that stamp the binaries with their real version (a plain `go build` reports
/// v0.0.0-master, which version-aware clients such as Helm reject).
fn kube_version_ldflags() -> String {
    let v = kube_version().unwrap_or_else(|_| "v1.34.0".into());
    let mut parts = v.trim_start_matches('v').split('.');
    let (major, minor) = (parts.next().unwrap_or("1"), parts.next().unwrap_or("34"));
    ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"]
        .iter()
        .map(|pkg| format!("-X {pkg}.gitVersion={v} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor} -X {pkg}.gitTreeState=clean"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the control plane into the cache; returns the bin directory.
pub fn ensure_control_plane(cache_dir: &Path) -> Result<PathBuf> {
    ensure_go_binaries(
        &controlplane_module(),
        CONTROL_PLANE,
        "controlplane",
        &["tools.go", "cmd/etcd/main.go"],
        &kube_version_ldflags(),
        &[],
        cache_dir,
    )
}

/// The upstream images the nodelet can run (the e2e test images and kube-proxy), by binary name (an image maps to the binary
/// named like its last path segment): built from the same k8s.io/kubernetes module as the control
/// plane, as upstream builds them (static, `CGO_ENABLED=0`).
pub const IMAGES: &[(&str, &str)] = &[
    ("agnhost", "k8s.io/kubernetes/test/images/agnhost"),
    ("kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy"),
];

/// The directory of the pinned test-images Go module.
pub fn images_module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

/// Builds the test images (agnhost from Go, pause from its C source in the same module) into the
/// cache; returns the bin directory.
pub fn ensure_images(cache_dir: &Path) -> Result<PathBuf> {
    let bin = ensure_go_binaries(
        &images_module(),
        IMAGES,
        "images",
        &["tools.go"],
        &format!("-s -w {}", kube_version_ldflags()),
        &[("CGO_ENABLED", "0")],
        cache_dir,
    )?;
    ensure_pause(&bin, cache_dir)?;
    Ok(bin)
}

/// The binary of weft's kubelet-API helper (`e2e/kubeletapi`, see ADR 0004).
pub const KUBELET_API: &str = "weft-kubelet-api";

/// Builds the kubelet-API helper into the cache; returns the bin directory.
pub fn ensure_kubelet_api(cache_dir: &Path) -> Result<PathBuf> {
    ensure_go_binaries(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("kubeletapi"),
        &[(KUBELET_API, ".")],
        "kubeletapi",
        &["main.go"],
        "-s -w",
        &[("CGO_ENABLED", "0")],
        cache_dir,
    )
}

/// `registry.k8s.io/pause`: the C program of the pinned module (`build/pause/linux/pause.c`), linked
/// statically as upstream does.
fn ensure_pause(bin: &Path, cache_dir: &Path) -> Result<()> {
    let version = kube_version()?;
    let stamp_file = cache_dir.join("pause.stamp");
    let out = bin.join("pause");
    if out.exists() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&version) {
        return Ok(());
    }
    let dir = run(Command::new("go").current_dir(images_module()).args([
        "list",
        "-m",
        "-f",
        "{{.Dir}}",
        "k8s.io/kubernetes",
    ]))
    .context("failed to find the k8s.io/kubernetes module (run go mod download in e2e/images)")?;
    let src = Path::new(dir.trim()).join("build/pause/linux/pause.c");
    let tmp = bin.join("pause.tmp");
    run(Command::new("cc")
        .args(["-Os", "-static", "-Wall"])
        .arg(format!("-DVERSION={version}"))
        .arg("-o")
        .arg(&tmp)
        .arg(&src))
    .with_context(|| {
        format!(
            "failed to compile {} (needs a C compiler: build-essential)",
            src.display()
        )
    })?;
    std::fs::rename(&tmp, &out)?;
    std::fs::write(&stamp_file, version)?;
    Ok(())
}

/// Finds a program on PATH.
pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(prog))
            .find(|p| p.is_file())
    })
}

/// kube-router's Go package, the network-policy controller k3s ships.
pub const KUBE_ROUTER: (&str, &str) = (
    "kube-router",
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
);

/// Builds kube-router v2.1.0 from the pinned module `e2e/kuberouter` into the cache (for the policy
/// benchmark only; weft never ships it); returns the bin directory.
pub fn ensure_kube_router(cache_dir: &Path) -> Result<PathBuf> {
    ensure_go_binaries(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("kuberouter"),
        &[KUBE_ROUTER],
        "kuberouter",
        &["tools.go"],
        "-s -w",
        &[],
        cache_dir,
    )
}
