//! `herald trigger <type>`: sends a test event of a catalog type (its example, or the data
//! given) to the account's webhooks that subscribe to it, or to the one named, with the
//! account's API key.
//!
//! Each webhook gets its own test send (`POST /v1/webhooks/{id}/test`, `api/test_send.rs`), so
//! the server checks the type and the data against the catalog and its schema, and no webhook
//! the account did not pick hears of it. Which webhooks subscribe is decided with the same
//! filters the server routes with (`EventFilter`); a job's own webhook is never a target.

use super::client::{Api, Page};
use crate::api::test_send::{TestSendAnswer, TestSendRequest};
use crate::domain::EventFilter;
use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Clone, Debug, clap::Args)]
pub struct TriggerArgs {
    /// The event type, as the catalog names it (GET /v1/event-types).
    #[arg(value_name = "TYPE")]
    pub event_type: String,
    /// The event's data (JSON); by default the catalog's example of the type.
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
    /// Herald's API.
    #[arg(
        long,
        env = "HERALD_API_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub api: url::Url,
    /// The account's API key.
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    pub key: String,
    /// Only this webhook, whatever it subscribes to.
    #[arg(long, value_name = "ID")]
    pub webhook: Option<String>,
}

/// A webhook as the CLI needs it from `GET /v1/webhooks`.
#[derive(Debug, Deserialize)]
struct Webhook {
    id: String,
    url: String,
    events: Vec<String>,
    status: String,
    kind: String,
}

/// Sends the test events and prints `webhook id  url  delivery id`, one line per webhook.
pub async fn run(args: TriggerArgs) -> anyhow::Result<()> {
    crate::install_tls_provider();
    let data = args
        .data
        .map(RawValue::from_string)
        .transpose()
        .context("--data is not JSON")?;
    let api = Api::new(&args.api, args.key)?;
    let targets = match &args.webhook {
        Some(id) => vec![api.get::<Webhook>(&format!("/v1/webhooks/{id}")).await?],
        None => subscribed(&api, &args.event_type).await?,
    };
    if targets.is_empty() {
        bail!(
            "no active webhook of this account subscribes to {}: subscribe one (POST /v1/webhooks), or name one with --webhook",
            args.event_type
        );
    }
    let request = TestSendRequest {
        event_type: Some(args.event_type),
        data,
    };
    for webhook in targets {
        let answer: TestSendAnswer = api
            .post(&format!("/v1/webhooks/{}/test", webhook.id), &request)
            .await
            .with_context(|| format!("webhook {}", webhook.id))?;
        let delivery = answer.delivery_id.map(|d| d.as_str().to_owned());
        println!(
            "{}  {}  {}",
            webhook.id,
            webhook.url,
            delivery.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// The account's active webhooks whose filters match `event_type`, jobs' own excepted.
async fn subscribed(api: &Api, event_type: &str) -> anyhow::Result<Vec<Webhook>> {
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/webhooks?limit=200".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Page<Webhook> = api.get(&path).await?;
        found.extend(page.data.into_iter().filter(|w| {
            w.status == "active"
                && w.kind != "job"
                && w.events
                    .iter()
                    .filter_map(|p| EventFilter::parse(p).ok())
                    .any(|f| f.matches(event_type))
        }));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(found),
        }
    }
}
