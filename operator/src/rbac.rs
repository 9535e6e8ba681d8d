//! The RBAC rules of the agent and of the operator itself, as data.
//!
//! Least privilege is the invariant: every verb here is used by the code (the comment on each rule
//! says where), and nothing else is granted. The agent's ClusterRole depends on the fabric (no
//! policy engine, no policy watches). The operator's own ClusterRole must *hold* every permission it
//! grants the agent, because Kubernetes refuses to let anyone create a (Cluster)Role or binding that
//! grants more than its creator has (RBAC escalation prevention); it additionally has `bind` on the
//! one ClusterRole it binds. The Helm chart copies [`operator_cluster_rules`] and
//! [`operator_namespace_rules`]; `tests/golden/operator-rbac.yaml` and `docs/operator.md` carry the
//! rendered list and a test keeps all three in step.

use k8s_openapi::api::rbac::v1::PolicyRule;
use weft_crds::NetworkFabricSpec;

use crate::names::AGENT_NAME;

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| (*s).to_owned()).collect()),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

fn named(mut r: PolicyRule, names: &[&str]) -> PolicyRule {
    r.resource_names = Some(names.iter().map(|s| (*s).to_owned()).collect());
    r
}

/// The agent's ClusterRole rules for a fabric with `spec`.
///
/// - nodes get/list/watch: own Node (podCIDRs) and every peer's annotations (leases of the overlay);
/// - nodes patch: publish the flannel-format annotations on the own Node;
/// - nodes/status patch: set the NetworkUnavailable=False condition and weft's own WeftAgentReady
///   condition (the agent's report to the operator, ADR 0105);
/// - networkfabrics get: on SIGTERM, tell an uninstall (the fabric deleted: clean the node) from a
///   restart or upgrade (leave everything in place);
/// - pods, namespaces, networkpolicies list/watch: inputs of the policy engine (only with policy on);
/// - clusternetworkpolicies / adminnetworkpolicies / baselineadminnetworkpolicies list/watch: when
///   those APIs are honoured;
/// - events create/patch: Kubernetes Events on the Node (patch updates an event series).
pub fn agent_cluster_rules(spec: &NetworkFabricSpec) -> Vec<PolicyRule> {
    let mut rules = vec![
        rule(&[""], &["nodes"], &["get", "list", "watch", "patch"]),
        rule(&[""], &["nodes/status"], &["patch"]),
        rule(&["weft.dev"], &["networkfabrics"], &["get"]),
    ];
    if spec.policy.enabled {
        rules.push(rule(&[""], &["namespaces", "pods"], &["list", "watch"]));
        rules.push(rule(
            &["networking.k8s.io"],
            &["networkpolicies"],
            &["list", "watch"],
        ));
        let mut policy_resources = Vec::new();
        if spec.policy.admin_network_policy {
            policy_resources.extend(["adminnetworkpolicies", "baselineadminnetworkpolicies"]);
        }
        if spec.policy.cluster_network_policy {
            policy_resources.push("clusternetworkpolicies");
        }
        if !policy_resources.is_empty() {
            rules.push(rule(
                &["policy.networking.k8s.io"],
                &policy_resources,
                &["list", "watch"],
            ));
        }
    }
    rules.push(rule(&["events.k8s.io"], &["events"], &["create", "patch"]));
    rules
}

