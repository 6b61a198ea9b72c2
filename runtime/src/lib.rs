//! The controller machinery over etcd, in the manner of kube-runtime.
#![forbid(unsafe_code)]

pub mod apply;
pub mod controller;
pub mod events;
pub mod leader_election;
pub mod lease;
pub mod local_etcd;
pub mod manifest_files;
pub mod metrics;
pub mod object_key;
pub mod reflector;
pub mod store;
pub mod watcher;

pub use local_etcd::LocalEtcd;
pub use object_key::ObjectKey;
