//! A service's read on PostgreSQL, bounded before its rows are sent: the
//! client library holds a whole row in memory before the host can look at
//! it, so one row of one value of 400 MB (`SELECT repeat('x', 400000000)`,
//! or a value a service built with `UPDATE`) would be held whole before the
//! host's `result-bytes` check could refuse it. The server measures each
//! row instead, and refuses to send one larger than the read may return.
//!
//! The service's statement becomes a subquery, its columns renamed
//! `c1 … cN` and given back their names outside; a row whose measured size
//! passes the limit fails the statement with an error naming its size:
//!
//! ```sql
//! SELECT c1 AS "id", c2 AS "name"
//! FROM (SELECT * FROM (<the service's SQL>) AS sluice_i OFFSET 0) AS sluice_q(c1, c2)
//! WHERE CASE WHEN octet_length(c2) > 4194304 THEN ('sluice: a row of ' || octet_length(c2) || ' bytes')::int = 0 ELSE true END
//! ```
//!
//! The measure of a value is its size on the wire, exactly for text and
//! bytes (`octet_length`, read from the value's header without
//! decompressing it), from its text form for the others, plus four bytes
//! per element of an array; types of a fixed width are not measured. Only
//! the cumulative check (the host's, as the rows arrive) is exact: a row is
//! refused here when it alone passes the limit.

use tokio_postgres::types::{Kind, Type};

use super::quote;

/// The text that marks the error a row over its limit raises.
const MARK: &str = "sluice: a row of ";

/// `sql` (a read whose result columns are `columns`) as a statement that
/// sends no row measured larger than `limit` bytes. A statement with no
/// result column is returned as it is: its rows hold nothing.
pub(super) fn wrap(sql: &str, columns: &[tokio_postgres::Column], limit: usize) -> Option<String> {
    if columns.is_empty() {
        return None;
    }
    let mut outer = Vec::with_capacity(columns.len());
    let mut aliases = Vec::with_capacity(columns.len());
    let mut sizes = Vec::new();
    for (i, column) in columns.iter().enumerate() {
        let alias = format!("c{}", i + 1);
        outer.push(format!("{alias} AS {}", quote(column.name())));
        if let Some(size) = measure(&alias, column.type_()) {
            sizes.push(size);
        }
        aliases.push(alias);
    }
    // A last `;` would end the statement inside the parentheses, a last
    // line comment would hide the closing one.
    let inner = sql.trim_end().trim_end_matches(';');
    // `OFFSET 0` keeps the planner from pulling the service's query up
    // into this one, which would compute each value once for the check and
    // again for the row.
    let select = format!(
        "SELECT {} FROM (SELECT * FROM ({inner}\n) AS sluice_i OFFSET 0) AS sluice_q({})",
        outer.join(", "),
        aliases.join(", ")
    );
    if sizes.is_empty() {
        return Some(select);
    }
    let size = sizes.join(" + ");
    Some(format!(
        "{select} WHERE CASE WHEN {size} > {limit} THEN ('{MARK}' || ({size}) || ' bytes')::int = 0 ELSE true END"
    ))
}

/// The expression measuring column `alias` of type `ty` on the wire (0 for
/// a null), or `None` for a type of a fixed, small width.
fn measure(alias: &str, ty: &Type) -> Option<String> {
    let fixed = [
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::OID,
        Type::DATE,
        Type::TIME,
        Type::TIMETZ,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::INTERVAL,
        Type::UUID,
        Type::MONEY,
        Type::CHAR,
    ];
    if fixed.contains(ty) {
        return None;
    }
    let exact = [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME, Type::BYTEA];
    Some(match ty.kind() {
        _ if exact.contains(ty) => format!("coalesce(octet_length({alias}), 0)"),
        Kind::Array(_) => {
            format!("coalesce(octet_length({alias}::text) + 4 * cardinality({alias}), 0)")
        }
        _ => format!("coalesce(octet_length({alias}::text), 0)"),
    })
}

/// The size of the row an error raised by [`wrap`]'s check names, or
/// `None` for any other error.
pub(super) fn too_large(message: &str) -> Option<usize> {
    let at = message.find(MARK)? + MARK.len();
    let digits: String = message.get(at..)?.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_of_the_check_is_told_from_any_other() {
        let raised = r#"invalid input syntax for type integer: "sluice: a row of 400000000 bytes""#;
        assert_eq!(too_large(raised), Some(400_000_000));
        assert_eq!(too_large(r#"invalid input syntax for type integer: "abc""#), None);
    }

    #[test]
    fn fixed_width_columns_are_not_measured_and_text_is_measured_exactly() {
        assert_eq!(measure("c1", &Type::INT8), None);
        assert_eq!(measure("c1", &Type::TEXT).as_deref(), Some("coalesce(octet_length(c1), 0)"));
        assert!(measure("c1", &Type::INT4_ARRAY).is_some_and(|m| m.contains("cardinality(c1)")));
        assert!(measure("c1", &Type::JSONB).is_some_and(|m| m.contains("c1::text")));
    }
}
