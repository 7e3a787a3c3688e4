//! Herald's domain: pure types and rules (validated inputs, policies, records). No I/O here.
//!
//! A crate of its own, so that what needs only the rules (the fuzz targets) builds without the
//! server and its database, HTTP and TLS stack. The server re-exports it as `herald::domain`.
#![forbid(unsafe_code)]

pub mod address;
pub mod contract;
pub mod default_catalog;
pub mod duration;
pub mod event_type;
pub mod flow;
pub mod ids;
pub mod job;
pub mod model;
#[cfg(feature = "openapi")]
mod openapi;
pub mod ordering;
pub mod outcome;
pub mod retry;
pub mod routing;
pub mod secret;
pub mod shown;
pub mod task;
pub mod time;
pub mod url;

pub use contract::{PayloadFormat, SigningMode, WebhookKind};
pub use event_type::{Catalog, EventFilter, EventType, EventTypeInfo};
pub use flow::RateLimit;
pub use ids::{AccountId, ApiKeyId, AttemptId, DeliveryId, EventId, TaskId, WebhookId};
pub use job::{Job, JobPatch, JobStatus};
pub use model::{Account, Attempt, Delivery, DeliveryStatus, Event, Webhook, WebhookStatus};
pub use ordering::{OrderingKey, WebhookOrdering};
pub use outcome::{AttemptOutcome, ErrorKind};
pub use retry::{Jitter, RetryOn, RetryPolicy, RetryPolicyDoc};
pub use routing::{JobRef, Route};
pub use secret::{PublicKey, ReceiverKey, SigningSecret};
pub use task::{RequeueFilter, Task, TaskKind, TaskState};
pub use time::Timestamp;
pub use url::WebhookUrl;
