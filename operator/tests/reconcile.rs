//! The reconciler's I/O against a fake API server: which requests it makes, in which order, with
//! which field manager, and what it does not do (nothing applied for a conflicting or invalid
//! fabric; cleanup deletes the DaemonSet first and waits for it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use http::{Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::{Value, json};
use weft_crds::{NetworkFabric, NetworkFabricSpec};
use weft_operator::Error;
use weft_operator::build::BuildParams;
use weft_operator::controller::{Context, FINALIZER, reconcile};
use weft_operator::metrics::Metrics;

const NS: &str = "weft-system";
const DS_PATH: &str = "/apis/apps/v1/namespaces/weft-system/daemonsets/weft-agent";
const CM_PATH: &str = "/api/v1/namespaces/weft-system/configmaps/weft-agent-config";
const SA_PATH: &str = "/api/v1/namespaces/weft-system/serviceaccounts/weft-agent";
const CR_PATH: &str = "/apis/rbac.authorization.k8s.io/v1/clusterroles/weft-agent";
const CRB_PATH: &str = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/weft-agent";

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

/// An in-memory API server: objects by path, fixed lists, and a log of every request.
#[derive(Default)]
struct Fake {
    objects: BTreeMap<String, Value>,
    lists: BTreeMap<String, Value>,
    /// Paths whose PATCH answers 409.
    conflicts: Vec<String>,
    /// Paths that stay (with a deletionTimestamp) when deleted.
    sticky: Vec<String>,
    seen: Vec<Seen>,
}

fn status_json(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

impl Fake {
    fn handle(&mut self, method: &str, path: &str, query: &str, body: Value) -> (u16, Value) {
        self.seen.push(Seen {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            body: body.clone(),
        });
        match method {
            "GET" => {
                if let Some(list) = self.lists.get(path) {
                    return (200, list.clone());
                }
                match self.objects.get(path) {
                    Some(o) => (200, o.clone()),
                    None => (404, status_json(404, "NotFound")),
                }
            }
            "PATCH" => {
                if self.conflicts.iter().any(|p| p == path) {
                    return (409, status_json(409, "Conflict"));
                }
                if path.starts_with("/apis/weft.dev") {
                    // Patches of the fabric (finalizers, status) answer with the stored fabric.
                    let base = path.trim_end_matches("/status");
                    return match self.objects.get(base) {
                        Some(o) => (200, o.clone()),
                        None => (404, status_json(404, "NotFound")),
                    };
                }
                let mut obj = body;
                obj["metadata"]["uid"] = json!(format!("uid-{path}"));
                obj["metadata"]["generation"] = json!(1);
                if path == DS_PATH {
                    obj["status"] = json!({"observedGeneration": 1, "desiredNumberScheduled": 2,
                        "updatedNumberScheduled": 2, "numberReady": 2, "currentNumberScheduled": 2,
                        "numberMisscheduled": 0});
                }
                self.objects.insert(path.to_owned(), obj.clone());
                (200, obj)
            }
            "DELETE" => match self.objects.get_mut(path) {
                None => (404, status_json(404, "NotFound")),
                Some(o) if self.sticky.iter().any(|p| p == path) => {
                    o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                    (200, o.clone())
                }
                Some(_) => {
                    let o = self.objects.remove(path).unwrap_or(Value::Null);
                    (200, o)
                }
            },
            "POST" => (201, body),
            _ => (405, status_json(405, "MethodNotAllowed")),
        }
    }
}

fn spawn_fake(fake: Arc<Mutex<Fake>>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, out) = fake
                .lock()
                .expect("fake")
                .handle(&method, &path, &query, body);
            let resp = Response::builder()
                .status(StatusCode::from_u16(code).expect("status"))
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&out).expect("json")))
                .expect("response");
            send.send_response(resp);
        }
    });
    Client::new(service, "default")
}

fn fabric(name: &str, created: i64, cidr: &str) -> NetworkFabric {
    let mut f = NetworkFabric::new(name, NetworkFabricSpec::with_cidrs([cidr]));
    f.metadata.uid = Some(format!("uid-{name}"));
    f.metadata.generation = Some(1);
    f.metadata.resource_version = Some("7".into());
    f.metadata.creation_timestamp = Some(Time(
        Timestamp::from_second(1_800_000_000 + created).expect("ts"),
    ));
    f
}

