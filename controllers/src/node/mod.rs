//! The node-side controllers: what one agent runs on its Docker host.

pub mod container;
pub mod engine;
pub mod host_routes;
pub mod networks;
pub mod node_status;
pub mod registration;
pub mod tasks;
