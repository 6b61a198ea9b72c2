//! An object's stored JSON and where each field is in it, to compare parts without a tree.

use std::ops::Range;

use dctl_apis::Resource;
use serde::ser::{Impossible, Serialize, SerializeStruct, Serializer};
use serde_json::Error;

use super::StoreError;
use crate::object_key::ObjectKey;

/// An object's JSON as stored: `serde_json`'s own encoding of it, minus
/// `metadata.resourceVersion` (the key's `mod_revision`, stale the moment it is written),
/// with the place of each top-level field (`spec`, `status`, …) and each metadata field.
///
/// Written in one pass straight from the typed object: no `serde_json::Value` tree, which
/// costs several times the encoding itself.
pub(crate) struct Fields {
    json: Vec<u8>,
    top: Vec<(&'static str, Range<usize>)>,
    metadata: Vec<(&'static str, Range<usize>)>,
}

impl Fields {
    /// # Errors
    /// `Invalid` when the object does not encode as a JSON object of named fields.
    pub(crate) fn of<K: Resource>(object: &K) -> Result<Fields, StoreError> {
        let mut fields = Fields {
            json: Vec::with_capacity(1024),
            top: Vec::with_capacity(5),
            metadata: Vec::with_capacity(12),
        };
        object
            .serialize(Splitter {
                fields: &mut fields,
                level: Level::Top,
            })
            .map_err(|err| StoreError::Invalid {
                kind: K::KIND,
                key: ObjectKey::of(object),
                message: format!("cannot encode it as JSON: {err}"),
            })?;
        Ok(fields)
    }

    pub(crate) fn json(&self) -> &[u8] {
        &self.json
    }

    /// A top-level field's JSON (`spec`, `status`); `None` when it is left out.
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        find(&self.top, name).map(|range| &self.json[range])
    }

    /// A metadata field's JSON (`uid`, `generation`); `None` when it is left out.
    pub(crate) fn metadata(&self, name: &str) -> Option<&[u8]> {
        find(&self.metadata, name).map(|range| &self.json[range])
    }

    /// The top-level fields in the order they are stored.
    pub(crate) fn top(&self) -> impl Iterator<Item = (&'static str, &[u8])> + '_ {
        self.top
            .iter()
            .map(|(name, range)| (*name, &self.json[range.clone()]))
    }

    /// The JSON with the top-level field `name` set to `value` (left out for `None`): in its
    /// place when the object has it, last when it does not.
    pub(crate) fn with(&self, name: &'static str, value: Option<&[u8]>) -> Vec<u8> {
        let mut json = Vec::with_capacity(self.json.len() + value.map_or(0, <[u8]>::len));
        json.push(b'{');
        let mut value = value;
        let push = |json: &mut Vec<u8>, field: &str, value: &[u8]| {
            if json.len() > 1 {
                json.push(b',');
            }
            write_key(json, field);
            json.extend_from_slice(value);
        };
        for (field, range) in &self.top {
            if *field == name {
                if let Some(value) = value.take() {
                    push(&mut json, field, value);
                }
            } else {
                push(&mut json, field, &self.json[range.clone()]);
            }
        }
        if let Some(value) = value {
            push(&mut json, name, value);
        }
        json.push(b'}');
        json
    }
}

fn find(fields: &[(&'static str, Range<usize>)], name: &str) -> Option<Range<usize>> {
    fields
        .iter()
        .find(|(field, _)| *field == name)
        .map(|(_, range)| range.clone())
}

/// `"name":`
fn write_key(json: &mut Vec<u8>, name: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *json, name);
    json.push(b':');
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    Metadata,
}

/// A serde serializer that accepts only a struct: it writes the struct's JSON with
/// `serde_json` field by field, noting where each field's value is; the `metadata` field
/// of the top level is split the same way, one level down.
struct Splitter<'a> {
    fields: &'a mut Fields,
    level: Level,
}

struct StructFields<'a> {
    fields: &'a mut Fields,
    level: Level,
}

impl SerializeStruct for StructFields<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        if self.level == Level::Metadata && name == "resourceVersion" {
            return Ok(());
        }
        let json = &mut self.fields.json;
        if json.last() != Some(&b'{') {
            json.push(b',');
        }
        write_key(json, name);
        let start = json.len();
        if self.level == Level::Top && name == "metadata" {
            value.serialize(Splitter {
                fields: &mut *self.fields,
                level: Level::Metadata,
            })?;
        } else {
            serde_json::to_writer(&mut *json, value)?;
        }
        let range = start..self.fields.json.len();
        match self.level {
            Level::Top => self.fields.top.push((name, range)),
            Level::Metadata => self.fields.metadata.push((name, range)),
        }
        Ok(())
    }

    fn end(self) -> Result<(), Error> {
        self.fields.json.push(b'}');
        Ok(())
    }
}

