//! What SQLite does on a statement's behalf that its authorizer does not
//! tell apart from what the statement's own SQL asks for: the key checks of
//! foreign keys, which read other tables, and the deletes that `OR REPLACE`
//! (in the statement or in a table's schema) makes, which it does not
//! report at all. The gate ([`super::guard`]) uses both.

use std::collections::{BTreeSet, HashMap};

use rusqlite::Connection;

/// Which key columns SQLite reads when a table is written, because foreign
/// keys tie it to them: a child's write checks the parent's key, a parent's
/// write checks the children's key columns. What such a read could tell,
/// which keys exist and which are referenced, the foreign key's own error
/// tells too, so it needs no read grant.
#[derive(Debug, Default)]
pub struct Keys {
    /// Written table → (table, column) pairs, all lower-cased.
    by_table: HashMap<String, BTreeSet<(String, String)>>,
    /// Every table and view of the schema, lower-cased: what a read SQLite
    /// names no database for may be.
    pub tables: BTreeSet<String>,
}

impl Keys {
    /// Reads the foreign keys of every table from the schema.
    pub fn load(conn: &Connection) -> rusqlite::Result<Keys> {
        let tables = conn
            .prepare("SELECT lower(name) FROM sqlite_schema WHERE type IN ('table', 'view')")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut keys = Keys { tables, ..Keys::default() };
        let mut stmt = conn.prepare(
            "SELECT lower(m.name), lower(f.\"from\"), lower(f.\"table\"), lower(f.\"to\")
             FROM sqlite_schema m JOIN pragma_foreign_key_list(m.name) f WHERE m.type = 'table'",
        )?;
        let ties: Vec<(String, String, String, Option<String>)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
        for (child, from, parent, to) in ties {
            let parent_keys = match to {
                Some(to) => vec![to],
                // No column named: the parent's primary key.
                None => conn
                    .prepare("SELECT lower(name) FROM pragma_table_info(?1) WHERE pk > 0")?
                    .query_map([&parent], |r| r.get(0))?
                    .collect::<Result<_, _>>()?,
            };
            let entry = keys.by_table.entry(child.clone()).or_default();
            for key in &parent_keys {
                entry.insert((parent.clone(), key.clone()));
            }
            keys.by_table.entry(parent).or_default().insert((child, from));
        }
        Ok(keys)
    }

    /// The (table, column) pairs SQLite checks when `table` is written.
    pub fn checked_by<'a>(&'a self, table: &str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.by_table.get(table).into_iter().flatten().map(|(t, c)| (t.as_str(), c.as_str()))
    }
}

/// OP_Delete's flag for the delete half of an update (`OPFLAG_ISUPDATE`).
const DELETE_IS_UPDATE: i64 = 0x04;

