//! Where each object lives in etcd: `/dctl/v1/<plural>/<namespace>/<name>`.

use dctl_apis::Kind;

use super::StoreError;
use crate::object_key::ObjectKey;

/// Every key this project writes starts here; a new API version gets a new root.
pub const ROOT: &str = "/dctl/v1/";

/// The key of one object. Namespaced kinds need a namespace; cluster-scoped kinds ignore it
/// and have no namespace segment (`/dctl/v1/nodes/<name>`).
///
/// # Errors
/// `Invalid` when the name (or a namespaced kind's namespace) is empty or contains `/`,
/// which would make the key ambiguous.
pub fn object_key(kind: Kind, namespace: &str, name: &str) -> Result<String, StoreError> {
    let invalid = |message: &str| StoreError::Invalid {
        kind,
        key: ObjectKey::new(namespace, name),
        message: message.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name.contains('/') {
        return Err(invalid("a name cannot contain `/`"));
    }
    if !kind.namespaced() {
        return Ok(format!("{ROOT}{}/{name}", kind.plural()));
    }
    if namespace.is_empty() {
        return Err(invalid("the namespace is empty"));
    }
    if namespace.contains('/') {
        return Err(invalid("a namespace cannot contain `/`"));
    }
    Ok(format!("{ROOT}{}/{namespace}/{name}", kind.plural()))
}

/// The prefix to list or watch: one namespace (`…/<ns>/`), or every object of the kind when
/// `namespace` is `None` or the kind is cluster-scoped.
pub fn list_prefix(kind: Kind, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) if kind.namespaced() && !namespace.is_empty() => {
            format!("{ROOT}{}/{namespace}/", kind.plural())
        }
        _ => format!("{ROOT}{}/", kind.plural()),
    }
}

/// Where a Task bound to `node` is mirrored for that node's agent to watch.
pub fn assignment_key(node: &str, namespace: &str, name: &str) -> String {
    format!("{}{namespace}/{name}", assignments_prefix(node))
}

/// Everything assigned to `node`.
pub fn assignments_prefix(node: &str) -> String {
    format!("{ROOT}assignments/{node}/")
}

/// The key of an object that is not a resource kind: leader-election leases
/// (`/dctl/v1/leases/<name>`) and the like.
pub fn system_key(collection: &str, name: &str) -> String {
    format!("{ROOT}{collection}/{name}")
}

/// The end of the key range that holds every key starting with `prefix` (etcd's convention:
/// the prefix with its last byte incremented).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only a prefix of 0xff bytes gets here; "\0" means "to the end of the keyspace".
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_and_cluster_scoped_keys() {
        assert_eq!(
            object_key(Kind::Service, "demo", "web").unwrap(),
            "/dctl/v1/services/demo/web"
        );
        assert_eq!(
            object_key(Kind::Node, "", "n1").unwrap(),
            "/dctl/v1/nodes/n1"
        );
        assert_eq!(
            object_key(Kind::Node, "ignored", "n1").unwrap(),
            "/dctl/v1/nodes/n1"
        );
    }

    #[test]
    fn ambiguous_keys_are_refused() {
        assert!(object_key(Kind::Service, "", "web").is_err());
        assert!(object_key(Kind::Service, "demo", "").is_err());
        assert!(object_key(Kind::Service, "demo", "a/b").is_err());
        assert!(object_key(Kind::Service, "de/mo", "web").is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            list_prefix(Kind::Task, Some("demo")),
            "/dctl/v1/tasks/demo/"
        );
        assert_eq!(list_prefix(Kind::Task, None), "/dctl/v1/tasks/");
        assert_eq!(list_prefix(Kind::Node, Some("demo")), "/dctl/v1/nodes/");
        assert_eq!(prefix_end("/dctl/v1/tasks/"), b"/dctl/v1/tasks0".to_vec());
    }
}
