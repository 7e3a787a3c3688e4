//! The erasure tests' view of the database: every table's text columns, read from the schema,
//! so a check over "every table" cannot go stale when a table is added.

use crate::common::{Backend, TestEnv};
use sqlx::Connection;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The test's database, opened beside the server.
pub(super) enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Db {
    pub(super) async fn open(env: &TestEnv) -> Self {
        match env.backend {
            Backend::Sqlite => {
                let url = format!("{}?mode=ro", env.database_url);
                Db::Sqlite(sqlx::SqliteConnection::connect(&url).await.unwrap())
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&env.database_url)
                    .await
                    .unwrap();
                // Room to hash a hundred thousand ids in a subquery (see `rows_holding`).
                sqlx::query("SET work_mem = '256MB'")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Db::Postgres(conn)
            }
        }
    }

    pub(super) async fn strings(&mut self, sql: &str, arg: Option<&str>) -> Vec<(String, String)> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Db::Sqlite(c) => {
                let q = sqlx::query_as(sql);
                let q = if let Some(a) = arg {
                    q.bind(a.to_owned())
                } else {
                    q
                };
                q.fetch_all(c).await.unwrap()
            }
            Db::Postgres(c) => {
                let q = sqlx::query_as(sql);
                let q = if let Some(a) = arg {
                    q.bind(a.to_owned())
                } else {
                    q
                };
                q.fetch_all(c).await.unwrap()
            }
        }
    }

    /// Every text column of every table of Herald's schema, by table.
    pub(super) async fn text_columns(&mut self) -> BTreeMap<String, Vec<String>> {
        let sql = match self {
            Db::Sqlite(_) => {
                "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx%'
                   AND p.type = 'TEXT'"
            }
            Db::Postgres(_) => {
                "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT) FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name NOT LIKE '_sqlx%' AND data_type = 'text'"
            }
        };
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (table, column) in self.strings(sql, None).await {
            tables.entry(table).or_default().push(column);
        }
        assert!(tables.len() >= 8, "the schema has its tables: {tables:?}");
        tables
    }

    /// The account's id and the id of each of its rows in every table with an `account_id`
    /// column and an `id`.
    pub(super) async fn ids_of(&mut self, account: &str) -> Vec<String> {
        let mut ids = vec![account.to_owned()];
        for (table, columns) in self.text_columns().await {
            if columns.iter().any(|c| c == "account_id") && columns.iter().any(|c| c == "id") {
                let sql = match self {
                    Db::Sqlite(_) => format!("SELECT id, id FROM {table} WHERE account_id = ?"),
                    Db::Postgres(_) => format!("SELECT id, id FROM {table} WHERE account_id = $1"),
                };
                ids.extend(
                    self.strings(&sql, Some(account))
                        .await
                        .into_iter()
                        .map(|(id, _)| id),
                );
            }
        }
        ids
    }

    /// How many rows of each table hold one of `ids` in any text column, or `marker` anywhere
    /// in one.
    pub(super) async fn rows_holding(
        &mut self,
        ids: &[String],
        marker: &str,
    ) -> BTreeMap<String, i64> {
        let like = format!("%{marker}%");
        let mut counts = BTreeMap::new();
        for (table, columns) in self.text_columns().await {
            let n = match self {
                Db::Sqlite(c) => {
                    let test = columns
                        .iter()
                        .map(|c| format!("{c} IN (SELECT value FROM json_each(?1)) OR {c} LIKE ?2"))
                        .collect::<Vec<_>>()
                        .join(" OR ");
                    let sql = format!("SELECT COUNT(*) FROM {table} WHERE {test}");
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(serde_json::to_string(ids).unwrap())
                        .bind(&like)
                        .fetch_one(c)
                        .await
                        .unwrap()
                }
                Db::Postgres(c) => {
                    let test = columns
                        .iter()
                        .map(|c| format!("{c} IN (SELECT id FROM ids) OR {c} LIKE $2"))
                        .collect::<Vec<_>>()
                        .join(" OR ");
                    let sql = format!(
                        "WITH ids AS (SELECT unnest($1::text[]) AS id)
                         SELECT COUNT(*) FROM {table} WHERE {test}"
                    );
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(ids)
                        .bind(&like)
                        .fetch_one(c)
                        .await
                        .unwrap()
                }
            };
            counts.insert(table, n);
        }
        counts
    }

    pub(super) async fn account_rows(&mut self, account: &str) -> i64 {
        let sql = match self {
            Db::Sqlite(_) => "SELECT id, id FROM accounts WHERE id = ?",
            Db::Postgres(_) => "SELECT id, id FROM accounts WHERE id = $1",
        };
        self.strings(sql, Some(account)).await.len() as i64
    }
}

/// Waits until the account row is gone: erasure deletes it last.
pub(super) async fn wait_erased(db: &mut Db, account: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while db.account_rows(account).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the erasure did not finish within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
