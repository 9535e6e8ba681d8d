//! Each CEL rule of the CRD, evaluated client-side (kube's CEL evaluator with the Kubernetes CIDR
//! library) against a good and a bad object, and each OpenAPI range/enum checked in the schema.
//! The end-to-end suite repeats the rejections against a real API server.

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use weft_crds::NetworkFabric;

fn schema() -> Value {
    let crd = NetworkFabric::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD has a schema");
    serde_json::to_value(schema).expect("schema to JSON")
}

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "weft.dev/v1alpha1",
        "kind": "NetworkFabric",
        "metadata": {"name": "default"},
        "spec": spec,
    })
}

fn messages(spec: Value) -> Vec<String> {
    match Validator::new().validate(&schema(), &object(spec), None) {
        Ok(()) => vec![],
        Err(errs) => errs.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn good_specs_pass_every_rule() {
    let good = [
        json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}}),
        json!({"podNetwork": {"cidrs": ["10.244.0.0/16", "fd00:10:244::/56"], "nodePrefixLength": {"ipv4": 24, "ipv6": 64}}}),
        json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "overlay": {"backend": "host-gw", "mtu": 1500, "interface": "10.0.0.0/24"}}),
        json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "overlay": {"backend": "vxlan", "directRouting": true, "mtu": 576, "interface": "eth0.100"}}),
        json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "overlay": {"mtu": 9000}}),
        json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "agent": {"maxUnavailable": "25%"}}),
        json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "agent": {"maxUnavailable": 3}}),
        json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "agent": {"maxUnavailable": "100%"}}),
    ];
    for spec in good {
        assert_eq!(messages(spec.clone()), Vec::<String>::new(), "{spec}");
    }
}

#[test]
fn each_rule_rejects_with_a_readable_message() {
    let cases = [
        (
            "not a cidr",
            json!({"podNetwork": {"cidrs": ["banana"]}}),
            "every entry of cidrs must be a CIDR",
        ),
        (
            "host bits",
            json!({"podNetwork": {"cidrs": ["10.244.1.0/16"]}}),
            "without host bits",
        ),
        (
            "two ipv4",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16", "10.245.0.0/16"]}}),
            "at most one IPv4",
        ),
        (
            "two ipv6",
            json!({"podNetwork": {"cidrs": ["fd00::/48", "fd01::/48"]}}),
            "at most one IPv6",
        ),
        (
            "node prefix v4",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"], "nodePrefixLength": {"ipv4": 16}}}),
            "nodePrefixLength must be longer",
        ),
        (
            "node prefix v6",
            json!({"podNetwork": {"cidrs": ["fd00:10:244::/56"], "nodePrefixLength": {"ipv6": 48}}}),
            "nodePrefixLength must be longer",
        ),
        (
            "mtu small",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "overlay": {"mtu": 575}}),
            "mtu must be 0 (automatic) or between 576 and 9000",
        ),
        (
            "mtu big",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "overlay": {"mtu": 9001}}),
            "mtu must be 0",
        ),
        (
            "direct routing host-gw",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "overlay": {"backend": "host-gw", "directRouting": true}}),
            "directRouting only applies",
        ),
        (
            "interface",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "overlay": {"interface": "a-very-long-interface-name"}}),
            "interface must be an interface name",
        ),
        (
            "confDir",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "cni": {"confDir": "etc/cni"}}),
            "confDir must be an absolute path",
        ),
        (
            "binDir",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "cni": {"binDir": "bin"}}),
            "binDir must be an absolute path",
        ),
        (
            "confName",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "cni": {"confName": "10-weft.conf"}}),
            "confName must be a file name ending in .conflist",
        ),
        (
            "ports",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "agent": {"metricsPort": 9000, "healthPort": 9000}}),
            "metricsPort and healthPort must differ",
        ),
        (
            "maxUnavailable zero",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "agent": {"maxUnavailable": 0}}),
            "maxUnavailable must be a number of at least 1",
        ),
        (
            "maxUnavailable percent",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "agent": {"maxUnavailable": "120%"}}),
            "maxUnavailable must be",
        ),
        (
            "maxUnavailable word",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "agent": {"maxUnavailable": "all"}}),
            "maxUnavailable must be",
        ),
        (
            "annotationPrefix",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "compatibility": {"annotationPrefix": "Not_A_Domain"}}),
            "annotationPrefix must be a DNS subdomain",
        ),
        (
            "subnetFile",
            json!({"podNetwork": {"cidrs": ["10.244.0.0/16"]}, "compatibility": {"subnetFile": "/subnet.env"}}),
            "subnetFile must be an absolute file path",
        ),
    ];
    for (name, spec, want) in cases {
        let got = messages(spec);
        assert!(
            got.iter().any(|m| m.contains(want)),
            "{name}: want a message containing {want:?}, got {got:?}"
        );
    }
}

/// Ranges and enums are OpenAPI constraints (the API server reports them as "should be less than or
/// equal to ..."); the client-side evaluator only runs CEL, so check that they are in the schema.
#[test]
fn ranges_and_enums_are_in_the_schema() {
    let s = schema();
    let spec = &s["properties"]["spec"]["properties"];
    let check = |ptr: &str, min: f64, max: f64| {
        let node = spec.pointer(ptr).unwrap_or_else(|| panic!("{ptr} missing"));
        assert_eq!(node["minimum"].as_f64(), Some(min), "{ptr}");
        assert_eq!(node["maximum"].as_f64(), Some(max), "{ptr}");
    };
    check("/overlay/properties/vni", 1.0, 16_777_215.0);
    check("/overlay/properties/port", 1.0, 65_535.0);
    check("/agent/properties/metricsPort", 1.0, 65_535.0);
    check("/agent/properties/healthPort", 1.0, 65_535.0);
    check(
        "/podNetwork/properties/nodePrefixLength/properties/ipv4",
        1.0,
        32.0,
    );
    check(
        "/podNetwork/properties/nodePrefixLength/properties/ipv6",
        1.0,
        128.0,
    );
    assert_eq!(
        spec["overlay"]["properties"]["backend"]["enum"],
        json!(["vxlan", "host-gw"])
    );
    assert_eq!(
        spec["podNetwork"]["properties"]["cidrs"]["minItems"],
        json!(1)
    );
    assert_eq!(
        spec["podNetwork"]["properties"]["cidrs"]["maxItems"],
        json!(2)
    );
    assert_eq!(s["properties"]["spec"]["required"], json!(["podNetwork"]));
}
