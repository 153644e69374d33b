//! Running the server: bind, report, serve, flush usage every interval, and on SIGINT or
//! SIGTERM stop accepting, finish in-flight requests, flush everything, close the registry.

use crate::config::Config;
use crate::state::{AppState, system_clock};
use anyhow::Context;
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let data_dir = config.data_dir.clone();
    let catalogue_source = config.catalogue_source.clone();
    let (state, boot) = AppState::open(config, system_clock()).await?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let grpc_listener = crate::rls::bind(state.config.grpc_listen).await?;
    let grpc_addr = grpc_listener.local_addr()?;

    println!("voxgate {} listening on http://{addr}", env!("CARGO_PKG_VERSION"));
    println!("  Envoy RLS (gRPC): {grpc_addr}");
    println!("  data directory:   {}", data_dir.display());
    println!("  catalogue:        {catalogue_source}");
    println!(
        "  counters:         {}",
        state.config.counters.as_deref().map_or_else(|| "memory (this process)".to_string(), redact)
    );
    println!(
        "  registry:         {}",
        state
            .config
            .registry
            .as_deref()
            .map_or_else(|| "embedded SQLite in the data directory".to_string(), redact)
    );
    match &boot.admin_token_file {
        Some(path) => println!("  admin token file: {}", path.display()),
        None => println!("  admin token:      from VOXGATE_ADMIN_TOKEN / --admin-token"),
    }
    if state.gateway_token.is_none() {
        println!("  decisions:        open (set VOXGATE_GATEWAY_TOKEN to require a token)");
    }
    if let Some(key) = &boot.demo_key {
        println!("  demo app `demo` created; its API key (shown once): {key}");
    }
    if boot.restored > 0 {
        println!("  restored {} quota counters from metered usage", boot.restored);
    }

    let (stop_flusher, stopped) = tokio::sync::watch::channel(false);
    let flusher = tokio::spawn(flush_loop(state.clone(), stopped));
    let scheduler = tokio::spawn(schedule_loop(state.clone()));
    let deliverer = tokio::spawn(crate::alerts::delivery_loop(state.clone()));
    let watcher = tokio::spawn(watch_changes(state.clone()));
    let app = crate::router(state.clone());
    // One signal stops both servers: each stops accepting and finishes what is in flight.
    let (stop_servers, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_servers.send(true);
    });
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let grpc = crate::rls::spawn(state.clone(), grpc_listener, until_stopped(stopping.clone()));
    axum::serve(listener, app)
        .with_graceful_shutdown(until_stopped(stopping))
        .await
        .context("server error")?;
    match grpc.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the gRPC server stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "the gRPC server task failed"),
    }

    // Let a flush in progress finish (cancelling it between draining the meter and the
    // commit would drop those rows), then write what is left.
    let _ = stop_flusher.send(true);
    let _ = flusher.await;
    scheduler.abort();
    deliverer.abort();
    watcher.abort();
    match state.store.return_slices(state.now()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(slices = n, "returned local-lease slices"),
        Err(e) => {
            tracing::warn!(error = %e, "could not return local-lease slices; their unspent units stay charged")
        }
    }
    let rows = state.flush().await.context("final usage flush failed")?;
    tracing::info!(rows, "flushed usage on shutdown");
    state.registry.close().await;
    println!("voxgate stopped; usage flushed ({rows} rows)");
    Ok(())
}

/// A URL without its password, for printing.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Flushes usage every interval until told to stop; only ever stops between flushes.
async fn flush_loop(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = state.flush().await {
            tracing::warn!(error = %e, "usage flush failed; will retry");
        } else {
            if let Err(e) = state.enforce_spending_caps().await {
                tracing::warn!(error = %e, "spending cap check failed; will retry");
            }
            if let Err(e) = state.check_quota_alerts().await {
                tracing::warn!(error = %e, "quota alert check failed; will retry");
            }
            if state.store.take_recovered() {
                // The shared store may have come back empty (a Redis restart without
                // persistence): put the day's and month's counts back from metered usage.
                match state.restore_quotas().await {
                    Ok(n) => {
                        tracing::info!(counters = n, "counter store recovered; quotas restored from usage")
                    }
                    Err(e) => tracing::warn!(error = %e, "restoring quotas after recovery failed"),
                }
            }
            if let Err(e) = state.auto_adjust().await {
                tracing::warn!(error = %e, "automatic adjustment failed; will retry");
            }
        }
    }
}

/// Rebuilds the snapshot when a contract, grant or capacity window starts or ends. Sleeps
/// until the next boundary (at most a minute, so a clock step is noticed), and wakes early
/// when any rebuild may have moved that boundary.
async fn schedule_loop(state: Arc<AppState>) {
    loop {
        let next = match state.refresh_if_due().await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "scheduled snapshot rebuild failed; will retry");
                None
            }
        };
        let now = state.now();
        let wait_ms = next.map_or(60_000, |t| voxgate_core::time::millis_until(now, t).clamp(1, 60_000));
        // A rebuild (a new contract or window, say) may bring the next boundary closer.
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait_ms)) => {}
            _ = state.rebuilt.notified() => {}
        }
    }
}

/// Rebuilds the snapshot when the registry changed under this node (another node sharing
/// the registry made a change): polls the newest audit sequence every half second, so a
/// change reaches every node within a second.
pub async fn watch_changes(state: Arc<AppState>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        match state.registry.last_change().await {
            Ok(now) if now != state.built_from_change.load(std::sync::atomic::Ordering::Relaxed) => {
                if let Err(e) = state.reload().await {
                    tracing::warn!(error = %e, "rebuilding after a registry change failed; will retry");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the registry's change marker"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests, flushing usage");
}
