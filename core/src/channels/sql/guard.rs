//! SQLite enforces a service's grants on its own statements. Every
//! connection carries a [`Gate`]: an authorizer that sees what SQLite
//! resolved while preparing a statement (the real tables, after CTEs, views
//! and triggers) and a progress handler that interrupts a statement once its
//! deadline has passed. Statements the host builds itself run with the gate
//! open; a service's raw SQL (its reads, and `to.execute`) runs under
//! [`Rules`] made from its grant.
//!
//! Preparing records every action SQLite reports; the record is then judged
//! as a whole, so that the order SQLite reports things in does not matter
//! (an upsert reads its table before it reports the update). Actions no
//! grant allows (transaction control, `ATTACH`, pragmas, functions outside
//! [`FUNCTIONS`]) are denied on the spot. If SQLite prepares the statement
//! again while it runs (the schema changed), each action is judged as it
//! comes, against the same record.
//!
//! What SQLite does on a statement's behalf beyond what it reports, the
//! key checks of foreign keys and the deletes of `OR REPLACE`, is in
//! [`super::implied`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

use super::functions::FUNCTIONS;
use super::implied::Keys;
use crate::channels::Denial;
use crate::channels::grant::ChannelGrant;
use crate::channels::sql::grant::Access;
use crate::channels::sql::grant::ungrantable;
use crate::work::Canceller;

/// How many SQLite virtual machine steps run between two looks at the clock.
const STEPS_PER_CHECK: i32 = 1000;

/// Allowed functions whose result differs from run to run.
const RANDOM: &[&str] = &["random", "randomblob"];
/// Allowed functions that read the clock when given `'now'` (or no time).
const CLOCK: &[&str] = &[
    "date",
    "datetime",
    "julianday",
    "strftime",
    "time",
    "unixepoch",
    "timediff",
    "current_date",
    "current_time",
    "current_timestamp",
];

/// The functions a statement calls that may make its rows differ between
/// two runs over the same data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Volatility {
    /// It calls `random()` or `randomblob()`.
    pub random: bool,
    /// It calls a date or time function, which reads the clock when given
    /// `'now'`.
    pub clock: bool,
}

/// What a service's statement may do on this channel.
#[derive(Clone)]
pub struct Rules {
    /// The service's grant on the channel; `None` grants nothing.
    pub grant: Option<Arc<ChannelGrant>>,
    /// False for a read: any write is refused.
    pub writes: bool,
    /// The channel's foreign keys, as the schema has them now.
    pub keys: Arc<Keys>,
}

/// One action SQLite reported while preparing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seen {
    /// A table access: `column` for a read ("" for the whole row),
    /// `trigger` when a trigger did it.
    Table { access: Access, table: String, column: String, trigger: bool },
    /// A schema change (`CREATE TABLE`, `DROP INDEX` …), described.
    Schema(String),
}

#[derive(Default)]
struct State {
    /// None: the host's own statement, everything passes.
    rules: Option<Rules>,
    /// What preparing reported so far (shared with a kept [`Judged`]).
    seen: Arc<BTreeSet<Seen>>,
    /// Set once the first preparation was judged: later callbacks are
    /// judged one by one.
    judged: bool,
    /// The first denial, for the message.
    denial: Option<Denial>,
    /// Whether SQLite reported anything at all.
    reported: bool,
    /// Functions that may make its rows differ between runs.
    volatility: Volatility,
    /// Tables SQLite reported reading with no column and no database (as
    /// `SELECT count(*) FROM t` does): a real table, or a CTE or subquery of
    /// that name, told apart by the schema before judging.
    unresolved: BTreeSet<String>,
    /// When a running statement is interrupted.
    deadline: Option<Instant>,
    /// The scope's cancel flag, which interrupts it too.
    cancel: Option<Canceller>,
}

/// The authorizer and progress handler of one connection, and what they
/// apply to the statement running on it now.
#[derive(Clone, Default)]
pub struct Gate(Arc<Mutex<State>>);

