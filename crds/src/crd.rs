//! Rendering of the `NetworkFabric` CustomResourceDefinition.
//!
//! The committed file `crds/weft.dev_networkfabrics.yaml` is exactly [`render_crd_yaml`]'s output;
//! `tests/crd_golden.rs` fails when they differ, so the YAML that Helm and `kubectl apply` install is
//! always the one the Rust types describe. Invariant: the output is deterministic (the schema's maps
//! are ordered), so regenerating an unchanged API yields identical bytes.

use kube::CustomResourceExt;

use crate::Error;
use crate::fabric::NetworkFabric;

/// File name of the generated CRD, relative to the `crds/` directory.
pub const CRD_FILE: &str = "weft.dev_networkfabrics.yaml";

const HEADER: &str = "\
# Generated from the Rust types in crds/src/fabric.rs; do not edit by hand.
# Regenerate with: WEFT_UPDATE_GOLDEN=1 cargo test -p weft-crds --test crd_golden
";

/// The CRD as a YAML document, with a header saying how it was generated.
pub fn render_crd_yaml() -> Result<String, Error> {
    let body =
        yaml_serde::to_string(&NetworkFabric::crd()).map_err(|source| Error::RenderYaml {
            what: "the NetworkFabric CRD",
            source,
        })?;
    Ok(format!("{HEADER}---\n{body}"))
}
