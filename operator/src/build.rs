//! The build stage: the agent's Kubernetes objects as a pure function of a validated fabric.
//!
//! ```text
//!  NetworkFabric ──► AgentConfig ──► ConfigMap (agent.yaml) ──► sha256 ──► pod annotation
//!        │                                                                 weft.dev/config-hash
//!        └────────► ServiceAccount, ClusterRole, ClusterRoleBinding, DaemonSet
//! ```
//!
//! Invariants: the output depends only on the fabric and [`BuildParams`] (no clock, no cluster), so
//! it is golden-tested; every object carries the same labels and a controller ownerReference to the
//! fabric; a change to the rendered agent configuration changes the pod template (through the hash
//! annotation) and therefore rolls the DaemonSet, while an unchanged fabric yields identical objects
//! and server-side apply is a no-op.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccount,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};
use weft_crds::agent_config::{AGENT_CONFIG_DIR, AGENT_CONFIG_KEY, AGENT_CONFIG_PATH};
use weft_crds::fabric::Backend;
use weft_crds::{AgentConfig, NetworkFabric};

pub use crate::names::{
    AGENT_CONFIG_MAP, AGENT_NAME, AGENT_POD_SELECTOR, CONFIG_HASH_ANNOTATION, FABRIC_LABEL,
    MANAGED_BY, MANAGED_SELECTOR,
};
use crate::rbac::agent_cluster_rules;

/// Priority class of agent pods: the network must come before the workloads that need it.
pub const PRIORITY_CLASS: &str = "system-node-critical";
/// The iptables/nftables lock shared with kube-proxy and other networking components.
pub const XTABLES_LOCK: &str = "/run/xtables.lock";
/// Kernel modules, read-only (the agent checks for vxlan and nf_tables).
pub const LIB_MODULES: &str = "/lib/modules";
/// Default resource requests of the agent (no limits: a throttled network agent hurts every pod).
const DEFAULT_CPU_REQUEST: &str = "100m";
const DEFAULT_MEMORY_REQUEST: &str = "64Mi";
/// Bytes of VXLAN-over-IPv4 overhead (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: i32 = 50;
/// The uplink MTU assumed when reporting an automatic MTU in status.
pub const ASSUMED_UPLINK_MTU: i32 = 1500;

/// Why the build stage could not produce objects.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The fabric has no `metadata.uid`/`name` (not read from the API server).
    #[error("fabric has no name or uid; it must be read from the API server")]
    NoIdentity,
    /// The agent configuration could not be rendered.
    #[error("failed to render the agent configuration")]
    RenderConfig(#[source] weft_crds::Error),
}

/// Inputs of the build stage besides the fabric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildParams {
    /// Namespace of the operator, where the agent's namespaced objects live.
    pub namespace: String,
    /// Agent image used when `spec.agent.image` is empty (the operator's `--agent-image`).
    pub default_agent_image: String,
}

/// Everything the operator applies for one fabric.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentObjects {
    /// The agent's ServiceAccount.
    pub service_account: ServiceAccount,
    /// The agent's ClusterRole.
    pub cluster_role: ClusterRole,
    /// Binds the ClusterRole to the ServiceAccount.
    pub cluster_role_binding: ClusterRoleBinding,
    /// The rendered agent configuration.
    pub config_map: ConfigMap,
    /// The agent DaemonSet.
    pub daemon_set: DaemonSet,
    /// Hash of the rendered configuration (also on the pod template).
    pub config_hash: String,
}

/// The MTU reported in status: the spec's, or for 0 what the agents derive on a 1500-byte uplink.
pub fn effective_mtu(fabric: &NetworkFabric, nodes: &[crate::facts::NodeFacts]) -> i32 {
    // With automatic MTU, the agents measure their uplinks: the fabric's MTU is the smallest they
    // report. Before any agent reports, assume a 1500-byte uplink.
    let reported = nodes.iter().filter_map(|n| n.pod_mtu).min();
    match (
        fabric.spec.overlay.mtu,
        fabric.spec.overlay.backend,
        reported,
    ) {
        (0, _, Some(measured)) => measured,
        (0, Backend::Vxlan, None) => ASSUMED_UPLINK_MTU - VXLAN_OVERHEAD,
        (0, Backend::HostGw, None) => ASSUMED_UPLINK_MTU,
        (mtu, _, _) => mtu,
    }
}

