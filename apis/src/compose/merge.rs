//! Merges compose files as the compose specification's merge rules say.
//!
//! Mappings merge key by key; sequences append, except `command`, `entrypoint` and
//! `healthcheck.test`, which the later file replaces; `ports` and `volumes` append only
//! entries with a new unique key (ports: ip, target, published, protocol; volumes: target)
//! and replace those sharing one. Keys that may be written as a list or a mapping
//! (`environment`, `labels`, `networks`, `depends_on`, …) are read as mappings first, so
//! `A=1` in one file and `A: 2` in the next merge by key.

use super::yaml::{Key, Node, Value};

/// Service keys whose list form (`KEY=value` strings) is a mapping.
const KEY_VALUE_LISTS: [&str; 3] = ["environment", "labels", "sysctls"];
/// Service keys whose list form (names) is a mapping of name to nothing.
const NAME_LISTS: [&str; 2] = ["networks", "depends_on"];
/// Service keys the later file replaces rather than appends to.
const REPLACED: [&str; 2] = ["command", "entrypoint"];

/// Rewrites the list forms of a service's mapping-like keys as mappings.
pub fn normalize_service(service: &mut Node) {
    let Value::Map(entries) = &mut service.value else {
        return;
    };
    for (key, value) in entries.iter_mut() {
        let name = key.name.as_str();
        if KEY_VALUE_LISTS.contains(&name) {
            key_value_list_to_map(value);
        } else if NAME_LISTS.contains(&name) {
            name_list_to_map(value);
        } else if name == "deploy" {
            if let Some(labels) = map_value_mut(value, "labels") {
                key_value_list_to_map(labels);
            }
        }
    }
}

fn map_value_mut<'a>(node: &'a mut Node, key: &str) -> Option<&'a mut Node> {
    match &mut node.value {
        Value::Map(entries) => entries
            .iter_mut()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v),
        _ => None,
    }
}

/// `["A=1", "B"]` → `{A: "1", B: null}`.
fn key_value_list_to_map(node: &mut Node) {
    let Value::Seq(items) = &node.value else {
        return;
    };
    let mut entries: Vec<(Key, Node)> = Vec::new();
    for item in items {
        let Some(text) = item.as_str() else { return };
        let (name, value) = match text.split_once('=') {
            Some((name, value)) => (
                name,
                item.here(Value::Scalar {
                    text: value.to_string(),
                    quoted: true,
                }),
            ),
            None => (text, item.here(Value::Null)),
        };
        let key = Key {
            name: name.to_string(),
            file: item.file,
            line: item.line,
        };
        match entries.iter_mut().find(|(k, _)| k.name == name) {
            Some(entry) => *entry = (key, value),
            None => entries.push((key, value)),
        }
    }
    node.value = Value::Map(entries);
}

/// `[front, back]` → `{front: null, back: null}`.
fn name_list_to_map(node: &mut Node) {
    let Value::Seq(items) = &node.value else {
        return;
    };
    let mut entries = Vec::new();
    for item in items {
        let Some(name) = item.as_str() else { return };
        entries.push((
            Key {
                name: name.to_string(),
                file: item.file,
                line: item.line,
            },
            item.here(Value::Null),
        ));
    }
    node.value = Value::Map(entries);
}

/// Merges the file `over` into the merged files so far, `base`.
pub fn merge_files(base: &mut Node, over: Node) {
    merge(base, over, &[]);
}

fn merge(base: &mut Node, over: Node, path: &[&str]) {
    let key = path.last().copied().unwrap_or("");
    match (&mut base.value, over.value) {
        (Value::Map(entries), Value::Map(over_entries)) => {
            for (over_key, over_value) in over_entries {
                let mut child = path.to_vec();
                child.push(&over_key.name);
                match entries.iter_mut().find(|(k, _)| k.name == over_key.name) {
                    Some((_, value)) => merge(value, over_value, &child),
                    None => entries.push((over_key.clone(), over_value)),
                }
            }
        }
        (Value::Seq(items), Value::Seq(over_items))
            if !(in_service_key(path, &REPLACED) || is_healthcheck_test(path)) =>
        {
            let unique = match (in_service_parent(path), key) {
                (true, "ports") => Some(port_key as fn(&Node) -> String),
                (true, "volumes") => Some(volume_target as fn(&Node) -> String),
                _ => None,
            };
            for item in over_items {
                match unique {
                    Some(unique) => {
                        let id = unique(&item);
                        match items.iter_mut().find(|i| unique(i) == id) {
                            Some(existing) => *existing = item,
                            None => items.push(item),
                        }
                    }
                    None if !items.contains(&item) || !in_service_parent(path) => {
                        items.push(item);
                    }
                    None => {}
                }
            }
        }
        (_, value) => {
            *base = Node {
                file: over.file,
                line: over.line,
                value,
            };
        }
    }
}

