//! The node-side controllers: what one agent runs on its Docker host.

pub mod container;
pub mod engine;
pub mod host_routes;
pub mod log_server;
pub mod networks;
pub mod node_status;
pub mod probes;
pub mod proxy;
pub mod registration;
pub mod tasks;
