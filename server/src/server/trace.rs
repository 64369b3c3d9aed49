//! W3C trace context: a request's `traceparent` is continued (its trace id
//! kept, a new span id of ours), or a new trace begins; the scope's span and
//! the request's log line carry the trace id, and the answer echoes our
//! `traceparent`, so a caller can find its request in the host's log.
//!
//! Every request runs in a `request` span. When spans are exported
//! (OpenTelemetry, see [`crate::telemetry`]) that span is the caller's
//! span's child, and the ids echoed and logged are the exported span's, so
//! the caller, the log and the collector name the same span.

use axum::http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header, as W3C Trace Context names it.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// One request's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trace {
    /// 32 lower-case hex digits, not all zero.
    pub trace_id: String,
    /// Our span's id: 16 lower-case hex digits.
    pub span_id: String,
    /// The trace flags, two hex digits (`01`: sampled).
    pub flags: String,
}

impl Trace {
    /// The caller's trace continued, or a new one when the request has no
    /// valid `traceparent` (an invalid one is ignored, as the spec says).
    pub(crate) fn continue_from(headers: &HeaderMap) -> Trace {
        Trace::ours(caller(headers))
    }

    /// `caller`'s trace with a span id of ours, or a new trace.
    fn ours(caller: Option<Caller>) -> Trace {
        let span_id = format!("{:016x}", random_id());
        match caller {
            Some(Caller { trace_id, flags, .. }) => Trace { trace_id, span_id, flags },
            None => {
                Trace { trace_id: format!("{:016x}{:016x}", random_id(), random_id()), span_id, flags: "01".into() }
            }
        }
    }

    /// The trace of `span`, a request's span: when its spans are exported,
    /// it becomes the child of the caller's span and its own ids are the
    /// trace; otherwise as [`Trace::continue_from`].
    fn of_span(span: &tracing::Span, headers: &HeaderMap) -> Trace {
        let caller = caller(headers);
        if let Some(c) = &caller
            && let (Ok(trace_id), Ok(parent)) = (TraceId::from_hex(&c.trace_id), SpanId::from_hex(&c.parent_id))
        {
            let flags = TraceFlags::new(u8::from_str_radix(&c.flags, 16).unwrap_or(1));
            let remote = SpanContext::new(trace_id, parent, flags, true, TraceState::default());
            // Without the export layer this does nothing.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let context = span.context();
        let exported = context.span().span_context().clone();
        if !exported.is_valid() {
            return Trace::ours(caller);
        }
        Trace {
            trace_id: exported.trace_id().to_string(),
            span_id: exported.span_id().to_string(),
            flags: format!("{:02x}", exported.trace_flags().to_u8()),
        }
    }

    /// The `traceparent` of our span, for the answer.
    pub(crate) fn header(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags))
            .unwrap_or_else(|_| HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00"))
    }
}

/// Every request's trace: continued or begun here, handed to the handler as
/// an extension, and echoed on the answer, whatever route answers.
pub(crate) async fn traced(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let span = sluice_core::work_span!("request", method = %request.method(), path = %request.uri().path());
    let trace = Trace::of_span(&span, request.headers());
    request.extensions_mut().insert(trace.clone());
    let mut response = next.run(request).instrument(span).await;
    response.headers_mut().insert(TRACEPARENT, trace.header());
    response
}

/// A caller's span, from its `traceparent`.
struct Caller {
    trace_id: String,
    parent_id: String,
    flags: String,
}

fn caller(headers: &HeaderMap) -> Option<Caller> {
    let value = headers.get(TRACEPARENT)?.to_str().ok()?;
    let (trace_id, parent_id, flags) = parse(value)?;
    Some(Caller { trace_id, parent_id, flags })
}

/// The trace id, parent span id and flags of a valid version-00
/// `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero); a later
/// version is read by its first four fields, as the spec asks.
fn parse(value: &str) -> Option<(String, String, String)> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = lower_hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2);
    valid.then(|| (trace_id.to_string(), parent_id.to_string(), flags.to_string()))
}

/// A non-zero id, unpredictable from outside (SipHash of a counter under
/// this thread's random keys) and without a system call per request.
fn random_id() -> u64 {
    use std::hash::BuildHasher as _;
    thread_local! {
        static KEYS: std::collections::hash_map::RandomState = std::collections::hash_map::RandomState::new();
        static COUNT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let n = COUNT.with(|c| {
        c.set(c.get().wrapping_add(1));
        c.get()
    });
    KEYS.with(|k| k.hash_one(n)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_and_an_invalid_one_starts_anew() {
        let mut headers = HeaderMap::new();
        headers
            .insert(TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let trace = Trace::continue_from(&headers);
        assert_eq!((trace.trace_id.as_str(), trace.flags.as_str()), ("4bf92f3577b34da6a3ce929d0e0e4736", "01"));
        assert_ne!(trace.span_id, "00f067aa0ba902b7");
        assert!(parse(trace.header().to_str().unwrap_or_default()).is_some());
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "nonsense",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future").is_some());
        let fresh = Trace::continue_from(&HeaderMap::new());
        assert_eq!((fresh.trace_id.len(), fresh.span_id.len(), fresh.flags.as_str()), (32, 16, "01"));
    }
}
