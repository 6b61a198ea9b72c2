//! dctl's controllers: one module per control loop. Who writes which field is in
//! `docs/task-lifecycle.md`.
#![forbid(unsafe_code)]

// Cluster side: run by the controller-manager that holds the leader lease.
pub mod endpoints;
pub mod gc;
pub mod gitsync;
pub mod network;
pub mod node_lifecycle;
pub mod scheduler;
pub mod service;

// Node side: run by each node's agent against its Docker engine.
pub mod node;
