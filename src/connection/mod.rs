//! The connection layer every server-backed structure sends through.
//!
//! `Client` is lazy, pooled, fork-aware and never re-sends a command that
//! may have reached the server (see `retry`). Structures only build `Cmd`s,
//! read `Reply`s and hold a `dyn Transport`, so a Cluster (`ClusterClient`)
//! takes `Client`'s place without changing them.

pub mod client_cache;
pub mod cluster;
pub mod cluster_cache;
pub mod cluster_slots;
pub mod config;
pub mod conn;
pub mod failover_watch;
#[cfg(test)]
mod fake_server_tests;
pub mod fork;
pub mod interrupt;
pub mod once;
pub mod pool;
pub mod reply;
pub mod resp;
pub mod retry;
pub mod sentinel;
pub mod spin;
pub mod tls;
pub mod tracker;
pub mod tracking;
pub mod transport;

pub use cluster::ClusterClient;
pub use config::Config;
pub use pool::Client;
pub use resp::{Cmd, Reply};
pub use retry::RetryPolicy;
pub use tracking::CachingClient;
pub use transport::{describe, Describe, Script, Transport};
