//! Tests of the Helm chart `charts/weft`, with a Helm built from `e2e/helm` (see `helm.rs`).
//!
//! - `helm lint --strict` passes, with the defaults and with every optional feature on;
//! - `helm template` output equals the golden files in `charts/weft/tests/golden/`
//!   (`WEFT_UPDATE_GOLDEN=1 cargo test -p weft-e2e --test chart` rewrites them; review the diff);
//! - the rendered objects keep the contracts others rely on (host network, tolerations, flags
//!   in `args`, labels, RBAC) for several value combinations;
//! - `values.schema.json` and the chart's own checks refuse bad values;
//! - the chart's copy of the CRD is the generated one in `crds/`.
//!
//! None of this needs a cluster: `helm lint` and `helm template` are client-side. One test,
//! ignored by default because it needs root, does: `install_upgrade_uninstall_on_a_local_cluster`
//! brings up its own local cluster and checks install, upgrade and uninstall as Helm documents
//! them, with the chart's uninstall hook (`cargo test -p weft-e2e --test chart -- --ignored`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use weft_e2e::helm;

const RELEASE: &str = "weft";
const NAMESPACE: &str = "weft-system";
const CRD_FILE: &str = "weft.dev_networkfabrics.yaml";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e has a parent directory")
        .to_path_buf()
}

/// The Helm binary, built once per test process (and cached across processes by `ensure_helm`).
fn helm_binary() -> &'static Path {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = HELM.get_or_init(|| {
        let cache = helm::default_cache_dir().map_err(|e| format!("{e:#}"))?;
        helm::ensure_helm(&cache).map_err(|e| format!("{e:#}"))
    });
    match built {
        Ok(path) => path,
        Err(err) => panic!("cannot build helm: {err}"),
    }
}