impl Gate {
    /// Installs the gate on a new connection.
    pub fn install(conn: &Connection) -> Gate {
        let gate = Gate::default();
        let auth = gate.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| auth.authorize(ctx)));
        let clock = gate.clone();
        conn.progress_handler(STEPS_PER_CHECK, Some(move || clock.overdue()));
        gate
    }

    /// Applies `rules` (or none, for the host's own statements), `deadline`
    /// and `cancel` to what runs on the connection until the returned guard
    /// is dropped.
    pub fn enter(&self, rules: Option<&Rules>, deadline: Option<Instant>, cancel: Option<Canceller>) -> Entered<'_> {
        let mut state = self.lock();
        *state = State { rules: rules.cloned(), deadline, cancel, ..State::default() };
        Entered(self)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn overdue(&self) -> bool {
        let state = self.lock();
        state.cancel.as_ref().is_some_and(Canceller::is_cancelled)
            || state.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn authorize(&self, ctx: AuthContext<'_>) -> Authorization {
        let mut state = self.lock();
        let Some(rules) = state.rules.clone() else { return Authorization::Allow };
        state.reported = true;
        if let AuthAction::Function { function_name } = ctx.action {
            let name = function_name.to_lowercase();
            state.volatility.random |= RANDOM.contains(&name.as_str());
            state.volatility.clock |= CLOCK.contains(&name.as_str());
        }
        if let AuthAction::Read { table_name, column_name: "" } = ctx.action
            && ctx.database_name.is_none()
            && !state.judged
        {
            state.unresolved.insert(table_name.to_lowercase());
        }
        let seen = match observe(&ctx, &rules) {
            Ok(None) => return Authorization::Allow,
            Ok(Some(seen)) => seen,
            Err(denial) => {
                state.denial.get_or_insert(denial);
                return Authorization::Deny;
            }
        };
        if state.judged {
            // A second preparation: the schema changed under the statement.
            if let Err(denial) = judge(std::iter::once(&seen), &state.seen, &rules) {
                state.denial.get_or_insert(denial);
                return Authorization::Deny;
            }
        }
        // A statement prepared again shares its record with the verdict
        // kept for it: copy the record only for something new.
        if !state.seen.contains(&seen) {
            Arc::make_mut(&mut state.seen).insert(seen);
        }
        Authorization::Allow
    }

    /// Applies `rules`, `deadline` and `cancel` to a statement prepared and
    /// judged before under the same rules (`judged`): nothing is judged
    /// again unless SQLite prepares it again (the schema changed), and then
    /// each action as it comes, against the same record.
    pub fn enter_judged(
        &self,
        rules: &Rules,
        deadline: Option<Instant>,
        cancel: Option<Canceller>,
        judged: &Judged,
    ) -> Entered<'_> {
        let mut state = self.lock();
        *state = State {
            rules: Some(rules.clone()),
            deadline,
            cancel,
            seen: Arc::clone(&judged.seen),
            judged: true,
            reported: true,
            volatility: judged.volatility,
            ..State::default()
        };
        Entered(self)
    }
}

/// What judging a statement found, kept so that the same statement under
/// the same rules need not be prepared and judged again.
#[derive(Clone)]
pub struct Judged {
    seen: Arc<BTreeSet<Seen>>,
    volatility: Volatility,
}

impl Judged {
    /// Whether the statement changes the schema (`raw-sql`): the foreign
    /// keys the connection knows may be out of date after it ran.
    pub fn changes_schema(&self) -> bool {
        self.seen.iter().any(|s| matches!(s, Seen::Schema(_)))
    }
}

/// The gate applied to one statement; dropping it opens the gate again.
pub struct Entered<'a>(&'a Gate);

