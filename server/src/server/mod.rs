//! `sluice serve`: the HTTP host on axum. It stays thin: it parses and
//! validates a request, runs one scope for it on a blocking thread, and
//! answers; the business logic lives in the services.
//!
//! Routes: `POST /services/{service}/{function}` ([`calls`]), `GET
//! /services`, `GET /openapi.json` ([`openapi`]), `GET /healthz`, `GET
//! /metrics` ([`metrics`]), and every other path goes to the `wasi:http`
//! component mounted on it, if any ([`mount`]).

mod calls;
mod keyed;
pub mod metrics;
mod mount;
pub mod openapi;
mod problem;
mod trace;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::host::Host;
use crate::scope::{Cause, ScopeError};
pub use metrics::Metrics;
use metrics::Outcome;
pub use problem::Problem;

/// How the server bounds its work.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// How many scopes may run at once; later requests wait for a turn.
    pub max_concurrent: usize,
    /// How long a request's head may take to arrive (the connection is
    /// closed past it), and how long its body may stall between two pieces
    /// (408).
    pub read_timeout: Duration,
    /// Where to record the scopes of typed calls as test cases, if anywhere.
    pub record: Option<Recording>,
    /// Whether a typed route's answer holds the save report (every applied
    /// command, with its SQL, parameters and tables): off by default, for
    /// an operator's own clients (`--reports`). Without it the answer holds
    /// the scope, the result and the ending's status and attempt.
    pub reports: bool,
}

/// `sluice serve --record DIR`: a share of the typed calls' scopes written
/// as test cases ([`crate::case`]), one file per scope.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The directory the cases go to (`SCOPE-ID.json`).
    pub dir: std::path::PathBuf,
    /// The share of scopes recorded, from 0 to 1.
    pub rate: f64,
    /// How each case is redacted.
    pub rules: Vec<crate::case::redact::Rule>,
}

impl Recording {
    /// Whether this scope is one of the share recorded.
    pub fn sampled(&self) -> bool {
        if self.rate >= 1.0 {
            return true;
        }
        // 53 of the 62 random bits below a v4 UUID's variant bits: a
        // uniform draw in [0, 1).
        let bits = (uuid::Uuid::new_v4().as_u128() & ((1 << 62) - 1)) >> 9;
        let draw = f64::from(u32::try_from(bits >> 32).unwrap_or(0)) * 4_294_967_296.0
            + f64::from(u32::try_from(bits & 0xffff_ffff).unwrap_or(0));
        draw / 9_007_199_254_740_992.0 < self.rate
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_body_bytes: 1 << 20,
            max_concurrent: 64,
            read_timeout: Duration::from_secs(10),
            record: None,
            reports: false,
        }
    }
}

/// Whether reading a request body failed because the client stalled past
/// [`ServeOptions::read_timeout`].
fn stalled(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// What every handler shares.
pub(crate) struct App {
    pub host: Arc<Host>,
    /// Set once the server is stopping: `/readyz` answers 503.
    pub readiness: Readiness,
    pub metrics: Metrics,
    pub permits: Arc<Semaphore>,
    pub options: ServeOptions,
}

impl App {
    /// A turn to run a scope (waiting while `max_concurrent` run), or 503
    /// once the server is shutting down.
    async fn turn(&self) -> Result<OwnedSemaphorePermit, Response> {
        Arc::clone(&self.permits).acquire_owned().await.map_err(|_| {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the server is shutting down").into_response()
        })
    }

    /// How many scopes run now: the turns taken.
    fn in_flight(&self) -> usize {
        self.options.max_concurrent.max(1).saturating_sub(self.permits.available_permits())
    }

    /// The answer for a scope that failed; a breach is counted against the
    /// service that broke the limit.
    fn failed(&self, called: &str, e: ScopeError) -> (Response, Outcome) {
        match &e {
            ScopeError::Failed { cause: Cause::Limit { service, limit }, .. } => self.metrics.breach(service, limit),
            ScopeError::Conflict { service, earlier, .. } => {
                self.metrics.conflicts(earlier.iter().map(|c| c.service.as_str()).chain([service.as_str()]));
                self.metrics.retried(called, earlier.len());
            }
            _ => {}
        }
        let problem = Problem::from(e);
        let kind = problem.kind;
        (problem.into_response(), Outcome::Error(kind))
    }

    /// Counts what a saved scope applied, and the conflicts of the runs
    /// before it (retries of `called`, the service the request called).
    fn saved(&self, called: &str, report: &crate::scope::SaveReport) {
        self.metrics.applied(report.applied.iter().map(|a| &*a.command.service));
        self.metrics.conflicts(report.conflicts.iter().map(|c| c.service.as_str()));
        self.metrics.retried(called, report.conflicts.len());
    }

    /// Counts and logs one answered request of `service`; `what` is the
    /// function or the path, the scope comes from the `x-sluice-scope` header.
    fn answered(
        &self,
        service: &str,
        what: &str,
        started: Instant,
        response: &Response,
        outcome: &Outcome,
        trace: &trace::Trace,
    ) {
        let elapsed = started.elapsed();
        self.metrics.call(service, outcome, elapsed);
        // As other log lines name scopes: `scope-7`.
        let scope = response.headers().get(SCOPE_HEADER).and_then(|v| v.to_str().ok()).map(|n| format!("scope-{n}"));
        tracing::info!(
            scope = scope.as_deref().unwrap_or("-"),
            trace_id = %trace.trace_id,
            service,
            what,
            status = response.status().as_u16(),
            ms = elapsed.as_secs_f64() * 1000.0,
            "answered"
        );
    }
}

/// Cancels a scope if the request's future is dropped before its answer is
/// ready: hyper drops it when the client hangs up, and the scope, running on
/// a blocking thread, would otherwise go on to its deadline for nobody.
pub(crate) struct CancelOnDrop(Option<(crate::budget::Canceller, crate::state::ScopeId)>);

impl CancelOnDrop {
    pub(crate) fn new(scope: &crate::scope::Scope) -> CancelOnDrop {
        CancelOnDrop(Some((scope.canceller(), scope.id())))
    }

    /// The scope finished: dropping the guard no longer cancels it.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some((canceller, scope)) = self.0.take() {
            tracing::info!(%scope, "the client went away; cancelling its scope");
            canceller.cancel();
        }
    }
}