fn cluster() -> Fake {
    let mut fake = Fake::default();
    fake.lists.insert(
        "/api/v1/nodes".into(),
        json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [
            {"metadata": {"name": "node-1"}, "spec": {"podCIDRs": ["10.244.0.0/24"]},
             "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.11"}]}},
            {"metadata": {"name": "node-2"}, "spec": {"podCIDRs": ["10.244.1.0/24"]},
             "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.12"}]}}]}),
    );
    fake.lists.insert(
        "/apis/networking.k8s.io/v1/servicecidrs".into(),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDRList", "metadata": {},
               "items": [{"metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["10.96.0.0/16"]}}]}),
    );
    fake.lists.insert(
        format!("/api/v1/namespaces/{NS}/pods"),
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
    );
    fake
}

/// Stores the fabrics in the fake (so patches can answer with them) and starts it.
fn start(mut fake: Fake, fabrics: &[&NetworkFabric]) -> (Arc<Mutex<Fake>>, Client) {
    for f in fabrics {
        let name = f.metadata.name.clone().unwrap_or_default();
        fake.objects.insert(
            format!("/apis/weft.dev/v1alpha1/networkfabrics/{name}"),
            serde_json::to_value(f).expect("fabric json"),
        );
    }
    let fake = Arc::new(Mutex::new(fake));
    let client = spawn_fake(fake.clone());
    (fake, client)
}

fn context(client: Client, fabrics: &[&NetworkFabric]) -> Arc<Context> {
    let (store, mut writer): (Store<NetworkFabric>, _) = reflector::store();
    for f in fabrics {
        writer.apply_watcher_event(&watcher::Event::Apply((*f).clone()));
    }
    let (tx, _rx) = mpsc::unbounded();
    Arc::new(Context {
        client: client.clone(),
        params: BuildParams {
            namespace: NS.into(),
            default_agent_image: "weft.dev/weft-agent:test".into(),
        },
        reporter: Reporter {
            controller: "weft-operator".into(),
            instance: Some("test".into()),
        },
        metrics: Arc::new(Metrics::new()),
        store,
        reconcile_all: tx,
        failures: Mutex::new(Default::default()),
    })
}

fn seen(fake: &Arc<Mutex<Fake>>) -> Vec<Seen> {
    fake.lock().expect("fake").seen.clone()
}

fn writes(seen: &[Seen]) -> Vec<(String, String)> {
    seen.iter()
        .filter(|s| s.method != "GET" && !s.path.contains("/events"))
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect()
}

fn status_patch(seen: &[Seen]) -> Value {
    seen.iter()
        .rev()
        .find(|s| s.path.ends_with("/status"))
        .map(|s| s.body["status"].clone())
        .expect("a status patch")
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .expect("condition")
}

#[tokio::test]
async fn the_active_fabric_is_applied_in_order_with_one_field_manager() {
    let f = fabric("default", 0, "10.244.0.0/16");
    let (fake, client) = start(cluster(), &[&f]);
    let ctx = context(client, &[&f]);

    let action = reconcile(Arc::new(f), ctx).await.expect("reconcile");
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(300)));

    let seen = seen(&fake);
    let fabric_path = "/apis/weft.dev/v1alpha1/networkfabrics/default";
    assert_eq!(
        writes(&seen),
        [
            ("PATCH", fabric_path),
            ("PATCH", SA_PATH),
            ("PATCH", CR_PATH),
            ("PATCH", CRB_PATH),
            ("PATCH", CM_PATH),
            ("PATCH", DS_PATH),
            (
                "PATCH",
                "/apis/weft.dev/v1alpha1/networkfabrics/default/status"
            ),
        ]
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
    );
    let finalizer = &seen
        .iter()
        .find(|s| s.path == fabric_path)
        .expect("finalizer patch")
        .body;
    assert_eq!(finalizer["metadata"]["finalizers"], json!([FINALIZER]));
    assert_eq!(finalizer["metadata"]["resourceVersion"], json!("7"));
    for s in seen
        .iter()
        .filter(|s| s.method == "PATCH" && s.path != fabric_path)
    {
        assert!(
            s.query.contains("fieldManager=weft-operator"),
            "{}: {}",
            s.path,
            s.query
        );
        assert!(s.query.contains("force=true"), "{}: {}", s.path, s.query);
    }
    let status = status_patch(&seen);
    assert_eq!(condition(&status, "Available")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["reason"], "AsExpected");
    assert_eq!(
        status["nodes"],
        json!({"desired": 2, "updated": 2, "ready": 2})
    );
    assert_eq!(status["mtu"], json!(1450));
    assert!(
        seen.iter()
            .any(|s| s.method == "POST" && s.path.contains("/events")),
        "the transition to Available is announced"
    );
}

#[tokio::test]
async fn a_second_fabric_gets_conflict_and_nothing_is_applied() {
    let old = fabric("first", 0, "10.244.0.0/16");
    let new = fabric("second", 60, "10.244.0.0/16");
    let (fake, client) = start(cluster(), &[&old, &new]);
    let ctx = context(client, &[&old, &new]);

    reconcile(Arc::new(new), ctx).await.expect("reconcile");
    let seen = seen(&fake);
    assert_eq!(
        writes(&seen),
        [(
            "PATCH".to_owned(),
            "/apis/weft.dev/v1alpha1/networkfabrics/second/status".to_owned()
        )]
    );
    let status = status_patch(&seen);
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("Conflict"))
    );
    assert!(degraded["message"].as_str().unwrap_or("").contains("first"));
}