/// Whether `path` is `services.NAME.KEY` for one of `keys`.
fn in_service_key(path: &[&str], keys: &[&str]) -> bool {
    in_service_parent(path) && keys.contains(&path[2])
}

fn in_service_parent(path: &[&str]) -> bool {
    path.len() == 3 && path[0] == "services"
}

fn is_healthcheck_test(path: &[&str]) -> bool {
    path.len() == 4 && path[0] == "services" && path[2] == "healthcheck" && path[3] == "test"
}

/// A port entry's unique key: ip, target, published and protocol.
fn port_key(node: &Node) -> String {
    if let Some(text) = node.as_str() {
        let (rest, protocol) = text.rsplit_once('/').unwrap_or((text, "tcp"));
        let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
        let (target, published, ip) = match parts.as_slice() {
            [target] => (*target, "", ""),
            [target, published] => (*target, *published, ""),
            [target, published, ip] => (*target, *published, *ip),
            _ => (rest, "", ""),
        };
        return format!("{ip}|{target}|{published}|{protocol}");
    }
    let field = |name: &str| {
        node.get(name)
            .and_then(Node::as_str)
            .unwrap_or("")
            .to_string()
    };
    let protocol = match field("protocol") {
        p if p.is_empty() => "tcp".to_string(),
        p => p,
    };
    format!(
        "{}|{}|{}|{protocol}",
        field("host_ip"),
        field("target"),
        field("published")
    )
}

/// A volume entry's unique key: its target.
fn volume_target(node: &Node) -> String {
    if let Some(text) = node.as_str() {
        let parts: Vec<&str> = text.split(':').collect();
        return match parts.as_slice() {
            [target] => (*target).to_string(),
            [_, target, ..] => (*target).to_string(),
            [] => String::new(),
        };
    }
    node.get("target")
        .and_then(Node::as_str)
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::super::yaml::parse;
    use super::*;

    fn merged(a: &str, b: &str) -> Node {
        let mut a = parse(a, 0).unwrap();
        let mut b = parse(b, 1).unwrap();
        for file in [&mut a, &mut b] {
            if let Value::Map(entries) = &mut file.value {
                for (key, services) in entries.iter_mut() {
                    if key.name == "services" {
                        if let Value::Map(services) = &mut services.value {
                            for (_, service) in services {
                                normalize_service(service);
                            }
                        }
                    }
                }
            }
        }
        merge_files(&mut a, b);
        a
    }

    fn texts(node: &Node) -> Vec<String> {
        node.as_seq()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn services_merge_by_the_spec_rules() {
        let base = "services:\n  web:\n    image: a\n    command: [x, y]\n    environment: [A=1, B=2]\n    ports: ['8080:80', '9090:90']\n    volumes: ['data:/data', '/logs']\n    dns: [1.1.1.1]\n    healthcheck: {test: [CMD, a], interval: 5s}\n    networks: [front]\n";
        let over = "services:\n  web:\n    image: b\n    command: [z]\n    environment: {B: '3', C: '4'}\n    ports: ['8080:80', '7070:70']\n    volumes: ['other:/data']\n    dns: [8.8.8.8]\n    healthcheck: {test: [CMD, b]}\n    networks: {back: {aliases: [w]}}\n  db:\n    image: pg\n";
        let root = merged(base, over);
        let web = root.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("image").unwrap().as_str(), Some("b"));
        assert_eq!(texts(web.get("command").unwrap()), ["z"]);
        let env: Vec<(String, Option<String>)> = web
            .get("environment")
            .unwrap()
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.name.clone(), v.as_str().map(String::from)))
            .collect();
        assert_eq!(
            env,
            [
                ("A".to_string(), Some("1".to_string())),
                ("B".to_string(), Some("3".to_string())),
                ("C".to_string(), Some("4".to_string()))
            ]
        );
        assert_eq!(
            texts(web.get("ports").unwrap()),
            ["8080:80", "9090:90", "7070:70"]
        );
        assert_eq!(texts(web.get("volumes").unwrap()), ["other:/data", "/logs"]);
        assert_eq!(texts(web.get("dns").unwrap()), ["1.1.1.1", "8.8.8.8"]);
        let health = web.get("healthcheck").unwrap();
        assert_eq!(texts(health.get("test").unwrap()), ["CMD", "b"]);
        assert_eq!(health.get("interval").unwrap().as_str(), Some("5s"));
        let networks: Vec<&str> = web
            .get("networks")
            .unwrap()
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.name.as_str())
            .collect();
        assert_eq!(networks, ["front", "back"]);
        assert!(root.get("services").unwrap().get("db").is_some());
    }
}
