//! The node-side controllers: what one agent runs on its Docker host.

pub mod container;
pub mod engine;
pub mod host_routes;
pub mod log_access;
pub mod log_server;
pub mod networks;
pub mod node_status;
pub mod probes;
pub mod proxy;
pub mod registration;
pub mod tasks;

/// Why `node` cannot name a node (its assignment keys are `…/<node>/…`): empty, or with a
/// `/` in it.
pub fn node_name_problem(node: &str) -> Option<&'static str> {
    if node.is_empty() {
        Some("it is empty")
    } else if node.contains('/') {
        Some("it must not contain '/'")
    } else {
        None
    }
}
