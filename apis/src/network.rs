//! The Network kind: a Docker network the agents create where tasks need it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::meta::Condition;
use crate::resource::resource;
use crate::validation::{FieldError, FieldPath};

resource!(
    /// A network tasks join by name. Explicit address pools are checked against the host's
    /// routes and other networks by the network controller, not here.
    Network,
    NetworkSpec,
    NetworkStatus
);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    /// `bridge` by default.
    #[serde(default)]
    pub driver: String,
    /// A CIDR (`10.213.0.0/24`); Docker picks one from its pools when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// An address inside `subnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// A CIDR inside `subnet` that task addresses are allocated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// No route to the outside world.
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    /// Containers not started by dctl may join.
    #[serde(default, skip_serializing_if = "is_false")]
    pub attachable: bool,
    /// Docker labels put on the network.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl NetworkSpec {
    pub const DEFAULT_DRIVER: &'static str = "bridge";
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Docker network id on each node that has created it, by node name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_ids: BTreeMap<String, String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An IPv4 or IPv6 network written `address/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Reads `10.1.0.0/24` or `fd00::/64`.
    ///
    /// # Errors
    /// A message naming the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!("invalid CIDR {text:?}: expected an address and a prefix length such as 10.1.0.0/24")
        };
        let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        match prefix.parse::<u8>() {
            Ok(prefix) if prefix <= width(address) => Ok(Cidr { address, prefix }),
            _ => Err(invalid()),
        }
    }

    /// The network itself: the address with its host bits cleared.
    #[must_use]
    pub fn network(self) -> Cidr {
        let bits = bits(self.address) & mask(self.prefix, width(self.address));
        let address = match self.address {
            IpAddr::V4(_) => IpAddr::from((bits as u32).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(bits.to_be_bytes()),
        };
        Cidr {
            address,
            prefix: self.prefix,
        }
    }

    pub fn contains(self, address: IpAddr) -> bool {
        self.address.is_ipv4() == address.is_ipv4()
            && (bits(self.address) ^ bits(address)) & mask(self.prefix, width(address)) == 0
    }

    /// Whether `other` lies wholly inside this network.
    pub fn contains_cidr(self, other: Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.address)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

fn width(address: IpAddr) -> u8 {
    if address.is_ipv4() {
        32
    } else {
        128
    }
}

fn bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The top `prefix` bits of a `width`-bit address.
fn mask(prefix: u8, width: u8) -> u128 {
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if prefix == 0 {
        0
    } else {
        all & !((1u128 << (width - prefix)) - 1)
    }
}

impl NetworkSpec {
    pub fn apply_defaults(&mut self) {
        if self.driver.is_empty() {
            self.driver = Self::DEFAULT_DRIVER.to_string();
        }
    }

    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let subnet = self.subnet.as_deref().and_then(|text| {
            let path = path.child("subnet");
            match Cidr::parse(text) {
                Err(message) => errors.push(FieldError::new(&path, message)),
                // Docker refuses `10.0.0.1/24` at create time; say so, with the fix.
                Ok(cidr) if cidr.network() != cidr => errors.push(FieldError::new(
                    &path,
                    format!(
                        "invalid subnet {text:?}: host bits are set; did you mean {}?",
                        cidr.network()
                    ),
                )),
                Ok(cidr) => return Some(cidr),
            }
            None
        });
        if let Some(text) = &self.gateway {
            let path = path.child("gateway");
            match text.parse::<IpAddr>() {
                Err(_) => errors.push(FieldError::new(
                    &path,
                    format!("invalid IP address {text:?}"),
                )),
                Ok(_) if self.subnet.is_none() => {
                    errors.push(FieldError::new(&path, "requires subnet"))
                }
                Ok(gateway) => {
                    if let Some(subnet) = subnet.filter(|s| !s.contains(gateway)) {
                        errors.push(FieldError::new(
                            &path,
                            format!("{gateway} is not inside subnet {subnet}"),
                        ));
                    }
                }
            }
        }
        if let Some(text) = &self.ip_range {
            let path = path.child("ipRange");
            match Cidr::parse(text) {
                Err(message) => errors.push(FieldError::new(&path, message)),
                Ok(_) if self.subnet.is_none() => {
                    errors.push(FieldError::new(&path, "requires subnet"))
                }
                Ok(range) => {
                    if let Some(subnet) = subnet.filter(|s| !s.contains_cidr(range)) {
                        errors.push(FieldError::new(
                            &path,
                            format!("{range} is not inside subnet {subnet}"),
                        ));
                    }
                }
            }
        }
        for key in self.labels.keys().filter(|k| k.is_empty()) {
            errors.push(FieldError::new(
                &path.child("labels").key(key),
                "label keys must not be empty",
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn errors(spec: serde_json::Value) -> Vec<String> {
        let mut spec: NetworkSpec = serde_json::from_value(spec).unwrap();
        spec.apply_defaults();
        spec.validate(&FieldPath::new("spec"))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn parses_cidrs() {
        let v4 = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(v4.contains("10.1.255.1".parse().unwrap()));
        assert!(!v4.contains("10.2.0.1".parse().unwrap()));
        assert!(!v4.contains("::1".parse().unwrap()));
        assert!(v4.contains_cidr(Cidr::parse("10.1.4.0/24").unwrap()));
        assert!(!v4.contains_cidr(Cidr::parse("10.0.0.0/8").unwrap()));
        assert_eq!(
            Cidr::parse("10.1.2.3/16").unwrap().network().to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(
            Cidr::parse("0.0.0.0/0").unwrap().network().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            Cidr::parse("10.1.2.3/32").unwrap().network().to_string(),
            "10.1.2.3/32"
        );
        let v6 = Cidr::parse("fd00:1::/64").unwrap();
        assert!(v6.contains("fd00:1::42".parse().unwrap()));
        assert_eq!(
            Cidr::parse("fd00:1::5/64").unwrap().network().to_string(),
            "fd00:1::/64"
        );
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains("fd00::1".parse().unwrap()));
        for bad in [
            "10.1.0.0",
            "10.1.0/24",
            "10.1.0.0/33",
            "10.1.0.0/+8",
            "fd00::/129",
            "x/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_the_driver() {
        let mut spec = NetworkSpec::default();
        spec.apply_defaults();
        assert_eq!(spec.driver, "bridge");
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"driver": "bridge"})
        );
    }

    #[test]
    fn validates_address_pools() {
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (
                json!({"subnet": "10.213.0.0/24", "gateway": "10.213.0.1", "ipRange": "10.213.0.128/25"}),
                vec![],
            ),
            (
                json!({"subnet": "fd00:1::/64", "gateway": "fd00:1::1"}),
                vec![],
            ),
            (
                json!({"subnet": "10.213.0.0/33", "gateway": "10.213.0.1"}),
                vec![
                    r#"spec.subnet: invalid CIDR "10.213.0.0/33": expected an address and a prefix length such as 10.1.0.0/24"#,
                ],
            ),
            (
                json!({"subnet": "10.213.0.1/24"}),
                vec![
                    r#"spec.subnet: invalid subnet "10.213.0.1/24": host bits are set; did you mean 10.213.0.0/24?"#,
                ],
            ),
            (
                json!({"subnet": "10.213.0.0/24", "gateway": "10.214.0.1", "ipRange": "10.213.0.0/16"}),
                vec![
                    "spec.gateway: 10.214.0.1 is not inside subnet 10.213.0.0/24",
                    "spec.ipRange: 10.213.0.0/16 is not inside subnet 10.213.0.0/24",
                ],
            ),
            (
                json!({"subnet": "10.213.0.0/24", "gateway": "fd00::1", "ipRange": "fd00::/120"}),
                vec![
                    "spec.gateway: fd00::1 is not inside subnet 10.213.0.0/24",
                    "spec.ipRange: fd00::/120 is not inside subnet 10.213.0.0/24",
                ],
            ),
            (
                json!({"gateway": "10.0.0.300", "ipRange": "10.0.0.0/24", "labels": {"": "x"}}),
                vec![
                    r#"spec.gateway: invalid IP address "10.0.0.300""#,
                    "spec.ipRange: requires subnet",
                    "spec.labels[]: label keys must not be empty",
                ],
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(errors(spec.clone()), expected, "{spec}");
        }
    }
}