/// The header every answer of a scope carries: the scope's id (a UUID).
pub(crate) const SCOPE_HEADER: &str = "x-sluice-scope";

/// The value of [`SCOPE_HEADER`] for `scope`.
pub(crate) fn scope_header(scope: crate::state::ScopeId) -> HeaderValue {
    HeaderValue::from_str(&scope.0.to_string()).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Whether the server should get new requests: true until it starts to
/// stop. Shared by the routes (`/readyz`) and whoever handles the signal.
#[derive(Clone, Default)]
pub struct Readiness(Arc<std::sync::atomic::AtomicBool>);

impl Readiness {
    /// From now on `/readyz` answers 503: a load balancer should send no
    /// more requests. The server still serves the ones it gets.
    pub fn drain(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn draining(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The routes, over `host`.
pub fn router(host: Arc<Host>, options: ServeOptions) -> Router {
    router_with(host, options, Readiness::default())
}

/// The routes, over `host`, with `/readyz` following `readiness`.
pub fn router_with(host: Arc<Host>, options: ServeOptions, readiness: Readiness) -> Router {
    let app = Arc::new(App {
        host,
        readiness,
        metrics: Metrics::default(),
        permits: Arc::new(Semaphore::new(options.max_concurrent.max(1))),
        options: options.clone(),
    });
    Router::new()
        .route("/services", get(calls::list))
        .route("/services/{service}/{function}", post(calls::call))
        .route("/openapi.json", get(openapi_json))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(mount::handle)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(trace::traced))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(options.read_timeout))
        .with_state(app)
}

/// A route asked with a method it does not take: 405 as a problem
/// document, like every other error (axum adds the `Allow` header).
async fn method_not_allowed(request: axum::extract::Request) -> Response {
    let message = format!(
        "{} is not a method of {}; the Allow header lists the ones it takes",
        request.method(),
        request.uri().path()
    );
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", message).into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and returns once every request in flight has been answered.
/// A client must send its request head within `read_timeout` (the
/// connection is closed otherwise) and keep its body arriving (408).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(read_timeout);
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, say: wait a little, then go on.
                Err(e) => {
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A failed connection (a stalled head, a reset) is the client's.
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn healthz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let registry = app.host.registry();
    axum::Json(serde_json::json!({
        "status": "ok",
        "services": registry.services().count(),
        "failures": registry.failures().len(),
    }))
}

/// Readiness, apart from liveness: 503 once the server is stopping (while it
/// still answers what it gets, for `--unready-seconds`), 200 before.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.readiness.draining() {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the server is stopping").into_response();
    }
    axum::Json(serde_json::json!({ "status": "ready" })).into_response()
}

async fn metrics_text(State(app): State<Arc<App>>) -> impl IntoResponse {
    let text = app.metrics.render(&app.host, app.in_flight());
    (StatusCode::OK, [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text)
}

async fn openapi_json(State(app): State<Arc<App>>) -> impl IntoResponse {
    axum::Json(openapi::document(&app.host.registry()))
}
