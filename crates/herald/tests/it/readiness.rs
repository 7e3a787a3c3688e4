//! `/readyz`: ready while the store answers with the schema this build needs; not ready, with a
//! reason and no detail, when the schema is behind. (The database going away is checked in
//! `pg_outage.rs`.)

use crate::common;

use common::{Backend, TestApp, TestEnv};
use sqlx::Connection;

async fn ready_while_the_schema_is_current_and_not_when_it_falls_behind(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let app = TestApp::start(env.settings()).await;
    let (status, answer) = app.call("GET", "/readyz", None, None).await;
    assert_eq!(
        (status.as_u16(), &answer),
        (200, &serde_json::json!({ "status": "ready" }))
    );

    // The newest migration taken off sqlx's record, as after restoring an older database.
    let forget =
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)";
    match backend {
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(&env.database_url)
                .await
                .unwrap();
            sqlx::query(forget).execute(&mut db).await.unwrap();
        }
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(&env.database_url)
                .await
                .unwrap();
            sqlx::query(forget).execute(&mut db).await.unwrap();
        }
    }
    let (status, answer) = app.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "not_ready");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("migrations pending"), "{message}");
    // Liveness is another question: the process is up.
    assert_eq!(app.call("GET", "/healthz", None, None).await.0, 200);
}

on_both_backends!(ready_while_the_schema_is_current_and_not_when_it_falls_behind);