/// Hex SHA-256 prefix (16 characters) of `data`.
pub fn config_hash(data: &str) -> String {
    let digest = Sha256::digest(data.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Builds every object of the agent for `fabric`.
pub fn build_agent_objects(
    fabric: &NetworkFabric,
    params: &BuildParams,
) -> Result<AgentObjects, BuildError> {
    let name = fabric
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::NoIdentity)?;
    let mut owner = fabric
        .controller_owner_ref(&())
        .ok_or(BuildError::NoIdentity)?;
    // Foreground deletion of the fabric waits for its objects (needs networkfabrics/finalizers).
    owner.block_owner_deletion = Some(true);
    let labels = labels(name);
    let ns = &params.namespace;

    let config = AgentConfig::from_spec(name, &fabric.spec)
        .render()
        .map_err(BuildError::RenderConfig)?;
    let hash = config_hash(&config);

    let service_account = ServiceAccount {
        metadata: meta(AGENT_NAME, Some(ns), &labels, &owner),
        ..ServiceAccount::default()
    };
    let cluster_role = ClusterRole {
        metadata: meta(AGENT_NAME, None, &labels, &owner),
        rules: Some(agent_cluster_rules(&fabric.spec)),
        ..ClusterRole::default()
    };
    let cluster_role_binding = ClusterRoleBinding {
        metadata: meta(AGENT_NAME, None, &labels, &owner),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: AGENT_NAME.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: AGENT_NAME.into(),
            namespace: Some(ns.clone()),
            ..Subject::default()
        }]),
    };
    let config_map = ConfigMap {
        metadata: meta(AGENT_CONFIG_MAP, Some(ns), &labels, &owner),
        data: Some(BTreeMap::from([(AGENT_CONFIG_KEY.to_owned(), config)])),
        ..ConfigMap::default()
    };
    let daemon_set = build_daemon_set(fabric, params, &labels, &owner, &hash);
    Ok(AgentObjects {
        service_account,
        cluster_role,
        cluster_role_binding,
        config_map,
        daemon_set,
        config_hash: hash,
    })
}

/// Labels on every object the operator creates for fabric `name`.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), AGENT_NAME.to_owned()),
        ("app.kubernetes.io/component".to_owned(), "agent".to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "weft".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
        (FABRIC_LABEL.to_owned(), name.to_owned()),
    ])
}

/// The DaemonSet's selector. Immutable once created, so it never includes the fabric name.
fn selector_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), AGENT_NAME.to_owned())])
}

fn meta(
    name: &str,
    namespace: Option<&String>,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.cloned(),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Directory of the subnet file (validated to be below a directory).
pub fn subnet_dir(subnet_file: &str) -> &str {
    match subnet_file.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &subnet_file[..i],
    }
}

