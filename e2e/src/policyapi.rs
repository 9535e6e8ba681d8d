//! The CRDs of sigs.k8s.io/network-policy-api that the local cluster serves, as a cluster that runs
//! them would: `ClusterNetworkPolicy` from module v0.3.0 (experimental channel, which carries named
//! ports; `v1beta1` stored, `v1alpha2` served beside it) and `AdminNetworkPolicy` /
//! `BaselineAdminNetworkPolicy` from module v0.1.7 (`v1alpha1`, experimental channel too).
//!
//! The YAML is taken from the Go modules at those pinned versions (`go mod download -json` names the
//! module's directory in Go's module cache) and copied into the clone-independent cache
//! (`<cache>/network-policy-api/<version>/`), so that a second run needs neither Go nor the proxy.
//! These CRDs belong to the cluster, never to weft: `weft-e2e up` applies them before it installs
//! weft, because the agent decides at start which cluster-wide policy APIs it watches.
//!
//! Invariant: the two modules' CRDs are different resources of one API group; [`check_crd_set`]
//! refuses a set in which two files define the same resource or claim the same names, and
//! [`install_policy_crds`] waits until the API server has accepted every CRD's names.

use crate::cluster::Cluster;
use crate::sys::run;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The Go module that holds the CRDs.
pub const MODULE: &str = "sigs.k8s.io/network-policy-api";

/// The API group of every CRD in the set.
pub const GROUP: &str = "policy.networking.k8s.io";

/// (module version, file inside the module) of every CRD the local cluster installs.
pub const CRDS: &[(&str, &str)] = &[
    (
        "v0.3.0",
        "config/crd/experimental/policy.networking.k8s.io_clusternetworkpolicies.yaml",
    ),
    (
        "v0.1.7",
        "config/crd/experimental/policy.networking.k8s.io_adminnetworkpolicies.yaml",
    ),
    (
        "v0.1.7",
        "config/crd/experimental/policy.networking.k8s.io_baselineadminnetworkpolicies.yaml",
    ),
];

/// What one CRD file defines, as far as coexistence goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdIdentity {
    /// `metadata.name` (`<plural>.<group>`).
    pub name: String,
    /// `spec.group`.
    pub group: String,
    /// `spec.names.kind`.
    pub kind: String,
    /// `spec.names.plural`, `singular` and every short name: what must be unique in the group.
    pub names: Vec<String>,
    /// Served versions.
    pub versions: Vec<String>,
}

/// Reads the identity of a CRD from its YAML.
pub fn parse_crd_identity(yaml: &str) -> Result<CrdIdentity> {
    let v: serde_json::Value = yaml_serde::from_str(yaml).context("not a YAML document")?;
    if v["kind"] != "CustomResourceDefinition" {
        bail!("not a CustomResourceDefinition (kind {})", v["kind"]);
    }
    let s = |p: &serde_json::Value, what: &str| -> Result<String> {
        p.as_str()
            .map(str::to_string)
            .with_context(|| format!("the CRD has no {what}"))
    };
    let spec_names = &v["spec"]["names"];
    let mut names = vec![
        s(&spec_names["plural"], "spec.names.plural")?,
        s(&spec_names["singular"], "spec.names.singular")?,
    ];
    names.extend(
        spec_names["shortNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_string)),
    );
    let versions = v["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ver| ver["served"] == true)
        .filter_map(|ver| ver["name"].as_str().map(str::to_string))
        .collect();
    Ok(CrdIdentity {
        name: s(&v["metadata"]["name"], "metadata.name")?,
        group: s(&v["spec"]["group"], "spec.group")?,
        kind: s(&spec_names["kind"], "spec.names.kind")?,
        names,
        versions,
    })
}

/// Checks that the CRDs can be installed side by side: one group, and no resource, kind or name
/// (plural, singular, short name) defined twice.
pub fn check_crd_set(crds: &[CrdIdentity]) -> Result<()> {
    let mut seen: BTreeMap<String, (usize, &str)> = BTreeMap::new();
    for (i, c) in crds.iter().enumerate() {
        if c.group != GROUP {
            bail!("CRD {} is in group {}, not {GROUP}", c.name, c.group);
        }
        if c.versions.is_empty() {
            bail!("CRD {} serves no version", c.name);
        }
        let keys = std::iter::once(format!("resource {}", c.name))
            .chain(std::iter::once(format!("kind {}", c.kind)))
            .chain(c.names.iter().map(|n| format!("name {n}")));
        for k in keys {
            if let Some((j, other)) = seen.insert(k.clone(), (i, &c.name))
                && j != i
            {
                bail!("CRDs {other} and {} both define {k}", c.name);
            }
        }
    }
    Ok(())
}

/// The module directory that `go mod download -json` reports.
pub fn parse_mod_download(json: &str) -> Result<PathBuf> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("go mod download printed no JSON")?;
    if let Some(e) = v["Error"].as_str() {
        bail!("go mod download: {e}");
    }
    v["Dir"]
        .as_str()
        .map(PathBuf::from)
        .context("go mod download printed no Dir")
}

/// Where a CRD file is cached.
fn cached_path(cache_dir: &Path, version: &str, file: &str) -> PathBuf {
    let base = Path::new(file)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_string());
    cache_dir
        .join("network-policy-api")
        .join(version)
        .join(base)
}

