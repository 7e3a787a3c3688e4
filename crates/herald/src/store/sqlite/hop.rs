//! A batch of SQL statements with their arguments, built once and run on either of the SQLite
//! connections: the writer thread's own (rusqlite, in this process, one prepared statement
//! each, from its cache) or sqlx's (one query, one round trip to sqlx's SQLite thread).

use crate::store::StoreResult;
use sqlx::Arguments;
use sqlx::sqlite::{SqliteArguments, SqliteRow};

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
/// in the order its placeholders appear (a value used twice is added twice). Numbered ones
/// (`?3`) would not do on sqlx: it counts the gaps below a statement's numbers as arguments
/// used, and stops binding a later statement of the same query once that count passes the end.
#[derive(Default)]
pub(super) struct Hop {
    statements: Vec<(String, Vec<Value>)>,
    /// Arguments added since the last statement.
    pending: Vec<Value>,
}

impl Hop {
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

    /// The statements as one query for sqlx, with all their arguments in order.
    fn into_sqlx(self) -> (String, SqliteArguments) {
        let mut sql = String::new();
        let mut all = SqliteArguments::default();
        for (statement, args) in self.statements {
            sql.push_str(&statement);
            sql.push_str(";\n");
            for v in args {
                match v {
                    Value::Int(i) => all.add(i),
                    Value::Text(s) => all.add(s),
                }
                .expect("SQLite arguments encode");
            }
        }
        (sql, all)
    }

    /// Runs the statements on a sqlx connection, in one round trip.
    pub async fn execute(self, conn: &mut sqlx::SqliteConnection) -> StoreResult<()> {
        let (sql, args) = self.into_sqlx();
        if !sql.is_empty() {
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// Runs the statements on a sqlx connection; the rows are those of the (one) statement that
    /// returns rows.
    pub async fn fetch_all(self, conn: &mut sqlx::SqliteConnection) -> StoreResult<Vec<SqliteRow>> {
        let (sql, args) = self.into_sqlx();
        Ok(sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .fetch_all(conn)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::SqlitePool;

    fn sample(round: usize, with_first: bool) -> Hop {
        let mut hop = Hop::new();
        hop.push("BEGIN IMMEDIATE");
        if with_first {
            let a = hop.arg(format!("a{round}"));
            hop.push(&format!(
                "INSERT INTO t (x) SELECT value FROM json_each(json_array({a}))"
            ));
        }
        let b = hop.arg(format!("b{round}"));
        let b2 = hop.arg(format!("c{round}"));
        let b3 = hop.arg(round as i64);
        hop.push(&format!("INSERT INTO t (x) VALUES ({b}), ({b2}), ({b3})"));
        let c = hop.arg(format!("b{round}"));
        hop.push(&format!("SELECT x FROM t WHERE x = {c}"));
        hop
    }

    #[tokio::test]
    async fn a_hop_on_sqlx_runs_every_statement_and_returns_the_select_rows() {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("CREATE TABLE t (x TEXT)")
            .execute(&mut *conn)
            .await
            .unwrap();
        for round in 0..3 {
            for with_first in [true, false, true] {
                let rows = sample(round, with_first)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                let mut last = Hop::new();
                last.push("COMMIT");
                last.execute(&mut conn).await.unwrap();
                assert!(!rows.is_empty(), "round {round} with_first {with_first}");
            }
        }
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(n, 3 * (4 + 3 + 4));
    }

    #[test]
    fn a_hop_on_the_writer_connection_runs_every_statement_and_decodes_the_select_rows() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x TEXT)").unwrap();
        for round in 0..3 {
            for (i, with_first) in [true, false, true].into_iter().enumerate() {
                let rows = sample(round, with_first)
                    .query(&conn, |row| Ok(row.get::<_, String>(0)?))
                    .unwrap();
                conn.execute_batch("COMMIT").unwrap();
                // Each hop of this round inserted one more `b{round}`.
                assert_eq!(rows, vec![format!("b{round}"); i + 1]);
            }
        }
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3 * (4 + 3 + 4));
    }
}
