//! The committed CRD YAML must equal what the Rust types generate.

use std::path::PathBuf;

use weft_crds::crd::{CRD_FILE, render_api_markdown, render_crd_yaml};

#[test]
fn committed_crd_matches_generated() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CRD_FILE);
    let generated = render_crd_yaml().expect("render CRD");
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &generated).expect("write CRD");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_diff = committed
            .lines()
            .zip(generated.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| {
                format!(
                    "first difference at line {}:\n  committed: {a}\n  generated: {b}",
                    i + 1
                )
            })
            .unwrap_or_else(|| {
                format!(
                    "one file is a prefix of the other ({} vs {} lines)",
                    committed.lines().count(),
                    generated.lines().count()
                )
            });
        panic!(
            "{} is out of date with crds/src/fabric.rs.\n{first_diff}\n\
             Review the change, then regenerate with:\n  WEFT_UPDATE_GOLDEN=1 cargo test -p weft-crds --test crd_golden\n\
             and commit the file (the Helm chart copies it too).",
            path.display()
        );
    }
}

#[test]
fn api_reference_matches_generated() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
    let generated = render_api_markdown().expect("render API reference");
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &generated).expect("write docs/api.md");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/api.md is out of date with crds/src/fabric.rs; regenerate with\n  WEFT_UPDATE_GOLDEN=1 cargo test -p weft-crds --test crd_golden"
    );
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
