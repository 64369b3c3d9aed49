//! SQLite's parameters in a service's SQL (`?N`, `?`) rewritten to
//! PostgreSQL's (`$N`), so that one component runs on either backend.

use crate::channels::ChannelError;

/// Rewrites SQLite's parameters (`?N`, and `?` for the next number) to
/// PostgreSQL's `$N`, outside string literals, quoted identifiers and
/// comments; returns the text and how many parameters it takes. `$N`
/// written as such is kept.
pub(super) fn rewrite(sql: &str) -> Result<(String, usize), ChannelError> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut most = 0usize;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => i = skip_quoted(bytes, i, b'\'', i > 0 && matches!(bytes[i - 1], b'e' | b'E')),
            b'"' => i = skip_quoted(bytes, i, b'"', false),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block_comment(bytes, i),
            b'$' => {
                let digits = bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                if digits > 0 {
                    most = most.max(number(&sql[i + 1..i + 1 + digits])?);
                    i += 1 + digits;
                } else {
                    i = skip_dollar_quoted(sql, i);
                }
            }
            b'?' => {
                let digits = bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                let n = if digits > 0 { number(&sql[i + 1..i + 1 + digits])? } else { most + 1 };
                most = most.max(n);
                out.push_str(&sql[copied..i]);
                out.push('$');
                out.push_str(&n.to_string());
                i += 1 + digits;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    Ok((out, most))
}

/// A parameter's number, 1 to 65535.
fn number(digits: &str) -> Result<usize, ChannelError> {
    match digits.parse::<usize>() {
        Ok(n @ 1..=65535) => Ok(n),
        _ => Err(ChannelError::Invalid(format!("parameter number {digits} is not between 1 and 65535"))),
    }
}

/// The index just past a literal opened by `quote` at `start` (doubled
/// quotes inside; backslash escapes too in an `E'…'` string).
fn skip_quoted(bytes: &[u8], start: usize, quote: u8, backslashes: bool) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        if backslashes && bytes[i] == b'\\' {
            i += 2;
        } else if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// The index just past a `/* … */` comment, which nests in PostgreSQL.
fn skip_block_comment(bytes: &[u8], start: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The index just past a `$tag$ … $tag$` string starting at `start`, or
/// just past the `$` when none starts there.
fn skip_dollar_quoted(sql: &str, start: usize) -> usize {
    let rest = &sql[start + 1..];
    let tag_len = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
    if rest.as_bytes().get(tag_len) != Some(&b'$') {
        return start + 1;
    }
    let tag = &sql[start..start + tag_len + 2];
    let body = start + tag.len();
    sql[body..].find(tag).map_or(sql.len(), |n| body + n + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_rewritten_outside_literals_and_comments() -> Result<(), ChannelError> {
        let (sql, n) = rewrite("SELECT ?2, '?1', \"a?\", ? -- ?9\n, $$?$$, E'\\'?', /* ? /* ? */ */ ?1")?;
        assert_eq!(sql, "SELECT $2, '?1', \"a?\", $3 -- ?9\n, $$?$$, E'\\'?', /* ? /* ? */ */ $1");
        assert_eq!(n, 3);
        assert_eq!(rewrite("SELECT $2")?.1, 2);
        assert!(rewrite("SELECT ?0").is_err());
        Ok(())
    }
}