impl Entered<'_> {
    /// Judges what preparing reported, all of it together. Called once the
    /// statement is prepared and before it runs.
    pub fn judge(&self) -> Result<(), Denial> {
        let mut state = self.0.lock();
        state.judged = true;
        if let Some(denial) = state.denial.clone() {
            return Err(denial);
        }
        let Some(rules) = &state.rules else { return Ok(()) };
        // Every statement a service may run reports something (a `SELECT`
        // at least); `VACUUM` and `REINDEX` report nothing while prepared.
        if !state.reported {
            return Err(Denial::Never("run a statement that SQLite reports no access for (VACUUM, REINDEX)".into()));
        }
        judge(state.seen.iter(), &state.seen, rules)
    }

    /// Whether SQLite reported reads it did not name a database for, which
    /// [`Entered::resolve`] must tell apart before judging.
    pub fn unresolved(&self) -> bool {
        !self.0.lock().unresolved.is_empty()
    }

    /// Records the unresolved reads whose names are tables or views of the
    /// schema (`tables`, lower-cased) or the schema table itself as reads of
    /// those tables. A CTE named like a table counts as the table: the
    /// grant then needs the table, never less.
    pub fn resolve(&self, tables: &BTreeSet<String>) {
        let mut state = self.0.lock();
        for table in std::mem::take(&mut state.unresolved) {
            if tables.contains(&table) || is_schema_table(&table) {
                Arc::make_mut(&mut state.seen).insert(Seen::Table {
                    access: Access::Read,
                    table,
                    column: String::new(),
                    trigger: false,
                });
            }
        }
    }

    /// What judging found, to keep with the statement; call after
    /// [`Entered::judge`] accepted it.
    pub fn judged(&self) -> Judged {
        let state = self.0.lock();
        Judged { seen: Arc::clone(&state.seen), volatility: state.volatility }
    }

    /// The denial the authorizer made, if it made one (a failed prepare).
    pub fn denial(&self) -> Option<Denial> {
        self.0.lock().denial.clone()
    }

    /// The tables the statement writes at its top level (not in triggers).
    pub fn written(&self) -> Vec<String> {
        self.tables(|access, trigger| matches!(access, Access::Insert | Access::Update) && !trigger)
    }

    /// The tables the statement reads (in triggers too), lower-cased.
    pub fn read(&self) -> Vec<String> {
        self.tables(|access, _| access == Access::Read)
    }

    /// The tables of the accesses `pick` keeps, sorted, each once.
    fn tables(&self, pick: impl Fn(Access, bool) -> bool) -> Vec<String> {
        let state = self.0.lock();
        let tables: BTreeSet<&String> = state
            .seen
            .iter()
            .filter_map(|s| match s {
                Seen::Table { access, table, trigger, .. } if pick(*access, *trigger) => Some(table),
                _ => None,
            })
            .collect();
        tables.into_iter().cloned().collect()
    }

    /// The functions it calls that may make its rows differ between runs.
    pub fn volatility(&self) -> Volatility {
        self.0.lock().volatility
    }

    /// Whether the statement ran into its deadline.
    pub fn overdue(&self) -> bool {
        self.0.overdue()
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        *self.0.lock() = State::default();
    }
}

