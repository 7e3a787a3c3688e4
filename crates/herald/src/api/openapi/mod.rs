//! The OpenAPI 3.1 document of the API, generated from the code so it cannot drift: each
//! handler's `#[utoipa::path]` (path, parameters, body, the answers particular to it) and the
//! `ToSchema` types it reads and answers with, gathered by [`super::documented_routes`]; then
//! the answers every route shares ([`errors`]) and what receivers get ([`receivers`], the
//! `webhooks` section), both from the settings in force. Served at `/openapi.json`, with
//! swagger-ui at `/docs` (`api/reference.rs`); a copy is committed as `docs/openapi.json`, kept
//! equal to what the server serves by `tests/it/openapi.rs`.
//!
//! **Documenting a new route.** Give its handler a `#[utoipa::path(...)]`: method and path, a
//! `tag`, an `operation_id` unique in the API (clients name their functions after it),
//! `security` (`("admin_token" = [])`, `("api_key" = [])`, both, or none for a public route),
//! `params` (path parameters; query parameters as an `IntoParams` struct), `request_body`, and
//! the answers particular to the route (its success, and 404/409/422 where they mean something
//! specific). Register it in its file's `routes()` with `.routes(routes!(handler))`. Derive
//! `ToSchema` on the types it reads and answers. Leave out what every route shares: 401, 429 and
//! 503 for an authenticated route, 403 for an admin-only one, 400/408/413/415/422 for a JSON
//! body, 422 for query parameters; [`errors::add_shared_errors`] adds them. Then regenerate the
//! committed copy as the failing test says.

mod errors;
mod receivers;

use super::error::ErrorBody;
use crate::config::Settings;
use crate::domain::Catalog;
use serde_json::Value;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "A self-hosted webhook delivery server: the provider publishes events and \
job status changes; Herald delivers them to its customers' URLs, signed per Standard Webhooks, \
retried on a schedule, every attempt logged, any delivery replayable.\n\n\
**Credentials.** Send `Authorization: Bearer <credential>`. The operator's admin token \
(`admin_token`) manages accounts, publishes events and jobs, and reads every account; with it, \
account-scoped calls name the account (`account` in the body, `?account=` on reads). An \
account's API key (`api_key`) manages that account's webhooks and reads its own events, jobs \
and deliveries; a foreign id answers 404, never 403.\n\n\
**Errors** are `{\"error\": {\"code\", \"message\", \"field\"?}}`.\n\n\
**Lists** take `?cursor=&limit=` and answer `{\"data\": [...], \"next_cursor\": \"…\" | null}`, \
newest first.\n\n\
**Deliveries** to receivers are described under `webhooks`, one per event type; the \
`operator:` entries are what the operator's own URL gets (`[operator]`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "accounts", description = "The provider's customers (admin token)"),
        (name = "webhooks", description = "Subscriptions: URLs and the event types they get"),
        (name = "events", description = "Publishing (admin token) and reading events"),
        (name = "jobs", description = "The provider's asynchronous work; each status change \
publishes an event"),
        (name = "deliveries", description = "The delivery log, with every attempt; manual retries"),
        (name = "tasks", description = "Background tasks (a webhook's recovery, bulk retries) \
and their progress"),
        (name = "me", description = "The account's own callback URL and signing secret"),
        (name = "keys", description = "API keys: an account's own (`/v1/me/keys`), any account's \
(admin token)"),
        (name = "meta", description = "Liveness, readiness, metrics, the event catalog and this document"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&Credentials),
)]
struct ApiDoc;

/// The two credentials, both sent as `Authorization: Bearer …`.
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            "admin_token",
            bearer(
                "The operator's admin token (`HERALD_ADMIN_TOKEN`, or the one generated in the \
                 data directory at first start).",
            ),
        );
        components.add_security_scheme(
            "api_key",
            bearer("An account's API key (`hk_…`), shown once when the account is created."),
        );
    }
}

/// The document's start: its information, tags and credentials; the routes add their paths.
pub fn base() -> Document {
    ApiDoc::openapi()
}

/// The document the server serves, from the routes' own descriptions (`paths`) and the
/// settings in force: the answers every route shares, and the `webhooks` section (one entry per
/// event type of `catalog`, describing the delivery a receiver gets).
pub fn complete(paths: Document, settings: &Settings, catalog: &Catalog) -> Value {
    let mut doc = serde_json::to_value(&paths).expect("the document serializes");
    if let Some(paths) = doc["paths"].as_object_mut() {
        super::reference::describe(paths);
    }
    errors::add_shared_errors(&mut doc);
    doc["webhooks"] = receivers::section(settings, catalog);
    doc
}

/// The whole document for `settings`, as `/openapi.json` serves it.
pub fn document(settings: &Settings) -> Result<Value, String> {
    let catalog = settings.catalog()?;
    let (_, paths) = super::documented_routes().split_for_parts();
    Ok(complete(paths, settings, &catalog))
}

/// One entry of a webhook's `events`, for the document: an event type, a prefix or `*`.
pub struct EventPattern;

impl utoipa::PartialSchema for EventPattern {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$"))
            .max_length(Some(130))
            .description(Some(
                "An event type of the catalog (`tts.completed`), every type under a prefix \
                 (`tts.*`), or every type (`*`)",
            ))
            .into()
    }
}

impl utoipa::ToSchema for EventPattern {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("EventPattern")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// axum's `Router` cannot list its routes, so this checks where they come from instead: a
    /// route is served undocumented only if it is added with axum's own routing (`.route(`,
    /// `.nest(`, `axum::routing`) rather than `routes!`. Only `reference.rs` may do that (its two
    /// routes are swagger-ui's, described by `reference::describe`). The other direction, every
    /// documented operation served, is `tests/it/openapi.rs`.
    #[test]
    fn every_route_is_added_through_routes_and_so_documented() {
        fn scan(dir: &Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    scan(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("reference.rs")
                    && !path.ends_with("openapi/mod.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for raw in [
                        ".route(",
                        ".route_service(",
                        ".nest(",
                        ".nest_service(",
                        "axum::routing",
                    ] {
                        if text.contains(raw) {
                            found.push(format!("{}: {raw}", path.display()));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        scan(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api"),
            &mut found,
        );
        assert!(
            found.is_empty(),
            "routes added without `routes!`, so missing from the document: {found:?}"
        );
    }
}
