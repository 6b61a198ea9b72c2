//! Lists then watches one kind, relisting when etcd has compacted past the watch.

/// What a watcher tells its consumers, kube-runtime style.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<K> {
    /// An object was created or changed.
    Apply(K),
    /// An object was removed (the last state seen is attached).
    Delete(K),
    /// A (re)list begins: what follows until `InitDone` is the complete current state.
    Init,
    /// One object of the (re)list.
    InitApply(K),
    /// The (re)list is complete; the cache may swap it in.
    InitDone,
}