/// Runs helm with a private home, so that a developer's repositories, plugins and kubeconfig
/// cannot change what these tests see.
fn run_helm(args: &[&str]) -> Output {
    let home = std::env::temp_dir().join(format!("weft-chart-test-{}", std::process::id()));
    Command::new(helm_binary())
        .args(args)
        .current_dir(repo_root())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("KUBECONFIG", home.join("kubeconfig"))
        .env_remove("HELM_NAMESPACE")
        .env_remove("HELM_KUBECONTEXT")
        .output()
        .expect("failed to run helm")
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "helm {}\nexit: {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` of the chart with `--set`/`-f` arguments; panics unless it succeeds.
fn template(extra: &[&str]) -> String {
    let chart = helm::chart_dir();
    let chart = chart.to_str().expect("the chart path is UTF-8");
    let mut args = vec!["template", RELEASE, chart, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    let out = run_helm(&args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// `helm template` with arguments that must be refused; returns helm's stderr.
fn template_err(extra: &[&str]) -> String {
    let chart = helm::chart_dir();
    let chart = chart.to_str().expect("the chart path is UTF-8");
    let mut args = vec!["template", RELEASE, chart, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    let out = run_helm(&args);
    assert!(
        !out.status.success(),
        "expected helm to refuse these values\n{}",
        describe(&args, &out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The rendered objects, keyed by "Kind/name".
fn objects(rendered: &str) -> BTreeMap<String, Value> {
    let mut objects = BTreeMap::new();
    for doc in rendered.split("\n---") {
        let value: Value = yaml_serde::from_str(doc)
            .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{doc}"));
        if value.is_null() {
            continue;
        }
        let key = format!(
            "{}/{}",
            value["kind"].as_str().unwrap(),
            value["metadata"]["name"].as_str().unwrap()
        );
        assert!(
            objects.insert(key.clone(), value).is_none(),
            "{key} is rendered twice"
        );
    }
    objects
}

fn get<'a>(objects: &'a BTreeMap<String, Value>, key: &str) -> &'a Value {
    objects.get(key).unwrap_or_else(|| {
        panic!(
            "{key} is not rendered; rendered: {:?}",
            objects.keys().collect::<Vec<_>>()
        )
    })
}

fn operator_container(objects: &BTreeMap<String, Value>) -> &Value {
    &get(objects, "Deployment/weft-operator")["spec"]["template"]["spec"]["containers"][0]
}

fn args_of(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .expect("the container has args")
        .iter()
        .map(|a| a.as_str().expect("args are strings"))
        .collect()
}

fn assert_golden(name: &str, actual: &str) {
    let path = helm::chart_dir().join("tests").join("golden").join(name);
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with WEFT_UPDATE_GOLDEN=1 cargo test -p weft-e2e --test chart",
            path.display()
        )
    });
    if expected != actual {
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        let context = |text: &str| {
            text.lines()
                .enumerate()
                .skip(first_difference.saturating_sub(3))
                .take(7)
                .map(|(i, l)| format!("{:5} | {l}", i + 1))
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "helm template output differs from {} at line {}\n--- golden:\n{}\n--- rendered:\n{}\n\
             If the change is intended, run WEFT_UPDATE_GOLDEN=1 cargo test -p weft-e2e --test chart \
             and review the diff.",
            path.display(),
            first_difference + 1,
            context(&expected),
            context(actual)
        );
    }
}

const ALL_FEATURES: &[&str] = &["-f", "charts/weft/tests/values-all-features.yaml"];

#[test]
fn lint_strict_passes() {
    for extra in [&[][..], ALL_FEATURES] {
        let mut args = vec!["lint", "--strict", "charts/weft", "--namespace", NAMESPACE];
        args.extend_from_slice(extra);
        let out = run_helm(&args);
        assert!(out.status.success(), "{}", describe(&args, &out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{}",
            describe(&args, &out)
        );
        assert!(
            !stdout.contains("[WARNING]") && !stdout.contains("[ERROR]"),
            "{}",
            describe(&args, &out)
        );
    }
}

#[test]
fn template_matches_golden() {
    assert_golden("template.yaml", &template(&[]));
}

#[test]
fn template_with_all_features_matches_golden() {
    assert_golden("template-all-features.yaml", &template(ALL_FEATURES));
}

/// Parses `object` as the Kubernetes type `T` and back. k8s-openapi drops fields it does not know,
/// so any difference is a misspelled or misplaced field that the API server would reject (or,
/// worse, silently prune).
fn assert_round_trips<T>(key: &str, object: &Value)
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{key} is not a valid {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&typed).expect("k8s-openapi types serialize");
    assert_eq!(
        &back, object,
        "{key} has fields that its API type does not know"
    );
}

#[test]
fn rendered_objects_are_valid_kubernetes_objects() {
    use k8s_openapi::api::{apps, batch, core, policy, rbac};
    for extra in [&[][..], ALL_FEATURES] {
        let mut checked = 0;
        for (key, object) in objects(&template(extra)) {
            match object["kind"].as_str().unwrap() {
                "Deployment" => assert_round_trips::<apps::v1::Deployment>(&key, &object),
                "ServiceAccount" => assert_round_trips::<core::v1::ServiceAccount>(&key, &object),
                "Service" => assert_round_trips::<core::v1::Service>(&key, &object),
                "ClusterRole" => assert_round_trips::<rbac::v1::ClusterRole>(&key, &object),
                "ClusterRoleBinding" => {
                    assert_round_trips::<rbac::v1::ClusterRoleBinding>(&key, &object)
                }
                "Role" => assert_round_trips::<rbac::v1::Role>(&key, &object),
                "RoleBinding" => assert_round_trips::<rbac::v1::RoleBinding>(&key, &object),
                "Job" => assert_round_trips::<batch::v1::Job>(&key, &object),
                "Pod" => assert_round_trips::<core::v1::Pod>(&key, &object),
                "PodDisruptionBudget" => {
                    assert_round_trips::<policy::v1::PodDisruptionBudget>(&key, &object)
                }
                // Custom resources: the NetworkFabric is validated by its CRD on apply (and its
                // spec by the API crate's tests); ServiceMonitor belongs to prometheus-operator.
                "NetworkFabric" | "ServiceMonitor" => continue,
                kind => panic!("{key}: the chart renders a {kind} that this test does not check"),
            }
            checked += 1;
        }
        assert!(checked >= 7, "only {checked} objects checked");
    }
}

#[test]
fn operator_runs_before_the_pod_network_exists() {
    let objects = objects(&template(&[]));
    let pod = &get(&objects, "Deployment/weft-operator")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["serviceAccountName"], "weft-operator");
}

#[test]
fn operator_container_follows_the_local_cluster_contract() {
    let objects = objects(&template(&[
        "--set",
        "image.tag=dev",
        "--set",
        "logFormat=text",
    ]));
    let container = operator_container(&objects);
    // The local cluster maps the image's last path segment to a binary and passes `args`.
    assert_eq!(container["image"], "weft.dev/weft-operator:dev");
    assert!(
        container.get("command").is_none(),
        "command must stay unset: {container}"
    );
    assert_eq!(
        args_of(container),
        [
            "--agent-image=weft.dev/weft-agent:0.1.0",
            "--metrics-addr=0.0.0.0:9643",
            "--health-addr=0.0.0.0:9644",
            "--log-format=text",
            "--leader-election=true",
        ]
    );
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "health");
    let ports: Vec<(&str, i64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [("metrics", 9643), ("health", 9644)]);
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
}

#[test]
fn agent_image_defaults_to_app_version_and_can_be_pinned() {
    let objects = objects(&template(&[
        "--set",
        "agent.image.repository=registry.example/weft-agent",
        "--set",
        "agent.image.tag=v9",
    ]));
    assert_eq!(
        args_of(operator_container(&objects))[0],
        "--agent-image=registry.example/weft-agent:v9"
    );
}

#[test]
fn every_object_carries_the_standard_labels() {
    for extra in [&[][..], ALL_FEATURES] {
        for (key, object) in objects(&template(extra)) {
            let labels = &object["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/name"], "weft", "{key}");
            assert_eq!(labels["app.kubernetes.io/instance"], RELEASE, "{key}");
            assert_eq!(labels["app.kubernetes.io/version"], "0.1.0", "{key}");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{key}");
            assert_eq!(labels["helm.sh/chart"], "weft-0.1.0", "{key}");
        }
    }
}

