//! The Envoy rate limit service: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`
//! over gRPC (tonic), served from the same process, state and counters as the HTTP API.
//!
//! [`decide`] maps a request's descriptors to (app, service, cost) with the catalogue's
//! `[rls]` table and decides them all or nothing; this module is the transport around it:
//! the gateway token (as `authorization` metadata), binding, serving, and stopping on the
//! server's shutdown signal. `docs/gateway.md` has the mapping, the semantics and an Envoy
//! configuration.

pub mod decide;

use crate::state::AppState;
use anyhow::Context;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Counters of what the rate limit service answered since start, for logs and metrics.
/// (Per-app decisions are metered like the HTTP API's; these count what the meter cannot
/// key: descriptors that named no known app or service, and malformed ones.)
#[derive(Debug, Default)]
pub struct Stats {
    /// `ShouldRateLimit` calls answered (either code).
    pub requests: AtomicU64,
    /// Calls answered `OVER_LIMIT`.
    pub over_limit: AtomicU64,
    /// Descriptors not mapped to a known app and service (answered by the `unknown` policy).
    pub unknown: AtomicU64,
    /// Descriptors refused for a malformed units entry or an impossible hit count.
    pub invalid: AtomicU64,
}

/// This process's counters (one server per process).
pub static STATS: Stats = Stats {
    requests: AtomicU64::new(0),
    over_limit: AtomicU64::new(0),
    unknown: AtomicU64::new(0),
    invalid: AtomicU64::new(0),
};

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The gRPC service over the server's state.
pub struct RateLimiter {
    state: Arc<AppState>,
}

impl RateLimiter {
    pub fn new(state: Arc<AppState>) -> RateLimiter {
        RateLimiter { state }
    }

    /// With a gateway token configured, callers must send `authorization: Bearer <token>`
    /// (the gateway's or the admin's), as on the HTTP decision endpoints. Envoy sends it with
    /// the `initial_metadata` of its `grpc_service`.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(gateway) = &self.state.gateway_token else {
            return Ok(());
        };
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().as_bytes());
        match token {
            Some(t)
                if crate::http::auth::constant_time_eq(t, gateway.as_bytes())
                    || crate::http::auth::constant_time_eq(t, self.state.admin_token.as_bytes()) =>
            {
                Ok(())
            }
            Some(_) => Err(Status::permission_denied("decisions need the gateway token")),
            None => Err(Status::unauthenticated("send `authorization: Bearer <gateway token>` metadata")),
        }
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimiter {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.authorize(&request)?;
        decide::should_rate_limit(&self.state, request.get_ref()).await.map(Response::new)
    }
}

/// The tonic service, for serving here or mounting elsewhere (tests).
pub fn service(state: Arc<AppState>) -> RateLimitServiceServer<RateLimiter> {
    RateLimitServiceServer::new(RateLimiter::new(state))
}

/// Binds the gRPC listen address (before anything is served, so a taken port stops start-up).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen for gRPC on {addr}"))
}

/// Serves the rate limit service on `listener` until `shutdown` completes, then lets calls in
/// flight finish.
pub fn spawn(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(service(state), incoming, shutdown)
            .await
            .context("gRPC server error")
    })
}