/// The directory of `MODULE@version` in Go's module cache, downloaded through the Go module proxy
/// unless it is there.
pub fn download_module(cache_dir: &Path, version: &str) -> Result<PathBuf> {
    if crate::gobuild::which("go").is_none() {
        bail!(
            "the Go toolchain is needed to fetch {MODULE}@{version} (install Go and put `go` on PATH)"
        );
    }
    std::fs::create_dir_all(cache_dir)?;
    // Outside any module: the download neither reads nor changes a go.mod.
    let json = run(Command::new("go")
        .current_dir(cache_dir)
        .env("GOFLAGS", "-mod=mod")
        .args(["mod", "download", "-json"])
        .arg(format!("{MODULE}@{version}")))
    .with_context(|| format!("failed to download {MODULE}@{version}"))?;
    parse_mod_download(&json)
}

/// Copies the CRD files out of the pinned Go modules into the cache unless they are there; returns
/// their paths in [`CRDS`] order.
pub fn ensure_policy_crds(cache_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: BTreeMap<&str, PathBuf> = BTreeMap::new();
    let mut out = Vec::new();
    for (version, file) in CRDS {
        let dest = cached_path(cache_dir, version, file);
        if !dest.is_file() {
            if !dirs.contains_key(version) {
                dirs.insert(version, download_module(cache_dir, version)?);
            }
            let src = dirs[version].join(file);
            let text = std::fs::read_to_string(&src)
                .with_context(|| format!("failed to read {}", src.display()))?;
            parse_crd_identity(&text).with_context(|| format!("{}", src.display()))?;
            let parent = dest.parent().context("cache path has no parent")?;
            std::fs::create_dir_all(parent)?;
            let tmp = dest.with_extension("yaml.tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &dest)?;
        }
        out.push(dest);
    }
    Ok(out)
}

/// Applies the CRDs (server-side: the ClusterNetworkPolicy CRD is too large for the annotation of a
/// client-side apply) and waits until each is Established with its names accepted.
pub fn install_policy_crds(c: &Cluster, timeout: Duration) -> Result<()> {
    let files = ensure_policy_crds(&c.cfg.cache_dir)?;
    let mut ids = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        ids.push(parse_crd_identity(&text).with_context(|| format!("{}", f.display()))?);
    }
    check_crd_set(&ids)?;
    let mut apply = c.kubectl();
    apply.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=weft-e2e",
    ]);
    for f in &files {
        apply.arg("-f").arg(f);
    }
    run(&mut apply).context("failed to apply the network-policy-api CRDs")?;
    let mut wait = c.kubectl();
    wait.args([
        "wait",
        "--for=condition=Established",
        &format!("--timeout={}s", timeout.as_secs().max(1)),
    ]);
    for id in &ids {
        wait.arg(format!("crd/{}", id.name));
    }
    run(&mut wait).context("the network-policy-api CRDs were not Established")?;
    for id in &ids {
        let out = run(c.kubectl().args(["get", "crd", &id.name, "-o", "json"]))?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let accepted = v["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|x| x["type"] == "NamesAccepted" && x["status"] == "True")
        });
        if !accepted {
            bail!(
                "the API server did not accept the names of CRD {}: {}",
                id.name,
                v["status"]["conditions"]
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(name: &str, kind: &str, plural: &str, short: &[&str], versions: &[&str]) -> String {
        let vs: Vec<String> = versions
            .iter()
            .map(|v| format!("  - name: {v}\n    served: true\n    storage: false\n"))
            .collect();
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {name}\nspec:\n  group: {GROUP}\n  names:\n    kind: {kind}\n    plural: {plural}\n    singular: {}\n    shortNames: [{}]\n  scope: Cluster\n  versions:\n{}",
            kind.to_lowercase(),
            short.join(", "),
            vs.concat()
        )
    }

    #[test]
    fn the_two_modules_crds_coexist() {
        let set: Vec<CrdIdentity> = [
            crd(
                "clusternetworkpolicies.policy.networking.k8s.io",
                "ClusterNetworkPolicy",
                "clusternetworkpolicies",
                &["cnp"],
                &["v1alpha2", "v1beta1"],
            ),
            crd(
                "adminnetworkpolicies.policy.networking.k8s.io",
                "AdminNetworkPolicy",
                "adminnetworkpolicies",
                &["anp"],
                &["v1alpha1"],
            ),
            crd(
                "baselineadminnetworkpolicies.policy.networking.k8s.io",
                "BaselineAdminNetworkPolicy",
                "baselineadminnetworkpolicies",
                &["banp"],
                &["v1alpha1"],
            ),
        ]
        .iter()
        .map(|y| parse_crd_identity(y).unwrap())
        .collect();
        assert_eq!(set[0].versions, ["v1alpha2", "v1beta1"]);
        assert_eq!(
            set[1].names,
            ["adminnetworkpolicies", "adminnetworkpolicy", "anp"]
        );
        check_crd_set(&set).unwrap();
    }

    #[test]
    fn a_resource_or_short_name_defined_twice_is_refused() {
        let a = parse_crd_identity(&crd(
            "adminnetworkpolicies.policy.networking.k8s.io",
            "AdminNetworkPolicy",
            "adminnetworkpolicies",
            &["anp"],
            &["v1alpha1"],
        ))
        .unwrap();
        let err = check_crd_set(&[a.clone(), a.clone()]).unwrap_err();
        assert!(err.to_string().contains("adminnetworkpolicies"), "{err}");
        let mut b = parse_crd_identity(&crd(
            "clusternetworkpolicies.policy.networking.k8s.io",
            "ClusterNetworkPolicy",
            "clusternetworkpolicies",
            &["anp"],
            &["v1beta1"],
        ))
        .unwrap();
        let err = check_crd_set(&[a.clone(), b.clone()]).unwrap_err();
        assert!(err.to_string().contains("name anp"), "{err}");
        b.names.retain(|n| n != "anp");
        b.group = "example.com".into();
        assert!(check_crd_set(&[a, b]).is_err());
    }

    #[test]
    fn a_document_that_is_no_crd_is_refused() {
        assert!(parse_crd_identity("apiVersion: v1\nkind: ConfigMap\n").is_err());
        assert!(parse_crd_identity(": : :").is_err());
    }

    #[test]
    fn the_module_dir_comes_from_go_mod_download() {
        let dir = parse_mod_download(
            r#"{"Path":"sigs.k8s.io/network-policy-api","Version":"v0.3.0","Dir":"/root/go/pkg/mod/sigs.k8s.io/network-policy-api@v0.3.0"}"#,
        )
        .unwrap();
        assert_eq!(
            dir,
            Path::new("/root/go/pkg/mod/sigs.k8s.io/network-policy-api@v0.3.0")
        );
        let err = parse_mod_download(r#"{"Path":"x","Error":"unknown revision v9"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown revision"), "{err}");
    }

    #[test]
    fn cached_files_are_kept_per_module_version() {
        assert_eq!(
            cached_path(Path::new("/c"), "v0.1.7", CRDS[1].1),
            Path::new(
                "/c/network-policy-api/v0.1.7/policy.networking.k8s.io_adminnetworkpolicies.yaml"
            )
        );
    }
}