/// What one authorizer callback reports: `None` for what needs no grant
/// (`SELECT`, recursion, an allowed function), or a denial on the spot for
/// what no grant allows.
fn observe(ctx: &AuthContext<'_>, rules: &Rules) -> Result<Option<Seen>, Denial> {
    let raw = rules.grant.as_ref().is_some_and(|g| g.sql.raw_sql);
    let trigger = ctx.accessor.is_some();
    let table = |access: Access, name: &str, column: &str| {
        let trigger = trigger && access != Access::Read;
        Ok(Some(Seen::Table { access, table: name.to_lowercase(), column: column.to_lowercase(), trigger }))
    };
    // A schema change is the grant's to judge (`raw-sql`), except on the
    // host's own tables: none of those is any service's, by any grant.
    let schema = |what: &str, name: &str| Ok(Some(Seen::Schema(format!("{what} {name}"))));
    // A temporary object lives on the connection, which the pool hands to
    // the next scope, and shadows the table of its name in every later
    // statement there, the host's included: none for a service, whether
    // SQLite reports it as TEMP or as an object of the `temp` schema.
    let temporary = |what: &str, name: &str| {
        Err(Denial::Never(format!("{what} {name} (a temporary object would outlive the scope on its connection)")))
    };
    let in_temp = ctx.database_name.is_some_and(|db| db.eq_ignore_ascii_case("temp"));
    let on = |what: &str, name: &str, table: &str| match [name, table]
        .into_iter()
        .find_map(|n| ungrantable(n).map(|w| (n, w)))
    {
        Some((own, whose)) => Err(Denial::Never(format!("{what} {name}: {own} is {whose}"))),
        None if in_temp => temporary(what, name),
        None => schema(what, name),
    };
    match ctx.action {
        AuthAction::Select | AuthAction::Recursive => Ok(None),
        // A table in no database is a CTE or a subquery's result: what it
        // reads is reported on its own, with the real table's database.
        AuthAction::Read { .. } if ctx.database_name.is_none() => Ok(None),
        AuthAction::Read { table_name, column_name } => table(Access::Read, table_name, column_name),
        AuthAction::Insert { table_name } => table(Access::Insert, table_name, ""),
        AuthAction::Update { table_name, .. } => table(Access::Update, table_name, ""),
        AuthAction::Delete { table_name } => table(Access::Delete, table_name, ""),
        AuthAction::Function { function_name } => {
            let name = function_name.to_lowercase();
            if FUNCTIONS.contains(&name.as_str()) {
                Ok(None)
            } else {
                Err(Denial::Never(format!("call the SQL function {name}()")))
            }
        }
        AuthAction::Transaction { .. } => {
            Err(Denial::Never("control the transaction (the host runs each save in one)".into()))
        }
        AuthAction::Savepoint { savepoint_name, .. } => Err(Denial::Never(format!(
            "control the transaction (savepoint {savepoint_name}; the host runs each save in one)"
        ))),
        AuthAction::Attach { filename } => Err(Denial::Never(format!("attach the database {filename:?}"))),
        AuthAction::Detach { database_name } => Err(Denial::Never(format!("detach the database {database_name}"))),
        AuthAction::Pragma { pragma_name, .. } => Err(Denial::Never(format!("run PRAGMA {pragma_name}"))),
        AuthAction::CreateVtable { table_name, .. } | AuthAction::DropVtable { table_name, .. } => {
            Err(Denial::Never(format!("create or drop the virtual table {table_name}")))
        }
        AuthAction::CreateIndex { index_name, table_name } => on("CREATE INDEX", index_name, table_name),
        AuthAction::CreateTable { table_name } => on("CREATE TABLE", table_name, table_name),
        AuthAction::CreateTempIndex { index_name, .. } => temporary("CREATE TEMP INDEX", index_name),
        AuthAction::CreateTempTable { table_name } => temporary("CREATE TEMP TABLE", table_name),
        AuthAction::CreateTempTrigger { trigger_name, .. } => temporary("CREATE TEMP TRIGGER", trigger_name),
        AuthAction::CreateTempView { view_name } => temporary("CREATE TEMP VIEW", view_name),
        // A trigger's writes are not judged against the grant of the
        // statement that fires them (they are the operator's schema at
        // work, like the statements the host builds), so no service may
        // create one: triggers come from migrations (`sluice migrate`).
        AuthAction::CreateTrigger { trigger_name, .. } => Err(Denial::Never(format!(
            "CREATE TRIGGER {trigger_name} (a trigger's writes run under no grant: triggers come from `sluice migrate`)"
        ))),
        AuthAction::CreateView { view_name } => on("CREATE VIEW", view_name, view_name),
        AuthAction::DropIndex { index_name, table_name } => on("DROP INDEX", index_name, table_name),
        AuthAction::DropTable { table_name } => on("DROP TABLE", table_name, table_name),
        AuthAction::DropTempIndex { index_name, .. } => temporary("DROP TEMP INDEX", index_name),
        AuthAction::DropTempTable { table_name } => temporary("DROP TEMP TABLE", table_name),
        AuthAction::DropTempTrigger { trigger_name, .. } => temporary("DROP TEMP TRIGGER", trigger_name),
        AuthAction::DropTempView { view_name } => temporary("DROP TEMP VIEW", view_name),
        AuthAction::DropTrigger { trigger_name, table_name } => on("DROP TRIGGER", trigger_name, table_name),
        AuthAction::DropView { view_name } => on("DROP VIEW", view_name, view_name),
        AuthAction::AlterTable { table_name, .. } => on("ALTER TABLE", table_name, table_name),
        AuthAction::Reindex { index_name } => on("REINDEX", index_name, index_name),
        AuthAction::Analyze { table_name } => on("ANALYZE", table_name, table_name),
        _ if raw => Ok(Some(Seen::Schema(format!("{:?}", ctx.action)))),
        _ => Err(Denial::Never(format!("run {:?}", ctx.action))),
    }
}

