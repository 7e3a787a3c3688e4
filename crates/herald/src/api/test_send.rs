//! What a test send carries: `POST /v1/webhooks/{id}/test` takes an optional
//! `{"type", "data"}` (what `herald trigger` sends). Without one it is a `webhook.test` event,
//! as it always was.
//!
//! A test send stays an event for one webhook (`only_webhook`), whatever the type: the account
//! can test its own endpoint with any event of the catalog, and no other webhook hears of it.

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::events::check_data;
use crate::domain::{DeliveryId, EventId, Webhook, WebhookStatus};
use crate::store::NewEvent;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::{RawValue, to_raw_value};
use utoipa::ToSchema;

/// The type a test send has unless the request names one.
const TEST_TYPE: &str = "webhook.test";

/// The optional body of `POST /v1/webhooks/{id}/test`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSendRequest {
    /// A type of the catalog; `webhook.test` when absent.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "tts.completed")]
    pub event_type: Option<String>,
    /// The event's data; the type's example in the catalog when absent. It must match the
    /// type's schema, as a published event's must.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub data: Option<Box<RawValue>>,
}

/// What `POST /v1/webhooks/{id}/test` answers (202).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestSendAnswer {
    pub event_id: EventId,
    /// The event's type.
    #[serde(rename = "type")]
    #[schema(example = "webhook.test")]
    pub event_type: String,
    /// The delivery to the webhook (its `webhook-id` header).
    pub delivery_id: Option<DeliveryId>,
}

/// The event a test send makes for `webhook`: the type asked for, which the catalog must know,
/// with the data given or the catalog's example, checked against the type's schema.
pub(super) fn test_event(
    state: &AppState,
    webhook: &Webhook,
    body: TestSendRequest,
) -> ApiResult<NewEvent> {
    let name = body.event_type.as_deref().unwrap_or(TEST_TYPE);
    let data = match body.data {
        None if name == TEST_TYPE => {
            // Herald's own test event, also where the catalog does not list the type.
            let data =
                json!({ "webhook_id": webhook.id, "message": "This is a test event from Herald." });
            to_raw_value(&data).expect("json serializes")
        }
        given => {
            let event_type = state
                .catalog
                .check_publishable(name)
                .map_err(|e| ApiError::invalid("type", e))?;
            let data = match given {
                Some(data) => data,
                None => {
                    let example = state
                        .catalog
                        .get(event_type.as_str())
                        .and_then(|t| t.example.as_ref())
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "data",
                                format!(
                                    "{name} has no example in the catalog: send the data to use"
                                ),
                            )
                        })?;
                    to_raw_value(example).expect("json serializes")
                }
            };
            check_data(state, event_type.as_str(), &data)?;
            data
        }
    };
    let mut event = NewEvent::new(webhook.account_id.clone(), name.to_owned(), data);
    event.only_webhook = Some(webhook.id.clone());
    Ok(event)
}

/// Sends a test event to an active webhook (the API's `POST /v1/webhooks/{id}/test` and the
/// portal's form): publishes it for that webhook only, and answers the event and its delivery.
pub(crate) async fn send_test(
    state: &AppState,
    webhook: &Webhook,
    body: TestSendRequest,
) -> ApiResult<TestSendAnswer> {
    if webhook.status != WebhookStatus::Active {
        return Err(ApiError::conflict(
            "webhook_disabled",
            "the webhook is disabled; enable it first",
        ));
    }
    let event = test_event(state, webhook, body)?;
    let published = state.store.publish_event(event).await?;
    state.deliveries_created(published.deliveries);
    let delivery = state
        .store
        .list_deliveries(
            &crate::store::DeliveryQuery {
                event: Some(published.event.id.clone()),
                ..Default::default()
            },
            &crate::store::PageRequest {
                after: None,
                limit: 1,
            },
        )
        .await?
        .items
        .into_iter()
        .next();
    Ok(TestSendAnswer {
        event_id: published.event.id,
        event_type: published.event.event_type,
        delivery_id: delivery.map(|d| d.id),
    })
}
