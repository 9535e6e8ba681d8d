//! Helm, built from its Go module.
//!
//! No release binaries can be downloaded on the machines weft is developed on, but the Go
//! module proxy is reachable; so, like the control plane (`e2e/controlplane`), the Helm CLI is
//! built from source. `e2e/helm/go.mod` pins the version (and, through `go.sum`, every
//! dependency); `ensure_helm` builds `helm.sh/helm/v3/cmd/helm` from that module into a cache
//! directory and returns the binary's path. See `docs/adr/0201-helm-from-go-module.md`.
//!
//! Invariant: the binary at `<cache>/bin/helm` was built from exactly the `go.mod`/`go.sum` and
//! build recipe whose digest is in `<cache>/bin/helm.stamp`. The binary is built to a temporary
//! name and renamed into place before the stamp is written, and builds are serialised by an
//! exclusive lock on `<cache>/bin/helm.lock`, so concurrent callers (parallel tests, the harness)
//! never see a half-written binary nor build twice.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

/// The package of the Helm CLI inside the pinned module.
pub const HELM_PACKAGE: &str = "helm.sh/helm/v3/cmd/helm";
/// The module that provides `HELM_PACKAGE`; its version in `go.mod` is Helm's version.
const HELM_MODULE: &str = "helm.sh/helm/v3";
/// Helm derives the Kubernetes version it assumes (`.Capabilities.KubeVersion` in `helm
/// template`, the API-deprecation checks of `helm lint`) from this module's version, as its
/// Makefile does.
const CLIENT_GO_MODULE: &str = "k8s.io/client-go";
/// Name of the cache directory under `$XDG_CACHE_HOME` (or `~/.cache`).
pub const CACHE_DIR_NAME: &str = "weft-e2e";
/// Bumped whenever the way the binary is built changes, to invalidate existing stamps.
const RECIPE_VERSION: &str = "1";

/// The Go module that pins Helm: `e2e/helm` in this repository.
pub fn helm_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm")
}

/// weft's Helm chart: `charts/weft` in this repository.
pub fn chart_dir() -> PathBuf {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR"));
    e2e.parent().unwrap_or(e2e).join("charts").join("weft")
}

/// The default cache directory: `$XDG_CACHE_HOME/weft-e2e`, else `~/.cache/weft-e2e`.
pub fn default_cache_dir() -> Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join(CACHE_DIR_NAME));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("neither XDG_CACHE_HOME nor HOME is set; cannot choose a cache directory for the helm binary"))?;
    Ok(PathBuf::from(home).join(".cache").join(CACHE_DIR_NAME))
}

/// Returns the path of a Helm binary built from `e2e/helm`, building it first unless
/// `<cache_dir>/bin/helm` exists and its stamp matches the current `go.mod`, `go.sum` and build
/// recipe.
///
/// The build runs `go build -trimpath -o … helm.sh/helm/v3/cmd/helm` inside `e2e/helm`, with
/// `CGO_ENABLED=0` and the `-ldflags` of Helm's own Makefile (its version, and the Kubernetes
/// version it assumes, taken from `go.mod`). A first build takes minutes; later ones are served
/// from Go's build cache.
pub fn ensure_helm(cache_dir: &Path) -> Result<PathBuf> {
    ensure_helm_with(cache_dir, Path::new("go"))
}

