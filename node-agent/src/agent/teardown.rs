//! Uninstall: what the agent removes from its node when its fabric is deleted.
//!
//! A SIGTERM alone (an upgrade, a restart, a drained node) leaves everything in place, so pods keep
//! their network. Only when the agent's NetworkFabric is gone or being deleted (the operator's
//! finalizer holds it while it deletes the agents) does the agent take its node back to how it
//! found it: weft's VXLAN devices (their neighbours, FDB entries and routes go with them) and its
//! other routes, its nftables tables, and the CNI conflist. The VTEP state file stays, so a
//! reinstall announces the same MAC. Like netavark's teardown, every step runs even when an earlier
//! one failed, and all failures are reported together.

use kube::{Api, Client};
use tracing::{info, warn};
use weft_crds::{AgentConfig, NetworkFabric};

use super::Paths;
use super::error_chain;
use crate::nft::{NftApplier, OWNED_TABLES};
use crate::overlay::Datapath;
use crate::overlay::diff::diff_datapath;
use crate::overlay::netlink::Kernel;

/// Whether the fabric `name` is gone or being deleted (then the node is to be cleaned).
/// An unreachable API server answers "no": a node is never cleaned on a guess.
pub async fn fabric_is_deleted(client: Client, name: &str) -> bool {
    let api: Api<NetworkFabric> = Api::all(client);
    match api.get_opt(name).await {
        Ok(None) => true,
        Ok(Some(f)) => f.metadata.deletion_timestamp.is_some(),
        Err(e) => {
            warn!(fabric = %name, error = %error_chain(&e), "cannot tell whether the fabric is being deleted; leaving the node as it is");
            false
        }
    }
}

/// Removes everything weft programmed on this node; returns every failure (empty: clean).
pub async fn teardown_node(
    config: &AgentConfig,
    kernel: &impl Kernel,
    nft: &dyn NftApplier,
) -> Vec<String> {
    let mut failures = Vec::new();
    match kernel.observe().await {
        Ok(observed) => {
            let changes = diff_datapath(&Datapath::default(), &observed);
            let report = kernel.apply(&changes).await;
            failures.extend(report.failures.iter().map(ToString::to_string));
            info!(%changes, "removed weft's devices and routes");
        }
        Err(e) => failures.push(error_chain(&e)),
    }
    for (family, table) in OWNED_TABLES {
        if let Err(e) = nft.delete_table(family, table) {
            failures.push(error_chain(&e));
        }
    }
    let paths = Paths::of(config);
    for file in [&paths.conflist, &paths.subnet_file] {
        match std::fs::remove_file(file) {
            Ok(()) => info!(file = %file.display(), "removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failures.push(format!("failed to remove {}: {e}", file.display())),
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::FakeNft;
    use crate::overlay::fake::MemoryKernel;
    use crate::overlay::{Route, VxlanDevice};
    use weft_crds::NetworkFabricSpec;

    #[tokio::test]
    async fn teardown_removes_devices_routes_tables_and_the_conflist() {
        let dir = std::env::temp_dir().join(format!("weft-teardown-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net.d")).expect("dir");
        let mut spec = NetworkFabricSpec::with_cidrs(["10.244.0.0/16"]);
        spec.cni.conf_dir = dir.join("net.d").display().to_string();
        spec.compatibility.subnet_file = dir.join("subnet.env").display().to_string();
        let config = AgentConfig::from_spec("default", &spec);
        let paths = Paths::of(&config);
        std::fs::write(&paths.conflist, "{}").expect("write");
        let kernel = MemoryKernel::default();
        {
            let mut s = kernel.state.lock().expect("lock");
            s.devices.push(VxlanDevice {
                name: "flannel.1".into(),
                vni: 1,
                port: 8472,
                local: "10.99.0.10".parse().expect("ip"),
                uplink: "eth0".into(),
                mtu: 1450,
                mac: crate::flannel::Mac([2, 0, 0, 0, 0, 1]),
                addresses: vec![],
                up: true,
                tx_checksum_offload: true,
            });
            s.routes.insert(Route {
                destination: "10.244.3.0/24".parse().expect("cidr"),
                gateway: "10.99.0.13".parse().expect("ip"),
                device: "eth0".into(),
                onlink: false,
            });
        }
        let nft = FakeNft::default();
        nft.apply("table inet weft-nat {\n}\n").expect("nft");
        let failures = teardown_node(&config, &kernel, &nft).await;
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(*kernel.state.lock().expect("lock"), Datapath::default());
        assert_eq!(
            nft.list_table(crate::nft::Family::Inet, "weft-nat")
                .expect("list"),
            None
        );
        assert!(!paths.conflist.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
