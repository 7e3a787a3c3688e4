//! Typed settings: defaults, then a TOML file, then `HERALD_*` environment variables, then flags.
//!
//! Everything is parsed and checked here, at boot, so a bad value stops the start with a message
//! that names its key.

use crate::domain::address::AddressPolicy;
use crate::domain::duration::HumanDuration;
use crate::domain::event_type::{Catalog, EventTypeInfo, default_event_types};
use crate::domain::{PayloadFormat, RetryPolicy, RetryPolicyDoc, SigningMode};
use crate::store::seal::{KEY_VARIABLE, SecretsKey};
use anyhow::{Context, bail};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The settings of one `herald serve` process.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP API listens on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Where the SQLite database and the generated admin token live.
    pub data_dir: PathBuf,
    /// `sqlite://…`; by default a file in the data directory.
    pub database_url: Option<String>,
    /// Allows `http://` URLs and private/loopback targets. For local development only.
    pub dev: bool,
    /// The operator's admin token; from `HERALD_ADMIN_TOKEN` only, never from a file or a flag.
    #[serde(skip)]
    pub admin_token: Option<AdminToken>,
    /// The key webhook secrets are encrypted with at rest; from `HERALD_SECRETS_KEY` only,
    /// never from a file or a flag. Unset: secrets are stored as they are.
    #[serde(skip)]
    pub secrets_key: Option<SecretsKey>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// How long an `Idempotency-Key` on publish is remembered.
    pub idempotency_window: HumanDuration,
    /// Most PostgreSQL connections this process opens.
    pub database_pool_size: u32,
    /// This node's name in attempt records; by default `<host name>-<process id>`.
    pub node_id: Option<String>,
    /// Accept event types outside the catalog.
    pub allow_unknown_event_types: bool,
    /// The event type catalog.
    pub event_types: Vec<EventTypeInfo>,
    /// Job kinds; each adds `<kind>.queued`, `.processing`, `.completed` and `.failed` to the
    /// catalog.
    pub job_kinds: Vec<String>,
    pub registration: RegistrationSettings,
    pub delivery: DeliverySettings,
    pub api: ApiSettings,
    pub retention: RetentionSettings,
    pub listeners: ListenerSettings,
}

/// `herald listen --forward-to` streams (`GET /v1/listen`) and their ephemeral webhooks.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerSettings {
    /// How long a listener webhook lives past its stream's last sign of life. The node holding
    /// the stream renews it every third of this; a CLI whose stream broke may take it up again
    /// (same webhook, same secret) within it; once it lapses (the node died, or the CLI did not
    /// come back), retention removes the webhook at its next pass.
    pub lease: HumanDuration,
    /// Streams one account may hold open at once on one node.
    pub max_per_account: usize,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            lease: HumanDuration(Duration::from_secs(60)),
            max_per_account: 10,
        }
    }
}

/// Limits of the HTTP API.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Requests each API key may make: a token bucket per key, kept in each node's memory (with
    /// N nodes behind a load balancer a key may get up to N times this).
    pub rate_limit: RateLimit,
    /// The admin token's own bucket. Unlimited by default: the admin token is the provider's
    /// own backend, and publishing is its hot path.
    pub admin_rate_limit: RateLimit,
    /// Open connections the API holds at most (lowered at start to fit the open-file limit).
    /// A new connection beyond it closes the longest-open one that has no request in progress.
    pub max_connections: usize,
    /// Time a connection has to send a complete request head, counted from when it opens and,
    /// on a kept-alive connection, from the end of the previous answer (so it is also the
    /// keep-alive idle timeout).
    pub header_timeout: HumanDuration,
    /// Time a request has to send its whole body once its head has arrived (408 after).
    pub body_timeout: HumanDuration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            rate_limit: RateLimit {
                per_second: 1000,
                burst: Some(2000),
            },
            admin_rate_limit: RateLimit::UNLIMITED,
            max_connections: 10_000,
            header_timeout: HumanDuration(Duration::from_secs(10)),
            body_timeout: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// A token bucket: `per_second` requests a second on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second; 0 means unlimited.
    pub per_second: u32,
    /// Requests that may arrive at once after a quiet spell; by default twice `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimit {
    pub const UNLIMITED: Self = Self {
        per_second: 0,
        burst: None,
    };

    pub fn is_unlimited(&self) -> bool {
        self.per_second == 0
    }

    /// The bucket's size.
    pub fn burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.per_second.saturating_mul(2))
    }
}

