//! Jobs: the account's jobs, newest first, and a job with the status events it published (and
//! each event's deliveries, through the delivery log).

use super::session::Session;
use super::{Chrome, PortalError, PortalResult, render};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::domain::Job;
use crate::domain::job::valid_job_id;
use crate::store::{EventQuery, JobCursor, PageRequest};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

/// Jobs per page.
const PAGE: u32 = 50;

#[derive(Default, Deserialize)]
pub(super) struct JobsQuery {
    cursor: Option<String>,
}

/// A job as a row shows it.
struct JobRow {
    id: String,
    kind: String,
    status: &'static str,
    tone: &'static str,
    progress: String,
    created: String,
    updated: String,
}

impl From<&Job> for JobRow {
    fn from(j: &Job) -> Self {
        use crate::domain::JobStatus;
        Self {
            id: j.id.clone(),
            kind: j.kind.clone(),
            status: j.status.as_str(),
            tone: match j.status {
                JobStatus::Completed => "ok",
                JobStatus::Failed => "bad",
                JobStatus::Queued | JobStatus::Processing => "wait",
            },
            progress: format!("{:.0} %", j.progress * 100.0),
            created: j.created_at.to_rfc3339(),
            updated: j.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Template)]
#[template(path = "portal/jobs.html")]
struct ListPage {
    chrome: Chrome,
    jobs: Vec<JobRow>,
    next: Option<String>,
}

/// `GET /portal/jobs`.
pub(super) async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<JobsQuery>,
) -> PortalResult<Response> {
    let cursor = q.cursor.filter(|c| !c.is_empty());
    if cursor
        .as_deref()
        .is_some_and(|c| JobCursor::parse(c).is_none())
    {
        return Err(ApiError::invalid("cursor", "cursor is not one this list returned").into());
    }
    let page = PageRequest {
        after: cursor,
        limit: PAGE,
    };
    let found = state.store.list_jobs(&session.account, &page).await?;
    let next = found.next_cursor.map(|c| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("cursor", &c)
            .finish()
    });
    Ok(render(&ListPage {
        chrome: Chrome::new(&state, &session.csrf, "jobs", "Jobs".into()),
        jobs: found.items.iter().map(JobRow::from).collect(),
        next,
    }))
}

/// One status event of a job.
struct EventRow {
    id: String,
    event_type: String,
    timestamp: String,
    data: String,
}

#[derive(Template)]
#[template(path = "portal/job.html")]
struct ShowPage {
    chrome: Chrome,
    job: JobRow,
    input: Option<String>,
    result: Option<String>,
    error: Option<String>,
    events: Vec<EventRow>,
}

fn pretty(raw: &Option<Box<serde_json::value::RawValue>>) -> Option<String> {
    let raw = raw.as_ref()?;
    let value: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    serde_json::to_string_pretty(&value).ok()
}

/// `GET /portal/jobs/{id}`: the job and its events, oldest first.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> PortalResult<Response> {
    if !valid_job_id(&id) {
        return Err(PortalError::NotFound("job"));
    }
    let job = state
        .store
        .get_job(Some(&session.account), &id)
        .await?
        .ok_or(PortalError::NotFound("job"))?;
    let query = EventQuery {
        account: Some(session.account.clone()),
        job: Some(job.id.clone()),
        ..EventQuery::default()
    };
    // A job publishes at most one event per status.
    let page = PageRequest {
        after: None,
        limit: 20,
    };
    let mut events: Vec<EventRow> = state
        .store
        .list_events(&query, &page)
        .await?
        .items
        .into_iter()
        .map(|e| EventRow {
            id: e.id.to_string(),
            event_type: e.event_type,
            timestamp: e.timestamp.to_rfc3339(),
            data: pretty(&Some(e.data)).unwrap_or_default(),
        })
        .collect();
    events.reverse();
    Ok(render(&ShowPage {
        chrome: Chrome::new(&state, &session.csrf, "jobs", "Job".into()),
        input: pretty(&job.input),
        result: pretty(&job.result),
        error: pretty(&job.error),
        job: JobRow::from(&job),
        events,
    }))
}
