//! Jobs: a provider's asynchronous work, and the rules of its status.
//!
//! queued → processing → completed | failed; progress only rises; a terminal status is final.

use super::{AccountId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Processing,
    Completed,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Processing,
            Self::Completed,
            Self::Failed,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Processing => 1,
            Self::Completed | Self::Failed => 2,
        }
    }

    pub const ALL: [JobStatus; 4] = [
        Self::Queued,
        Self::Processing,
        Self::Completed,
        Self::Failed,
    ];
}

/// A job, exactly as `GET /v1/jobs/{id}` shows it and its events carry it as `data`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: String,
    pub account: AccountId,
    pub kind: String,
    pub status: JobStatus,
    /// From 0 to 1; it only rises.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    pub progress: f64,
    /// Any JSON value the provider gave when creating the job, or null.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub input: Option<Box<RawValue>>,
    /// Any JSON value the provider gave with an update, or null.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub result: Option<Box<RawValue>>,
    /// Any JSON value the provider gave with an update, or null.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub error: Option<Box<RawValue>>,
    /// The job's own webhook URL (it gets the job's terminal event), if it has one.
    pub webhook_url: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub completed_at: Option<Timestamp>,
}

/// A requested change to a job.
#[derive(Clone, Debug, Default)]
pub struct JobPatch {
    pub status: Option<JobStatus>,
    pub progress: Option<f64>,
    pub result: Option<Box<RawValue>>,
    pub error: Option<Box<RawValue>>,
}

/// Why a change is refused (409).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum JobConflict {
    #[error("the job is already {0}; a finished job cannot change")]
    Finished(&'static str),
    #[error("a job cannot go from {from} back to {to}")]
    Backwards {
        from: &'static str,
        to: &'static str,
    },
    #[error("progress only rises: it is {current} and cannot become {requested}")]
    ProgressFalls { current: f64, requested: f64 },
}

/// The first and only id format check for a provider-chosen job id.
pub fn valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

impl Job {
    /// Applies `patch` at `now`: the updated job, and whether its status changed (so an event
    /// is due). Pure: the store calls it inside the transaction that saves the result.
    pub fn apply(&self, patch: &JobPatch, now: Timestamp) -> Result<(Job, bool), JobConflict> {
        if self.status.is_terminal() {
            return Err(JobConflict::Finished(self.status.as_str()));
        }
        let mut next = self.clone();
        if let Some(p) = patch.progress {
            if p < self.progress {
                return Err(JobConflict::ProgressFalls {
                    current: self.progress,
                    requested: p,
                });
            }
            next.progress = p;
        }
        let mut changed = false;
        if let Some(status) = patch.status
            && status != self.status
        {
            if status.rank() < self.status.rank() {
                return Err(JobConflict::Backwards {
                    from: self.status.as_str(),
                    to: status.as_str(),
                });
            }
            next.status = status;
            changed = true;
            if status == JobStatus::Completed {
                next.progress = 1.0;
            }
            if status.is_terminal() {
                next.completed_at = Some(now);
            }
        }
        if patch.result.is_some() {
            next.result = patch.result.clone();
        }
        if patch.error.is_some() {
            next.error = patch.error.clone();
        }
        next.updated_at = now;
        Ok((next, changed))
    }

    /// The event type a status publishes: `<kind>.<status>`.
    pub fn event_type(&self) -> String {
        format!("{}.{}", self.kind, self.status.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: JobStatus, progress: f64) -> Job {
        Job {
            id: "job_1".into(),
            account: AccountId::generate(),
            kind: "tts".into(),
            status,
            progress,
            input: None,
            result: None,
            error: None,
            webhook_url: None,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            completed_at: None,
        }
    }

    fn to(status: JobStatus) -> JobPatch {
        JobPatch {
            status: Some(status),
            ..JobPatch::default()
        }
    }

    #[test]
    fn status_moves_forward_only_and_terminal_is_final() {
        let now = Timestamp::from_millis(5);
        let (p, changed) = job(JobStatus::Queued, 0.0)
            .apply(&to(JobStatus::Processing), now)
            .unwrap();
        assert!(changed && p.status == JobStatus::Processing);
        let (c, _) = p.apply(&to(JobStatus::Completed), now).unwrap();
        assert_eq!((c.progress, c.completed_at), (1.0, Some(now)));
        assert_eq!(c.event_type(), "tts.completed");
        assert_eq!(
            c.apply(&to(JobStatus::Completed), now).unwrap_err(),
            JobConflict::Finished("completed")
        );
        assert!(c.apply(&JobPatch::default(), now).is_err());
        assert!(matches!(
            p.apply(&to(JobStatus::Queued), now),
            Err(JobConflict::Backwards { .. })
        ));
        let (same, changed) = p.apply(&to(JobStatus::Processing), now).unwrap();
        assert!(!changed && same.status == JobStatus::Processing);
    }

    #[test]
    fn progress_only_rises() {
        let j = job(JobStatus::Processing, 0.5);
        let up = JobPatch {
            progress: Some(0.7),
            ..JobPatch::default()
        };
        assert_eq!(
            j.apply(&up, Timestamp::from_millis(1)).unwrap().0.progress,
            0.7
        );
        let down = JobPatch {
            progress: Some(0.2),
            ..JobPatch::default()
        };
        assert!(matches!(
            j.apply(&down, Timestamp::from_millis(1)),
            Err(JobConflict::ProgressFalls { .. })
        ));
    }

    #[test]
    fn job_ids_are_checked() {
        assert!(valid_job_id("trs_01HZX9K7Q2M4YV8BTA6JRN3PDE"));
        assert!(!valid_job_id("has space") && !valid_job_id("") && !valid_job_id(&"x".repeat(129)));
    }
}