/// The operator's ClusterRole rules (cluster-wide).
///
/// Its own needs: the fabric and its status/finalizers; the agent ClusterRole(Binding) it owns;
/// nodes (spec.podCIDRs and InternalIP addresses, for validation; watched for the agents'
/// WeftAgentReady conditions and pod MTU reports); agent pods (crash-loop
/// detection); the `kubernetes` Service and ServiceCIDRs (service range, for validation); events
/// (on cluster-scoped fabrics, hence cluster-wide). Plus everything it grants the agent (see the
/// module docs) and `bind` on exactly the agent's ClusterRole.
pub fn operator_cluster_rules() -> Vec<PolicyRule> {
    vec![
        // list/watch: the controller; patch: the finalizer (merge patch, no update); get: granted
        // to the agent (which tells an uninstall from a restart by it), so held here too.
        rule(
            &["weft.dev"],
            &["networkfabrics"],
            &["get", "list", "watch", "patch"],
        ),
        // Status is written with server-side apply.
        rule(&["weft.dev"], &["networkfabrics/status"], &["patch"]),
        // Needed to set blockOwnerDeletion on ownerReferences to a fabric.
        rule(&["weft.dev"], &["networkfabrics/finalizers"], &["update"]),
        rule(
            &["rbac.authorization.k8s.io"],
            &["clusterrolebindings", "clusterroles"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        named(
            rule(&["rbac.authorization.k8s.io"], &["clusterroles"], &["bind"]),
            &[AGENT_NAME],
        ),
        rule(&[""], &["nodes"], &["get", "list", "watch", "patch"]),
        rule(&[""], &["nodes/status"], &["patch"]),
        rule(&[""], &["namespaces", "pods"], &["list", "watch"]),
        named(rule(&[""], &["services"], &["get"]), &["kubernetes"]),
        rule(&["networking.k8s.io"], &["servicecidrs"], &["list"]),
        rule(
            &["networking.k8s.io"],
            &["networkpolicies"],
            &["list", "watch"],
        ),
        rule(
            &["policy.networking.k8s.io"],
            &[
                "adminnetworkpolicies",
                "baselineadminnetworkpolicies",
                "clusternetworkpolicies",
            ],
            &["list", "watch"],
        ),
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
    ]
}

/// The operator's Role rules in its own namespace (where the agent objects and its Lease live).
pub fn operator_namespace_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &["apps"],
            &["daemonsets"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule(
            &[""],
            &["configmaps", "serviceaccounts"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "create", "update"],
        ),
    ]
}

/// Whether `held` grants `verb` on `group/resource` (optionally a named object).
pub fn allows(
    held: &[PolicyRule],
    group: &str,
    resource: &str,
    verb: &str,
    name: Option<&str>,
) -> bool {
    held.iter().any(|r| {
        let has = |v: &Option<Vec<String>>, x: &str| {
            v.as_ref()
                .is_some_and(|v| v.iter().any(|e| e == x || e == "*"))
        };
        has(&r.api_groups, group)
            && has(&r.resources, resource)
            && r.verbs.iter().any(|v| v == verb || v == "*")
            && match (&r.resource_names, name) {
                (None, _) => true,
                (Some(names), Some(n)) => names.is_empty() || names.iter().any(|x| x == n),
                (Some(names), None) => names.is_empty(),
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(rules: &[PolicyRule]) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for r in rules {
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for v in &r.verbs {
                        out.push((g.clone(), res.clone(), v.clone()));
                    }
                }
            }
        }
        out
    }

    /// Escalation prevention: the operator can only create the agent's ClusterRole if it holds
    /// every permission in it, for every fabric it might see.
    #[test]
    fn operator_holds_everything_it_grants_the_agent() {
        let held = operator_cluster_rules();
        let mut spec = NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]);
        for (policy, anp, cnp) in [
            (true, true, true),
            (true, false, true),
            (false, false, false),
        ] {
            spec.policy.enabled = policy;
            spec.policy.admin_network_policy = anp;
            spec.policy.cluster_network_policy = cnp;
            for (g, res, v) in expand(&agent_cluster_rules(&spec)) {
                assert!(
                    allows(&held, &g, &res, &v, None),
                    "operator lacks {v} {g}/{res}"
                );
            }
        }
        assert!(allows(
            &held,
            "rbac.authorization.k8s.io",
            "clusterroles",
            "bind",
            Some(AGENT_NAME)
        ));
        assert!(!allows(
            &held,
            "rbac.authorization.k8s.io",
            "clusterroles",
            "bind",
            Some("cluster-admin")
        ));
        assert!(!allows(
            &held,
            "rbac.authorization.k8s.io",
            "clusterroles",
            "escalate",
            None
        ));
    }

    #[test]
    fn agent_rules_follow_the_policy_settings() {
        let mut spec = NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]);
        let all = agent_cluster_rules(&spec);
        assert!(allows(&all, "", "pods", "watch", None));
        assert!(allows(
            &all,
            "policy.networking.k8s.io",
            "clusternetworkpolicies",
            "list",
            None
        ));
        assert!(allows(
            &all,
            "policy.networking.k8s.io",
            "baselineadminnetworkpolicies",
            "list",
            None
        ));
        assert!(!allows(&all, "", "pods", "get", None));
        assert!(!allows(&all, "", "secrets", "get", None));

        spec.policy.admin_network_policy = false;
        let no_anp = agent_cluster_rules(&spec);
        assert!(!allows(
            &no_anp,
            "policy.networking.k8s.io",
            "adminnetworkpolicies",
            "list",
            None
        ));
        assert!(allows(
            &no_anp,
            "policy.networking.k8s.io",
            "clusternetworkpolicies",
            "list",
            None
        ));

        spec.policy.enabled = false;
        let off = agent_cluster_rules(&spec);
        assert!(!allows(&off, "", "pods", "list", None));
        assert!(!allows(
            &off,
            "networking.k8s.io",
            "networkpolicies",
            "watch",
            None
        ));
        assert!(allows(&off, "", "nodes", "patch", None));
    }

    #[test]
    fn nothing_is_wildcarded_or_secret() {
        for r in operator_cluster_rules()
            .iter()
            .chain(operator_namespace_rules().iter())
        {
            assert!(!r.verbs.iter().any(|v| v == "*"), "{r:?}");
            assert!(
                !r.resources
                    .iter()
                    .flatten()
                    .any(|x| x == "*" || x == "secrets"),
                "{r:?}"
            );
        }
    }
}
