//! The node agent's configuration file: the contract between weft-operator and weft-agent.
//!
//! The operator renders an [`AgentConfig`] from the active `NetworkFabric` into the ConfigMap key
//! [`AGENT_CONFIG_KEY`] (`agent.yaml`), mounted at [`AGENT_CONFIG_DIR`] in every agent pod; the agent
//! parses the same type with [`AgentConfig::parse`]. Invariants: the rendering is deterministic (same
//! spec, same bytes, same hash), so an unchanged fabric never restarts agents; the sections reuse the
//! spec's own types, so a field added to the API reaches the agent without a second definition;
//! parsing rejects unknown `apiVersion`/`kind` so an old agent never misreads a newer file, and
//! [`AgentConfig::validate`] runs the API's own checks on the file.

use serde::{Deserialize, Serialize};

use crate::Error;

use crate::fabric::{
    Cni, Compatibility, LogLevel, Masquerade, NetworkFabricSpec, Overlay, PodNetwork, Policy,
};

/// `apiVersion` of the agent configuration file.
pub const AGENT_CONFIG_API_VERSION: &str = "weft.dev/v1alpha1";
/// `kind` of the agent configuration file.
pub const AGENT_CONFIG_KIND: &str = "AgentConfig";
/// Key of the configuration in the agent ConfigMap.
pub const AGENT_CONFIG_KEY: &str = "agent.yaml";
/// Directory the agent ConfigMap is mounted at in agent pods.
pub const AGENT_CONFIG_DIR: &str = "/etc/weft";
/// Node annotation in which each agent reports the MTU it gives pods (the uplink's MTU minus the
/// backend's overhead when `overlay.mtu` is 0); the operator reports the smallest as the fabric's
/// effective MTU.
pub const POD_MTU_ANNOTATION: &str = "weft.dev/pod-mtu";
/// Node condition in which each agent reports whether it has programmed its node with the current
/// configuration (ADR 0105). `True` with reason [`AGENT_REASON_READY`]; `False` with one of the
/// other `AGENT_REASON_*` reasons and, as message, the agent's own words naming what to fix, e.g.
/// `interface "nosuch0" not found (spec.overlay.interface)`. The operator reads it from every Node
/// and reports the refusals on the fabric's `Degraded` condition, naming the nodes.
pub const AGENT_CONDITION_TYPE: &str = "WeftAgentReady";
/// [`AGENT_CONDITION_TYPE`] reason: the node is fully programmed.
pub const AGENT_REASON_READY: &str = "AgentReady";
/// [`AGENT_CONDITION_TYPE`] reason, with status `True`: the node is fully programmed, and in the last
/// ten minutes the agent replaced a device that had weft's name but someone else's values (an old
/// flannel's VNI or port, a hand edit); the message says which and what was wrong.
pub const AGENT_REASON_RECONCILED: &str = "DatapathReconciled";
/// [`AGENT_CONDITION_TYPE`] reason: the node has no `spec.podCIDRs` yet (not an error: waiting).
pub const AGENT_REASON_WAITING_FOR_POD_CIDR: &str = "WaitingForPodCIDR";
/// [`AGENT_CONDITION_TYPE`] reason: the configuration cannot be applied on this node (a missing
/// interface, a podCIDR outside the fabric, an MTU too small); a person must fix the spec or node.
pub const AGENT_REASON_CONFIG_INVALID: &str = "AgentConfigInvalid";
/// [`AGENT_CONDITION_TYPE`] reason: programming the kernel failed (netlink, nftables); retried.
pub const AGENT_REASON_DATAPATH_FAILED: &str = "DatapathFailed";
/// [`AGENT_CONDITION_TYPE`] reason: reading or writing the node's files or the API failed; retried.
pub const AGENT_REASON_SYNC_FAILED: &str = "SyncFailed";
/// Full path of the configuration file in agent pods.
pub const AGENT_CONFIG_PATH: &str = "/etc/weft/agent.yaml";

/// Everything a node agent needs to know, derived from the active `NetworkFabric`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    /// Always [`AGENT_CONFIG_API_VERSION`].
    pub api_version: String,
    /// Always [`AGENT_CONFIG_KIND`].
    pub kind: String,
    /// Name of the NetworkFabric this configuration was rendered from.
    pub fabric: String,
    /// Pod CIDRs, node prefix lengths and subnet source.
    pub pod_network: PodNetwork,
    /// Overlay backend, VNI, port, direct routing, MTU (0 = automatic) and interface.
    pub overlay: Overlay,
    /// Masquerade settings.
    pub masquerade: Masquerade,
    /// Network-policy engine settings.
    pub policy: Policy,
    /// CNI configuration placement and chained plugins.
    pub cni: Cni,
    /// Flannel compatibility: annotation prefix and subnet file.
    pub compatibility: Compatibility,
    /// Agent log level.
    pub log_level: LogLevel,
    /// Port of the agent's /metrics endpoint.
    pub metrics_port: i32,
    /// Port of the agent's /healthz and /readyz endpoints.
    pub health_port: i32,
}

