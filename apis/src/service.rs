//! The Service kind. (Skeleton: the apis work fills in the spec and status fields of DESIGN §2.)

use serde::{Deserialize, Serialize};

use crate::resource::resource;
use crate::validation::{FieldError, FieldPath};

resource!(Service, ServiceSpec, ServiceStatus);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceStatus {}

impl ServiceSpec {
    pub fn apply_defaults(&mut self) {}

    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let _ = path;
        Vec::new()
    }
}
