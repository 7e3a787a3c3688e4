//! Background tasks as the API shows them: `GET /v1/tasks/{id}` (its progress) and
//! `GET /v1/tasks` (newest first). An account sees the tasks of its own (its webhooks'
//! recoveries); the admin sees every task, the operator's bulk retries included.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiQuery};
use super::{AppState, ListBody, page_request};
use crate::domain::{Task, TaskId, TaskKind, TaskState, Timestamp};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

/// A background task and its progress.
#[derive(Serialize, ToSchema)]
pub struct TaskView {
    id: TaskId,
    /// `recover` (a webhook's failed deliveries) or `retry` (the operator's bulk retry).
    kind: TaskKind,
    state: TaskState,
    /// Deliveries that matched when the task was made.
    counted: u64,
    /// Deliveries re-queued so far. At the end it may be below `counted`: deliveries retried
    /// meanwhile by other means, or whose webhook was deleted, are not re-queued again.
    done: u64,
    created_at: Timestamp,
    updated_at: Timestamp,
    finished_at: Option<Timestamp>,
    /// Why a failed task stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<Task> for TaskView {
    fn from(t: Task) -> Self {
        Self {
            id: t.id,
            kind: t.kind,
            state: t.state,
            counted: t.counted,
            done: t.done,
            created_at: t.created_at,
            updated_at: t.updated_at,
            finished_at: t.finished_at,
            error: t.error,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// With the admin token: one account's tasks (every task if left out). With an API key:
    /// leave out, or the key's own account.
    account: Option<String>,
    /// The `next_cursor` of the previous page; leave out for the first (newest) page.
    cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AccountParam {
    /// With the admin token: the account the task belongs to (optional). With an API key: leave
    /// out, or the key's own account.
    account: Option<String>,
}

/// List tasks
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", operation_id = "list_tasks",
    security(("admin_token" = []), ("api_key" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of tasks, newest first", body = ListBody<TaskView>),
        (status = 404, description = "The named account does not exist (or is not the key's)",
            body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<Json<ListBody<TaskView>>> {
    let scope = actor.read_scope(&state, p.account.as_deref()).await?;
    let page = page_request(p.cursor.as_deref(), p.limit, |c| TaskId::parse(c).is_some())?;
    Ok(Json(ListBody::from_page(
        state.store.list_tasks(scope.as_ref(), &page).await?,
        TaskView::from,
    )))
}

/// Get a task and its progress
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", operation_id = "get_task",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = TaskId, Path, description = "The task's id"), AccountParam),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 404, description = "No such task in the account", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<TaskView>> {
    let scope = actor.read_scope(&state, q.account.as_deref()).await?;
    let id = TaskId::parse(&id).ok_or_else(|| ApiError::not_found("task"))?;
    let task = state
        .store
        .get_task(scope.as_ref(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    Ok(Json(TaskView::from(task)))
}