/// How long finished records are kept before the janitor prunes them.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Events whose deliveries have all finished (succeeded, failed or cancelled) are deleted
    /// with their deliveries and attempts once this old; `0` keeps them forever.
    pub events: HumanDuration,
    /// Finished (completed or failed) jobs are deleted this long after they finished, with
    /// their own webhook once its deliveries are gone; `0` keeps them forever.
    pub jobs: HumanDuration,
    /// How often a pruning pass runs (the first one a minute after start, or sooner).
    pub interval: HumanDuration,
    /// Most events (or jobs, or idempotency keys) deleted in one transaction.
    pub batch: usize,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            events: HumanDuration(Duration::from_secs(30 * 86_400)),
            jobs: HumanDuration(Duration::from_secs(30 * 86_400)),
            interval: HumanDuration(Duration::from_secs(600)),
            batch: 500,
        }
    }
}

/// How deliveries are made.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Whether this node sends deliveries. Off, it stores events and their deliveries but
    /// attempts none (other nodes on the same database still do): a node that only serves the
    /// API, or a server that must send nothing anywhere, such as the one the API fuzzing in
    /// `tests/it/openapi.rs` runs against, whose invented webhook URLs may name any host.
    pub enabled: bool,
    /// Attempts in flight at once on this node.
    pub workers: usize,
    /// Attempts in flight at once to one webhook on this node.
    pub per_webhook_concurrency: usize,
    /// Most deliveries leased in one claim.
    pub claim_batch: usize,
    /// How long a claim holds a delivery before another claim may take it. Keep it longer than
    /// the longest webhook timeout, or a slow attempt may be repeated by another node.
    pub lease: HumanDuration,
    /// Longest idle wait between looks at the queue (new work wakes the dispatcher sooner).
    pub poll_interval: HumanDuration,
    /// Bytes of each response body kept with the attempt.
    pub response_capture_bytes: usize,
    pub user_agent: String,
    pub event_type_header: String,
    pub attempt_header: String,
    /// A header carrying the delivery id besides `webhook-id` (seed 002's `X-QuillAI-Delivery`);
    /// empty for none. Empty `event_type_header` or `attempt_header` leave those out too.
    pub delivery_id_header: String,
    /// How `delivery_id_header` shows the id: `id` (`dlv_…`) or `uuid` (the same id as a UUID).
    pub delivery_id_format: DeliveryIdFormat,
    /// The envelope's field names.
    pub envelope: EnvelopeFields,
    /// A webhook whose attempts have all failed for this long is disabled.
    pub disable_after: HumanDuration,
    /// The retry policy of webhooks that do not set their own.
    pub retry: RetryPolicyDoc,
    /// How long shutdown waits for attempts in flight.
    pub shutdown_grace: HumanDuration,
    /// Private networks deliveries may reach outside dev mode (CIDR, e.g. `"10.20.0.0/16"`):
    /// let through both when a webhook URL is checked and at connect time, after DNS.
    pub allow_networks: Vec<IpNet>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./herald-data"),
            database_url: None,
            node_id: None,
            database_pool_size: 16,
            dev: false,
            admin_token: None,
            secrets_key: None,
            body_limit: 256 * 1024,
            idempotency_window: HumanDuration(Duration::from_secs(24 * 3600)),
            allow_unknown_event_types: false,
            event_types: default_event_types(),
            job_kinds: crate::domain::default_catalog::DEFAULT_JOB_KINDS
                .map(String::from)
                .to_vec(),
            registration: RegistrationSettings::default(),
            delivery: DeliverySettings::default(),
            api: ApiSettings::default(),
            retention: RetentionSettings::default(),
            listeners: ListenerSettings::default(),
        }
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: 64,
            per_webhook_concurrency: 16,
            claim_batch: 256,
            lease: HumanDuration(Duration::from_secs(120)),
            poll_interval: HumanDuration(Duration::from_secs(1)),
            response_capture_bytes: 4096,
            user_agent: format!("Herald-Webhooks/{}", env!("CARGO_PKG_VERSION")),
            event_type_header: "herald-event-type".to_owned(),
            attempt_header: "herald-attempt".to_owned(),
            delivery_id_header: String::new(),
            delivery_id_format: DeliveryIdFormat::Id,
            envelope: EnvelopeFields::default(),
            disable_after: HumanDuration(Duration::from_secs(5 * 86_400)),
            retry: RetryPolicyDoc::default(),
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
            allow_networks: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryIdFormat {
    Id,
    Uuid,
}

