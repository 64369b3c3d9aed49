//! The `wasi:http` side of the API: reading a request's parts and body,
//! decoding paths and queries, and writing an answer with the headers
//! every answer carries (JSON's content type, CORS).

use std::io::Write as _;

use serde_json::Value as Json;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasip2::io::streams::StreamError;

/// The largest request body read: an article's body is at most 64 KiB of
/// text, which JSON may escape to six times that.
pub const MAX_BODY: usize = 512 << 10;

/// An answer: a status and a JSON body, or none (`204`).
pub struct Answer {
    pub status: u16,
    pub body: Option<Json>,
    /// The methods the route takes, for a 405's `Allow`.
    pub allow: Option<&'static str>,
}

impl Answer {
    pub fn json(status: u16, body: Json) -> Answer {
        Answer { status, body: Some(body), allow: None }
    }

    pub fn empty(status: u16) -> Answer {
        Answer { status, body: None, allow: None }
    }

    /// The spec's error body: `{"errors": {"body": [...]}}`.
    pub fn errors(status: u16, reasons: &[String]) -> Answer {
        Answer::json(status, serde_json::json!({ "errors": { "body": reasons } }))
    }

    pub fn error(status: u16, reason: &str) -> Answer {
        Answer::errors(status, &[reason.to_string()])
    }
}

/// The value of header `name`, when it is there once and is text.
pub fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    let values = request.headers().get(name);
    match values.as_slice() {
        [one] => String::from_utf8(one.clone()).ok(),
        _ => None,
    }
}

/// The request body as JSON, at most [`MAX_BODY`] bytes; the answer to
/// give when it is not (413, or 422 as the spec answers a bad request).
pub fn read_json(request: &IncomingRequest) -> Result<Json, Answer> {
    let unreadable = || Answer::error(422, "the request body cannot be read");
    let body = request.consume().map_err(|()| unreadable())?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| unreadable())?;
        loop {
            match stream.blocking_read(16 << 10) {
                Ok(chunk) if bytes.len() + chunk.len() <= MAX_BODY => bytes.extend_from_slice(&chunk),
                Ok(_) => return Err(Answer::error(413, "the request body is too large")),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => return Err(unreadable()),
            }
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| Answer::error(422, &format!("the request body is not JSON: {e}")))
}

/// `%xx` sequences decoded (and, in a query, `+` as a space); `None` when
/// the result is not UTF-8 or a sequence is malformed.
pub fn decode(text: &str, query: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The query's parameters, decoded, in order.
pub fn query_pairs(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(name, true)?, decode(value, true)?))
        })
        .collect()
}

/// Writes `answer`, with the headers every answer has.
pub fn respond(out: ResponseOutparam, answer: &Answer, methods: Option<&str>) {
    let headers = Fields::new();
    let set = |name: &str, value: &str| {
        // Only a forbidden header name could fail here, and these are not.
        let _ = headers.set(name, &[value.as_bytes().to_vec()]);
    };
    // CORS: any origin may call the API; it reads the token from a header,
    // never a cookie, so no credentials mode is needed.
    set("access-control-allow-origin", "*");
    if let Some(methods) = methods {
        set("access-control-allow-methods", methods);
        set("access-control-allow-headers", "Authorization, Content-Type, X-Requested-With");
        set("access-control-max-age", "86400");
    }
    if let Some(allow) = answer.allow {
        set("allow", allow);
    }
    let text = answer.body.as_ref().map(Json::to_string);
    if text.is_some() {
        set("content-type", "application/json; charset=utf-8");
    }
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(answer.status);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if let (Some(text), Ok(mut stream)) = (text, outgoing.write()) {
        // A failed write means the host stopped reading; nothing to add.
        let _ = stream.write_all(text.as_bytes());
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_decode() {
        assert_eq!(decode("jake%20doe", false).as_deref(), Some("jake doe"));
        assert_eq!(decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(decode("%E6%97%A5", false).as_deref(), Some("日"));
        assert_eq!(decode("%zz", false), None);
        assert_eq!(decode("%ff", false), None);
        let pairs = query_pairs("tag=dragons&author=jake+doe&limit=5&x").expect("decodes");
        assert_eq!(pairs[1], ("author".into(), "jake doe".into()));
        assert_eq!(pairs[3], ("x".into(), String::new()));
    }
}
