//! voxgate's counter stores and the conformance suite that each of them must pass.
//!
//! Today: [`MemoryStore`], sharded and in-process. The Redis store (a later issue) will run
//! the same [`voxgate_core::engine`] rules as one server-side script.

pub mod conformance;
mod memory;

pub use memory::MemoryStore;
