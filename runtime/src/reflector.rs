//! Caches objects in memory from a watcher's events.
//!
//! A relist (`Init` … `InitDone`) is collected into a side buffer and swapped in whole, so a
//! reader never sees a half-listed cache, and objects deleted while the watch was down
//! vanish instead of lingering as phantoms.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use dctl_apis::Resource;
use futures::{Stream, StreamExt};
use tokio::sync::watch;

use crate::object_key::ObjectKey;
use crate::watcher::Event;

type Objects<K> = HashMap<ObjectKey, Arc<K>>;

/// The writing half: owned by the task that drives the watcher.
pub struct Writer<K> {
    objects: Arc<RwLock<Objects<K>>>,
    relist_buffer: Option<Objects<K>>,
    ready: watch::Sender<bool>,
}

/// The reading half: cheap to clone, handed to controllers.
pub struct Reader<K> {
    objects: Arc<RwLock<Objects<K>>>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Reader<K> {
    fn clone(&self) -> Self {
        Reader {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
        }
    }
}

/// A new, empty cache that is not ready until its first full list has been applied.
pub fn store<K: Resource>() -> (Reader<K>, Writer<K>) {
    let objects = Arc::new(RwLock::new(HashMap::new()));
    let (ready_tx, ready_rx) = watch::channel(false);
    (
        Reader {
            objects: objects.clone(),
            ready: ready_rx,
        },
        Writer {
            objects,
            relist_buffer: None,
            ready: ready_tx,
        },
    )
}

impl<K: Resource> Writer<K> {
    pub fn apply_watcher_event(&mut self, event: &Event<K>) {
        match event {
            Event::Init => self.relist_buffer = Some(HashMap::new()),
            Event::InitApply(object) => {
                let key = ObjectKey::of(object);
                match &mut self.relist_buffer {
                    Some(buffer) => buffer.insert(key, Arc::new(object.clone())),
                    None => self.write().insert(key, Arc::new(object.clone())),
                };
            }
            Event::InitDone => {
                if let Some(buffer) = self.relist_buffer.take() {
                    *self.write() = buffer;
                }
                self.ready.send_replace(true);
            }
            Event::Apply(object) => {
                self.write()
                    .insert(ObjectKey::of(object), Arc::new(object.clone()));
            }
            Event::Delete(object) => {
                self.write().remove(&ObjectKey::of(object));
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects<K>> {
        self.objects
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<K: Resource> Reader<K> {
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.read().get(key).cloned()
    }

    /// Every cached object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Resolves once the first full list is in the cache.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        // An error means the writer is gone; nothing will ever become ready then, and the
        // caller is shutting down anyway.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects<K>> {
        self.objects
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Applies every event of `stream` to `writer`, passing the events on unchanged.
pub fn reflector<K, S, E>(
    mut writer: Writer<K>,
    stream: S,
) -> impl Stream<Item = Result<Event<K>, E>>
where
    K: Resource,
    S: Stream<Item = Result<Event<K>, E>>,
{
    stream.map(move |event| {
        if let Ok(event) = &event {
            writer.apply_watcher_event(event);
        }
        event
    })
}
