//! Every sample fabric in crds/examples parses into the Rust type and passes validation.

use std::path::PathBuf;

use weft_crds::NetworkFabric;
use weft_crds::fabric::Backend;
use weft_crds::validate::validate_spec;

fn load(name: &str) -> NetworkFabric {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn examples_parse_and_validate() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert_eq!(names, ["dual-stack.yaml", "host-gw.yaml", "minimal.yaml"]);
    for name in &names {
        let fabric = load(name);
        assert_eq!(validate_spec(&fabric.spec), vec![], "{name}");
    }
}

#[test]
fn examples_mean_what_their_names_say() {
    let minimal = load("minimal.yaml");
    assert_eq!(minimal.spec.pod_network.cidrs, ["10.244.0.0/16"]);
    assert_eq!(minimal.spec.overlay.backend, Backend::Vxlan);
    assert_eq!(minimal.spec.overlay.vni, 1);
    assert_eq!(minimal.spec.overlay.port, 8472);
    assert!(minimal.spec.masquerade.enabled);
    assert!(minimal.spec.policy.enabled);

    let dual = load("dual-stack.yaml");
    assert_eq!(dual.spec.pod_network.cidrs.len(), 2);
    assert!(dual.spec.overlay.direct_routing);

    let hostgw = load("host-gw.yaml");
    assert_eq!(hostgw.spec.overlay.backend, Backend::HostGw);
    assert_eq!(hostgw.spec.overlay.mtu, 1500);
}
