//! The committed CRD YAML must equal what the Rust types generate.

use std::path::PathBuf;

use weft_crds::crd::{CRD_FILE, render_api_markdown, render_crd_yaml};
use weft_crds::golden::check_golden;

#[test]
fn committed_crd_matches_generated() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CRD_FILE);
    let generated = render_crd_yaml().expect("render CRD");
    // The Helm chart ships a copy: regenerating it is part of the same review (e2e's chart test).
    if let Err(e) = check_golden(
        &path,
        &generated,
        "cargo test -p weft-crds --test crd_golden",
    ) {
        panic!(
            "{e}\n(after regenerating, also run `WEFT_UPDATE_GOLDEN=1 cargo test -p weft-e2e --test chart` for the chart's copy)"
        );
    }
}

#[test]
fn api_reference_matches_generated() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
    let generated = render_api_markdown().expect("render API reference");
    if let Err(e) = check_golden(
        &path,
        &generated,
        "cargo test -p weft-crds --test crd_golden",
    ) {
        panic!("{e}");
    }
    for field in [
        "spec.podNetwork.cidrs",
        "spec.overlay.vni",
        "spec.agent.maxUnavailable",
        "status.nodes.ready",
    ] {
        assert!(
            generated.contains(&format!("| `{field}` |")),
            "{field} missing from the API reference"
        );
    }
}
