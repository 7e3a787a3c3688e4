//! The column lists of the tables and turning their rows back into domain records, once for
//! both backends (and, for the SQLite writer's own connection, from its rusqlite rows).

use super::seal::{Column, SealError, Sealer};
use super::{ApiKeyInfo, StoreError, StoreResult};
use crate::domain::retry::StoredPolicy;
use crate::domain::{
    Account, AccountId, ApiKeyId, Attempt, AttemptId, Delivery, DeliveryId, DeliveryStatus,
    ErrorKind, Event, EventFilter, EventId, PayloadFormat, RateLimit, RetryPolicy, SigningSecret,
    Timestamp, Webhook, WebhookId, WebhookKind, WebhookOrdering, WebhookStatus, WebhookUrl,
};
use serde_json::value::RawValue;

/// Defines a table's columns once: a struct read by name (from sqlx's rows with `FromRow`, from
/// the SQLite writer's rusqlite rows with `from_rusqlite`) and the column list for statements,
/// in the struct's order, so the two cannot drift apart.
macro_rules! columns {
    (
        $(#[$meta:meta])*
        $name:ident, $list:ident { $first:ident: $first_ty:ty $(, $field:ident: $ty:ty)* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(sqlx::FromRow)]
        pub(crate) struct $name {
            pub $first: $first_ty,
            $(pub $field: $ty,)*
        }

        #[doc = concat!("The column list that [`", stringify!($name), "`] reads.")]
        pub(crate) const $list: &str = concat!(stringify!($first) $(, ", ", stringify!($field))*);

        impl $name {
            /// Reads the columns by name from a row of the SQLite writer's connection.
            #[allow(dead_code, reason = "not every table is read back on the writer's connection")]
            pub fn from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok(Self {
                    $first: row.get(stringify!($first))?,
                    $($field: row.get(stringify!($field))?,)*
                })
            }
        }
    };
}

pub(crate) use columns;

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

pub(crate) fn filters_to_json(filters: &[EventFilter]) -> String {
    serde_json::to_string(
        &filters
            .iter()
            .map(EventFilter::to_pattern)
            .collect::<Vec<_>>(),
    )
    .expect("strings serialize")
}

pub(crate) fn filters_from_json(s: &str) -> StoreResult<Vec<EventFilter>> {
    let patterns: Vec<String> =
        serde_json::from_str(s).map_err(|e| corrupt("webhook events", e))?;
    patterns
        .iter()
        .map(|p| EventFilter::parse(p).map_err(|e| corrupt("webhook events", e)))
        .collect()
}

pub(crate) fn policy_to_json(p: &RetryPolicy) -> String {
    serde_json::to_string(&StoredPolicy::from(p)).expect("policy serializes")
}

columns! {
    /// The columns of a webhook, read by name.
    WebhookColumns, WEBHOOK_COLUMNS {
        id: String,
        account_id: String,
        url: String,
        events: String,
        secret: String,
        description: String,
        retry: String,
        status: String,
        created_at: i64,
        updated_at: i64,
        kind: String,
        job_id: Option<String>,
        signing: String,
        format: String,
        previous_secret: Option<String>,
        previous_secret_until: Option<i64>,
        disabled_reason: Option<String>,
        failing_since: Option<i64>,
        rate_limit: Option<String>,
        ordering: String,
        paused_until: Option<i64>,
        probe_at: Option<i64>,
    }
}

/// How many columns [`WEBHOOK_COLUMNS`] names: an insert's placeholders are counted from it.
pub(crate) fn webhook_column_count() -> usize {
    WEBHOOK_COLUMNS.split(", ").count()
}

/// A webhook's values in [`WEBHOOK_COLUMNS`] order, for inserts and updates; the secret
/// columns (`secret`, `signing`, `previous_secret`) as the sealer stores them.
pub(crate) struct WebhookValues {
    pub events: String,
    pub retry: String,
    pub secret: String,
    pub signing: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
    pub rate_limit: Option<String>,
}