#[tokio::test]
async fn an_invalid_fabric_writes_only_its_status() {
    // Overlaps the service range and differs from the nodes' podCIDRs.
    let f = fabric("default", 0, "10.96.0.0/12");
    let (fake, client) = start(cluster(), &[&f]);
    let ctx = context(client, &[&f]);

    reconcile(Arc::new(f), ctx).await.expect("reconcile");
    let seen = seen(&fake);
    let applied: Vec<_> = writes(&seen)
        .into_iter()
        .filter(|(_, p)| !p.starts_with("/apis/weft.dev"))
        .collect();
    assert!(applied.is_empty(), "nothing may be applied: {applied:?}");
    let status = status_patch(&seen);
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "InvalidSpec");
    let msg = degraded["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("overlaps the service range 10.96.0.0/16 (ServiceCIDR kubernetes)"),
        "{msg}"
    );
    assert!(msg.contains("node-1 (10.244.0.0/24)"), "{msg}");
}

#[tokio::test]
async fn an_apply_conflict_is_an_error_and_shows_in_status() {
    let mut c = cluster();
    c.conflicts.push(DS_PATH.into());
    let f = fabric("default", 0, "10.244.0.0/16");
    let (fake, client) = start(c, &[&f]);
    let ctx = context(client, &[&f]);

    let err = reconcile(Arc::new(f), ctx.clone())
        .await
        .expect_err("apply must fail");
    assert!(
        matches!(
            err,
            Error::Apply {
                kind: "DaemonSet",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.stage(), "Apply");
    let status = status_patch(&seen(&fake));
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "ApplyFailed");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap_or("")
            .contains("failed to apply DaemonSet weft-system/weft-agent")
    );
    let metrics = ctx.metrics.render().expect("metrics");
    assert!(
        metrics.contains("weft_operator_reconcile_errors_total{stage=\"Apply\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn cleanup_deletes_the_daemonset_first_and_waits_for_it() {
    let mut c = cluster();
    let owner = json!([{"apiVersion": "weft.dev/v1alpha1", "kind": "NetworkFabric", "name": "default",
                        "uid": "uid-default", "controller": true}]);
    for path in [DS_PATH, CM_PATH, SA_PATH, CR_PATH, CRB_PATH] {
        c.objects.insert(
            path.into(),
            json!({"metadata": {"name": "x", "ownerReferences": owner}}),
        );
    }
    c.sticky.push(DS_PATH.into());
    let mut f = fabric("default", 0, "10.244.0.0/16");
    f.metadata.finalizers = Some(vec![FINALIZER.into()]);
    f.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let (fake, client) = start(c, &[&f]);
    let ctx = context(client, &[&f]);

    // The DaemonSet is still terminating (agent pods stopping): nothing else is touched yet.
    let action = reconcile(Arc::new(f.clone()), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(2)));
    let first = seen(&fake);
    let deletes: Vec<&Seen> = first.iter().filter(|s| s.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{:?}", writes(&first));
    assert_eq!(deletes[0].path, DS_PATH);
    assert_eq!(deletes[0].body["propagationPolicy"], "Foreground");

    // The DaemonSet is gone: the rest is deleted and the finalizer removed.
    {
        let mut fk = fake.lock().expect("fake");
        fk.objects.remove(DS_PATH);
        fk.seen.clear();
    }
    let action = reconcile(Arc::new(f), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    let w = writes(&seen(&fake));
    let deleted: Vec<&str> = w
        .iter()
        .filter(|(m, _)| m == "DELETE")
        .map(|(_, p)| p.as_str())
        .collect();
    assert_eq!(deleted, [CM_PATH, CRB_PATH, CR_PATH, SA_PATH]);
    let last = w.last().expect("a write");
    assert_eq!(
        last,
        &(
            "PATCH".to_owned(),
            "/apis/weft.dev/v1alpha1/networkfabrics/default".to_owned()
        )
    );
    let fin = seen(&fake)
        .into_iter()
        .rev()
        .find(|s| s.method == "PATCH")
        .expect("finalizer patch");
    assert_eq!(fin.body["metadata"]["finalizers"], json!([]));
}

#[tokio::test]
async fn cleanup_leaves_objects_of_other_owners_alone() {
    let mut c = cluster();
    let other = json!([{"apiVersion": "weft.dev/v1alpha1", "kind": "NetworkFabric", "name": "other",
                        "uid": "uid-other", "controller": true}]);
    c.objects.insert(
        DS_PATH.into(),
        json!({"metadata": {"name": "weft-agent", "ownerReferences": other}}),
    );
    let mut f = fabric("default", 0, "10.244.0.0/16");
    f.metadata.finalizers = Some(vec![FINALIZER.into()]);
    f.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let (fake, client) = start(c, &[&f]);
    let ctx = context(client, &[&f]);

    reconcile(Arc::new(f), ctx).await.expect("reconcile");
    let w = writes(&seen(&fake));
    assert!(w.iter().all(|(m, _)| m != "DELETE"), "{w:?}");
    assert!(fake.lock().expect("fake").objects.contains_key(DS_PATH));
}
