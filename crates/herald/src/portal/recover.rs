//! Recovering a webhook's failed deliveries since a time, and the task that does it: the form
//! counts first (a dry run) or starts the recovery through the API's own function
//! (`api::recover::recover_webhook`, as `POST /v1/webhooks/{id}/recover`), and the task's page
//! shows its progress. No script: the task page has a refresh link (a `<meta refresh>` would be
//! an accessibility failure, and the runner is usually done before the page is read).

use super::deliveries::rfc3339;
use super::session::{Form, Session};
use super::{Chrome, PortalError, PortalResult, render};
use crate::api::AppState;
use crate::api::extract::Actor;
use crate::api::recover::{Started, recover_webhook, span};
use crate::api::webhooks::find;
use crate::domain::{
    RequeueFilter, Task, TaskId, TaskKind, TaskState, Timestamp, Webhook, WebhookStatus,
};
use crate::store::PageRequest;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use std::time::Duration;

/// The form's default start: a day back.
const DEFAULT_SPAN: Duration = Duration::from_secs(24 * 3600);
/// Recent tasks looked through for this webhook's recoveries.
const RECENT: u32 = 50;

/// A task as the pages show it.
struct TaskRow {
    id: String,
    state: &'static str,
    tone: &'static str,
    finished: bool,
    counted: u64,
    done: u64,
    created: String,
    updated: String,
    finished_at: String,
    error: String,
    /// The recovered webhook and the span, from the task's parameters.
    webhook_id: String,
    since: String,
    until: String,
}

impl TaskRow {
    fn new(task: &Task, filter: Option<&RequeueFilter>) -> Self {
        Self {
            id: task.id.to_string(),
            state: task.state.as_str(),
            tone: match task.state {
                TaskState::Succeeded => "ok",
                TaskState::Failed => "bad",
                TaskState::Queued | TaskState::Running => "wait",
            },
            finished: task.state.is_finished(),
            counted: task.counted,
            done: task.done,
            created: task.created_at.to_rfc3339(),
            updated: task.updated_at.to_rfc3339(),
            finished_at: task.finished_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            error: task.error.clone().unwrap_or_default(),
            webhook_id: filter
                .and_then(|f| f.webhook.as_ref())
                .map(|w| w.to_string())
                .unwrap_or_default(),
            since: filter.map(|f| f.since.to_rfc3339()).unwrap_or_default(),
            until: filter.map(|f| f.until.to_rfc3339()).unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "portal/recover.html")]
struct RecoverPage {
    chrome: Chrome,
    webhook_id: String,
    url: String,
    disabled: bool,
    error: Option<String>,
    /// A dry run's answer: how many would be sent again ("3 failed deliveries").
    count: Option<String>,
    since: String,
    until: String,
    recent: Vec<TaskRow>,
}

/// A `datetime-local` value (UTC, to the minute) for a moment.
fn local(at: Timestamp) -> String {
    at.to_rfc3339().chars().take(16).collect()
}

async fn page(
    state: &AppState,
    session: &Session,
    webhook: &Webhook,
    since: String,
    until: String,
) -> PortalResult<RecoverPage> {
    // This webhook's recoveries among the account's recent tasks, newest first.
    let page = PageRequest {
        after: None,
        limit: RECENT,
    };
    let tasks = state
        .store
        .list_tasks(Some(&session.account), &page)
        .await?;
    let recent = tasks
        .items
        .iter()
        .filter(|t| t.kind == TaskKind::Recover)
        .filter_map(|t| {
            let filter = RequeueFilter::from_json(&t.params).ok()?;
            (filter.webhook.as_ref() == Some(&webhook.id)).then(|| TaskRow::new(t, Some(&filter)))
        })
        .collect();
    Ok(RecoverPage {
        chrome: Chrome::new(state, &session.csrf, "webhooks", "Recover".into()),
        webhook_id: webhook.id.to_string(),
        url: webhook.url.as_str().to_owned(),
        disabled: webhook.status == WebhookStatus::Disabled,
        error: None,
        count: None,
        since,
        until,
        recent,
    })
}

/// `GET /portal/webhooks/{id}/recover`: the form, from a day back until now by default.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> PortalResult<Response> {
    let webhook = find(&state, &Actor::Account(session.account.clone()), &id, None).await?;
    let since = local(Timestamp::now().minus(DEFAULT_SPAN));
    let page = page(&state, &session, &webhook, since, String::new()).await?;
    Ok(render(&page))
}

/// `POST /portal/webhooks/{id}/recover` with `since`, `until` (empty: now) and `action`:
/// `count` shows how many would go again, anything else starts the recovery and opens its task.
pub(super) async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> PortalResult<Response> {
    let session = &form.session;
    let webhook = find(&state, &Actor::Account(session.account.clone()), &id, None).await?;
    let typed = |name: &str| form.get(name).unwrap_or("").trim().to_owned();
    let (since, until) = (typed("since"), typed("until"));
    let dry_run = form.get("action") == Some("count");
    let now = Timestamp::now();
    let outcome = match span(
        &rfc3339(&Some(since.clone())).unwrap_or_default(),
        rfc3339(&Some(until.clone())).as_deref(),
        now,
    ) {
        Ok((from, to)) => recover_webhook(&state, webhook.clone(), from, to, dry_run, now).await,
        Err(e) => Err(e),
    };
    let mut page = page(&state, session, &webhook, since, until).await?;
    match outcome {
        Ok(Started::Queued(task)) => {
            Ok(Redirect::to(&format!("/portal/tasks/{}", task.id)).into_response())
        }
        Ok(Started::DryRun(count)) => {
            page.count = Some(match count {
                1 => "1 failed delivery".to_owned(),
                n => format!("{n} failed deliveries"),
            });
            Ok(render(&page))
        }
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            page.error = Some(match e.field.as_deref() {
                Some("since") => "The start must be a date and time (UTC).".to_owned(),
                Some("until") if e.message.contains("after") => {
                    "The end must be after the start.".to_owned()
                }
                _ => "The end must be a date and time (UTC), or empty for now.".to_owned(),
            });
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
        Err(e) if e.status == StatusCode::CONFLICT => {
            page.error = Some("This webhook is disabled: enable it first, then recover.".into());
            Ok((StatusCode::CONFLICT, render(&page)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "portal/task.html")]
struct TaskPage {
    chrome: Chrome,
    task: TaskRow,
}

/// `GET /portal/tasks/{id}`: a recovery's progress; another account's task is 404.
pub(super) async fn task(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> PortalResult<Response> {
    let id = TaskId::parse(&id).ok_or(PortalError::NotFound("recovery"))?;
    let task = state
        .store
        .get_task(Some(&session.account), &id)
        .await?
        .ok_or(PortalError::NotFound("recovery"))?;
    let filter = RequeueFilter::from_json(&task.params).ok();
    Ok(render(&TaskPage {
        chrome: Chrome::new(&state, &session.csrf, "webhooks", "Recovery".into()),
        task: TaskRow::new(&task, filter.as_ref()),
    }))
}