impl WebhookValues {
    pub fn of(w: &Webhook, sealer: &Sealer) -> Self {
        let id = w.id.as_str();
        Self {
            events: filters_to_json(&w.events),
            retry: policy_to_json(&w.retry),
            secret: sealer.seal(Column::WebhookSecret, id, w.secret.expose()),
            signing: sealed_signing(w, sealer),
            previous_secret: w
                .previous_secret
                .as_ref()
                .map(|(s, _)| sealer.seal(Column::WebhookPreviousSecret, id, s.expose())),
            previous_secret_until: w.previous_secret.as_ref().map(|(_, t)| t.millis()),
            rate_limit: w.rate_limit.as_ref().map(RateLimit::to_json),
        }
    }
}

/// The `signing` column of a webhook (it holds the `bearer` token or the `header` value).
pub(crate) fn sealed_signing(w: &Webhook, sealer: &Sealer) -> String {
    let json = serde_json::to_string(&w.signing).expect("modes serialize");
    sealer.seal(Column::WebhookSigning, w.id.as_str(), &json)
}

/// A webhook's secret columns as stored, for the start-up pass ([`Sealer::reseal`]).
#[derive(sqlx::FromRow)]
pub(crate) struct WebhookSecretColumns {
    pub id: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub signing: String,
}

/// Reads [`WebhookSecretColumns`] of every webhook, deleted ones too.
pub(crate) const WEBHOOK_SECRETS_QUERY: &str =
    "SELECT id, secret, previous_secret, signing FROM webhooks";

impl WebhookSecretColumns {
    /// The row as the start-up pass leaves it, if the pass changes it.
    pub fn resealed(&self, sealer: &Sealer) -> Result<Option<Self>, SealError> {
        let id = self.id.as_str();
        let secret = sealer.reseal(Column::WebhookSecret, id, &self.secret)?;
        let signing = sealer.reseal(Column::WebhookSigning, id, &self.signing)?;
        let previous = match &self.previous_secret {
            Some(p) => sealer.reseal(Column::WebhookPreviousSecret, id, p)?,
            None => None,
        };
        if secret.is_none() && signing.is_none() && previous.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            id: self.id.clone(),
            secret: secret.unwrap_or_else(|| self.secret.clone()),
            previous_secret: previous.or_else(|| self.previous_secret.clone()),
            signing: signing.unwrap_or_else(|| self.signing.clone()),
        }))
    }
}

impl WebhookColumns {
    pub fn into_webhook(self, sealer: &Sealer) -> StoreResult<Webhook> {
        let retry: StoredPolicy =
            serde_json::from_str(&self.retry).map_err(|e| corrupt("webhook retry policy", e))?;
        let secret = sealer.open(Column::WebhookSecret, &self.id, &self.secret)?;
        let signing = sealer.open(Column::WebhookSigning, &self.id, &self.signing)?;
        let previous_secret = self
            .previous_secret
            .map(|s| sealer.open(Column::WebhookPreviousSecret, &self.id, &s))
            .transpose()?;
        Ok(Webhook {
            id: WebhookId::from_trusted(self.id),
            account_id: AccountId::from_trusted(self.account_id),
            url: WebhookUrl::from_trusted(self.url),
            events: filters_from_json(&self.events)?,
            secret: SigningSecret::parse(&secret).map_err(|e| corrupt("webhook secret", e))?,
            description: self.description,
            retry: retry.into(),
            status: WebhookStatus::parse(&self.status)
                .ok_or_else(|| corrupt("webhook status", &self.status))?,
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
            kind: WebhookKind::parse(&self.kind)
                .ok_or_else(|| corrupt("webhook kind", &self.kind))?,
            job_id: self.job_id,
            signing: serde_json::from_str(&signing).map_err(|e| corrupt("webhook signing", e))?,
            format: PayloadFormat::parse(&self.format)
                .ok_or_else(|| corrupt("webhook format", &self.format))?,
            previous_secret: match (previous_secret, self.previous_secret_until) {
                (Some(s), Some(until)) => Some((
                    SigningSecret::parse(&s).map_err(|e| corrupt("previous secret", e))?,
                    Timestamp::from_millis(until),
                )),
                _ => None,
            },
            disabled_reason: self.disabled_reason,
            failing_since: self.failing_since.map(Timestamp::from_millis),
            rate_limit: self
                .rate_limit
                .map(|r| RateLimit::from_json(&r).map_err(|e| corrupt("webhook rate limit", e)))
                .transpose()?,
            ordering: WebhookOrdering::parse(&self.ordering)
                .ok_or_else(|| corrupt("webhook ordering", &self.ordering))?,
            held: held(self.paused_until, self.probe_at),
        })
    }
}

