//! The PostgreSQL statement filter: a service's SQL, written with SQLite's
//! `?N` parameters so that one component runs on either backend, is
//! rewritten to PostgreSQL's `$N`, parsed in the PostgreSQL dialect, and
//! refused unless it is one statement of an allowed shape that calls only
//! allowed functions. The filter gives early, friendly errors and closes
//! what roles cannot: a service's statement runs under `SET LOCAL ROLE`,
//! and without the filter `RESET ROLE` or `set_config('role', …)` in its
//! SQL would leave that role. Table grants are enforced by PostgreSQL
//! itself ([`super::roles`]).

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, OnceLock};

use sqlparser::ast::{
    Expr, FromTable, ObjectName, ObjectNamePart, ObjectType, OnConflictAction, OnInsert, Query, SetExpr, Statement,
    TableFactor, TableObject, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::channels::grant::ChannelGrant;
use crate::channels::sql::grant::Access;
use crate::channels::{ChannelError, Denial};

/// The longest SQL text a service's statement may have (as on SQLite).
const MAX_SQL_BYTES: usize = 64 << 10;

/// What the filter found in a statement that it let through.
#[derive(Debug, Default)]
pub(super) struct Checked {
    /// The text PostgreSQL runs: the service's, with `$N` parameters.
    pub sql: Arc<str>,
    /// The tables it reads (not only writes), lower-cased.
    pub reads: Vec<String>,
    /// Whether its rows may differ from run to run on the same data
    /// (`random()`, the clock).
    pub volatile: bool,
    /// Whether it changes the schema (`CREATE`, `ALTER`, `DROP`, with
    /// `raw-sql`).
    pub schema: bool,
}

/// Whether the statement is a read (`from.query`) or a command
/// (`to.execute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    Read,
    Command,
}

/// Checks a service's statement under `grant` (see the module docs).
pub(super) fn check(sql: &str, grant: Option<&ChannelGrant>, usage: Use) -> Result<Checked, ChannelError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(ChannelError::Invalid(format!(
            "the statement is {} bytes of SQL; at most {MAX_SQL_BYTES} are accepted (bind values as parameters)",
            sql.len()
        )));
    }
    judge(&*shaped(sql, usage)?, grant)
}

/// What a statement is and touches, whatever the grant: the parse and the
/// walk, which depend only on its text and use.
#[derive(Debug)]
struct Shape {
    sql: Arc<str>,
    /// Each table it names (not a common table expression), with how it
    /// writes it and whether it reads it.
    tables: Vec<(String, Vec<Access>, bool)>,
    volatile: bool,
    /// `Some(what)` for a schema change, which needs `raw-sql`.
    schema: Option<String>,
}

/// Distinct statements whose shapes are kept, per use; past that the
/// cache starts again. Only statements up to [`SHAPE_SQL_BYTES`] long are
/// kept: ever new or long SQL cannot grow the host's memory by more than
/// a few megabytes.
const SHAPES: usize = 2048;
const SHAPE_SQL_BYTES: usize = 2048;

type Shapes = [HashMap<String, Result<Arc<Shape>, ChannelError>>; 2];

/// The shape of `sql` used as `usage`, parsed once per distinct text: a
/// service's statement is checked when it is queued and again at save,
/// and the same statements come back scope after scope.
fn shaped(sql: &str, usage: Use) -> Result<Arc<Shape>, ChannelError> {
    static CACHE: OnceLock<Mutex<Shapes>> = OnceLock::new();
    if sql.len() > SHAPE_SQL_BYTES {
        return shape(sql, usage).map(Arc::new);
    }
    let cache = CACHE.get_or_init(Mutex::default);
    let index = usize::from(usage == Use::Command);
    if let Some(known) = cache.lock().ok().and_then(|c| c[index].get(sql).cloned()) {
        return known;
    }
    let shape = shape(sql, usage).map(Arc::new);
    if let Ok(mut cache) = cache.lock() {
        if cache[index].len() >= SHAPES {
            cache[index].clear();
        }
        cache[index].insert(sql.to_string(), shape.clone());
    }
    shape
}

