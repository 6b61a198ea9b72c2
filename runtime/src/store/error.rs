//! What can go wrong talking to the store, each error naming the object and what to do.

use std::error::Error as StdError;

use dctl_apis::Kind;

use crate::object_key::ObjectKey;

/// A store failure. Each variant's message names the object (`service demo/web`) and how to
/// get past it, so the CLI can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd did not answer, even after a few retries.
    #[error(
        "cannot reach etcd at {}: {}; is it running? (`dctl up` starts one; \
         --etcd or DCTL_ETCD points elsewhere)",
        .endpoints.join(", "),
        cause_chain(.source.as_ref())
    )]
    Unavailable {
        endpoints: Vec<String>,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    #[error("{} {key} not found (list them with `{}`)", noun(*.kind), list_command(*.kind, key))]
    NotFound { kind: Kind, key: ObjectKey },

    #[error(
        "{} {key} already exists (change it with `dctl apply`, or delete it first)",
        noun(*.kind)
    )]
    AlreadyExists { kind: Kind, key: ObjectKey },

    /// The object changed since it was read: a compare-and-swap lost its race.
    #[error(
        "{} {key} was changed by someone else since it was read; read it again and retry",
        noun(*.kind)
    )]
    Conflict { kind: Kind, key: ObjectKey },

    /// The request itself is wrong (no resourceVersion on an update, a name with `/`, …).
    #[error("cannot write {} {key}: {message}", noun(*.kind))]
    Invalid {
        kind: Kind,
        key: ObjectKey,
        message: String,
    },

    /// etcd has discarded the history a watch wanted to start from; relist.
    #[error(
        "etcd compacted its history up to revision {revision} before the watch caught up; \
         list again and watch from the new revision"
    )]
    Compacted { revision: i64 },

    /// A stored value that does not parse as the kind it is stored under.
    #[error(
        "the value stored at {key} is not a valid object of its kind: {source} \
         (fix it, or remove it with `etcdctl del {key}`)"
    )]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },

    /// etcd refused the request for a reason that retrying will not fix.
    #[error("etcd refused the request: {}", cause_chain(.0))]
    Etcd(#[source] etcd_client::Error),
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(self, StoreError::AlreadyExists { .. })
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// `service`, `gitsync`: the kind as a noun in a sentence.
fn noun(kind: Kind) -> String {
    kind.as_str().to_ascii_lowercase()
}

/// `dctl get services -n demo`: where to look for what was not found.
fn list_command(kind: Kind, key: &ObjectKey) -> String {
    if key.namespace.is_empty() {
        format!("dctl get {}", kind.plural())
    } else {
        format!("dctl get {} -n {}", kind.plural(), key.namespace)
    }
}

/// An error and its sources as one line (`tcp connect error: Connection refused (os error
/// 111)`), leaving out what says nothing: a gRPC status's metadata, tonic's bare "transport
/// error", and a source whose text its parent already includes.
pub(crate) fn cause_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        // etcd_client::Error reports no sources of its own; look through it.
        let (text, source): (Option<String>, Option<&(dyn StdError + 'static)>) =
            match err.downcast_ref::<etcd_client::Error>() {
                Some(etcd_client::Error::GRpcStatus(status)) => {
                    (Some(status.message().to_string()), status.source())
                }
                Some(etcd_client::Error::TransportError(inner)) => (None, Some(inner)),
                Some(etcd_client::Error::IoError(inner)) => (None, Some(inner)),
                _ => (Some(err.to_string()), err.source()),
            };
        if let Some(text) = text.filter(|t| !t.is_empty() && t != "transport error") {
            if !parts.iter().any(|part| part.contains(&text)) {
                parts.push(text);
            }
        }
        next = source;
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_object() {
        let key = ObjectKey::new("demo", "web");
        let err = StoreError::NotFound {
            kind: Kind::Service,
            key: key.clone(),
        };
        assert_eq!(
            err.to_string(),
            "service demo/web not found (list them with `dctl get services -n demo`)"
        );
        assert!(err.is_not_found());
        let err = StoreError::Conflict {
            kind: Kind::Service,
            key,
        };
        assert!(err.to_string().starts_with("service demo/web was changed"));
        assert!(err.is_conflict());
    }

    #[test]
    fn unavailable_names_the_endpoint_and_cause() {
        let err = StoreError::Unavailable {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            source: "connection refused".into(),
        };
        assert!(err
            .to_string()
            .starts_with("cannot reach etcd at http://127.0.0.1:2379: connection refused;"));
    }
}
