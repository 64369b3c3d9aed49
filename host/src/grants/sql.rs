//! What one raw SQL statement does to which tables, found by parsing it
//! with `sqlparser` (SQLite dialect), never by matching text.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use sqlparser::ast::{
    FromTable, ObjectName, OnConflictAction, OnInsert, Query, SqliteOnConflict, Statement, TableFactor, TableObject,
    Visit, Visitor,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use super::Access;

/// The classification of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// Plain DML or a query: every table it touches and how.
    Tables(Vec<(Access, String)>),
    /// Something the host does not classify (DDL, `PRAGMA`, `ATTACH`,
    /// `VACUUM`, a table-valued function, another schema, or text that does
    /// not parse), described for the refusal.
    Unclassified(String),
}

/// How many classifications [`classify_cached`] keeps; when full it starts
/// over, so a guest sending endless distinct statements costs bounded memory.
const CACHED_STATEMENTS: usize = 4096;
/// Longer statements are classified every time rather than kept.
const CACHED_SQL_BYTES: usize = 4096;

/// [`classify`], remembered by SQL text for the whole process. Services send
/// the same few statements over and over, and parsing one costs more than
/// the read or the queueing it guards (the B3 profile in docs/performance.md); the
/// classification depends on the text alone, never on who sends it.
pub fn classify_cached(sql: &str) -> Arc<Result<Classified, String>> {
    type Seen = HashMap<String, Arc<Result<Classified, String>>>;
    static SEEN: LazyLock<RwLock<Seen>> = LazyLock::new(Default::default);
    if let Some(hit) = SEEN.read().unwrap_or_else(PoisonError::into_inner).get(sql) {
        return Arc::clone(hit);
    }
    let classified = Arc::new(classify(sql));
    if sql.len() <= CACHED_SQL_BYTES {
        let mut seen = SEEN.write().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= CACHED_STATEMENTS {
            seen.clear();
        }
        seen.insert(sql.to_string(), Arc::clone(&classified));
    }
    classified
}

/// Classifies `sql`, which must hold exactly one statement.
pub fn classify(sql: &str) -> Result<Classified, String> {
    let statements = match Parser::parse_sql(&SQLiteDialect {}, sql) {
        Ok(statements) => statements,
        Err(e) => return Ok(Classified::Unclassified(format!("SQL the host cannot parse ({e})"))),
    };
    let statement = match statements.as_slice() {
        [one] => one,
        [] => return Err("sql holds no statement".into()),
        many => return Err(format!("sql holds {} statements; pass one per call", many.len())),
    };
    let mut seen = Relations::default();
    let _ = statement.visit(&mut seen);
    if let Some(why) = seen.unclassified {
        return Ok(Classified::Unclassified(why));
    }
    let mut writes: Vec<(Access, &ObjectName)> = Vec::new();
    match statement {
        Statement::Query(_) => {}
        Statement::Insert(insert) => {
            let TableObject::TableName(name) = &insert.table else {
                return Ok(Classified::Unclassified("INSERT into a table function".into()));
            };
            writes.push((Access::Insert, name));
            if insert.replace_into || insert.or == Some(SqliteOnConflict::Replace) {
                // REPLACE deletes the conflicting row before inserting.
                writes.push((Access::Delete, name));
            }
            if let Some(OnInsert::OnConflict(c)) = &insert.on
                && matches!(c.action, OnConflictAction::DoUpdate(_))
            {
                writes.push((Access::Update, name));
            }
        }
        Statement::Update(update) => {
            let TableFactor::Table { name, .. } = &update.table.relation else {
                return Ok(Classified::Unclassified("UPDATE of something other than a table".into()));
            };
            writes.push((Access::Update, name));
        }
        Statement::Delete(delete) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
            for table in from {
                let TableFactor::Table { name, .. } = &table.relation else {
                    return Ok(Classified::Unclassified("DELETE from something other than a table".into()));
                };
                writes.push((Access::Delete, name));
            }
        }
        other => return Ok(Classified::Unclassified(keyword(other))),
    }
    let mut touched = Vec::new();
    let mut reads = seen.names;
    for (access, name) in writes {
        let Some(table) = table_name(name) else {
            return Ok(Classified::Unclassified(format!("a table in another schema ({name})")));
        };
        // The written table is visited once as a relation; any other
        // occurrence (a subquery on it) is a read.
        if let Some(i) = reads.iter().position(|r| r == name) {
            reads.remove(i);
        }
        touched.push((access, table));
    }
    for name in reads {
        if seen.ctes.iter().any(|c| name.0.len() == 1 && c.eq_ignore_ascii_case(&name.to_string())) {
            continue;
        }
        let Some(table) = table_name(&name) else {
            return Ok(Classified::Unclassified(format!("a table in another schema ({name})")));
        };
        touched.push((Access::Read, table));
    }
    touched.sort();
    touched.dedup();
    Ok(Classified::Tables(touched))
}

/// `orders` or `main.orders` as the lower-cased table name; `None` for a
/// name in another schema (`temp.x`, an attached database).
fn table_name(name: &ObjectName) -> Option<String> {
    let parts: Vec<String> =
        name.0.iter().map(|p| p.as_ident().map(|i| i.value.to_lowercase())).collect::<Option<_>>()?;
    match parts.as_slice() {
        [table] => Some(table.clone()),
        [schema, table] if schema == "main" => Some(table.clone()),
        _ => None,
    }
}