/// `ensure_helm` with the Go toolchain at `go` (a name looked up in PATH, or a path).
fn ensure_helm_with(cache_dir: &Path, go: &Path) -> Result<PathBuf> {
    let module_dir = helm_module_dir();
    let bin_dir = cache_dir.join("bin");
    fs::create_dir_all(&bin_dir)
        .with_context(|| format!("failed to create {}", bin_dir.display()))?;
    let binary = bin_dir.join("helm");
    let stamp_path = bin_dir.join("helm.stamp");

    let go_mod = read(&module_dir.join("go.mod"))?;
    let go_sum = read(&module_dir.join("go.sum"))?;
    let ldflags = build_ldflags(&go_mod).with_context(|| {
        format!(
            "failed to derive Helm's build flags from {}",
            module_dir.join("go.mod").display()
        )
    })?;
    let stamp = compute_stamp(&go_mod, &go_sum, &ldflags);

    // Held until the end of this function: one build at a time, and nobody reads a stamp that
    // is being rewritten.
    let _lock = lock_exclusive(&bin_dir.join("helm.lock"))?;

    if binary.is_file() && fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
        return Ok(binary);
    }

    tracing::info!(
        module = %module_dir.display(),
        output = %binary.display(),
        "building helm from its Go module (the first build takes a few minutes)"
    );
    let tmp = bin_dir.join(format!(".helm.tmp.{}", std::process::id()));
    let output = Command::new(go)
        .current_dir(&module_dir)
        .env("CGO_ENABLED", "0")
        .args(["build", "-trimpath", "-ldflags", &ldflags, "-o"])
        .arg(&tmp)
        .arg(HELM_PACKAGE)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => bail!(
            "the Go toolchain ({}) was not found; it is needed to build helm from {} \
             (install Go {} or newer, e.g. `apt-get install golang-go` or from https://go.dev/dl, \
             and make sure `go` is on PATH)",
            go.display(),
            module_dir.display(),
            go_directive(&go_mod).unwrap_or("1.24")
        ),
        Err(err) => {
            return Err(err).context("failed to run `go build` for helm");
        }
    };
    if !output.status.success() {
        let _ = fs::remove_file(&tmp);
        bail!(
            "`go build {HELM_PACKAGE}` in {} failed ({}):\n{}",
            module_dir.display(),
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr), 60)
        );
    }
    fs::rename(&tmp, &binary)
        .with_context(|| format!("failed to move {} to {}", tmp.display(), binary.display()))?;
    write_atomically(&stamp_path, stamp.as_bytes())?;
    tracing::info!(path = %binary.display(), "helm is built");
    Ok(binary)
}

/// The `-ldflags` that Helm's Makefile passes: the release version, and the Kubernetes version
/// (client-go's minor, major 1) that `helm template` reports as `.Capabilities.KubeVersion` and
/// `helm lint` checks deprecated APIs against. Without them a source build claims to be
/// "v3.x" and assumes Kubernetes 1.20.
fn build_ldflags(go_mod: &str) -> Result<String> {
    let helm_version = required_version(go_mod, HELM_MODULE)
        .ok_or_else(|| anyhow!("go.mod does not require {HELM_MODULE}"))?;
    let client_go = required_version(go_mod, CLIENT_GO_MODULE)
        .ok_or_else(|| anyhow!("go.mod does not require {CLIENT_GO_MODULE}"))?;
    // client-go v0.N.x goes with Kubernetes 1.N.
    let kube_minor = client_go
        .strip_prefix("v0.")
        .and_then(|rest| rest.split('.').next())
        .filter(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| anyhow!("unexpected {CLIENT_GO_MODULE} version {client_go:?}"))?;
    let mut flags = vec![
        "-s".to_string(),
        "-w".to_string(),
        format!("-X helm.sh/helm/v3/internal/version.version={helm_version}"),
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean".to_string(),
    ];
    for pkg in [
        "helm.sh/helm/v3/pkg/lint/rules",
        "helm.sh/helm/v3/pkg/chartutil",
    ] {
        flags.push(format!("-X {pkg}.k8sVersionMajor=1"));
        flags.push(format!("-X {pkg}.k8sVersionMinor={kube_minor}"));
    }
    Ok(flags.join(" "))
}

/// The version of `module` in a `require` line of `go_mod` (single-line or block form).
fn required_version<'a>(go_mod: &'a str, module: &str) -> Option<&'a str> {
    go_mod.lines().find_map(|line| {
        let line = line.split("//").next().unwrap_or("").trim();
        let line = line.strip_prefix("require").map_or(line, str::trim_start);
        let mut words = line.split_whitespace();
        (words.next() == Some(module))
            .then(|| words.next())
            .flatten()
    })
}