/// Parses and walks `sql`: one statement of an allowed shape for `usage`,
/// calling only allowed functions, naming only tables of `public`.
fn shape(sql: &str, usage: Use) -> Result<Shape, ChannelError> {
    let (text, _) = super::params::rewrite(sql)?;
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, &text)
        .map_err(|e| ChannelError::Invalid(format!("PostgreSQL syntax: {e}")))?;
    if statements.len() != 1 {
        return Err(ChannelError::Invalid("the sql holds more than one statement; pass one per call".into()));
    }
    let Some(statement) = statements.pop() else {
        return Err(ChannelError::Invalid("the sql holds no statement".into()));
    };
    let never = |what: &str| Err(ChannelError::Denied(Denial::Never(what.to_string())));
    // A temporary object lives on the connection, which the pool hands to
    // the next scope, and shadows the table of its name there, the host's
    // statements included: none for a service, as on SQLite, whether marked
    // TEMP or made in pg_temp.
    if temporary(&statement) {
        return never(&format!(
            "{} (a temporary object would outlive the scope on its connection)",
            describe(&statement)
        ));
    }
    let mut schema = None;
    match (&statement, usage) {
        (Statement::Query(_), _) => {}
        (_, Use::Read) => {
            return Err(ChannelError::Denied(Denial::WriteInRead {
                access: Access::Update,
                table: describe(&statement),
            }));
        }
        (Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_), Use::Command) => {}
        (
            Statement::CreateTable(_)
            | Statement::CreateIndex(_)
            | Statement::CreateView(_)
            | Statement::AlterTable(_)
            | Statement::Drop { object_type: ObjectType::Table | ObjectType::Index | ObjectType::View, .. },
            Use::Command,
        ) => schema = Some(describe(&statement)),
        _ => return never(&describe(&statement)),
    }
    let mut walk = Walk::default();
    if let ControlFlow::Break(denial) = statement.visit(&mut walk) {
        return Err(ChannelError::Denied(denial));
    }
    let tables = walk
        .relations
        .iter()
        .filter(|table| !walk.ctes.contains(*table))
        .map(|table| {
            let written: Vec<Access> = walk.writes.iter().filter(|(_, t)| t == table).map(|(a, _)| *a).collect();
            let read = written.is_empty() || walk.read_targets.contains(table);
            (table.clone(), written, read)
        })
        .collect();
    Ok(Shape { sql: text.into(), tables, volatile: walk.volatile, schema })
}

/// Whether `statement` makes a temporary table or view.
fn temporary(statement: &Statement) -> bool {
    let in_pg_temp = |name: &ObjectName| {
        name.0.len() > 1
            && matches!(name.0.first(), Some(ObjectNamePart::Identifier(schema))
                if schema.value.to_ascii_lowercase().starts_with("pg_temp"))
    };
    match statement {
        Statement::CreateTable(table) => table.temporary || in_pg_temp(&table.name),
        Statement::CreateView(view) => view.temporary || in_pg_temp(&view.name),
        _ => false,
    }
}

/// `shape` under `grant`: a schema change needs `raw-sql`, and every
/// table each access the statement makes of it.
fn judge(shape: &Shape, grant: Option<&ChannelGrant>) -> Result<Checked, ChannelError> {
    if let Some(what) = &shape.schema
        && !grant.is_some_and(|g| g.sql.raw_sql)
    {
        return Err(ChannelError::Denied(Denial::Schema(what.clone())));
    }
    let grant_allows = |access: Access, table: &str| grant.is_some_and(|g| g.sql.tables(access).allows(table));
    let mut reads = Vec::new();
    for (table, written, read) in &shape.tables {
        if *read {
            reads.push(table.clone());
        }
        for access in written.iter().copied().chain(written.is_empty().then_some(Access::Read)) {
            if !grant_allows(access, table) {
                return Err(ChannelError::Denied(Denial::Table { access, table: table.clone() }));
            }
        }
    }
    Ok(Checked { sql: Arc::clone(&shape.sql), reads, volatile: shape.volatile, schema: shape.schema.is_some() })
}