/// Judges `actions` against the grant; `all` is everything the statement
/// reported, which decides what its own writes cover.
fn judge<'a>(actions: impl Iterator<Item = &'a Seen>, all: &BTreeSet<Seen>, rules: &Rules) -> Result<(), Denial> {
    let grant = rules.grant.as_deref();
    let raw = grant.is_some_and(|g| g.sql.raw_sql);
    // A table the statement updates or deletes from is read to find its
    // rows; that read comes with the write grant. Writing a table makes
    // SQLite check the keys of its foreign keys; those reads come with the
    // write too.
    let mut targets: BTreeSet<&str> = BTreeSet::new();
    let mut checked: BTreeSet<(&str, &str)> = BTreeSet::new();
    for seen in all {
        if let Seen::Table { access, table, trigger: false, .. } = seen
            && *access != Access::Read
        {
            if *access != Access::Insert {
                targets.insert(table);
            }
            checked.extend(rules.keys.checked_by(table));
        }
    }
    let schema_change = all.iter().any(|s| matches!(s, Seen::Schema(_)));
    let actions: Vec<&Seen> = actions.collect();
    // A write in a read is named as such, before what it would read.
    if !rules.writes
        && let Some(Seen::Table { access, table, .. }) =
            actions.iter().find(|s| matches!(s, Seen::Table { access, .. } if *access != Access::Read))
    {
        return Err(Denial::WriteInRead { access: *access, table: table.clone() });
    }
    // A schema change is named as such, before the schema tables it writes.
    if let Some(Seen::Schema(what)) = actions.iter().find(|s| matches!(s, Seen::Schema(_)))
        && !raw
    {
        return Err(Denial::Schema(what.clone()));
    }
    for seen in actions {
        match seen {
            Seen::Schema(_) => {}
            Seen::Table { access, table, column, trigger } => {
                if *access != Access::Read && !rules.writes {
                    return Err(Denial::WriteInRead { access: *access, table: table.clone() });
                }
                // A trigger's writes are the operator's schema at work, as
                // they are for the commands the host builds; SQLite's own
                // schema table is what a granted schema change writes.
                if *trigger || (raw && schema_change && is_schema_table(table)) {
                    continue;
                }
                if *access == Access::Read
                    && (targets.contains(table.as_str()) || checked.contains(&(table.as_str(), column.as_str())))
                {
                    continue;
                }
                let granted = grant.is_some_and(|g| g.sql.tables(*access).allows(table));
                if !granted {
                    return Err(Denial::Table { access: *access, table: table.clone() });
                }
            }
        }
    }
    Ok(())
}

fn is_schema_table(table: &str) -> bool {
    matches!(table, "sqlite_master" | "sqlite_schema" | "sqlite_temp_master" | "sqlite_temp_schema" | "sqlite_sequence")
}

#[cfg(test)]
#[path = "guard_tests.rs"]
pub(super) mod tests;