fn not_a_struct() -> Error {
    <Error as serde::ser::Error>::custom("a stored object must encode as a struct of named fields")
}

/// The serializer methods a resource never reaches: each is refused.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<(), Error> {
            Err(not_a_struct())
        })*
    };
}

impl<'a> Serializer for Splitter<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = StructFields<'a>;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<StructFields<'a>, Error> {
        self.fields.json.push(b'{');
        Ok(StructFields {
            fields: self.fields,
            level: self.level,
        })
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    refuse! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Error> {
        Err(not_a_struct())
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(not_a_struct())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(not_a_struct())
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(not_a_struct())
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(not_a_struct())
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(not_a_struct())
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(not_a_struct())
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(not_a_struct())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dctl_apis::{ObjectMeta, Service};

    fn service() -> Service {
        let mut service = Service::new(ObjectMeta::named("demo", "web"), Default::default());
        service.metadata.uid = "u-1".into();
        service.metadata.generation = 3;
        service.metadata.resource_version = Some(7);
        service.metadata.labels.insert("app".into(), "web".into());
        service.spec.template.image = "web:1".into();
        service
    }

    #[test]
    fn json_is_serde_json_without_resource_version() {
        let service = service();
        let fields = Fields::of(&service).unwrap();
        let mut plain = service.clone();
        plain.metadata.resource_version = None;
        assert_eq!(fields.json(), serde_json::to_vec(&plain).unwrap());
        let back: Service = serde_json::from_slice(fields.json()).unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn fields_are_found_by_name() {
        let service = service();
        let fields = Fields::of(&service).unwrap();
        assert_eq!(
            fields.get("spec").unwrap(),
            serde_json::to_vec(&service.spec).unwrap()
        );
        assert_eq!(fields.get("status"), None);
        assert_eq!(fields.metadata("uid").unwrap(), br#""u-1""#);
        assert_eq!(fields.metadata("generation").unwrap(), b"3");
        assert_eq!(fields.metadata("resourceVersion"), None);
        let names: Vec<&str> = fields.top().map(|(name, _)| name).collect();
        assert_eq!(names, ["apiVersion", "kind", "metadata", "spec"]);
    }

    #[test]
    fn with_replaces_adds_and_removes_a_field() {
        let service = service();
        let fields = Fields::of(&service).unwrap();
        let value = |json: &[u8]| serde_json::from_slice::<serde_json::Value>(json).unwrap();

        let added = value(&fields.with("status", Some(br#"{"replicas":2}"#)));
        assert_eq!(added["status"]["replicas"], 2);
        assert_eq!(added["spec"], value(fields.get("spec").unwrap()));

        let replaced = value(&fields.with("spec", Some(b"{}")));
        assert_eq!(replaced["spec"], serde_json::json!({}));
        assert_eq!(replaced["metadata"]["uid"], "u-1");

        let removed = value(&fields.with("spec", None));
        assert!(removed.get("spec").is_none());
        assert_eq!(fields.with("status", None), fields.json());
    }
}