/// The columns of an event that [`event_from_row`] reads.
pub(crate) const EVENT_COLUMNS: &str = "id, account_id, type, timestamp, data";

/// Reads an event from columns named `{prefix}id`, `{prefix}account_id`, `{prefix}type`, ….
pub(crate) fn event_from_row<'r, R>(r: &'r R, prefix: &str) -> StoreResult<Event>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let col = |c: &str| format!("{prefix}{c}");
    event(
        r.try_get(col("id").as_str())?,
        r.try_get(col("account_id").as_str())?,
        r.try_get(col("type").as_str())?,
        r.try_get(col("timestamp").as_str())?,
        r.try_get(col("data").as_str())?,
    )
}

/// As [`event_from_row`], from a row of the SQLite writer's connection.
pub(crate) fn event_from_rusqlite(row: &rusqlite::Row<'_>, prefix: &str) -> StoreResult<Event> {
    let col = |c: &str| format!("{prefix}{c}");
    event(
        row.get(col("id").as_str())?,
        row.get(col("account_id").as_str())?,
        row.get(col("type").as_str())?,
        row.get(col("timestamp").as_str())?,
        row.get(col("data").as_str())?,
    )
}

columns! {
    /// The columns of an account, read by name.
    AccountColumns, ACCOUNT_COLUMNS {
        id: String,
        name: String,
        created_at: i64,
    }
}

impl AccountColumns {
    pub fn into_account(self) -> Account {
        Account {
            id: AccountId::from_trusted(self.id),
            name: self.name,
            created_at: Timestamp::from_millis(self.created_at),
        }
    }
}

columns! {
    /// The columns of an API key as lists show it (never its hash), read by name.
    ApiKeyColumns, API_KEY_COLUMNS {
        id: String,
        account_id: String,
        name: String,
        prefix: String,
        created_at: i64,
        last_used_at: Option<i64>,
        revoked_at: Option<i64>,
    }
}

impl ApiKeyColumns {
    pub fn into_info(self) -> ApiKeyInfo {
        ApiKeyInfo {
            id: ApiKeyId::from_trusted(self.id),
            account_id: AccountId::from_trusted(self.account_id),
            name: self.name,
            prefix: self.prefix,
            created_at: Timestamp::from_millis(self.created_at),
            last_used_at: self.last_used_at.map(Timestamp::from_millis),
            revoked_at: self.revoked_at.map(Timestamp::from_millis),
        }
    }
}

pub(crate) fn event(
    id: String,
    account: String,
    event_type: String,
    timestamp: i64,
    data: String,
) -> StoreResult<Event> {
    Ok(Event {
        id: EventId::from_trusted(id),
        account: AccountId::from_trusted(account),
        event_type,
        timestamp: Timestamp::from_millis(timestamp),
        data: RawValue::from_string(data).map_err(|e| corrupt("event data", e))?,
    })
}

