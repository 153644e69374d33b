//! voxgate's counter stores and the conformance suite that each of them must pass.
//!
//! [`MemoryStore`] is sharded and in-process, for a single node. [`RedisStore`] keeps the
//! counters in Redis or Redis Cluster for a fleet of nodes, and runs the same
//! [`voxgate_core::engine`] rules as one server-side script per decision.

pub mod batch;
pub mod conformance;
mod counters;
mod memory;
mod redis;
mod slices;

pub use crate::redis::{RedisOptions, RedisStore};
pub use batch::{Batch, BatchCall};
pub use counters::{Counters, FailurePolicy, share};
pub use memory::MemoryStore;
pub use slices::{SliceConfig, Slices};
