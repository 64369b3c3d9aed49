//! The host's logs and, when asked for, the OpenTelemetry export of its
//! spans: `tracing` with an `EnvFilter` (`SLUICE_LOG`, else `RUST_LOG`, else
//! the command's default level), lines or JSON on stderr, and, given an
//! OTLP endpoint, every span the filter lets through (`request`, `scope`,
//! `save`; `call` and `host-call` at debug) sent over OTLP/HTTP with JSON
//! bodies, batched on a thread of its own.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// What the environment asks of the logs.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The filter when neither `SLUICE_LOG` nor `RUST_LOG` is set.
    pub default_level: String,
    /// Colours, for a person at a terminal.
    pub ansi: bool,
    /// One JSON object per line (`SLUICE_LOG_FORMAT=json`).
    pub json: bool,
    /// Where to send spans: `--otlp-endpoint`, else the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// (read by the exporter); `None` with neither set: no export.
    pub otlp_endpoint: Option<String>,
}

/// Keeps the span export running; dropping it sends what is still batched.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The last batch; an endpoint that is gone costs its timeout.
            let _ = provider.shutdown();
        }
    }
}

/// Whether the environment names an OTLP endpoint for traces.
fn endpoint_in_env() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// Installs the process's subscriber. Fails only when span export was asked
/// for and cannot be set up (a malformed endpoint).
pub fn init(options: &LogOptions) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| EnvFilter::new(&options.default_level));
    let provider = match &options.otlp_endpoint {
        Some(base) => Some(provider(Some(base))?),
        None if endpoint_in_env() => Some(provider(None)?),
        None => None,
    };
    // Units of work make their spans at `info` only when they are exported.
    sluice_core::work::export_spans(provider.is_some());
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("sluice")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(options.ansi);
    // A second subscriber (a test harness's) is not an error.
    let _ = if options.json { registry.with(lines.json()).try_init() } else { registry.with(lines).try_init() };
    Ok(Telemetry { provider })
}

/// The tracer provider exporting to `base` (`http://collector:4318`, to
/// which `/v1/traces` is added, as for `OTEL_EXPORTER_OTLP_ENDPOINT`), or to
/// what the environment says.
fn provider(base: Option<&str>) -> Result<SdkTracerProvider, String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpJson);
    if let Some(base) = base {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter =
        exporter.build().map_err(|e| format!("OTLP endpoint {}: {e}", base.unwrap_or("from the environment")))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("sluice");
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}
