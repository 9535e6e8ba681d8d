//! Rendering of the `NetworkFabric` CustomResourceDefinition.
//!
//! The committed file `crds/weft.dev_networkfabrics.yaml` is exactly [`render_crd_yaml`]'s output;
//! `tests/crd_golden.rs` fails when they differ, so the YAML that Helm and `kubectl apply` install is
//! always the one the Rust types describe. `docs/api.md` is [`render_api_markdown`]'s output, the API
//! reference generated from the same field docs. Invariant: both outputs are deterministic (the
//! schema's maps are ordered), so regenerating an unchanged API yields identical bytes.

use kube::CustomResourceExt;
use serde_json::Value;

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

/// Fields whose schema comes from Kubernetes' own types: documented by reference, not expanded.
const EXTERNAL_TYPES: [(&str, &str); 3] = [
    ("spec.agent.resources", "core/v1 ResourceRequirements"),
    ("spec.agent.tolerations", "array of core/v1 Toleration"),
    ("status.conditions", "array of meta/v1 Condition"),
];

/// The API reference (Markdown) generated from the CRD schema and its field docs.
pub fn render_api_markdown() -> Result<String, Error> {
    let crd = NetworkFabric::crd();
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(serde_json::to_value)
        .transpose()
        .map_err(|source| Error::RenderJson {
            what: "the NetworkFabric schema",
            source,
        })?
        .unwrap_or(Value::Null);
    let names = &crd.spec.names;
    let mut out = String::new();
    out.push_str("# NetworkFabric API reference (weft.dev/v1alpha1)\n\n");
    out.push_str("<!-- Generated from crds/src/fabric.rs by `WEFT_UPDATE_GOLDEN=1 cargo test -p weft-crds --test crd_golden`; do not edit. -->\n\n");
    out.push_str(&format!(
        "`{}` is cluster-scoped (plural `{}`, short names {}). weft acts on one fabric per cluster, the oldest; \
         see [operator.md](operator.md) for how the operator reconciles it and what the status means. \
         The same text is available as `kubectl explain networkfabric.spec --recursive`. Examples: `crds/examples/`.\n\n",
        names.kind,
        names.plural,
        names
            .short_names
            .iter()
            .flatten()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (section, title) in [
        ("spec", "Spec"),
        ("status", "Status (written by the operator)"),
    ] {
        out.push_str(&format!("## {title}\n\n"));
        out.push_str(
            "| field | type | default | description | validation |\n|---|---|---|---|---|\n",
        );
        let node = &schema["properties"][section];
        walk(node, section, false, &mut out);
        out.push('\n');
    }
    Ok(out)
}

fn walk(node: &Value, path: &str, required: bool, out: &mut String) {
    let external = EXTERNAL_TYPES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, t)| *t);
    if path.contains('.') {
        out.push_str(&format!(
            "| `{path}` | {} | {} | {} | {} |\n",
            external.map_or_else(|| type_of(node), str::to_owned),
            node.get("default")
                .map_or_else(String::new, |d| format!("`{}`", compact(d))),
            cell(
                node.get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ),
            constraints(node, required),
        ));
    }
    if external.is_some() {
        return;
    }
    let (props, req) = match node.get("type").and_then(Value::as_str) {
        Some("array") => (&node["items"]["properties"], &node["items"]["required"]),
        _ => (&node["properties"], &node["required"]),
    };
    let suffix = if node.get("type").and_then(Value::as_str) == Some("array") {
        "[]"
    } else {
        ""
    };
    if let Some(props) = props.as_object() {
        let mut keys: Vec<&String> = props.keys().collect();
        keys.sort();
        for key in keys {
            let is_required = req
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x.as_str() == Some(key.as_str())));
            walk(
                &props[key.as_str()],
                &format!("{path}{suffix}.{key}"),
                is_required,
                out,
            );
        }
    }
}

fn type_of(node: &Value) -> String {
    if node.get("x-kubernetes-int-or-string").is_some() {
        return "int or string".to_owned();
    }
    match node.get("type").and_then(Value::as_str) {
        Some("array") => format!("array of {}", type_of(&node["items"])),
        Some("object") if node.get("additionalProperties").is_some() => {
            format!("map of {}", type_of(&node["additionalProperties"]))
        }
        Some(t) => t.to_owned(),
        None => "any".to_owned(),
    }
}

fn constraints(node: &Value, required: bool) -> String {
    let mut c: Vec<String> = Vec::new();
    if required {
        c.push("required".to_owned());
    }
    if let Some(e) = node.get("enum").and_then(Value::as_array) {
        c.push(format!(
            "one of {}",
            e.iter()
                .map(|v| format!("`{}`", compact(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (key, label) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
    ] {
        if let Some(v) = node.get(key) {
            c.push(format!("{label} {}", compact(v).trim_end_matches(".0")));
        }
    }
    if let Some(rules) = node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for r in rules {
            if let Some(m) = r.get("message").and_then(Value::as_str) {
                c.push(format!("CEL: {m}"));
            }
        }
    }
    cell(&c.join("; "))
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