/// Whether the prepared `sql` deletes rows it was not asked to delete: its
/// bytecode has a delete, on a table it opened for writing, that is not
/// half of an update, as `OR REPLACE` (in the statement or the table's
/// schema) compiles to. Deletes on the scratch tables of a recursive CTE or
/// a sort do not count. A plain `DELETE` also has one; callers ask only
/// about inserts and updates. Trigger programs are separate and not listed.
///
/// SQLite 3.50 compiles `OR REPLACE` on a table with no index but its rowid
/// as an overwrite, without a `Delete`: the `NotExists` check of the rowid
/// then goes on to the insert whether or not the row exists (its jump
/// target is the next instruction). That replaces an existing row as
/// surely as a delete does, and counts as one.
pub fn deletes_rows(conn: &Connection, sql: &str) -> rusqlite::Result<bool> {
    let mut explain = conn.prepare(&format!("EXPLAIN {sql}"))?;
    // EXPLAIN runs nothing, so the parameters need no values.
    let mut rows = explain.raw_query();
    let mut written = BTreeSet::new();
    let mut deletes = Vec::new();
    while let Some(row) = rows.next()? {
        let address: i64 = row.get(0)?;
        let opcode: String = row.get(1)?;
        let (p1, p2): (i64, i64) = (row.get(2)?, row.get(3)?);
        match opcode.as_str() {
            "OpenWrite" => {
                written.insert(p1);
            }
            "Delete" if p2 & DELETE_IS_UPDATE == 0 => deletes.push(p1),
            "NotExists" if p2 == address + 1 => deletes.push(p1),
            _ => {}
        }
    }
    Ok(deletes.iter().any(|cursor| written.contains(cursor)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::channels::sql::grant::Access;
    use crate::channels::sql::guard::tests::{check, conn, rules, table};
    use crate::channels::sql::guard::{Gate, Rules};

    #[test]
    fn foreign_key_checks_need_no_read_grant_but_other_reads_do() {
        let conn = Connection::open_in_memory().expect("memory db");
        conn.execute_batch(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY, secret TEXT);
             CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id), note TEXT);
             CREATE TABLE other (id INTEGER PRIMARY KEY, parent_ref INTEGER REFERENCES parent);",
        )
        .expect("schema");
        let gate = Gate::install(&conn);
        let keys = Arc::new(Keys::load(&conn).expect("keys"));
        let with = |manifest: &str| Rules { keys: Arc::clone(&keys), ..rules(manifest, true) };
        let child = with("[channels.main]\ninserts = [\"child\"]\nupdates = [\"child\"]\n");
        assert_eq!(check(&conn, &gate, &child, "INSERT INTO child (parent_id) VALUES (1)"), Ok(()));
        assert_eq!(check(&conn, &gate, &child, "UPDATE child SET parent_id = ?1 WHERE id = ?2"), Ok(()));
        assert_eq!(
            check(&conn, &gate, &child, "INSERT INTO child (parent_id, note) SELECT id, secret FROM parent"),
            Err(table(Access::Read, "parent"))
        );
        let parent = with("[channels.main]\ndeletes = [\"parent\"]\n");
        assert_eq!(check(&conn, &gate, &parent, "DELETE FROM parent WHERE id = ?1"), Ok(()));
        assert_eq!(
            check(&conn, &gate, &parent, "DELETE FROM parent WHERE id IN (SELECT id FROM child WHERE note = 'x')"),
            Err(table(Access::Read, "child"))
        );
    }

    #[test]
    fn replace_shows_as_a_delete_in_the_bytecode() {
        let (conn, _gate) = conn();
        // A table with no index but its rowid: REPLACE overwrites in place.
        conn.execute_batch("CREATE TABLE only_rowid (id INTEGER PRIMARY KEY, v)").expect("table");
        let deletes = |sql| deletes_rows(&conn, sql).expect(sql);
        for sql in [
            "INSERT OR REPLACE INTO only_rowid (id, v) VALUES (1, 'x')",
            "REPLACE INTO only_rowid (id, v) VALUES (1, 'x')",
            "UPDATE OR REPLACE only_rowid SET id = 2 WHERE id = 1",
            "INSERT OR REPLACE INTO t (a) VALUES (1)",
            "REPLACE INTO t (a) VALUES (1)",
            "UPDATE OR REPLACE t SET a = 1 WHERE id = 2",
            "INSERT OR REPLACE INTO w VALUES ('x', 1, 2)",
            "UPDATE OR REPLACE w SET a = 1 WHERE k = 'y'",
            "INSERT INTO r (a) VALUES (1)",
        ] {
            assert!(deletes(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO only_rowid (id, v) VALUES (1, 'x')",
            "INSERT OR IGNORE INTO only_rowid (id, v) VALUES (1, 'x')",
            "UPDATE only_rowid SET v = 'y' WHERE id = 1",
            "INSERT INTO t (a) VALUES (1)",
            "UPDATE t SET a = ?2 WHERE id = ?1",
            "UPDATE w SET a = 1 WHERE k = 'y'",
            "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2",
            "INSERT OR IGNORE INTO t (a) VALUES (1)",
            "INSERT INTO t (a) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 5) SELECT i FROM n",
        ] {
            assert!(!deletes(sql), "{sql}");
        }
    }
}