fn host_path_volume(name: &str, path: &str, type_: Option<&str>) -> Volume {
    Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_owned(),
            type_: type_.map(str::to_owned),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32, delay: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: (delay > 0).then_some(delay),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn build_daemon_set(
    fabric: &NetworkFabric,
    params: &BuildParams,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
    hash: &str,
) -> DaemonSet {
    let spec = &fabric.spec;
    let agent = &spec.agent;
    let image = agent
        .image
        .clone()
        .unwrap_or_else(|| params.default_agent_image.clone());

    let resources = agent
        .resources
        .clone()
        .unwrap_or_else(|| ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(DEFAULT_CPU_REQUEST.to_owned())),
                (
                    "memory".to_owned(),
                    Quantity(DEFAULT_MEMORY_REQUEST.to_owned()),
                ),
            ])),
            ..ResourceRequirements::default()
        });
    let tolerations = agent.tolerations.clone().unwrap_or_else(|| {
        vec![Toleration {
            operator: Some("Exists".to_owned()),
            ..Toleration::default()
        }]
    });
    let mut node_selector = agent.node_selector.clone();
    node_selector.insert("kubernetes.io/os".to_owned(), "linux".to_owned());

    let subnet_dir = subnet_dir(&spec.compatibility.subnet_file);
    let volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: AGENT_CONFIG_MAP.to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        host_path_volume("subnet-dir", subnet_dir, Some("DirectoryOrCreate")),
        host_path_volume("cni-conf", &spec.cni.conf_dir, Some("DirectoryOrCreate")),
        host_path_volume("cni-bin", &spec.cni.bin_dir, Some("DirectoryOrCreate")),
        host_path_volume("xtables-lock", XTABLES_LOCK, Some("FileOrCreate")),
        host_path_volume("lib-modules", LIB_MODULES, None),
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let volume_mounts = vec![
        mount("config", AGENT_CONFIG_DIR, true),
        mount("subnet-dir", subnet_dir, false),
        mount("cni-conf", &spec.cni.conf_dir, false),
        // Writable: the agent installs weft's CNI plugin there, as flannel's and Calico's do.
        mount("cni-bin", &spec.cni.bin_dir, false),
        mount("xtables-lock", XTABLES_LOCK, false),
        mount("lib-modules", LIB_MODULES, true),
        mount("tmp", "/tmp", false),
    ];

    let container = Container {
        name: AGENT_NAME.to_owned(),
        image: Some(image),
        image_pull_policy: agent.image_pull_policy.map(|p| p.as_str().to_owned()),
        // `command` stays unset (the image's entrypoint, weft-agent); flags go in args.
        args: Some(vec![format!("--config={AGENT_CONFIG_PATH}")]),
        env: Some(vec![
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("metrics".to_owned()),
                container_port: agent.metrics_port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("health".to_owned()),
                container_port: agent.health_port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        // A short readiness period: the fabric is Available only once every agent reports ready,
        // and a 5 s period alone would add up to 5 s to every rollout step.
        readiness_probe: Some(http_probe("/readyz", agent.health_port, 2, 3, 0)),
        liveness_probe: Some(http_probe("/healthz", agent.health_port, 10, 6, 10)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            capabilities: Some(Capabilities {
                // BPF: loading the pod-to-pod fast path's program (its tc filters need NET_ADMIN).
                add: Some(vec![
                    "NET_ADMIN".to_owned(),
                    "NET_RAW".to_owned(),
                    "BPF".to_owned(),
                ]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };

    let pod_spec = PodSpec {
        host_network: Some(true),
        dns_policy: Some("ClusterFirstWithHostNet".to_owned()),
        priority_class_name: Some(PRIORITY_CLASS.to_owned()),
        service_account_name: Some(AGENT_NAME.to_owned()),
        automount_service_account_token: Some(true),
        termination_grace_period_seconds: Some(30),
        tolerations: Some(tolerations),
        node_selector: Some(node_selector),
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    DaemonSet {
        metadata: meta(AGENT_NAME, Some(&params.namespace), labels, owner),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector_labels()),
                ..LabelSelector::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(agent.max_unavailable.clone()),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_crds::NetworkFabricSpec;

    pub(crate) fn fabric(spec: NetworkFabricSpec) -> NetworkFabric {
        let mut f = NetworkFabric::new("default", spec);
        f.metadata.uid = Some("0b1c2d3e-0000-4000-8000-000000000001".into());
        f
    }

    fn params() -> BuildParams {
        BuildParams {
            namespace: "weft-system".into(),
            default_agent_image: "weft.dev/weft-agent:0.1.0".into(),
        }
    }

    fn pod_spec(objs: &AgentObjects) -> &PodSpec {
        objs.daemon_set
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    fn template_hash(objs: &AgentObjects) -> String {
        objs.daemon_set
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
            .cloned()
            .expect("hash annotation")
    }

    #[test]
    fn daemonset_has_the_shape_the_node_needs() {
        let objs = build_agent_objects(
            &fabric(NetworkFabricSpec::with_cidrs(["10.244.0.0/16"])),
            &params(),
        )
        .expect("build");
        let pod = pod_spec(&objs);
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("weft-agent"));
        let tol = pod.tolerations.as_ref().expect("tolerations");
        assert_eq!(tol.len(), 1);
        assert_eq!(tol[0].operator.as_deref(), Some("Exists"));
        assert!(tol[0].key.is_none() && tol[0].effect.is_none());
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("weft.dev/weft-agent:0.1.0"));
        assert!(
            c.command.is_none(),
            "the local cluster maps the image to a binary; command must stay unset"
        );
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(sc.privileged, Some(false));
        let caps = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.clone())
            .expect("caps");
        assert_eq!(caps, ["NET_ADMIN", "NET_RAW", "BPF"]);
        let mounts: Vec<(&str, bool)> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.mount_path.as_str(), m.read_only == Some(true)))
            .collect();
        for want in [
            ("/etc/weft", true),
            ("/run/flannel", false),
            ("/etc/cni/net.d", false),
            ("/opt/cni/bin", false),
            ("/run/xtables.lock", false),
            ("/lib/modules", true),
        ] {
            assert!(
                mounts.contains(&want),
                "missing mount {want:?} in {mounts:?}"
            );
        }
        // hostPath volumes are mounted at the same path inside the container
        for v in pod.volumes.iter().flatten() {
            if let Some(hp) = &v.host_path {
                let m = c
                    .volume_mounts
                    .iter()
                    .flatten()
                    .find(|m| m.name == v.name)
                    .expect("mounted");
                assert_eq!(m.mount_path, hp.path);
            }
        }
        let envs: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(envs, ["NODE_NAME", "POD_NAME", "POD_NAMESPACE"]);
        let ready = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("readiness");
        assert_eq!(
            (ready.path.as_deref(), &ready.port),
            (Some("/readyz"), &IntOrString::Int(9642))
        );
        let live = c
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("liveness");
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        let strategy = objs
            .daemon_set
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .expect("strategy");
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        assert_eq!(
            strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.max_unavailable.clone()),
            Some(IntOrString::Int(1))
        );
    }

    #[test]
    fn every_object_is_owned_by_the_fabric() {
        let objs = build_agent_objects(
            &fabric(NetworkFabricSpec::with_cidrs(["10.244.0.0/16"])),
            &params(),
        )
        .expect("build");
        let metas = [
            &objs.service_account.metadata,
            &objs.cluster_role.metadata,
            &objs.cluster_role_binding.metadata,
            &objs.config_map.metadata,
            &objs.daemon_set.metadata,
        ];
        for m in metas {
            let refs = m.owner_references.as_ref().expect("owner refs");
            assert_eq!(refs.len(), 1);
            assert_eq!(refs[0].kind, "NetworkFabric");
            assert_eq!(refs[0].api_version, "weft.dev/v1alpha1");
            assert_eq!(refs[0].controller, Some(true));
            assert_eq!(refs[0].block_owner_deletion, Some(true));
            assert_eq!(
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(FABRIC_LABEL))
                    .map(String::as_str),
                Some("default")
            );
        }
    }

    #[test]
    fn config_changes_roll_and_agent_only_changes_do_not_touch_the_config() {
        let base = NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]);
        let a = build_agent_objects(&fabric(base.clone()), &params()).expect("build");
        let same = build_agent_objects(&fabric(base.clone()), &params()).expect("build");
        assert_eq!(a, same, "build must be deterministic");

        let mut mtu = base.clone();
        mtu.overlay.mtu = 1400;
        let b = build_agent_objects(&fabric(mtu), &params()).expect("build");
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&b), b.config_hash);

        let mut image = base;
        image.agent.image = Some("registry.example/weft-agent:2".into());
        let c = build_agent_objects(&fabric(image), &params()).expect("build");
        assert_eq!(template_hash(&a), template_hash(&c));
        assert_eq!(
            pod_spec(&c).containers[0].image.as_deref(),
            Some("registry.example/weft-agent:2")
        );
    }

    #[test]
    fn spec_overrides_reach_the_pod() {
        let mut spec = NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]);
        spec.agent.tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("net".into()),
            ..Toleration::default()
        }]);
        spec.agent.node_selector.insert("pool".into(), "a".into());
        spec.agent.max_unavailable = IntOrString::String("20%".into());
        spec.cni.conf_dir = "/var/lib/cni/net.d".into();
        spec.compatibility.subnet_file = "/var/run/weft/subnet.env".into();
        let objs = build_agent_objects(&fabric(spec), &params()).expect("build");
        let pod = pod_spec(&objs);
        assert_eq!(pod.tolerations.as_ref().map(Vec::len), Some(1));
        let sel = pod.node_selector.as_ref().expect("selector");
        assert_eq!(sel.get("pool").map(String::as_str), Some("a"));
        assert_eq!(
            sel.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        let paths: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.host_path.as_ref().map(|h| h.path.as_str()))
            .collect();
        assert!(paths.contains(&"/var/lib/cni/net.d"), "{paths:?}");
        assert!(paths.contains(&"/var/run/weft"), "{paths:?}");
    }

    #[test]
    fn effective_mtu_table() {
        let cases = [
            (Backend::Vxlan, 0, 1450),
            (Backend::HostGw, 0, 1500),
            (Backend::Vxlan, 1400, 1400),
            (Backend::HostGw, 9000, 9000),
        ];
        let node = |mtu| crate::facts::NodeFacts {
            pod_mtu: mtu,
            ..Default::default()
        };
        for (backend, mtu, want) in cases {
            let mut spec = NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]);
            spec.overlay.backend = backend;
            spec.overlay.mtu = mtu;
            assert_eq!(effective_mtu(&fabric(spec), &[]), want, "{backend:?} {mtu}");
        }
        // Agents' reports win over the assumption, the smallest one counts, and an explicit MTU
        // wins over both.
        let auto = NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]);
        let reported = [node(Some(8950)), node(None), node(Some(1410))];
        assert_eq!(effective_mtu(&fabric(auto.clone()), &reported), 1410);
        let mut fixed = auto;
        fixed.overlay.mtu = 1300;
        assert_eq!(effective_mtu(&fabric(fixed), &reported), 1300);
    }

    #[test]
    fn a_fabric_without_uid_is_refused() {
        let f = NetworkFabric::new("default", NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]));
        assert!(matches!(
            build_agent_objects(&f, &params()),
            Err(BuildError::NoIdentity)
        ));
    }

    #[test]
    fn subnet_dir_table() {
        assert_eq!(subnet_dir("/run/flannel/subnet.env"), "/run/flannel");
        assert_eq!(subnet_dir("/subnet.env"), "/");
        assert_eq!(subnet_dir("/a/b/c"), "/a/b");
    }
}
