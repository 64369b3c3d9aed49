//! `sluice serve`: the HTTP host on axum. It stays thin: it parses and
//! validates a request, runs one scope for it on a blocking thread, and
//! answers; the business logic lives in the services.
//!
//! Routes: `POST /services/{service}/{function}` ([`calls`]), `GET
//! /services`, `GET /openapi.json` ([`openapi`]), `GET /healthz`, `GET
//! /metrics` ([`metrics`]), and every other path goes to the `wasi:http`
//! component mounted on it, if any ([`mount`]).

mod calls;
pub mod metrics;
mod mount;
pub mod openapi;
mod problem;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::sync::Semaphore;

use crate::host::Host;
pub use metrics::Metrics;
pub use problem::Problem;

/// How the server bounds its work.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// How many scopes may run at once; later requests wait for a turn.
    pub max_concurrent: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { max_body_bytes: 1 << 20, max_concurrent: 64 }
    }
}

/// What every handler shares.
pub(crate) struct App {
    pub host: Arc<Host>,
    pub metrics: Metrics,
    pub permits: Arc<Semaphore>,
    pub options: ServeOptions,
}

/// The routes, over `host`.
pub fn router(host: Arc<Host>, options: ServeOptions) -> Router {
    let app = Arc::new(App {
        host,
        metrics: Metrics::default(),
        permits: Arc::new(Semaphore::new(options.max_concurrent.max(1))),
        options: options.clone(),
    });
    Router::new()
        .route("/services", get(calls::list))
        .route("/services/{service}/{function}", post(calls::call))
        .route("/openapi.json", get(openapi_json))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(mount::handle)
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .with_state(app)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and returns once every request in flight has been answered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

async fn healthz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let registry = app.host.registry();
    axum::Json(serde_json::json!({
        "status": "ok",
        "services": registry.services().count(),
        "failures": registry.failures().len(),
    }))
}

async fn metrics_text(State(app): State<Arc<App>>) -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render(&app.host))
}

async fn openapi_json(State(app): State<Arc<App>>) -> impl IntoResponse {
    axum::Json(openapi::document(&app.host.registry()))
}
