//! weft-e2e: weft's own multi-node Kubernetes cluster on one Linux machine, for tests, benchmarks and
//! the demo.
//!
//! ```text
//!  root netns: etcd, kube-apiserver (127.0.0.1), kube-controller-manager, kube-scheduler
//!      │ forwarder (weft-e2e forward): <underlay gateway>:6443 → 127.0.0.1:<api port>
//!  <name>-underlay netns: br0 ───┬──────────────┬──────────────┬─────────────
//!                          <name>-node-1   <name>-node-2   <name>-external
//!                          weft-nodelet    weft-nodelet    port server
//!                          (pods: netns+CNI, or host-network processes)
//! ```
//!
//! The control plane is real and built from Go modules (`gobuild`); nodes are network namespaces
//! (`topology`); `nodelet` plays the kubelet; `probe` measures reachability between pods.

pub mod bench;
pub mod cgroup;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod controlplane;
pub mod demo;
pub mod egress;
pub mod flannel;
pub mod forward;
pub mod gobuild;
pub mod helm;
pub mod install;
pub mod kstatus;
pub mod kubeproxy;
pub mod kuberouter;
pub mod netns;
pub mod nodelet;
pub mod pki;
pub mod policyapi;
pub mod probe;
pub mod serve;
pub mod sys;
pub mod topology;

pub use cluster::Cluster;
pub use config::ClusterConfig;