/// The Go version that `go_mod`'s `go` directive asks for.
fn go_directive(go_mod: &str) -> Option<&str> {
    go_mod
        .lines()
        .find_map(|line| line.trim().strip_prefix("go ").map(str::trim))
}

/// The stamp: a sha256 over everything that determines the binary (up to the Go toolchain).
fn compute_stamp(go_mod: &str, go_sum: &str, ldflags: &str) -> String {
    let mut hasher = Sha256::new();
    for (name, content) in [
        ("recipe", RECIPE_VERSION),
        ("go.mod", go_mod),
        ("go.sum", go_sum),
        ("ldflags", ldflags),
    ] {
        hasher.update(name.as_bytes());
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(content.as_bytes());
    }
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(digest.len() * 2 + 1);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex.push('\n');
    hex
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))
}

fn lock_exclusive(path: &Path) -> Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("failed to open lock file {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("failed to lock {}", path.display()))
}

fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file =
        File::create(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("failed to move {} to {}", tmp.display(), path.display()))
}

/// The last `lines` lines of `text`: Go's build errors are at the end.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO_MOD: &str = "module weft.dev/e2e/helm\n\ngo 1.26.0\n\nrequire helm.sh/helm/v3 v3.22.0\n\nrequire (\n\tdario.cat/mergo v1.0.1 // indirect\n\tk8s.io/client-go v0.37.0 // indirect\n\tk8s.io/client-go/extra v9.9.9\n)\n";

    #[test]
    fn required_version_reads_single_line_and_block_requires() {
        assert_eq!(required_version(GO_MOD, HELM_MODULE), Some("v3.22.0"));
        assert_eq!(required_version(GO_MOD, CLIENT_GO_MODULE), Some("v0.37.0"));
        assert_eq!(required_version(GO_MOD, "dario.cat/mergo"), Some("v1.0.1"));
        assert_eq!(required_version(GO_MOD, "k8s.io/api"), None);
    }

    #[test]
    fn ldflags_follow_helm_makefile() {
        let flags = build_ldflags(GO_MOD).unwrap();
        assert!(flags.contains("-X helm.sh/helm/v3/internal/version.version=v3.22.0"));
        assert!(flags.contains("-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"));
        assert!(flags.contains("-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37"));
        assert!(flags.contains("-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37"));
    }

    #[test]
    fn ldflags_refuse_a_go_mod_without_helm() {
        let err = build_ldflags("module x\n\nrequire k8s.io/client-go v0.37.0\n").unwrap_err();
        assert!(err.to_string().contains(HELM_MODULE), "{err}");
    }

    #[test]
    fn stamp_changes_with_any_input() {
        let base = compute_stamp("a", "b", "c");
        assert_eq!(base, compute_stamp("a", "b", "c"));
        assert_eq!(base.len(), 65);
        assert_ne!(base, compute_stamp("a", "b", "d"));
        assert_ne!(base, compute_stamp("a", "bx", "c"));
        // Moving bytes between inputs changes the stamp too.
        assert_ne!(compute_stamp("ab", "", "c"), compute_stamp("a", "b", "c"));
    }

    #[test]
    fn missing_go_is_reported_clearly() {
        let cache = std::env::temp_dir().join(format!("weft-helm-test-{}", std::process::id()));
        let err = ensure_helm_with(&cache, Path::new("/nonexistent/weft-test/go")).unwrap_err();
        let _ = fs::remove_dir_all(&cache);
        let message = format!("{err:#}");
        assert!(
            message.contains("Go toolchain (/nonexistent/weft-test/go) was not found"),
            "{message}"
        );
        let go_mod = read(&helm_module_dir().join("go.mod")).unwrap();
        let wanted = format!("install Go {} or newer", go_directive(&go_mod).unwrap());
        assert!(message.contains(&wanted), "{message}");
    }

    #[test]
    fn go_directive_is_read() {
        assert_eq!(go_directive(GO_MOD), Some("1.26.0"));
    }
}
