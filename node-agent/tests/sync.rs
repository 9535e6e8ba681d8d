//! The sync pipeline against real files, with an API server that cannot be reached: it shows the
//! order of effects (local files first, node patches after) and that an invalid lease writes
//! nothing. Runs unprivileged: the node's InternalIP is 127.0.0.1, which `lo` holds everywhere.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weft_crds::{AgentConfig, NetworkFabricSpec};
use weft_node_agent::agent::Agent;
use weft_node_agent::flannel::{STATE_FILE_NAME, parse_vtep_state};
use weft_node_agent::nft::FakeNft;
use weft_node_agent::observe::{Health, Metrics};
use weft_node_agent::overlay::fake::MemoryKernel;
use weft_node_agent::uplink::SYS_CLASS_NET;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-agent-sync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    dir
}

fn config(dir: &std::path::Path) -> AgentConfig {
    let mut spec = NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]);
    spec.cni.conf_dir = dir.join("net.d").display().to_string();
    spec.compatibility.subnet_file = dir.join("flannel/subnet.env").display().to_string();
    AgentConfig::from_spec("default", &spec)
}

fn node(pod_cidr: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some("node-1".into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidrs: Some(vec![pod_cidr.into()]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: "127.0.0.1".into(),
            }]),
            ..NodeStatus::default()
        }),
    }
}

fn agent() -> Agent<MemoryKernel> {
    // Nothing listens on port 9 of loopback: every API call fails fast.
    let cfg = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
    let client = kube::Client::try_from(cfg).expect("client");
    Agent {
        nodes: kube::Api::all(client),
        node_name: "node-1".into(),
        health: Arc::new(Health::default()),
        metrics: Arc::new(Metrics::new()),
        sys_class_net: SYS_CLASS_NET.into(),
        kernel: MemoryKernel::default(),
        nft: Arc::new(FakeNft::default()),
        cni_plugin: None,
        fastpath: Arc::new(weft_node_agent::fastpath::kernel::Switch::new(None)),
    }
}

#[tokio::test]
async fn invalid_lease_writes_nothing() {
    let dir = scratch("invalid");
    let err = agent()
        .sync(&config(&dir), &node("10.99.1.0/24"), &[])
        .await
        .expect_err("outside the pod network");
    assert_eq!(err.stage(), "Plan");
    assert!(err.to_string().contains("--cluster-cidr"), "{err}");
    let entries: Vec<_> = std::fs::read_dir(&dir).expect("list").collect();
    assert!(entries.is_empty(), "{entries:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn files_are_written_before_the_node_is_patched_and_the_mac_is_kept() {
    let dir = scratch("valid");
    let agent = agent();
    let cfg = config(&dir);
    let err = agent
        .sync(&cfg, &node("10.244.7.0/24"), &[])
        .await
        .expect_err("the API server is unreachable");
    assert_eq!(err.stage(), "ApplyNode", "{err}");
    let env = std::fs::read_to_string(dir.join("flannel/subnet.env")).expect("subnet.env");
    assert!(env.contains("FLANNEL_SUBNET=10.244.7.1/24\n"), "{env}");
    // lo's MTU minus the vxlan overhead.
    let lo_mtu: u32 = std::fs::read_to_string("/sys/class/net/lo/mtu")
        .expect("lo mtu")
        .trim()
        .parse()
        .expect("number");
    assert!(
        env.contains(&format!("FLANNEL_MTU={}\n", lo_mtu - 50)),
        "{env}"
    );
    let conflist = std::fs::read_to_string(dir.join("net.d/10-weft.conflist")).expect("conflist");
    assert!(
        conflist.contains("\"subnet\": \"10.244.7.0/24\""),
        "{conflist}"
    );
    let state_path = dir.join("flannel").join(STATE_FILE_NAME);
    let first = parse_vtep_state(&std::fs::read_to_string(&state_path).expect("state"));
    assert!(first.v4.is_some());
    // A second sync (a restart) keeps the MAC and rewrites nothing.
    let before = std::fs::metadata(&state_path)
        .expect("meta")
        .modified()
        .expect("mtime");
    let _ = agent.sync(&cfg, &node("10.244.7.0/24"), &[]).await;
    let second = parse_vtep_state(&std::fs::read_to_string(&state_path).expect("state"));
    assert_eq!(first, second);
    let after = std::fs::metadata(&state_path)
        .expect("meta")
        .modified()
        .expect("mtime");
    assert_eq!(before, after);
    let _ = std::fs::remove_dir_all(&dir);
}
