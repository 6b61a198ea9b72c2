//! Read-modify-write with retry on conflict, client-go's `RetryOnConflict`.

use dctl_apis::Resource;

use super::{Store, StoreError};

/// How many times a read-modify-write re-reads after losing a race.
const ATTEMPTS: usize = 5;

impl Store {
    /// Reads the object, lets `change` edit it, and writes it back with `update`; a lost
    /// race reads again and re-applies `change`. `change` returns `false` to write nothing.
    /// Returns the object as stored afterwards.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` after every attempt lost its race; what `change` refuses
    /// (`Invalid`).
    pub async fn modify<K, F>(
        &self,
        namespace: &str,
        name: &str,
        mut change: F,
    ) -> Result<K, StoreError>
    where
        K: Resource,
        F: FnMut(&mut K) -> Result<bool, StoreError>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut object: K = self.get(namespace, name).await?;
            if !change(&mut object)? {
                return Ok(object);
            }
            match self.update(&object).await {
                Err(err) if err.is_conflict() && attempt < ATTEMPTS => continue,
                result => return result,
            }
        }
    }
}