impl AgentConfig {
    /// The configuration for the agents of fabric `fabric` with spec `spec`.
    pub fn from_spec(fabric: &str, spec: &NetworkFabricSpec) -> AgentConfig {
        AgentConfig {
            api_version: AGENT_CONFIG_API_VERSION.to_owned(),
            kind: AGENT_CONFIG_KIND.to_owned(),
            fabric: fabric.to_owned(),
            pod_network: spec.pod_network.clone(),
            overlay: spec.overlay.clone(),
            masquerade: spec.masquerade.clone(),
            policy: spec.policy.clone(),
            cni: spec.cni.clone(),
            compatibility: spec.compatibility.clone(),
            log_level: spec.agent.log_level,
            metrics_port: spec.agent.metrics_port,
            health_port: spec.agent.health_port,
        }
    }

    /// Renders the configuration as YAML (deterministic: struct fields in declaration order).
    pub fn render(&self) -> Result<String, Error> {
        yaml_serde::to_string(self).map_err(|source| Error::RenderYaml {
            what: "agent configuration",
            source,
        })
    }

    /// The spec this configuration stands for (agent settings that are not in the file, such as the
    /// image, keep their defaults). Lets the agent run the same checks as the API server.
    pub fn to_spec(&self) -> NetworkFabricSpec {
        let mut spec = NetworkFabricSpec::with_cidrs(self.pod_network.cidrs.iter().cloned());
        spec.pod_network = self.pod_network.clone();
        spec.overlay = self.overlay.clone();
        spec.masquerade = self.masquerade.clone();
        spec.policy = self.policy.clone();
        spec.cni = self.cni.clone();
        spec.compatibility = self.compatibility.clone();
        spec.agent.log_level = self.log_level;
        spec.agent.metrics_port = self.metrics_port;
        spec.agent.health_port = self.health_port;
        spec
    }

    /// Every violation of the configuration (see [`crate::validate::validate_spec`]); the agent
    /// should refuse to start on a non-empty result rather than program half a network.
    pub fn validate(&self) -> Vec<crate::validate::SpecViolation> {
        crate::validate::validate_spec(&self.to_spec())
    }

    /// Parses a configuration file, checking its `apiVersion` and `kind`.
    pub fn parse(yaml: &str) -> Result<AgentConfig, Error> {
        let config: AgentConfig = yaml_serde::from_str(yaml).map_err(Error::ParseAgentConfig)?;
        if config.api_version != AGENT_CONFIG_API_VERSION || config.kind != AGENT_CONFIG_KIND {
            return Err(Error::WrongAgentConfigType {
                api_version: config.api_version,
                kind: config.kind,
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabric::Backend;

    #[test]
    fn round_trips_and_is_deterministic() {
        let mut spec = NetworkFabricSpec::with_cidrs(["10.244.0.0/16", "fd00:10:244::/56"]);
        spec.overlay.backend = Backend::HostGw;
        spec.overlay.mtu = 1400;
        let config = AgentConfig::from_spec("default", &spec);
        let a = config.render().expect("render");
        let b = AgentConfig::from_spec("default", &spec)
            .render()
            .expect("render");
        assert_eq!(a, b);
        let parsed = AgentConfig::parse(&a).expect("parse");
        assert_eq!(parsed, config);
        assert!(a.contains("backend: host-gw"), "{a}");
        assert!(a.contains("mtu: 1400"), "{a}");
    }

    #[test]
    fn validation_sees_the_same_problems_as_for_the_spec() {
        let mut spec = NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]);
        assert!(AgentConfig::from_spec("f", &spec).validate().is_empty());
        assert_eq!(AgentConfig::from_spec("f", &spec).to_spec(), spec);
        spec.overlay.mtu = 100;
        spec.pod_network.cidrs.push("10.1.0.0/16".into());
        let fields: Vec<String> = AgentConfig::from_spec("f", &spec)
            .validate()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["spec.podNetwork.cidrs[1]", "spec.overlay.mtu"]);
    }

    #[test]
    fn rejects_other_kinds() {
        let spec = NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]);
        let mut config = AgentConfig::from_spec("default", &spec);
        config.kind = "SomethingElse".into();
        let yaml = config.render().expect("render");
        let err = AgentConfig::parse(&yaml).expect_err("wrong kind must fail");
        assert!(err.to_string().contains("SomethingElse"), "{err}");
    }

    #[test]
    fn fills_defaults_for_omitted_sections_fields() {
        let yaml = r#"
apiVersion: weft.dev/v1alpha1
kind: AgentConfig
fabric: f
podNetwork: {cidrs: [10.244.0.0/16]}
overlay: {}
masquerade: {}
policy: {}
cni: {}
compatibility: {}
logLevel: debug
metricsPort: 1
healthPort: 2
"#;
        let config = AgentConfig::parse(yaml).expect("parse");
        assert_eq!(config.overlay.port, 8472);
        assert_eq!(config.cni.conf_name, "10-weft.conflist");
        assert!(config.masquerade.enabled);
        assert_eq!(config.pod_network.node_prefix_length.ipv4, 24);
    }
}
