//! The GitSync kind. (Skeleton: the apis work fills in the spec and status fields of DESIGN §2.)

use serde::{Deserialize, Serialize};

use crate::resource::resource;
use crate::validation::{FieldError, FieldPath};

resource!(GitSync, GitSyncSpec, GitSyncStatus);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSyncSpec {}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSyncStatus {}

impl GitSyncSpec {
    pub fn apply_defaults(&mut self) {}

    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let _ = path;
        Vec::new()
    }
}
