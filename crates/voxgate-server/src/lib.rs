//! voxgate's server: the HTTP API (axum) over the decision engine, the counter store and the
//! registry, and the process around them (configuration, start-up, metering, shutdown).

pub mod adjust;
pub mod alerts;
pub mod billing;
pub mod cli;
pub mod config;
pub mod entitlements;
pub mod http;
pub mod meter;
pub mod metrics;
pub mod rls;
pub mod serve;
pub mod state;

#[cfg(test)]
mod shared_tests;

pub use http::router;
pub use state::AppState;
