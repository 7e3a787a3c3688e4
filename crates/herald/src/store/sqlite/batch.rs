//! A batch of SQL statements with their arguments, built once and run in order on the writer
//! thread's connection, each a prepared statement from the connection's cache.

use crate::store::StoreResult;

/// One bound value. The statements here only ever bind integers and text (JSON included).
#[derive(Debug)]
pub(super) enum Value {
    Int(i64),
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Int(i) => ValueRef::Integer(*i),
            Self::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

/// Statements to run in order, each with its arguments.
///
/// The placeholders are plain `?`, bound in order, so each statement's arguments must be added
/// in the order its placeholders appear (a value used twice is added twice).
#[derive(Default)]
pub(super) struct Batch {
    statements: Vec<(String, Vec<Value>)>,
    /// Arguments added since the last statement.
    pending: Vec<Value>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the argument for the next `?` of the statement being built.
    pub fn arg(&mut self, value: impl Into<Value>) -> &'static str {
        self.pending.push(value.into());
        "?"
    }

    /// Adds a statement, whose `?`s take the arguments added since the last one.
    pub fn push(&mut self, statement: &str) {
        let args = std::mem::take(&mut self.pending);
        assert_eq!(
            statement.matches('?').count(),
            args.len(),
            "one argument per placeholder in {statement}"
        );
        self.statements.push((statement.to_owned(), args));
    }

    /// Runs the statements on the writer thread's connection; the rows of the (one) statement
    /// that returns rows are decoded by `decode`.
    pub fn query<T>(
        self,
        conn: &rusqlite::Connection,
        mut decode: impl FnMut(&rusqlite::Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut out = Vec::new();
        for (sql, args) in self.statements {
            let mut statement = conn.prepare_cached(&sql)?;
            let params = rusqlite::params_from_iter(args.iter());
            if statement.column_count() == 0 {
                statement.execute(params)?;
            } else {
                let mut rows = statement.query(params)?;
                while let Some(row) = rows.next()? {
                    out.push(decode(row)?);
                }
            }
        }
        Ok(out)
    }

    /// Runs the statements on the writer thread's connection.
    pub fn run(self, conn: &rusqlite::Connection) -> StoreResult<()> {
        self.query(conn, |_| Ok(())).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: usize, with_first: bool) -> Batch {
        let mut batch = Batch::new();
        batch.push("BEGIN IMMEDIATE");
        if with_first {
            let a = batch.arg(format!("a{round}"));
            batch.push(&format!(
                "INSERT INTO t (x) SELECT value FROM json_each(json_array({a}))"
            ));
        }
        let b = batch.arg(format!("b{round}"));
        let b2 = batch.arg(format!("c{round}"));
        let b3 = batch.arg(round as i64);
        batch.push(&format!("INSERT INTO t (x) VALUES ({b}), ({b2}), ({b3})"));
        let c = batch.arg(format!("b{round}"));
        batch.push(&format!("SELECT x FROM t WHERE x = {c}"));
        batch
    }

    #[test]
    fn a_batch_on_the_writer_connection_runs_every_statement_and_decodes_the_select_rows() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x TEXT)").unwrap();
        for round in 0..3 {
            for (i, with_first) in [true, false, true].into_iter().enumerate() {
                let rows = sample(round, with_first)
                    .query(&conn, |row| Ok(row.get::<_, String>(0)?))
                    .unwrap();
                conn.execute_batch("COMMIT").unwrap();
                // Each batch of this round inserted one more `b{round}`.
                assert_eq!(rows, vec![format!("b{round}"); i + 1]);
            }
        }
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3 * (4 + 3 + 4));
    }
}