columns! {
    /// The columns of a delivery, read by name.
    DeliveryColumns, DELIVERY_COLUMNS {
        id: String,
        account_id: String,
        event_id: String,
        event_type: String,
        webhook_id: String,
        status: String,
        attempts_made: i64,
        next_attempt_at: Option<i64>,
        created_at: i64,
        updated_at: i64,
        ordering_key: Option<String>,
        seq: Option<i64>,
    }
}

impl DeliveryColumns {
    pub fn into_delivery(self) -> StoreResult<Delivery> {
        let status = DeliveryStatus::parse(&self.status)
            .ok_or_else(|| corrupt("delivery status", &self.status))?;
        Ok(Delivery {
            id: DeliveryId::from_trusted(self.id),
            account: AccountId::from_trusted(self.account_id),
            event_id: EventId::from_trusted(self.event_id),
            event_type: self.event_type,
            webhook_id: WebhookId::from_trusted(self.webhook_id),
            status,
            attempts_made: self.attempts_made as u32,
            next_attempt_at: self
                .next_attempt_at
                .filter(|_| status == DeliveryStatus::Pending)
                .map(Timestamp::from_millis),
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
            ordering_key: WebhookOrdering::event_key_of(self.ordering_key),
            seq: self.seq,
        })
    }
}

columns! {
    /// The columns of an attempt, read by name.
    AttemptColumns, ATTEMPT_COLUMNS {
        id: String,
        number: i64,
        started_at: i64,
        duration_ms: i64,
        status_code: Option<i64>,
        error_kind: Option<String>,
        error: Option<String>,
        response_body: Option<String>,
        node: Option<String>,
    }
}

impl AttemptColumns {
    pub fn into_attempt(self) -> Attempt {
        Attempt {
            id: AttemptId::from_trusted(self.id),
            number: self.number as u32,
            started_at: Timestamp::from_millis(self.started_at),
            duration_ms: self.duration_ms.max(0) as u64,
            status_code: self.status_code.map(|c| c as u16),
            error_kind: self.error_kind.as_deref().and_then(ErrorKind::parse),
            error: self.error,
            response_body: self.response_body,
            node: self.node,
        }
    }
}

/// Cuts a page of `limit + 1` rows to `limit` and names the cursor of the next page.
pub(crate) fn paginate<T>(
    mut items: Vec<T>,
    limit: u32,
    id_of: impl Fn(&T) -> String,
) -> super::Page<T> {
    let limit = limit as usize;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(id_of)
    } else {
        None
    };
    super::Page { items, next_cursor }
}

/// Whether a webhook with these flow-control columns is held by its gate: paused by its
/// receiver (until a success clears it), or its circuit open (see `store::flow`).
pub(crate) fn held(paused_until: Option<i64>, probe_at: Option<i64>) -> bool {
    paused_until.is_some() || probe_at.is_some()
}

columns! {
    /// The columns of a job, read by name.
    JobColumns, JOB_COLUMNS {
        id: String,
        account_id: String,
        kind: String,
        status: String,
        progress: f64,
        input: Option<String>,
        result: Option<String>,
        error: Option<String>,
        webhook_url: Option<String>,
        created_at: i64,
        updated_at: i64,
        completed_at: Option<i64>,
    }
}

fn raw(what: &str, v: Option<String>) -> StoreResult<Option<Box<RawValue>>> {
    v.map(|s| RawValue::from_string(s).map_err(|e| corrupt(what, e)))
        .transpose()
}

impl JobColumns {
    pub fn into_job(self) -> StoreResult<crate::domain::Job> {
        Ok(crate::domain::Job {
            id: self.id,
            account: AccountId::from_trusted(self.account_id),
            kind: self.kind,
            status: crate::domain::JobStatus::parse(&self.status)
                .ok_or_else(|| corrupt("job status", &self.status))?,
            progress: self.progress,
            input: raw("job input", self.input)?,
            result: raw("job result", self.result)?,
            error: raw("job error", self.error)?,
            webhook_url: self.webhook_url,
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
            completed_at: self.completed_at.map(Timestamp::from_millis),
        })
    }
}
