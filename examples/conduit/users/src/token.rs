//! JSON Web Tokens signed with HMAC-SHA256 (RFC 7519, `alg` `HS256`): the
//! header and claims this API issues, and the one check it accepts. Written
//! out rather than taken from a JWT crate, whose defaults (an `alg` the
//! token chooses) are what a verifier must refuse.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The one header this API signs and accepts.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Why a token was refused (the API answers 401 for each).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not three base64url parts, or not the JSON this API writes.
    Malformed,
    /// The signature does not match the key.
    Signature,
    /// Past its `exp`.
    Expired,
}

/// Signs a token for user `id`, valid until `expires` (seconds since the
/// epoch).
pub fn sign(key: &[u8], id: i64, expires: u64) -> String {
    let claims = serde_json::json!({ "sub": id.to_string(), "exp": expires });
    let signing = format!("{}.{}", B64.encode(HEADER), B64.encode(claims.to_string()));
    let signature = mac(key, &signing).finalize().into_bytes();
    format!("{signing}.{}", B64.encode(signature))
}

/// The user id a token was signed for, when its header is this API's, its
/// signature matches `key` (compared in constant time) and it has not
/// expired at `now`.
pub fn verify(key: &[u8], token: &str, now: u64) -> Result<i64, Refused> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused::Malformed);
    };
    // Only our own header: a token cannot pick its algorithm ("none").
    if B64.decode(header).map_err(|_| Refused::Malformed)? != HEADER.as_bytes() {
        return Err(Refused::Malformed);
    }
    let signature = B64.decode(signature).map_err(|_| Refused::Malformed)?;
    mac(key, &token[..header.len() + 1 + claims.len()]).verify_slice(&signature).map_err(|_| Refused::Signature)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&B64.decode(claims).map_err(|_| Refused::Malformed)?).map_err(|_| Refused::Malformed)?;
    let expires = claims.get("exp").and_then(serde_json::Value::as_u64).ok_or(Refused::Malformed)?;
    if expires <= now {
        return Err(Refused::Expired);
    }
    claims.get("sub").and_then(serde_json::Value::as_str).and_then(|s| s.parse().ok()).ok_or(Refused::Malformed)
}

fn mac(key: &[u8], signing: &str) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(signing.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a key of thirty-two bytes or more";

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let token = sign(KEY, 42, 1_000);
        assert_eq!(verify(KEY, &token, 999), Ok(42));
        assert_eq!(verify(KEY, &token, 1_000), Err(Refused::Expired));
        assert_eq!(verify(b"another key of thirty-two bytes!!", &token, 1), Err(Refused::Signature));
    }

    #[test]
    fn a_changed_or_foreign_token_is_refused() {
        let token = sign(KEY, 42, 1_000);
        let mut parts: Vec<&str> = token.split('.').collect();
        // Claims swapped for another user's, signature kept.
        let forged = B64.encode(r#"{"sub":"1","exp":1000}"#);
        parts[1] = &forged;
        assert_eq!(verify(KEY, &parts.join("."), 1), Err(Refused::Signature));
        // The "none" algorithm, unsigned.
        let none =
            format!("{}.{}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#), B64.encode(r#"{"sub":"42","exp":1000}"#));
        assert_eq!(verify(KEY, &none, 1), Err(Refused::Malformed));
        assert_eq!(verify(KEY, "not a token", 1), Err(Refused::Malformed));
        assert_eq!(verify(KEY, &format!("{token}.x"), 1), Err(Refused::Malformed));
    }
}
