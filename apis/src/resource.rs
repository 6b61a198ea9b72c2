//! The `Resource` trait every kind implements, the `Kind` registry and `AnyObject`.

use std::fmt::Debug;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::validation::FieldError;

/// The one API version this project serves.
pub const API_VERSION: &str = "dctl/v1";

/// A typed object kept in the store: `apiVersion`, `kind`, `metadata`, `spec`, `status`.
///
/// Spec and status are separate JSON fields on purpose: the store compares and writes them
/// separately (a status write never bumps `generation`).
pub trait Resource:
    Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    const KIND: Kind;

    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// Fills what the user may leave out with the Swarm and Kubernetes defaults.
    fn apply_defaults(&mut self);

    /// Every problem with the object, each with its field path. Empty when valid.
    fn validate(&self) -> Vec<FieldError>;
}

/// Declares a kind's object struct and its `Resource` impl; the spec and status types, the
/// defaulting and the validation live in the kind's own module.
macro_rules! resource {
    ($(#[$doc:meta])* $name:ident, $spec:ty, $status:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            pub api_version: String,
            pub kind: String,
            pub metadata: $crate::meta::ObjectMeta,
            #[serde(default)]
            pub spec: $spec,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
        }

        impl $name {
            pub fn new(metadata: $crate::meta::ObjectMeta, spec: $spec) -> Self {
                $name {
                    api_version: $crate::resource::API_VERSION.to_string(),
                    kind: stringify!($name).to_string(),
                    metadata,
                    spec,
                    status: None,
                }
            }
        }

        impl $crate::resource::Resource for $name {
            const KIND: $crate::resource::Kind = $crate::resource::Kind::$name;

            fn meta(&self) -> &$crate::meta::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut $crate::meta::ObjectMeta {
                &mut self.metadata
            }

            fn apply_defaults(&mut self) {
                $crate::resource::default_meta(&mut self.metadata, Self::KIND);
                self.spec.apply_defaults();
            }

            fn validate(&self) -> Vec<$crate::validation::FieldError> {
                let mut errors = $crate::validation::validate_meta(&self.metadata, Self::KIND);
                errors.extend(self.spec.validate(&$crate::validation::FieldPath::new("spec")));
                errors.extend($crate::validation::check_object_size(self));
                errors
            }
        }
    };
}
pub(crate) use resource;

/// Fills `namespace` for namespaced kinds (and clears it for cluster-scoped ones).
pub fn default_meta(meta: &mut ObjectMeta, kind: Kind) {
    if kind.namespaced() {
        if meta.namespace.as_deref().unwrap_or("").is_empty() {
            meta.namespace = Some(crate::meta::DEFAULT_NAMESPACE.to_string());
        }
    } else {
        meta.namespace = None;
    }
}

/// Every kind this API serves, with its names as the CLI accepts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Service,
    Task,
    Node,
    Network,
    Event,
    GitSync,
    Endpoints,
    ServiceRevision,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Service,
        Kind::Task,
        Kind::Node,
        Kind::Network,
        Kind::Event,
        Kind::GitSync,
        Kind::Endpoints,
        Kind::ServiceRevision,
    ];

    /// `Service`, as written in a manifest's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Task => "Task",
            Kind::Node => "Node",
            Kind::Network => "Network",
            Kind::Event => "Event",
            Kind::GitSync => "GitSync",
            Kind::Endpoints => "Endpoints",
            Kind::ServiceRevision => "ServiceRevision",
        }
    }

    /// `services`: the store's key segment and the CLI's plural.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::Task => "tasks",
            Kind::Node => "nodes",
            Kind::Network => "networks",
            Kind::Event => "events",
            Kind::GitSync => "gitsyncs",
            Kind::Endpoints => "endpoints",
            Kind::ServiceRevision => "servicerevisions",
        }
    }

    /// kubectl-style short names (`svc`, `no`).
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Service => &["svc"],
            Kind::Task => &["tk"],
            Kind::Node => &["no"],
            Kind::Network => &["net"],
            Kind::Event => &["ev"],
            Kind::GitSync => &["gs"],
            Kind::Endpoints => &["ep"],
            Kind::ServiceRevision => &["rev", "revision", "revisions"],
        }
    }

    /// Nodes are cluster-scoped; everything else lives in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Node)
    }

    /// The kind named by a manifest's `kind` (exact) or by the CLI (singular, plural or
    /// short name, any case).
    pub fn from_name(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|kind| {
            kind.as_str().to_ascii_lowercase() == lower
                || kind.plural() == lower
                || kind.short_names().contains(&lower.as_str())
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs `$body` with the type alias `$K` bound to the resource type of `$kind`, so code
/// generic over `K: Resource` can serve a kind known only at run time (the CLI).
#[macro_export]
macro_rules! with_kind {
    ($kind:expr, $K:ident => $body:expr) => {
        match $kind {
            $crate::Kind::Service => {
                type $K = $crate::Service;
                $body
            }
            $crate::Kind::Task => {
                type $K = $crate::Task;
                $body
            }
            $crate::Kind::Node => {
                type $K = $crate::Node;
                $body
            }
            $crate::Kind::Network => {
                type $K = $crate::Network;
                $body
            }
            $crate::Kind::Event => {
                type $K = $crate::Event;
                $body
            }
            $crate::Kind::GitSync => {
                type $K = $crate::GitSync;
                $body
            }
            $crate::Kind::Endpoints => {
                type $K = $crate::Endpoints;
                $body
            }
            $crate::Kind::ServiceRevision => {
                type $K = $crate::ServiceRevision;
                $body
            }
        }
    };
}

/// An object of any kind, as read from a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnyObject {
    Service(crate::Service),
    Task(crate::Task),
    Node(crate::Node),
    Network(crate::Network),
    Event(crate::Event),
    GitSync(crate::GitSync),
    Endpoints(crate::Endpoints),
    ServiceRevision(crate::ServiceRevision),
}

/// Runs `$body` with `$o` bound to the typed object inside an `AnyObject`.
#[macro_export]
macro_rules! with_object {
    ($object:expr, $o:ident => $body:expr) => {
        match $object {
            $crate::AnyObject::Service($o) => $body,
            $crate::AnyObject::Task($o) => $body,
            $crate::AnyObject::Node($o) => $body,
            $crate::AnyObject::Network($o) => $body,
            $crate::AnyObject::Event($o) => $body,
            $crate::AnyObject::GitSync($o) => $body,
            $crate::AnyObject::Endpoints($o) => $body,
            $crate::AnyObject::ServiceRevision($o) => $body,
        }
    };
}

impl AnyObject {
    pub fn kind(&self) -> Kind {
        with_object!(self, o => kind_of(o))
    }

    pub fn meta(&self) -> &ObjectMeta {
        with_object!(self, o => o.meta())
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        with_object!(self, o => o.meta_mut())
    }

    pub fn apply_defaults(&mut self) {
        with_object!(self, o => o.apply_defaults())
    }

    pub fn validate(&self) -> Vec<FieldError> {
        with_object!(self, o => o.validate())
    }
}

/// The kind of a typed object, usable where only a value (not its type) is at hand.
pub fn kind_of<K: Resource>(_: &K) -> Kind {
    K::KIND
}