/// A statement's kind, for a refusal: `SET`, `CREATE FUNCTION`.
fn describe(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    let kind = match words.as_slice() {
        [first, second] if matches!(*first, "CREATE" | "DROP" | "ALTER") => format!("{first} {second}"),
        [first, ..] => (*first).to_string(),
        [] => "this statement".to_string(),
    };
    format!("run {kind}")
}

/// What the walk over a statement collects.
#[derive(Default)]
struct Walk {
    /// Every relation named, lower-cased, last part only.
    relations: BTreeSet<String>,
    /// The names of common table expressions, which are not tables.
    ctes: BTreeSet<String>,
    /// The tables written, with how.
    writes: Vec<(Access, String)>,
    /// Write targets that are read too (an upsert's `DO UPDATE`, an
    /// update's `WHERE`): their read grant is needed as well.
    read_targets: BTreeSet<String>,
    volatile: bool,
}

impl Visitor for Walk {
    type Break = Denial;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Denial> {
        if let Some(with) = &query.with {
            self.ctes.extend(with.cte_tables.iter().map(|c| c.alias.name.value.to_lowercase()));
        }
        set_expr(&query.body)
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<Denial> {
        match statement {
            Statement::Insert(insert) => {
                let TableObject::TableName(name) = &insert.table else {
                    return ControlFlow::Break(Denial::Never("insert into a table function".into()));
                };
                let table = relation(name)?;
                if let Some(OnInsert::OnConflict(conflict)) = &insert.on
                    && matches!(conflict.action, OnConflictAction::DoUpdate(_))
                {
                    self.writes.push((Access::Update, table.clone()));
                    self.read_targets.insert(table.clone());
                }
                self.writes.push((Access::Insert, table));
            }
            Statement::Update(update) => {
                if let TableFactor::Table { name, .. } = &update.table.relation {
                    let table = relation(name)?;
                    self.read_targets.insert(table.clone());
                    self.writes.push((Access::Update, table));
                }
            }
            Statement::Delete(delete) => {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
                for target in from {
                    if let TableFactor::Table { name, .. } = &target.relation {
                        let table = relation(name)?;
                        self.read_targets.insert(table.clone());
                        self.writes.push((Access::Delete, table));
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<Denial> {
        let table = relation(name)?;
        self.relations.insert(table);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Denial> {
        match factor {
            TableFactor::Table { args: None, .. } | TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Break(Denial::Never("read from a table function or any source but tables".into())),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Denial> {
        if let Expr::Function(function) = expr {
            let [ObjectNamePart::Identifier(ident)] = function.name.0.as_slice() else {
                return ControlFlow::Break(Denial::Never(format!("call the function {}", function.name)));
            };
            let name = ident.value.to_lowercase();
            if VOLATILE.contains(&name.as_str()) {
                self.volatile = true;
            } else if FUNCTIONS.binary_search(&name.as_str()).is_err() {
                return ControlFlow::Break(Denial::Never(format!("call the function {name}")));
            }
        }
        ControlFlow::Continue(())
    }
}

/// Refuses the query bodies the walk cannot see the tables of (`TABLE t`,
/// whose name is not a relation to sqlparser) and `SELECT INTO`, which
/// creates a table; nested set operations too.
fn set_expr(body: &SetExpr) -> ControlFlow<Denial> {
    match body {
        SetExpr::Select(select) if select.into.is_some() => {
            ControlFlow::Break(Denial::Never("create a table with SELECT INTO".into()))
        }
        SetExpr::Table(_) => ControlFlow::Break(Denial::Never("use TABLE; write SELECT * FROM".into())),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr(left)?;
            set_expr(right)
        }
        _ => ControlFlow::Continue(()),
    }
}

/// The table a relation names, lower-cased: unqualified or in `public`.
/// System catalogs and other schemas are refused: a grant names tables of
/// the channel's `public` schema only.
fn relation(name: &ObjectName) -> ControlFlow<Denial, String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(ident) => ident.value.to_lowercase(),
            ObjectNamePart::Function(f) => f.name.value.to_lowercase(),
        })
        .collect();
    let table = match parts.as_slice() {
        [table] => table,
        [schema, table] if schema == "public" => table,
        _ => return ControlFlow::Break(Denial::Never(format!("use {name}, outside the public schema"))),
    };
    if table.starts_with("pg_") || table == "information_schema" {
        return ControlFlow::Break(Denial::Never(format!("read the system catalog ({table})")));
    }
    ControlFlow::Continue(table.clone())
}

/// Functions whose result differs from run to run: allowed in commands,
/// marked volatile in reads (which then cannot be checked at save).
const VOLATILE: &[&str] = &[
    "clock_timestamp",
    "current_date",
    "current_time",
    "current_timestamp",
    "gen_random_uuid",
    "localtime",
    "localtimestamp",
    "now",
    "random",
    "statement_timestamp",
    "timeofday",
    "transaction_timestamp",
];

/// The functions a service's statement may call, sorted: aggregates,
/// window functions, and pure functions of their arguments over numbers,
/// text, JSON, arrays and dates. Left out: everything that reads or sets
/// the session (`set_config`, `current_setting`), the server (`pg_*`),
/// files or other databases, sleeps, and sequences.
const FUNCTIONS: &[&str] = &[
    "abs",
    "array_agg",
    "array_length",
    "avg",
    "bit_length",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "cbrt",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "coalesce",
    "concat",
    "concat_ws",
    "count",
    "cume_dist",
    "date_part",
    "date_trunc",
    "dense_rank",
    "div",
    "every",
    "exp",
    "first_value",
    "floor",
    "format",
    "greatest",
    "initcap",
    "json_agg",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_object_agg",
    "jsonb_set",
    "lag",
    "last_value",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "log",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "max",
    "md5",
    "min",
    "mod",
    "nth_value",
    "ntile",
    "nullif",
    "octet_length",
    "percent_rank",
    "power",
    "rank",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "rpad",
    "rtrim",
    "sign",
    "split_part",
    "sqrt",
    "starts_with",
    "stddev",
    "string_agg",
    "strpos",
    "substr",
    "sum",
    "to_char",
    "to_json",
    "to_jsonb",
    "translate",
    "trunc",
    "upper",
    "variance",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(text: &str) -> ChannelGrant {
        toml::from_str(text).unwrap_or_default()
    }

    #[test]
    fn the_filter_enforces_shape_functions_and_friendly_grants() {
        let g = grant("reads = [\"stock\"]\nupdates = [\"stock\"]\ninserts = [\"stock\"]");
        let ok = |sql: &str, usage| check(sql, Some(&g), usage).map(|c| c.reads);
        assert_eq!(ok("SELECT on_hand FROM stock WHERE product_id = ?1", Use::Read), Ok(vec!["stock".into()]));
        assert_eq!(ok("SELECT 1", Use::Read), Ok(vec![]));
        assert!(ok("INSERT INTO stock VALUES (?1, ?2) ON CONFLICT (product_id) DO UPDATE SET on_hand = stock.on_hand + excluded.on_hand", Use::Command).is_ok());
        let denied = |sql: &str, usage| match check(sql, Some(&g), usage) {
            Err(ChannelError::Denied(d)) => d.to_string(),
            other => format!("not denied: {other:?}"),
        };
        assert_eq!(denied("SELECT * FROM secret", Use::Read), "reads table secret is not granted");
        assert_eq!(denied("DELETE FROM stock", Use::Command), "deletes table stock is not granted");
        for sql in [
            "SET ROLE postgres",
            "RESET ROLE",
            "SELECT set_config('role', 'postgres', true)",
            "SELECT pg_catalog.set_config('role', 'postgres', true)",
            "SELECT * FROM set_config('role', 'postgres', true)",
            "SELECT pg_sleep(10)",
            "SELECT * FROM pg_roles",
            "SELECT * FROM pg_catalog.pg_class",
            "SELECT * FROM other.stock",
            "COPY stock TO '/tmp/x'",
            "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
            "SELECT 1 UNION TABLE secret",
            "SELECT * FROM stock WHERE product_id = (SELECT set_config('role', 'postgres', false)::int)",
            "WITH r AS (SELECT current_setting('role')) SELECT * FROM r",
        ] {
            assert!(
                denied(sql, Use::Command).starts_with("no grant allows it to"),
                "{sql}: {}",
                denied(sql, Use::Command)
            );
        }
        // What the parser does not know is refused too.
        assert!(matches!(
            check("DO $$ BEGIN RESET ROLE; END $$", Some(&g), Use::Command),
            Err(ChannelError::Invalid(_))
        ));
        assert_eq!(denied("CREATE TABLE t (a int)", Use::Command), "run CREATE TABLE needs raw-sql = true");
        let raw = grant("raw-sql = true\nreads = \"*\"");
        let made = check("CREATE TABLE t (a int)", Some(&raw), Use::Command).map(|_| ());
        assert!(made.is_ok(), "{made:?}");
        for sql in [
            "CREATE TEMP TABLE stock (product_id int, on_hand int)",
            "CREATE TEMPORARY TABLE t (a int)",
            "CREATE TABLE pg_temp.t (a int)",
            "CREATE TEMPORARY VIEW v AS SELECT 1",
        ] {
            match check(sql, Some(&raw), Use::Command) {
                Err(ChannelError::Denied(Denial::Never(why))) => {
                    assert!(why.contains("temporary object"), "{sql}: {why}")
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        assert!(matches!(check("SELECT 1; SELECT 2", Some(&g), Use::Read), Err(ChannelError::Invalid(_))));
        assert!(check("SELECT random() FROM stock", Some(&g), Use::Read).is_ok_and(|c| c.volatile));
    }

    /// The parse is kept per text, the grant is not: the same statement is
    /// judged again for each grant, and a schema change is refused without
    /// `raw-sql` after one with it was let through.
    #[test]
    fn a_kept_shape_is_judged_again_for_another_grant() {
        let sql = "UPDATE stock SET on_hand = on_hand - 1 WHERE product_id = ?1";
        let writer = grant("reads = [\"stock\"]\nupdates = [\"stock\"]");
        let reader = grant("reads = [\"stock\"]");
        for _ in 0..2 {
            assert!(check(sql, Some(&writer), Use::Command).is_ok());
            assert!(matches!(
                check(sql, Some(&reader), Use::Command),
                Err(ChannelError::Denied(Denial::Table { access: Access::Update, .. }))
            ));
            assert!(matches!(check(sql, None, Use::Command), Err(ChannelError::Denied(_))));
        }
        let create = "CREATE TABLE kept_shape_test (a int)";
        let made = check(create, Some(&grant("raw-sql = true\nreads = [\"kept_shape_test\"]")), Use::Command);
        assert!(made.as_ref().is_ok_and(|c| c.schema), "{made:?}");
        let refused = check(create, Some(&grant("reads = [\"kept_shape_test\"]")), Use::Command);
        assert!(matches!(refused, Err(ChannelError::Denied(Denial::Schema(_)))), "{refused:?}");
    }

    #[test]
    fn the_function_list_is_sorted() {
        assert!(FUNCTIONS.windows(2).all(|w| w[0] < w[1]));
    }
}