/// The names of the envelope's three fields (seed 000 calls `type` `event`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvelopeFields {
    #[serde(rename = "type")]
    pub type_field: String,
    #[serde(rename = "timestamp")]
    pub timestamp_field: String,
    #[serde(rename = "data")]
    pub data_field: String,
}

impl Default for EnvelopeFields {
    fn default() -> Self {
        Self {
            type_field: "type".into(),
            timestamp_field: "timestamp".into(),
            data_field: "data".into(),
        }
    }
}

/// What webhooks made by one registration model get unless they say otherwise.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelDefaults {
    pub signing: SigningMode,
    pub format: PayloadFormat,
    /// Unset: the operator's default policy (`delivery.retry`).
    pub retry: Option<RetryPolicyDoc>,
}

impl Default for ModelDefaults {
    fn default() -> Self {
        Self {
            signing: SigningMode::Standard,
            format: PayloadFormat::Envelope,
            retry: None,
        }
    }
}

/// Defaults per registration model.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationSettings {
    /// `POST /v1/webhooks` (a request may set its own signing, format and retry).
    pub subscription: ModelDefaults,
    /// `PUT /v1/me/callback-url`.
    pub callback: ModelDefaults,
    /// A job's `webhook_url`.
    pub job: ModelDefaults,
}

/// The admin token. `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

/// Flags of `herald serve`; each has an environment variable and a config-file key.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: ./herald-data].
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL [default: a SQLite file in the data directory].
    #[arg(long, env = "HERALD_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Development mode: allow http:// URLs and private or loopback targets.
    #[arg(long, env = "HERALD_DEV", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub dev: bool,
}

