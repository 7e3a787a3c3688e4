//! Typed settings: defaults, then a TOML file, then `HERALD_*` environment variables, then flags.
//!
//! Everything is parsed and checked here, at boot, so a bad value stops the start with a message
//! that names its key.

use crate::domain::address::AddressPolicy;
use crate::domain::duration::{HumanDuration, format_duration};
use crate::domain::event_type::{Catalog, EventTypeInfo, default_event_types};
use crate::domain::{RetryPolicy, SigningSecret, Timestamp, Webhook, WebhookUrl};
use crate::store::seal::{KEY_VARIABLE, SecretsKey};
use anyhow::{Context, bail};
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
    pub tasks: TaskSettings,
    pub operator: OperatorSettings,
    pub portal: PortalSettings,
}

mod sections;
#[cfg(test)]
mod tests;

pub use sections::*;

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
            tasks: TaskSettings::default(),
            operator: OperatorSettings::default(),
            portal: PortalSettings::default(),
        }
    }
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
        if let Ok(url) = std::env::var("HERALD_OPERATOR_URL")
            && !url.is_empty()
        {
            settings.operator.url = Some(url);
        }
        if let Ok(secret) = std::env::var("HERALD_OPERATOR_SECRET")
            && !secret.is_empty()
        {
            settings.operator.secret = Some(OperatorSecret(secret));
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
        if d.fresh_reserve.is_some_and(|r| r >= d.workers) {
            bail!(
                "delivery.fresh_reserve must be below delivery.workers (retries need one worker)"
            );
        }
        if d.per_webhook_concurrency == 0 {
            bail!("delivery.per_webhook_concurrency must be at least 1");
        }
        if d.retry_concurrency
            .is_some_and(|r| r == 0 || r > d.per_webhook_concurrency)
        {
            bail!(
                "delivery.retry_concurrency must be between 1 and delivery.per_webhook_concurrency"
            );
        }
        if d.retry_turns == Some(0) {
            bail!("delivery.retry_turns must be at least 1");
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
        let t = &self.tasks;
        if !(1..=100_000).contains(&t.batch) {
            bail!("tasks.batch must be between 1 and 100000");
        }
        if t.pace.0.is_zero() || t.poll_interval.0.is_zero() {
            bail!("tasks.pace and tasks.poll_interval must be above zero");
        }
        if t.lease.0 < Duration::from_secs(1) {
            bail!("tasks.lease must be at least 1s");
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
        self.operator_webhook()?;
        self.portal.check(self.dev).map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// The operator's webhook as the `[operator]` section describes it (`None` when it is
    /// unset), made at `now`: in the hidden operator account, subscribed to every operator
    /// event, signed per Standard Webhooks, on the default retry policy (`delivery.retry`).
    /// Every message names its key.
    pub fn operator_webhook(&self) -> anyhow::Result<Option<Webhook>> {
        let o = &self.operator;
        let (url, secret) = match (&o.url, &o.secret) {
            (None, None) => return Ok(None),
            (Some(url), Some(secret)) => (url, secret),
            (Some(_), None) => {
                bail!("operator.secret (HERALD_OPERATOR_SECRET) must be set with operator.url")
            }
            (None, Some(_)) => {
                bail!("operator.url (HERALD_OPERATOR_URL) must be set with operator.secret")
            }
        };
        // Trusted configuration: http and private addresses are fine (the egress policy is
        // for customers' URLs), the other rules of a webhook URL hold.
        let url = WebhookUrl::parse(url, true).map_err(|e| anyhow::anyhow!("operator.url: {e}"))?;
        let secret = SigningSecret::parse(&secret.0)
            .ok()
            .filter(|s| !s.is_ed25519())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "operator.secret must be a Standard Webhooks secret: \"whsec_\" and the base64 of 24 to 64 random bytes"
                )
            })?;
        if o.failing_after.0.is_zero() {
            bail!("operator.failing_after must be above zero");
        }
        if o.failing_after.0 >= self.delivery.disable_after.0 {
            bail!(
                "operator.failing_after ({}) must be below delivery.disable_after ({}), or webhooks are disabled before they are reported failing",
                format_duration(o.failing_after.0),
                format_duration(self.delivery.disable_after.0)
            );
        }
        let retry = self
            .default_retry()
            .map_err(|e| anyhow::anyhow!("delivery.retry: {e}"))?;
        Ok(Some(crate::store::operator::webhook(
            url,
            secret,
            retry,
            Timestamp::now(),
        )))
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
