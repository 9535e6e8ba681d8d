//! kube-proxy on the local cluster, the way kubeadm deploys it: a ConfigMap with its
//! `KubeProxyConfiguration` (nftables mode) and a kubeconfig that uses the pod's service-account
//! token, a ServiceAccount bound to `system:node-proxier`, and a DaemonSet of host-network pods that
//! run the kube-proxy built from the pinned k8s.io/kubernetes module (`e2e/images`).
//!
//! Invariant: kube-proxy writes only into the node's own namespaces (its nftables tables in the
//! node's network namespace); the conntrack sysctls that are global to the machine are left alone
//! (`conntrack.maxPerCore: 0`, timeouts `0s`).

use crate::cluster::Cluster;
use crate::config::ClusterConfig;
use crate::sys::wait_until;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::time::Duration;

/// The image the DaemonSet names; the nodelet runs the locally built `kube-proxy` for it.
pub fn image() -> String {
    let v = crate::gobuild::kube_version().unwrap_or_else(|_| "v1.34.4".into());
    format!("registry.k8s.io/kube-proxy:{v}")
}

/// The objects to apply, as one `v1/List`.
pub fn render_kube_proxy(cfg: &ClusterConfig) -> Value {
    let config = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
         kind: KubeProxyConfiguration\n\
         mode: nftables\n\
         clusterCIDR: {cidrs}\n\
         clientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\n\
         conntrack:\n  maxPerCore: 0\n  min: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n\
         metricsBindAddress: 127.0.0.1:10249\n",
        cidrs = cfg.cluster_cidrs.join(",")
    );
    let kubeconfig = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n- name: default\n  cluster:\n    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n    server: {server}\n\
         contexts:\n- name: default\n  context:\n    cluster: default\n    namespace: default\n    user: default\n\
         current-context: default\n\
         users:\n- name: default\n  user:\n    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
        server = cfg.api_url_in_cluster()
    );
    let labels = json!({"k8s-app": "kube-proxy"});
    json!({
        "apiVersion": "v1", "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "kube-proxy", "namespace": "kube-system"}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "kubeadm:node-proxier"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node-proxier"},
             "subjects": [{"kind": "ServiceAccount", "name": "kube-proxy", "namespace": "kube-system"}]},
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"app": "kube-proxy"}},
             "data": {"config.conf": config, "kubeconfig.conf": kubeconfig}},
            {"apiVersion": "apps/v1", "kind": "DaemonSet",
             "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": labels},
             "spec": {
                "selector": {"matchLabels": labels},
                "updateStrategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "priorityClassName": "system-node-critical",
                        "hostNetwork": true,
                        "serviceAccountName": "kube-proxy",
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "tolerations": [{"operator": "Exists"}],
                        "terminationGracePeriodSeconds": 5,
                        "containers": [{
                            "name": "kube-proxy",
                            "image": image(),
                            "command": ["/usr/local/bin/kube-proxy",
                                        "--config=/var/lib/kube-proxy/config.conf",
                                        "--hostname-override=$(NODE_NAME)"],
                            "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                            "securityContext": {"privileged": true},
                            "volumeMounts": [
                                {"mountPath": "/var/lib/kube-proxy", "name": "kube-proxy"},
                                {"mountPath": "/run/xtables.lock", "name": "xtables-lock"},
                                {"mountPath": "/lib/modules", "name": "lib-modules", "readOnly": true}
                            ]
                        }],
                        "volumes": [
                            {"name": "kube-proxy", "configMap": {"name": "kube-proxy"}},
                            {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                            {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}}
                        ]
                    }
                }
             }}
        ]
    })
}

/// Applies kube-proxy and waits until it runs on every node.
pub fn install_kube_proxy(c: &Cluster, timeout: Duration) -> Result<()> {
    c.apply(render_kube_proxy(&c.cfg))
        .context("failed to apply kube-proxy")?;
    let want = c.cfg.nodes;
    let mut last = String::new();
    wait_until(
        "kube-proxy to run on every node",
        timeout,
        Duration::from_millis(500),
        || {
            let out = c
                .kubectl()
                .args([
                    "-n",
                    "kube-system",
                    "get",
                    "daemonset",
                    "kube-proxy",
                    "-o",
                    "json",
                ])
                .output()?;
            if !out.status.success() {
                bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
            }
            let ds: Value = serde_json::from_slice(&out.stdout)?;
            last = ds["status"].to_string();
            Ok(ds["status"]["numberReady"].as_u64() == Some(want as u64))
        },
    )
    .with_context(|| format!("last status: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn kube_proxy_runs_in_nftables_mode_from_its_configmap_on_every_node() {
        let cfg = ClusterConfig::new("t", 2, PathBuf::from("/bin")).dual_stack();
        let list = render_kube_proxy(&cfg);
        let items = list["items"].as_array().unwrap();
        let cm = items.iter().find(|i| i["kind"] == "ConfigMap").unwrap();
        let conf: Value =
            yaml_serde::from_str(cm["data"]["config.conf"].as_str().unwrap()).unwrap();
        assert_eq!(conf["mode"], "nftables");
        assert_eq!(conf["clusterCIDR"], "10.244.0.0/16,fd00:10:244::/56");
        assert_eq!(conf["conntrack"]["maxPerCore"], 0, "no machine-wide sysctl");
        let kc: Value =
            yaml_serde::from_str(cm["data"]["kubeconfig.conf"].as_str().unwrap()).unwrap();
        assert_eq!(
            kc["clusters"][0]["cluster"]["server"],
            cfg.api_url_in_cluster()
        );
        let ds = items.iter().find(|i| i["kind"] == "DaemonSet").unwrap();
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["tolerations"][0]["operator"], "Exists");
        let c = &pod["containers"][0];
        assert_eq!(c["command"][0], "/usr/local/bin/kube-proxy");
        assert!(
            c["image"]
                .as_str()
                .unwrap()
                .starts_with("registry.k8s.io/kube-proxy:v1.")
        );
        let crb = items
            .iter()
            .find(|i| i["kind"] == "ClusterRoleBinding")
            .unwrap();
        assert_eq!(crb["roleRef"]["name"], "system:node-proxier");
    }
}
