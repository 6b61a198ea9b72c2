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

/// An error and its causes on one line (`…client error (Connect): Connection refused`),
/// each cause only when its parent's text does not already hold it: bollard's and aya's
/// own texts rarely say what went wrong.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}
