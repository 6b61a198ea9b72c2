//! dctl's API: resource types, defaulting, validation and the manifest codec. No I/O.
#![forbid(unsafe_code)]

pub mod meta;
pub mod resource;
pub mod validation;

pub mod event;
pub mod gitsync;
pub mod network;
pub mod node;
pub mod service;
pub mod task;

pub use event::Event;
pub use gitsync::GitSync;
pub use meta::{Condition, ConditionStatus, ObjectMeta, OwnerReference, Time};
pub use network::Network;
pub use node::Node;
pub use resource::{AnyObject, Kind, Resource, API_VERSION};
pub use service::Service;
pub use task::Task;
pub use validation::{FieldError, FieldPath};