/// The statement's leading keywords, `DROP TABLE` or `PRAGMA`, for messages.
fn keyword(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second] if second.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
            format!("{first} {second}")
        }
        [first, ..] => (*first).to_string(),
        [] => "an empty statement".into(),
    }
}

/// Every relation a statement names, the names its `WITH` clauses define,
/// and the first thing that makes it unclassifiable.
#[derive(Default)]
struct Relations {
    names: Vec<ObjectName>,
    ctes: Vec<String>,
    unclassified: Option<String>,
}

impl Visitor for Relations {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.names.push(relation.clone());
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table { name, args: Some(_), .. } => {
                self.unclassified = Some(format!("the table-valued function {name}"));
                ControlFlow::Break(())
            }
            TableFactor::Table { .. } | TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            other => {
                self.unclassified = Some(format!("the table expression {other}"));
                ControlFlow::Break(())
            }
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            self.ctes.extend(with.cte_tables.iter().map(|c| c.alias.name.value.clone()));
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Access::*;

    fn tables(sql: &str) -> Vec<(Access, String)> {
        match classify(sql) {
            Ok(Classified::Tables(t)) => t,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn unclassified(sql: &str) -> String {
        match classify(sql) {
            Ok(Classified::Unclassified(why)) => why,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn t(access: Access, name: &str) -> (Access, String) {
        (access, name.to_string())
    }

    #[test]
    fn a_cached_classification_is_the_same_as_a_fresh_one() {
        for sql in
            ["SELECT * FROM cache_probe_a", "DELETE FROM cache_probe_b", "PRAGMA cache_probe", "SELECT 1; SELECT 2"]
        {
            let first = classify_cached(sql);
            assert_eq!(*first, classify(sql), "{sql}");
            assert!(Arc::ptr_eq(&first, &classify_cached(sql)), "{sql}: parsed again");
        }
        let long = format!("SELECT * FROM t WHERE x IN ({})", vec!["1"; CACHED_SQL_BYTES].join(","));
        assert_eq!(*classify_cached(&long), classify(&long));
        assert!(!Arc::ptr_eq(&classify_cached(&long), &classify_cached(&long)), "a long statement is not kept");
    }

    #[test]
    fn queries_read_every_table_they_name() {
        assert_eq!(
            tables("SELECT * FROM Orders o JOIN main.stock s ON s.id = o.id"),
            vec![t(Read, "orders"), t(Read, "stock")]
        );
        assert_eq!(
            tables("SELECT (SELECT count(*) FROM a) FROM b WHERE x IN (SELECT y FROM c)"),
            vec![t(Read, "a"), t(Read, "b"), t(Read, "c")]
        );
        assert_eq!(tables("WITH recent AS (SELECT * FROM orders) SELECT * FROM recent"), vec![t(Read, "orders")]);
        assert_eq!(tables("SELECT 1"), vec![]);
    }

    #[test]
    fn writes_name_their_target_and_what_they_read() {
        assert_eq!(tables("INSERT INTO log (a) SELECT a FROM orders"), vec![t(Read, "orders"), t(Insert, "log")]);
        assert_eq!(tables("UPDATE stock SET n = n - 1 WHERE id = ?1"), vec![t(Update, "stock")]);
        assert_eq!(
            tables("UPDATE stock SET n = (SELECT max(n) FROM stock)"),
            vec![t(Read, "stock"), t(Update, "stock")]
        );
        assert_eq!(
            tables("DELETE FROM orders WHERE id IN (SELECT id FROM old)"),
            vec![t(Read, "old"), t(Delete, "orders")]
        );
        assert_eq!(tables("REPLACE INTO t (a) VALUES (1)"), vec![t(Insert, "t"), t(Delete, "t")]);
        assert_eq!(
            tables("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2"),
            vec![t(Insert, "t"), t(Update, "t")]
        );
    }

    #[test]
    fn everything_else_is_unclassified() {
        assert_eq!(unclassified("DROP TABLE orders"), "DROP TABLE");
        assert!(unclassified("PRAGMA writable_schema = 1").starts_with("PRAGMA"));
        assert!(unclassified("ATTACH DATABASE '/tmp/x.db' AS x").starts_with("ATTACH"));
        assert!(unclassified("VACUUM").starts_with("VACUUM"));
        assert!(unclassified("CREATE TABLE t (a)").starts_with("CREATE TABLE"));
        assert!(unclassified("SELECT * FROM pragma_table_info('orders')").contains("table-valued function"));
        assert!(unclassified("SELECT * FROM temp.t").contains("another schema"));
        assert!(unclassified("SELEKT nonsense").contains("cannot parse"));
        assert_eq!(classify("SELECT 1; DROP TABLE orders"), Err("sql holds 2 statements; pass one per call".into()));
    }

    #[test]
    fn deeply_nested_sql_is_refused_not_a_crash() {
        let depth = 100_000;
        let sql = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
        assert!(unclassified(&sql).contains("cannot parse"));
    }
}