#[test]
fn namespaced_objects_land_in_the_release_namespace() {
    const CLUSTER_SCOPED: &[&str] = &["ClusterRole", "ClusterRoleBinding", "NetworkFabric"];
    for (key, object) in objects(&template(ALL_FEATURES)) {
        let kind = object["kind"].as_str().unwrap();
        let namespace = &object["metadata"]["namespace"];
        if CLUSTER_SCOPED.contains(&kind) {
            assert!(
                namespace.is_null(),
                "{key} is cluster-scoped but has namespace {namespace}"
            );
        } else {
            assert_eq!(namespace, NAMESPACE, "{key}");
        }
    }
}

/// A role's rules as sorted "verb group/resource[/name]" grants (group "core" for ""), so that
/// two rule lists compare equal however they are grouped.
fn grants(role: &Value) -> Vec<String> {
    let strings = |rule: &Value, key: &str| -> Vec<String> {
        rule.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().expect("strings").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut grants = Vec::new();
    for rule in role["rules"].as_array().expect("the role has rules") {
        let names = strings(rule, "resourceNames");
        for group in strings(rule, "apiGroups") {
            let group = if group.is_empty() {
                "core".to_string()
            } else {
                group
            };
            for resource in strings(rule, "resources") {
                for verb in strings(rule, "verbs") {
                    if names.is_empty() {
                        grants.push(format!("{verb} {group}/{resource}"));
                    }
                    for name in &names {
                        grants.push(format!("{verb} {group}/{resource}/{name}"));
                    }
                }
            }
        }
    }
    grants.sort();
    grants.dedup();
    grants
}

/// The operator's own RBAC as the operator crate renders it (from `operator_cluster_rules()` and
/// `operator_namespace_rules()` in operator/src/rbac.rs), by kind: its test keeps the file current.
fn operator_rbac_golden() -> BTreeMap<String, Vec<String>> {
    let path = repo_root()
        .join("operator")
        .join("tests")
        .join("golden")
        .join("operator-rbac.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut roles = BTreeMap::new();
    for (key, role) in objects(&text) {
        let kind = key.split('/').next().unwrap().to_string();
        assert!(
            roles.insert(kind, grants(&role)).is_none(),
            "{key} twice in {}",
            path.display()
        );
    }
    roles
}

#[test]
fn operator_rbac_is_exactly_what_the_operator_uses() {
    let objects = objects(&template(&[]));
    let golden = operator_rbac_golden();
    let cluster = grants(get(&objects, "ClusterRole/weft-operator"));
    assert_eq!(
        cluster, golden["ClusterRole"],
        "the chart's ClusterRole differs from operator/tests/golden/operator-rbac.yaml"
    );
    let namespaced = grants(get(&objects, "Role/weft-operator"));
    assert_eq!(
        namespaced, golden["Role"],
        "the chart's Role differs from operator/tests/golden/operator-rbac.yaml"
    );
    // The operator holds what it grants the agent (escalation prevention), and nothing broad.
    for agent_grant in [
        "patch core/nodes",
        "patch core/nodes/status",
        "watch core/pods",
        "bind rbac.authorization.k8s.io/clusterroles/weft-agent",
    ] {
        assert!(
            cluster.iter().any(|g| g == agent_grant),
            "missing {agent_grant}"
        );
    }
    for grant in cluster.iter().chain(&namespaced) {
        assert!(!grant.contains('*'), "wildcard: {grant}");
        assert!(
            !grant.contains("secrets"),
            "the operator never reads Secrets: {grant}"
        );
        assert!(
            !grant.starts_with("escalate ") && !grant.starts_with("impersonate "),
            "{grant}"
        );
    }

    for (binding, role_kind) in [
        ("ClusterRoleBinding/weft-operator", "ClusterRole"),
        ("RoleBinding/weft-operator", "Role"),
    ] {
        let binding = get(&objects, binding);
        assert_eq!(binding["roleRef"]["kind"], role_kind);
        assert_eq!(binding["roleRef"]["name"], "weft-operator");
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "weft-operator", "namespace": NAMESPACE}])
        );
    }

    // Without leader election there is no Lease to write.
    let alone = objects_without_leader_election();
    let namespaced = grants(get(&alone, "Role/weft-operator"));
    assert!(
        namespaced.iter().all(|g| !g.contains("leases")),
        "{namespaced:?}"
    );
    assert_eq!(namespaced.len(), golden["Role"].len() - 3);
}

