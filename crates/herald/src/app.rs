//! Builds a Herald server from settings and runs it until a shutdown token fires.
//! Tests start exactly this, on port 0.

use crate::api::rate_limit::RateLimiter;
use crate::api::{self, AppState, KnownAccounts};
use crate::config::{AdminToken, Settings};
use crate::dispatch::listeners::ListenerHub;
use crate::dispatch::{Dispatcher, Waker};
use crate::erasure::{Eraser, Erasures};
use crate::janitor::Janitor;
use crate::server;
use crate::store::operator::OperatorPolicy;
use crate::store::{self, DynStore, QueueGauges};
use crate::tasks::{TaskRunner, TaskWaker};
use crate::telemetry::{self, Metrics};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A built server: store open, migrations run, listener bound.
pub struct Herald {
    listener: TcpListener,
    state: AppState,
    dispatcher: Dispatcher,
    janitor: Janitor,
    tasks: TaskRunner,
    eraser: Eraser,
    gauges: Arc<dyn QueueGauges>,
    listeners: Arc<ListenerHub>,
    store: DynStore,
}

impl Herald {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        crate::install_tls_provider();
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
        if settings.dev {
            warn!(
                "DEVELOPMENT MODE: http:// URLs and private or loopback targets are allowed. Never run --dev in production."
            );
        }
        if settings.delivery.lease.0 <= crate::domain::retry::MAX_TIMEOUT {
            warn!(
                lease = ?settings.delivery.lease.0,
                "delivery.lease is not longer than the longest webhook timeout (60s): with several \
                 nodes, an attempt that outlives its lease may be repeated by another node"
            );
        }
        let admin_token = match &settings.admin_token {
            Some(t) => t.clone(),
            None => load_or_create_admin_token(&settings.data_dir)?,
        };
        let sealer = store::seal::Sealer::new(settings.secrets_key.as_ref());
        let store: DynStore = store::open(
            &settings.database_url(),
            settings.database_pool_size,
            sealer,
        )
        .await
        .context("opening the store")?;
        let operator = settings.operator_webhook()?;
        store
            .set_operator_webhook(operator.as_ref(), crate::domain::Timestamp::now())
            .await
            .context("setting up the operator's webhook ([operator])")?;
        let operator = operator.map(|_| {
            // Not the URL: it may carry a token of the operator's.
            info!("operator events are on ([operator])");
            OperatorPolicy {
                failing_after: settings.operator.failing_after.0,
            }
        });
        let catalog = settings.catalog().map_err(anyhow::Error::msg)?;
        let schemas =
            crate::schemas::EventSchemas::compile(catalog.types()).map_err(anyhow::Error::msg)?;
        let default_retry = settings.default_retry().map_err(anyhow::Error::msg)?;
        let waker = Waker::default();
        let metrics = Arc::new(Metrics::new());
        let node = settings.node_id();
        let listeners = ListenerHub::new(node.clone());
        let known_accounts = Arc::new(KnownAccounts::default());
        let erasures = Arc::new(Erasures::new(known_accounts.clone()));
        let dispatcher = Dispatcher::new(
            store.clone(),
            settings.delivery.clone(),
            settings.dev,
            node,
            waker.clone(),
            metrics.clone(),
            listeners.clone(),
            erasures.clone(),
        )?
        .with_operator(operator);
        let janitor = Janitor::new(store.clone(), &settings, metrics.clone());
        let eraser = Eraser::new(store.clone(), erasures.clone(), &settings, metrics.clone());
        let task_waker = TaskWaker::default();
        let tasks = TaskRunner::new(
            store.clone(),
            settings.tasks.clone(),
            settings.node_id(),
            task_waker.clone(),
            waker.clone(),
        );
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let limiter = Arc::new(RateLimiter::new(
            settings.api.rate_limit,
            settings.api.admin_rate_limit,
        ));
        let gauges = store.clone();
        let state = AppState {
            store: store.clone(),
            listeners: listeners.clone(),
            settings: Arc::new(settings),
            catalog: Arc::new(catalog),
            schemas: Arc::new(schemas),
            default_retry: Arc::new(default_retry),
            admin_token: Arc::from(admin_token.0.as_str()),
            waker,
            tasks: task_waker,
            metrics,
            limiter,
            known_accounts,
            erasures,
            key_use: Arc::default(),
        };
        Ok(Self {
            listener,
            state,
            dispatcher,
            janitor,
            tasks,
            eraser,
            gauges,
            listeners,
            store,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves the API and runs the dispatcher, the janitor, the eraser and the task runner until
    /// `shutdown` fires, then stops them gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        info!(addr = %self.local_addr(), "herald listening");
        let dispatcher = if self.state.settings.delivery.enabled {
            Some(tokio::spawn(self.dispatcher.run(shutdown.clone())))
        } else {
            warn!("delivery.enabled is false: deliveries are stored, and this node sends none");
            None
        };
        let gauges = tokio::spawn(telemetry::refresh_queue_gauges(
            self.state.metrics.clone(),
            self.gauges,
            QUEUE_GAUGE_INTERVAL,
            shutdown.clone(),
        ));
        let janitor = tokio::spawn(self.janitor.run(shutdown.clone()));
        let tasks = tokio::spawn(self.tasks.run(shutdown.clone()));
        let eraser = tokio::spawn(self.eraser.run(shutdown.clone()));
        let renewals = tokio::spawn(self.listeners.clone().renew(
            self.store.clone(),
            self.state.settings.listeners.lease.0,
            shutdown.clone(),
        ));
        let settings = &self.state.settings;
        let limits = server::Limits {
            max_connections: settings.api.max_connections,
            header_timeout: settings.api.header_timeout.0,
        }
        .fit_to_file_limit(settings.database_pool_size, settings.delivery.workers);
        let app = api::router(self.state);
        server::serve(self.listener, app, limits, shutdown.clone()).await?;
        if let Some(dispatcher) = dispatcher {
            dispatcher.await.context("dispatcher task")?;
        }
        // Only now: the attempts in flight at shutdown may be relayed ones, answered down
        // their streams.
        self.listeners.close().await;
        renewals.await.context("listener renewal task")?;
        janitor.await.context("janitor task")?;
        tasks.await.context("task runner")?;
        eraser.await.context("eraser task")?;
        // Every task holding the store has ended when this returns, so the store (and on
        // SQLite its lock file) is released with the last of them.
        gauges.await.context("queue gauge task")?;
        info!("herald stopped");
        Ok(())
    }
}

/// How often the queue gauges of `/metrics` are read from the store (at most).
const QUEUE_GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

const TOKEN_FILE: &str = "admin-token";

/// Reads the admin token kept in the data directory, or makes one on the first start, stores it
/// with mode 0600, and prints it once.
fn load_or_create_admin_token(dir: &Path) -> anyhow::Result<AdminToken> {
    let path = dir.join(TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_owned();
        if !token.is_empty() {
            info!(path = %path.display(), "using the admin token stored in the data directory");
            return Ok(AdminToken(token));
        }
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("hadm_{}", URL_SAFE_NO_PAD.encode(bytes));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    // Printed, not logged: this is the one time the operator sees it.
    println!(
        "Generated an admin token (shown once; stored in {}):\n\n    {token}\n",
        path.display()
    );
    Ok(AdminToken(token))
}
