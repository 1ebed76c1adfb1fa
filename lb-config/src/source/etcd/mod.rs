//! The etcd v3 source (`[source.etcd]`): one object per key,
//! `<prefix>/services/<ns>/<name>`, `<prefix>/endpoints/<ns>/<name>`,
//! `<prefix>/pods/<ns>/<name>`, `<prefix>/ip_pools/<name>`, the value the
//! fields of the file's table (`name` and `namespace` included) in JSON or
//! TOML. A full read at start, then a watch from that revision; on a
//! disconnect or a compaction, a re-list and a re-watch. While etcd is
//! unreachable the last good state keeps serving and the source reports
//! itself stale. Allocations that every node must agree on live under
//! `<prefix>/allocations`, written with a compare-and-swap ([`EtcdStore`]).
//!
//! - `settings` (private): [`EtcdSettings`], [`settings_of`] and the keys.
//! - `decode` (private): the keys into a desired state, [`decode`].
//! - `source` (private): [`EtcdSource`], the list/watch and ping loops.
//! - `store` (private): [`EtcdStore`], the shared allocations.
//! - [`client`]: the async client over etcd's JSON gateway.

pub mod client;
mod decode;
mod settings;
mod source;
mod store;

pub use client::{Client, ClientOptions, EtcdError, Kv, TlsError, TlsFiles, Watch, WatchEvent};
pub use decode::decode;
pub use settings::{settings_of, EtcdSettings, DEFAULT_PREFIX};
pub use source::EtcdSource;
pub use store::EtcdStore;
