//! dctl's API: resource types, defaulting, validation and the manifest codec. No I/O.
#![forbid(unsafe_code)]

pub mod meta;
pub mod resource;
pub mod validation;

pub mod manifest;
pub mod selector;

pub mod constraint;
pub mod duration;
pub mod probe;
pub mod quantity;
pub mod resources;
pub mod template;

pub mod compose;
pub mod endpoints;
pub mod event;
pub mod gitsync;
pub mod network;
pub mod node;
pub mod revision;
pub mod service;
pub mod task;

pub use constraint::{Constraint, ConstraintError, NodeFacts};
pub use duration::{Duration, DurationError};
pub use endpoints::Endpoints;
pub use event::{Event, EventType, ObjectReference};
pub use gitsync::GitSync;
pub use manifest::{Document, ManifestError};
pub use meta::{Condition, ConditionStatus, ObjectMeta, OwnerReference, Time};
pub use network::Network;
pub use node::Node;
pub use quantity::{Quantity, QuantityError};
pub use resource::{AnyObject, Kind, Resource, API_VERSION};
pub use revision::ServiceRevision;
pub use selector::{LabelSelector, SelectorError};
pub use service::Service;
pub use task::{Task, TaskState};
pub use template::TaskTemplate;
pub use validation::{FieldError, FieldPath};
