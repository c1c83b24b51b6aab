//! The end-to-end harness: real servers on 127.0.0.1, started and stopped by PID.
//!
//! - [`control_plane`] — etcd, kube-apiserver, kube-controller-manager
//! - [`stores`] — s3s-fs, Azurite, fake-gcs-server (+ [`gcs_proxy`])
//! - [`node`] — a real node for a test's own cluster: containerd, kubelet, kube-scheduler, kube-proxy
//! - [`env`] — the shared environment `tests/run.sh` starts once for all test binaries
//! - [`process`] — child processes with a parent-death signal, stopped on drop

pub mod control_plane;
pub mod env;
pub mod fault_proxy;
pub mod fixtures;
pub mod gcs_proxy;
pub mod node;
pub mod process;
pub mod stores;
pub mod webhook;
