//! A webhook's rate limit as the API takes it (create and `PATCH`, where `null` lifts it),
//! checked into the domain's [`RateLimit`] with the API's error naming the field.

use super::error::{ApiError, ApiResult};
use crate::domain::RateLimit;
use serde::Deserialize;
use utoipa::ToSchema;

/// A rate limit as asked for: `per_second` from 0.001 to 10,000, `burst` (deliveries that may
/// go at once after a quiet spell) from 1 to 10,000, default 1.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitDoc {
    #[schema(example = 50)]
    per_second: f64,
    #[schema(example = 5)]
    burst: Option<u32>,
}

impl RateLimitDoc {
    pub(crate) fn new(per_second: f64, burst: Option<u32>) -> Self {
        Self { per_second, burst }
    }
}

pub(super) fn parse_rate_limit(doc: Option<RateLimitDoc>) -> ApiResult<Option<RateLimit>> {
    doc.map(|d| RateLimit::new(d.per_second, d.burst.unwrap_or(1)))
        .transpose()
        .map_err(|e| ApiError::invalid("rate_limit", e))
}

/// A field that may be set to `null`: `Some(None)`, distinct from left out (`None`).
pub(super) fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