impl Settings {
    /// Builds the settings from the file the flags name (if any), the environment and the flags.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut settings = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let mut settings = toml::from_str::<Settings>(&text)
                    .with_context(|| format!("in configuration file {}", path.display()))?;
                let dir = path.parent().unwrap_or(std::path::Path::new("."));
                crate::schemas::read_schema_files(&mut settings.event_types, dir)?;
                settings
            }
            None => Settings::default(),
        };
        if let Some(listen) = args.listen {
            settings.listen = listen;
        }
        if let Some(dir) = &args.data_dir {
            settings.data_dir = dir.clone();
        }
        if let Some(url) = &args.database_url {
            settings.database_url = Some(url.clone());
        }
        settings.dev |= args.dev;
        if let Ok(node) = std::env::var("HERALD_NODE_ID")
            && !node.is_empty()
        {
            settings.node_id = Some(node);
        }
        if let Ok(token) = std::env::var("HERALD_ADMIN_TOKEN")
            && !token.is_empty()
        {
            settings.admin_token = Some(AdminToken(token));
        }
        if let Ok(key) = std::env::var(KEY_VARIABLE)
            && !key.is_empty()
        {
            settings.secrets_key = Some(SecretsKey::parse(&key).map_err(anyhow::Error::msg)?);
        }
        settings.check()?;
        Ok(settings)
    }

    /// Checks what serde cannot; every message names its key.
    pub fn check(&self) -> anyhow::Result<()> {
        let d = &self.delivery;
        if d.workers == 0 || d.workers > 10_000 {
            bail!("delivery.workers must be between 1 and 10000");
        }
        if d.per_webhook_concurrency == 0 {
            bail!("delivery.per_webhook_concurrency must be at least 1");
        }
        if d.claim_batch == 0 {
            bail!("delivery.claim_batch must be at least 1");
        }
        if d.lease.0 < Duration::from_secs(1) {
            bail!("delivery.lease must be at least 1s");
        }
        if d.poll_interval.0.is_zero() {
            bail!("delivery.poll_interval must be above zero");
        }
        if !(2..=1000).contains(&self.database_pool_size) {
            bail!("database_pool_size must be between 2 and 1000");
        }
        if self.body_limit < 1024 {
            bail!("body_limit must be at least 1024 bytes");
        }
        if self.api.max_connections == 0 {
            bail!("api.max_connections must be at least 1");
        }
        if self.api.header_timeout.0.is_zero() || self.api.body_timeout.0.is_zero() {
            bail!("api.header_timeout and api.body_timeout must be above zero");
        }
        for (key, name) in [
            ("delivery.event_type_header", &d.event_type_header),
            ("delivery.attempt_header", &d.attempt_header),
        ] {
            if !name.is_empty() {
                http::HeaderName::try_from(name.as_str())
                    .map_err(|_| anyhow::anyhow!("{key}: {name:?} is not a valid header name"))?;
            }
        }
        http::HeaderValue::try_from(d.user_agent.as_str())
            .context("delivery.user_agent is not a valid header value")?;
        self.default_retry()
            .map_err(|e| anyhow::anyhow!("delivery.retry: {e}"))?;
        let r = &self.registration;
        for (key, model) in [
            ("subscription", &r.subscription),
            ("callback", &r.callback),
            ("job", &r.job),
        ] {
            self.model_retry(model)
                .map_err(|e| anyhow::anyhow!("registration.{key}.retry: {e}"))?;
            model
                .signing
                .validate()
                .map_err(|e| anyhow::anyhow!("registration.{key}.signing: {e}"))?;
        }
        for kind in &self.job_kinds {
            crate::domain::EventType::parse(kind).map_err(|e| anyhow::anyhow!("job_kinds: {e}"))?;
        }
        if !d.delivery_id_header.is_empty() {
            http::HeaderName::try_from(d.delivery_id_header.as_str()).map_err(|_| {
                anyhow::anyhow!("delivery.delivery_id_header is not a valid header name")
            })?;
        }
        let catalog = self
            .catalog()
            .map_err(|e| anyhow::anyhow!("event_types: {e}"))?;
        crate::schemas::EventSchemas::compile(catalog.types()).map_err(anyhow::Error::msg)?;
        for (key, limit) in [
            ("api.rate_limit", &self.api.rate_limit),
            ("api.admin_rate_limit", &self.api.admin_rate_limit),
        ] {
            if !limit.is_unlimited() && limit.burst() == 0 {
                bail!("{key}.burst must be at least 1 (or per_second 0 for no limit)");
            }
        }
        let r = &self.retention;
        if r.interval.0 < Duration::from_millis(10) {
            bail!("retention.interval must be at least 10ms");
        }
        if !(1..=10_000).contains(&r.batch) {
            bail!("retention.batch must be between 1 and 10000");
        }
        if self.listeners.lease.0 < Duration::from_secs(1) {
            bail!("listeners.lease must be at least 1s");
        }
        Ok(())
    }

    /// The retry policy of webhooks that set none.
    pub fn default_retry(&self) -> Result<RetryPolicy, String> {
        RetryPolicy::from_doc(&self.delivery.retry, &RetryPolicy::default())
    }

    /// The configured event types, the job kinds' status events, and `webhook.disabled`; the
    /// ones added here carry the schema and an example of the data Herald gives them.
    pub fn catalog(&self) -> Result<Catalog, String> {
        use crate::domain::default_catalog::{job_event, webhook_disabled};
        let mut types = self.event_types.clone();
        let mut add = |name: String, description: String, (schema, example): (Value, Value)| {
            if !types.iter().any(|t| t.name == name) {
                types.push(EventTypeInfo {
                    name,
                    description,
                    schema: Some(schema),
                    example: Some(example),
                    ..EventTypeInfo::default()
                });
            }
        };
        for kind in &self.job_kinds {
            for status in crate::domain::JobStatus::ALL {
                add(
                    format!("{kind}.{}", status.as_str()),
                    format!("A {kind} job is {}", status.as_str()),
                    job_event(kind, status),
                );
            }
        }
        add(
            "webhook.disabled".into(),
            "A webhook of the account was disabled".into(),
            webhook_disabled(),
        );
        Catalog::new(types, self.allow_unknown_event_types)
    }

    /// The retry policy of webhooks made by a registration model.
    pub fn model_retry(&self, model: &ModelDefaults) -> Result<RetryPolicy, String> {
        let default = self.default_retry()?;
        match &model.retry {
            Some(doc) => RetryPolicy::from_doc(doc, &default),
            None => Ok(default),
        }
    }

    /// Where webhook URLs and deliveries may point.
    pub fn address_policy(&self) -> AddressPolicy {
        AddressPolicy::new(self.dev, self.delivery.allow_networks.clone())
    }

    /// This node's name.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "herald".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The database URL in force.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("herald.db").display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_parse_and_unknown_keys_are_named() {
        let s: Settings = toml::from_str(
            r#"
            listen = "0.0.0.0:9000"
            [delivery]
            workers = 8
            allow_networks = ["10.20.0.0/16", "fd00::/8"]
            retry = { schedule = ["1s", "5s"], retry_on = "transient" }
            [[event_types]]
            name = "render.done"
            "#,
        )
        .unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.delivery.workers, 8);
        assert_eq!(s.default_retry().unwrap().schedule.len(), 2);
        assert_eq!(s.event_types.len(), 1);
        assert!(s.address_policy().permits("10.20.3.4".parse().unwrap()));
        assert!(!s.address_policy().permits("10.21.3.4".parse().unwrap()));
        s.check().unwrap();
        let err = toml::from_str::<Settings>("[delivery]\nallow_networks = [\"10.0.0.0/33\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow_networks"), "{err}");

        let err = toml::from_str::<Settings>("[delivery]\nworkerz = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("workerz"), "{err}");
        let bad: Settings =
            toml::from_str("[delivery]\nretry = { schedule = [\"soon\"] }").unwrap();
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("delivery.retry")
        );
    }

    #[test]
    fn schema_files_are_read_beside_the_configuration_and_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("schemas")).unwrap();
        std::fs::write(
            dir.path().join("schemas/render.json"),
            r#"{"type": "object", "required": ["id"]}"#,
        )
        .unwrap();
        let config = dir.path().join("herald.toml");
        let write = |example: &str| {
            std::fs::write(
                &config,
                format!(
                    "[[event_types]]\nname = \"render.completed\"\nschema_file = \"schemas/render.json\"\nexample = {example}\n"
                ),
            )
            .unwrap()
        };
        let args = ServeArgs {
            config: Some(config.clone()),
            ..ServeArgs::default()
        };
        write("{ id = \"r-1\" }");
        let s = Settings::load(&args).unwrap();
        assert_eq!(
            s.event_types[0].schema.as_ref().unwrap()["required"][0],
            "id"
        );
        write("{ name = \"r-1\" }");
        let err = format!("{:#}", Settings::load(&args).unwrap_err());
        assert!(
            err.contains("event_types[\"render.completed\"].example")
                && err.contains("data.id is required"),
            "{err}"
        );
    }

    #[test]
    fn rate_limits_and_retention_parse_with_their_defaults_and_are_checked() {
        let d = Settings::default();
        assert_eq!(
            (d.api.rate_limit.per_second, d.api.rate_limit.burst()),
            (1000, 2000)
        );
        assert!(d.api.admin_rate_limit.is_unlimited());
        assert_eq!(d.retention.events.0, Duration::from_secs(30 * 86_400));
        d.check().unwrap();

        let s: Settings = toml::from_str(
            "[api]\nrate_limit = { per_second = 5 }\nadmin_rate_limit = { per_second = 50, burst = 1 }\n\
             [retention]\nevents = \"0\"\njobs = \"7d\"\ninterval = \"1m\"\nbatch = 100\n",
        )
        .unwrap();
        assert_eq!(
            s.api.rate_limit.burst(),
            10,
            "burst defaults to twice the rate"
        );
        assert_eq!(s.api.admin_rate_limit.burst(), 1);
        assert!(s.retention.events.0.is_zero());
        s.check().unwrap();

        let no_burst: Settings =
            toml::from_str("[api]\nrate_limit = { per_second = 5, burst = 0 }").unwrap();
        let err = no_burst.check().unwrap_err().to_string();
        assert!(err.contains("api.rate_limit.burst"), "{err}");
        let zero_batch: Settings = toml::from_str("[retention]\nbatch = 0").unwrap();
        let err = zero_batch.check().unwrap_err().to_string();
        assert!(err.contains("retention.batch"), "{err}");
        let err = toml::from_str::<Settings>("[retention]\nevent = \"1d\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("event"), "{err}");
    }
}
