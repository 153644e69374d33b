//! The load test's baseline: a bare axum server that answers `POST /v1/check` with a fixed
//! 200 JSON body and does no other work. voxgate's throughput is reported as a ratio of this
//! one, measured in the same run on the same machine (see bench/http-load.sh).

use axum::Router;
use axum::routing::post;

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18181".into());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let app = Router::new().route(
            "/v1/check",
            post(|body: axum::body::Bytes| async move {
                let _ = body;
                ([("content-type", "application/json")], r#"{"allowed":true}"#)
            }),
        );
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("bare baseline listening on http://{addr}");
        axum::serve(listener, app).await
    })
}
