//! The policy API types read the upstream conformance manifests of sigs.k8s.io/network-policy-api
//! (copied from the modules at v0.3.0 and v0.1.7, Apache-2.0) without losing a field: each object
//! decodes into weft's type and encodes back to the same JSON value.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weft_crds::policy_api::{v1alpha1, v1alpha2, v1beta1};

fn fixtures(version: &str) -> Vec<(String, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/network-policy-api")
        .join(version);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("read");
            let v: serde_json::Value = yaml_serde::from_str(&text).expect("yaml");
            (f.display().to_string(), v)
        })
        .collect()
}

/// Decodes `v` as `T`, encodes it again and compares the spec.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str, v: &serde_json::Value) -> T {
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let back = serde_json::to_value(&typed).expect("encode");
    assert_eq!(
        back["spec"], v["spec"],
        "{name}: spec changed in a round trip"
    );
    typed
}

#[test]
fn cluster_network_policy_v1beta1_fixtures_round_trip() {
    let mut seen = 0;
    for (name, v) in fixtures("v0.3.0") {
        assert_eq!(
            v["apiVersion"], "policy.networking.k8s.io/v1beta1",
            "{name}"
        );
        let cnp: v1beta1::ClusterNetworkPolicy = round_trip(&name, &v);
        assert_ne!(cnp.spec.tier, v1beta1::Tier::Unknown, "{name}");
        for r in &cnp.spec.ingress {
            assert_ne!(r.action, v1beta1::ClusterNetworkPolicyRuleAction::Unknown);
        }
        seen += 1;
    }
    assert_eq!(seen, 5);
}

#[test]
fn v1alpha2_reads_the_same_schema_and_converts_to_v1beta1() {
    for (name, mut v) in fixtures("v0.3.0") {
        v["apiVersion"] = "policy.networking.k8s.io/v1alpha2".into();
        let old: v1alpha2::ClusterNetworkPolicy = round_trip(&name, &v);
        let new = v1beta1::ClusterNetworkPolicy::from(old);
        assert_eq!(serde_json::to_value(&new.spec).expect("encode"), v["spec"]);
    }
}

#[test]
fn admin_and_baseline_admin_network_policy_fixtures_round_trip() {
    let (mut anps, mut banps) = (0, 0);
    for (name, v) in fixtures("v0.1.7") {
        match v["kind"].as_str() {
            Some("AdminNetworkPolicy") => {
                let anp: v1alpha1::AdminNetworkPolicy = round_trip(&name, &v);
                assert!(!anp.spec.ingress.is_empty() || !anp.spec.egress.is_empty());
                anps += 1;
            }
            Some("BaselineAdminNetworkPolicy") => {
                let _: v1alpha1::BaselineAdminNetworkPolicy = round_trip(&name, &v);
                banps += 1;
            }
            other => panic!("{name}: unexpected kind {other:?}"),
        }
    }
    assert_eq!((anps, banps), (3, 1));
}

#[test]
fn missing_fields_decode_like_go_zero_values_and_unknown_enums_are_kept_as_unknown() {
    let v = serde_json::json!({
        "apiVersion": "policy.networking.k8s.io/v1beta1",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "x"},
        "spec": {"tier": "Middle", "ingress": [{"action": "Allow", "from": [{}]}]}
    });
    let cnp: v1beta1::ClusterNetworkPolicy = serde_json::from_value(v).expect("decodes");
    assert_eq!(cnp.spec.tier, v1beta1::Tier::Unknown);
    assert_eq!(cnp.spec.priority, 0);
    assert_eq!(
        cnp.spec.ingress[0].action,
        v1beta1::ClusterNetworkPolicyRuleAction::Unknown
    );
    let port: v1alpha1::Port =
        serde_json::from_value(serde_json::json!({"port": 80})).expect("port");
    assert_eq!(port.protocol, "TCP", "the CRD's default");
}