fn objects_without_leader_election() -> BTreeMap<String, Value> {
    objects(&template(&["--set", "leaderElection.enabled=false"]))
}

#[test]
fn fabric_is_optional_and_comes_from_values() {
    let objects_default = objects(&template(&[]));
    let fabric = get(&objects_default, "NetworkFabric/default");
    assert_eq!(fabric["apiVersion"], "weft.dev/v1alpha1");
    assert_eq!(
        fabric["spec"]["podNetwork"]["cidrs"],
        serde_json::json!(["10.244.0.0/16"])
    );
    // Helm must never delete the cluster's network as a side effect of a values change.
    assert_eq!(
        fabric["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    // Only what the CRD cannot default: everything else is the CRD's business.
    assert_eq!(fabric["spec"].as_object().unwrap().len(), 1, "{fabric}");
    // The pre-delete hook removes exactly this fabric, and may delete nothing else.
    let hook = get(&objects_default, "Job/weft-uninstall");
    assert_eq!(
        hook["metadata"]["annotations"]["helm.sh/hook"],
        "pre-delete"
    );
    assert_eq!(hook["spec"]["template"]["spec"]["hostNetwork"], true);
    let hook_args = args_of(&hook["spec"]["template"]["spec"]["containers"][0]);
    assert_eq!(
        &hook_args[..3],
        ["delete", "networkfabrics.weft.dev", "default"]
    );
    assert!(hook_args.contains(&"--wait=true"), "{hook_args:?}");
    let hook_role = get(&objects_default, "ClusterRole/weft-uninstall");
    let delete_rule = hook_role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verbs"].as_array().unwrap().iter().any(|v| v == "delete"))
        .expect("the hook may delete");
    assert_eq!(delete_rule["resourceNames"], serde_json::json!(["default"]));

    // `helm test` waits for exactly this fabric to be Available, and may only read fabrics.
    let test_pod = get(&objects_default, "Pod/weft-test-fabric-available");
    assert_eq!(test_pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    assert_eq!(
        args_of(&test_pod["spec"]["containers"][0]),
        [
            "wait",
            "networkfabrics.weft.dev/default",
            "--for=condition=Available=True",
            "--timeout=300s"
        ]
    );
    assert_eq!(
        grants(get(&objects_default, "ClusterRole/weft-test")),
        [
            "get weft.dev/networkfabrics",
            "list weft.dev/networkfabrics",
            "watch weft.dev/networkfabrics"
        ]
    );

    let renamed = objects(&template(&[
        "--set",
        "fabric.name=prod",
        "--set",
        "fabric.spec.overlay.backend=host-gw",
    ]));
    assert_eq!(
        get(&renamed, "NetworkFabric/prod")["spec"]["overlay"]["backend"],
        "host-gw"
    );
    assert_eq!(
        args_of(&get(&renamed, "Job/weft-uninstall")["spec"]["template"]["spec"]["containers"][0])
            [2],
        "prod"
    );

    let without = objects(&template(&["--set", "fabric.create=false"]));
    for kind in [
        "NetworkFabric/",
        "Job/",
        "Pod/",
        "ClusterRole/weft-uninstall",
        "ClusterRole/weft-test",
    ] {
        assert!(
            !without.keys().any(|k| k.starts_with(kind)),
            "{kind} rendered with fabric.create=false"
        );
    }
    assert!(without.contains_key("Deployment/weft-operator"));
}

#[test]
fn replicas_scale_with_leader_election_and_a_disruption_budget() {
    let single = objects(&template(&[]));
    assert_eq!(
        get(&single, "Deployment/weft-operator")["spec"]["replicas"],
        1
    );
    assert!(
        !single.keys().any(|k| k.starts_with("PodDisruptionBudget/")),
        "one replica must not block drains"
    );

    let two = objects(&template(&["--set", "replicas=2"]));
    assert_eq!(get(&two, "Deployment/weft-operator")["spec"]["replicas"], 2);
    assert_eq!(
        get(&two, "PodDisruptionBudget/weft-operator")["spec"]["maxUnavailable"],
        1
    );
    assert!(args_of(operator_container(&two)).contains(&"--leader-election=true"));

    let err = template_err(&[
        "--set",
        "replicas=2",
        "--set",
        "leaderElection.enabled=false",
    ]);
    assert!(
        err.contains("replicas > 1 needs leaderElection.enabled=true"),
        "{err}"
    );
    let alone = objects_without_leader_election();
    assert!(args_of(operator_container(&alone)).contains(&"--leader-election=false"));
}

#[test]
fn existing_service_account_and_no_rbac() {
    let objects = objects(&template(&[
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=platform-weft",
        "--set",
        "rbac.create=false",
    ]));
    assert!(
        !objects
            .keys()
            .any(|k| k.starts_with("ServiceAccount/weft-operator"))
    );
    assert!(!objects.contains_key("ClusterRole/weft-operator"));
    assert_eq!(
        get(&objects, "Deployment/weft-operator")["spec"]["template"]["spec"]["serviceAccountName"],
        "platform-weft"
    );
    let err = template_err(&["--set", "serviceAccount.create=false"]);
    assert!(err.contains("serviceAccount.name is required"), "{err}");
}

#[test]
fn schema_rejects_bad_values() {
    // (--set argument, a fragment helm's schema error must contain)
    let cases: &[(&str, &str)] = &[
        ("replicas=-1", "replicas"),
        ("replicas=1.5", "replicas"),
        ("bogus=1", "bogus"),
        ("image.registry=example.org", "registry"),
        ("logFormat=xml", "logFormat"),
        ("metrics.port=70000", "port"),
        ("health.port=0", "port"),
        ("image.repository=", "repository"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("fabric.name=Not_A_Name", "name"),
        ("fabric.create=yes", "create"),
        ("tolerations[0].operator=Maybe", "operator"),
        ("resources.requests.cpu=lots", "cpu"),
        ("securityContext.privilege=true", "privilege"),
        ("uninstall.timeoutSeconds=1", "timeoutSeconds"),
    ];
    for (set, fragment) in cases {
        let err = template_err(&["--set", set]);
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "--set {set}: not refused by the schema:\n{err}"
        );
        assert!(
            err.contains(fragment),
            "--set {set}: the error does not name {fragment:?}:\n{err}"
        );
    }
}

#[test]
fn chart_checks_refuse_contradictory_values() {
    let err = template_err(&["--set", "metrics.port=9644"]);
    assert!(
        err.contains("metrics.port and health.port must differ"),
        "{err}"
    );
    let err = template_err(&["--set", "metrics.serviceMonitor.enabled=true"]);
    assert!(err.contains("needs metrics.service.enabled=true"), "{err}");
}

/// The structural schema of a CRD field, as a draft-07 JSON schema for values.schema.json.
///
/// The API server silently prunes fields a CRD does not know; a chart value with a typo would be
/// dropped without a word. So objects with `properties` refuse unknown keys here
/// (`additionalProperties: false`), `nullable` becomes a `null` type, `x-kubernetes-int-or-string`
/// becomes integer-or-string, OpenAPI's boolean `exclusiveMinimum`/`exclusiveMaximum` become
/// draft-07's numbers, and what JSON Schema cannot evaluate (CEL rules, `format`, other
/// `x-kubernetes-*` markers) is dropped: the API server still checks those on apply.
fn draft07_from_structural(schema: &Value) -> Value {
    let Some(object) = schema.as_object() else {
        return schema.clone();
    };
    let flag = |key: &str| object.get(key).and_then(Value::as_bool).unwrap_or(false);
    let mut out = serde_json::Map::new();
    for (key, value) in object {
        match key.as_str() {
            "properties" => {
                let properties = value
                    .as_object()
                    .expect("properties is an object")
                    .iter()
                    .map(|(name, property)| (name.clone(), draft07_from_structural(property)))
                    .collect();
                out.insert(key.clone(), Value::Object(properties));
            }
            "items" | "additionalProperties" | "not" => {
                out.insert(key.clone(), draft07_from_structural(value));
            }
            "anyOf" | "oneOf" | "allOf" => {
                let schemas = value.as_array().expect("a list of schemas");
                out.insert(
                    key.clone(),
                    schemas.iter().map(draft07_from_structural).collect(),
                );
            }
            "exclusiveMinimum" | "exclusiveMaximum" => {
                if value.as_bool() == Some(true) {
                    let bound = if key == "exclusiveMinimum" {
                        "minimum"
                    } else {
                        "maximum"
                    };
                    out.insert(key.clone(), object[bound].clone());
                }
            }
            "nullable" | "format" => {}
            _ if key.starts_with("x-kubernetes-") => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if flag("x-kubernetes-int-or-string") {
        out.insert("type".into(), serde_json::json!(["integer", "string"]));
    }
    if flag("exclusiveMinimum") {
        out.remove("minimum");
    }
    if flag("exclusiveMaximum") {
        out.remove("maximum");
    }
    if flag("nullable") {
        match out.get_mut("type") {
            Some(Value::Array(types)) => types.push("null".into()),
            Some(single) => *single = serde_json::json!([single.clone(), "null"]),
            None => {}
        }
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    if out.contains_key("properties")
        && !out.contains_key("additionalProperties")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        out.insert("additionalProperties".into(), false.into());
    }
    Value::Object(out)
}

/// A JSON value that serializes with its object keys sorted, whatever serde_json's map type.
struct Sorted<'a>(&'a Value);

impl serde::Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(object) => {
                let mut keys: Vec<&String> = object.keys().collect();
                keys.sort();
                let mut map = serializer.serialize_map(Some(keys.len()))?;
                for key in keys {
                    map.serialize_entry(key, &Sorted(&object[key]))?;
                }
                map.end()
            }
            Value::Array(values) => {
                let mut seq = serializer.serialize_seq(Some(values.len()))?;
                for value in values {
                    seq.serialize_element(&Sorted(value))?;
                }
                seq.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// The `spec` schema of the chart's CRD.
///
/// Read from the generated CRD in `crds/`, the source of the chart's copy (which
/// `chart_crd_is_the_generated_crd` keeps equal), so that one `WEFT_UPDATE_GOLDEN=1` run updates
/// both the copy and the values schema.
fn crd_spec_schema() -> Value {
    let path = repo_root().join("crds").join(CRD_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let crd: Value = yaml_serde::from_str(&text).expect("the CRD is YAML");
    let versions = crd["spec"]["versions"]
        .as_array()
        .expect("the CRD has versions");
    let served = versions
        .iter()
        .find(|v| v["name"] == "v1alpha1")
        .expect("the CRD serves v1alpha1, the version the chart's NetworkFabric uses");
    served["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// `fabric.spec` in values.schema.json is the CRD's spec schema (converted): a bad `fabric.spec`
/// fails `helm install`/`helm template`, not only `kubectl apply`, and an unknown field is refused
/// instead of pruned. `WEFT_UPDATE_GOLDEN=1` rewrites values.schema.json (keys sorted).
#[test]
fn values_schema_checks_fabric_spec_with_the_crd_schema() {
    let path = helm::chart_dir().join("values.schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut schema: Value = serde_json::from_str(&text).expect("values.schema.json is JSON");
    let wanted = draft07_from_structural(&crd_spec_schema());
    let current = &mut schema["properties"]["fabric"]["properties"]["spec"];
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        *current = wanted;
        let mut text = serde_json::to_string_pretty(&Sorted(&schema)).expect("JSON serializes");
        text.push('\n');
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    assert!(
        *current == wanted,
        "fabric.spec in {} is not the CRD's spec schema; run WEFT_UPDATE_GOLDEN=1 cargo test -p weft-e2e \
         --test chart and review the diff",
        path.display()
    );
    let pretty = serde_json::to_string_pretty(&Sorted(&schema)).expect("JSON serializes");
    assert_eq!(
        text.trim_end(),
        pretty,
        "{} is not sorted and pretty-printed; regenerate it",
        path.display()
    );
}

/// Every sample fabric in crds/examples passes the chart's schema as `fabric.spec`.
#[test]
fn sample_fabrics_are_valid_chart_values() {
    let examples = repo_root().join("crds").join("examples");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", examples.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "no samples in {}", examples.display());
    let scratch = std::env::temp_dir().join(format!("weft-chart-samples-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    for sample in entries {
        let text = std::fs::read_to_string(&sample).unwrap();
        let fabric: Value =
            yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", sample.display()));
        let values = serde_json::json!({"fabric": {"spec": fabric["spec"]}});
        let values_file = scratch.join(sample.file_name().unwrap());
        // JSON is YAML.
        std::fs::write(&values_file, values.to_string()).unwrap();
        let rendered = objects(&template(&["-f", values_file.to_str().unwrap()]));
        assert_eq!(
            get(&rendered, "NetworkFabric/default")["spec"],
            fabric["spec"],
            "{}",
            sample.display()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn schema_rejects_bad_fabric_specs() {
    let cases: &[(&str, &str)] = &[
        ("fabric.spec.overlay.backend=geneve", "backend"),
        ("fabric.spec.overlay.vnii=5", "vnii"),
        ("fabric.spec.overlay.port=0", "port"),
        ("fabric.spec.unknownSection.enabled=true", "unknownSection"),
        ("fabric.spec.masquerade.enabled=sometimes", "enabled"),
    ];
    for (set, fragment) in cases {
        let err = template_err(&["--set", set]);
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "--set {set}: not refused by the schema:\n{err}"
        );
        assert!(
            err.contains(fragment),
            "--set {set}: the error does not name {fragment:?}:\n{err}"
        );
    }
    // podNetwork is required by the CRD, and so by the chart.
    let err = template_err(&["--set", "fabric.spec.podNetwork=null"]);
    assert!(err.contains("podNetwork"), "{err}");
}

/// The chart ships the CRD that the crds crate generates; Helm installs it from charts/weft/crds.
/// After regenerating it, copy it (`cp crds/weft.dev_networkfabrics.yaml charts/weft/crds/`), or
/// let `WEFT_UPDATE_GOLDEN=1` copy it.
#[test]
fn chart_crd_is_the_generated_crd() {
    let generated = repo_root().join("crds").join(CRD_FILE);
    let shipped = helm::chart_dir().join("crds").join(CRD_FILE);
    let generated_text = std::fs::read_to_string(&generated)
        .unwrap_or_else(|e| panic!("cannot read the generated CRD {}: {e}", generated.display()));
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&shipped, &generated_text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", shipped.display()));
        return;
    }
    let shipped_text = std::fs::read_to_string(&shipped).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; copy it with `cp {} {}`",
            shipped.display(),
            generated.display(),
            shipped.display()
        )
    });
    assert!(
        generated_text == shipped_text,
        "{} differs from {}; copy it with `cp {} {}`",
        shipped.display(),
        generated.display(),
        generated.display(),
        shipped.display()
    );
    let crd: Value = yaml_serde::from_str(&shipped_text).expect("the CRD is YAML");
    assert_eq!(crd["metadata"]["name"], "networkfabrics.weft.dev");
    assert_eq!(crd["spec"]["scope"], "Cluster");
}

/// Tears the lifecycle test's cluster down however the test ends.
struct ClusterGuard(Option<weft_e2e::Cluster>);

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if let Some(cluster) = self.0.take()
            && let Err(e) = cluster.down()
        {
            eprintln!("failed to tear the chart test cluster down: {e:#}");
        }
    }
}

/// `helm` against the lifecycle test's cluster; panics with helm's output unless it succeeds.
fn helm_on(cluster: &weft_e2e::Cluster, args: &[&str]) -> String {
    let out = Command::new(helm_binary())
        .args(args)
        .env("KUBECONFIG", cluster.cfg.kubeconfig())
        .output()
        .expect("failed to run helm");
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl get -o json` on the lifecycle test's cluster; None when the object does not exist.
fn kubectl_get(cluster: &weft_e2e::Cluster, args: &[&str]) -> Option<Value> {
    let out = cluster
        .kubectl()
        .arg("get")
        .args(args)
        .args(["-o", "json", "--ignore-not-found"])
        .output()
        .expect("failed to run kubectl");
    assert!(
        out.status.success(),
        "kubectl get {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    (!text.trim().is_empty()).then(|| serde_json::from_str(&text).expect("kubectl prints JSON"))
}

fn wait_for(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// What the Helm docs promise, and what the chart adds, on a real (local) cluster:
/// `helm install` creates the CRD before the fabric; `helm upgrade` leaves the CRD alone and never
/// deletes the fabric (resource-policy keep); `helm uninstall` runs the pre-delete hook, which
/// deletes the fabric through the operator's finalizer, then removes the release's objects and the
/// hook's, and keeps the CRD. Then the `kubectl apply` route of docs/install.md, to the end.
#[test]
#[ignore = "needs root and brings up a local 2-node cluster (a few minutes): \
            cargo test -p weft-e2e --test chart -- --ignored"]
fn install_upgrade_uninstall_on_a_local_cluster() {
    use std::time::Duration;

    let bin_dir = Path::new(env!("CARGO_BIN_EXE_weft-e2e"))
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    // Addresses and ports apart from the demo cluster and the other suites.
    let mut cfg = weft_e2e::ClusterConfig::new("wchart", 2, bin_dir);
    cfg.underlay_octet = 96;
    cfg.api_port = 16443 + 300;
    cfg.port_base = 12300 + 300;
    let cidrs = serde_json::to_string(&cfg.cluster_cidrs).unwrap();
    let guard = ClusterGuard(Some(
        weft_e2e::Cluster::up(cfg).expect("the local cluster comes up"),
    ));
    let c = guard.0.as_ref().unwrap();
    let chart = helm::chart_dir();
    let chart = chart.to_str().unwrap();
    let cidrs_arg = format!("fabric.spec.podNetwork.cidrs={cidrs}");
    let install = |verb: &[&str], extra: &[&str]| {
        let mut args = verb.to_vec();
        args.extend([
            RELEASE,
            chart,
            "--namespace",
            NAMESPACE,
            "--wait",
            "--timeout",
            "3m",
        ]);
        args.extend(["--set-json", &cidrs_arg]);
        args.extend(extra);
        helm_on(c, &args);
    };
    let crd = || kubectl_get(c, &["crd", "networkfabrics.weft.dev"]);
    let fabric = || kubectl_get(c, &["networkfabric", "default"]);

    // Install: the CRD from crds/, then the fabric, which the operator takes over (finalizer).
    install(&["install", "--create-namespace"], &[]);
    assert!(crd().is_some(), "helm install did not create the CRD");
    wait_for(
        "the operator's finalizer on the fabric",
        Duration::from_secs(60),
        || {
            fabric().is_some_and(|f| {
                f["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            })
        },
    );

    // `helm test`: the fabric becomes Available, and the test's objects go away after it.
    helm_on(
        c,
        &["test", RELEASE, "--namespace", NAMESPACE, "--timeout", "5m"],
    );
    assert!(
        kubectl_get(c, &["clusterrole", "weft-test"]).is_none(),
        "helm test left its ClusterRole behind"
    );

    // Upgrade: the CRD is not touched (Helm never upgrades crds/), the templates are.
    let marked = c
        .kubectl()
        .args([
            "label",
            "crd",
            "networkfabrics.weft.dev",
            "weft.dev/chart-test=kept",
        ])
        .status()
        .unwrap();
    assert!(marked.success());
    let version_before = crd().unwrap()["metadata"]["resourceVersion"].clone();
    install(&["upgrade"], &["--set", "logFormat=text"]);
    let crd_after = crd().unwrap();
    assert_eq!(
        crd_after["metadata"]["resourceVersion"], version_before,
        "helm upgrade changed the CRD"
    );
    assert_eq!(
        crd_after["metadata"]["labels"]["weft.dev/chart-test"],
        "kept"
    );
    let deployment = kubectl_get(c, &["deployment", "-n", NAMESPACE, "weft-operator"]).unwrap();
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--log-format=text"),
        "{args}"
    );

    // An upgrade that stops managing the fabric leaves it (and the network) in place...
    install(&["upgrade"], &["--set", "fabric.create=false"]);
    assert!(
        fabric().is_some(),
        "helm upgrade with fabric.create=false deleted the fabric"
    );
    // ...and managing it again adopts it.
    install(&["upgrade"], &[]);

    // Uninstall: the hook deletes the fabric through the operator, then Helm removes the rest.
    helm_on(
        c,
        &[
            "uninstall",
            RELEASE,
            "--namespace",
            NAMESPACE,
            "--wait",
            "--timeout",
            "5m",
        ],
    );
    assert!(fabric().is_none(), "the fabric survived helm uninstall");
    for (kind, name) in [
        ("deployment", "weft-operator"),
        ("daemonset", "weft-agent"),
        ("serviceaccount", "weft-operator"),
        ("role", "weft-operator"),
        ("job", "weft-uninstall"),
        ("serviceaccount", "weft-uninstall"),
    ] {
        assert!(
            kubectl_get(c, &[kind, "-n", NAMESPACE, name]).is_none(),
            "{kind}/{name} survived helm uninstall"
        );
    }
    for (kind, name) in [
        ("clusterrole", "weft-operator"),
        ("clusterrolebinding", "weft-operator"),
        ("clusterrole", "weft-uninstall"),
        ("clusterrole", "weft-agent"),
    ] {
        assert!(
            kubectl_get(c, &[kind, name]).is_none(),
            "{kind}/{name} survived helm uninstall"
        );
    }
    assert!(
        crd().is_some(),
        "helm uninstall deleted the CRD, which Helm documents it never does"
    );

    // docs/install.md without Helm: render with --no-hooks, CRDs first, then the rest.
    let rendered = helm_on(
        c,
        &[
            "template",
            RELEASE,
            chart,
            "--namespace",
            NAMESPACE,
            "--no-hooks",
            "--set-json",
            &cidrs_arg,
        ],
    );
    assert!(
        !rendered.contains("helm.sh/hook"),
        "--no-hooks rendered a hook"
    );
    let manifest =
        std::env::temp_dir().join(format!("weft-chart-apply-{}.yaml", std::process::id()));
    std::fs::write(&manifest, &rendered).unwrap();
    let manifest_arg = manifest.to_str().unwrap().to_string();
    let crds_dir = helm::chart_dir().join("crds");
    let kubectl = |args: &[&str]| {
        let out = c
            .kubectl()
            .args(args)
            .output()
            .expect("failed to run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    kubectl(&["apply", "--server-side", "-f", crds_dir.to_str().unwrap()]);
    kubectl(&[
        "wait",
        "--for",
        "condition=Established",
        "crd/networkfabrics.weft.dev",
    ]);
    kubectl(&["apply", "--server-side", "-f", &manifest_arg]);
    kubectl(&[
        "wait",
        "networkfabric/default",
        "--for=condition=Available=True",
        "--timeout=5m",
    ]);
    // Removal as documented: the fabric first (the operator cleans up), then the manifests.
    kubectl(&[
        "delete",
        "networkfabric",
        "default",
        "--wait=true",
        "--timeout=5m",
    ]);
    kubectl(&[
        "delete",
        "-f",
        &manifest_arg,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=5m",
    ]);
    let _ = std::fs::remove_file(&manifest);
    assert!(kubectl_get(c, &["daemonset", "-n", NAMESPACE, "weft-agent"]).is_none());
    drop(guard);
}
