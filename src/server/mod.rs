//! Server wiring: connect, migrate, build the services, serve until told to stop.
//! Tests drive the same [`Application`] on `127.0.0.1:0`.

mod authorizer_callers;
pub mod config;
pub mod health;
pub mod metrics;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::authorizer::usage::UsageRecorder;
use crate::authorizer::Authorizer;
use crate::cache::{CacheSettings, KeyCache};
use crate::domain::hashing::SecretHasher;
use crate::domain::policy::Policy;
use crate::freshness::Freshness;
use crate::grpc;
use crate::grpc::caller_auth::{CallerAuthLayer, CallerAuthSettings};
use crate::lifecycle::KeyManager;
use crate::replication::{self, Replica};
use crate::server::config::{
    DatabaseSettings, KeySettings, ReplicationSettings, Settings, TlsSettings,
};
use crate::store;

/// A bound, ready-to-serve Keygate.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    manager: KeyManager,
    pool: PgPool,
    policy_path: Option<PathBuf>,
    replica: Replica,
    reflection: bool,
    drain: Duration,
    database_unhealthy_after: Duration,
    tls: Option<TlsSettings>,
    metrics_listener: Option<TcpListener>,
    authorizer_callers: CallerAuthSettings,
}

/// Connects to the database; when asked to migrate, creates it if missing and
/// applies the migrations it lacks. An existing, current database needs no
/// rights beyond the runtime role's (see `docs/operations.md`).
pub async fn open_database(settings: &DatabaseSettings, migrate: bool) -> anyhow::Result<PgPool> {
    let connect = || store::connect(&settings.connect_options, settings.max_connections);
    let pool = match (connect().await, &settings.create_if_missing_url) {
        (Err(error), Some(url)) if migrate && store::is_missing_database(&error) => {
            store::create_database_if_missing(url).await?;
            connect().await?
        }
        (connected, _) => connected?,
    };
    if migrate {
        store::migrate(&pool).await?;
    }
    Ok(pool)
}

/// Builds the authorizer (cache, usage writer) and the key manager over an open
/// pool. Cache trust follows `freshness`; tools that run no listener pass
/// `Freshness::always_trusted()`.
pub fn key_manager(
    pool: PgPool,
    keys: &KeySettings,
    cache: CacheSettings,
    policy: Arc<Policy>,
    usage_flush_interval: Duration,
    freshness: Arc<Freshness>,
    replication: &ReplicationSettings,
) -> anyhow::Result<KeyManager> {
    let hasher = SecretHasher::new(keys.hashing, keys.hash_concurrency)
        .context("invalid argon2 settings")?;
    let usage = UsageRecorder::spawn(pool.clone(), usage_flush_interval);
    let authorizer = Authorizer::new(
        pool.clone(),
        hasher.clone(),
        keys.prefix.clone(),
        policy,
        KeyCache::new(cache),
        usage,
    )
    .with_freshness(freshness, replication.stale_policy);
    Ok(
        KeyManager::new(pool, hasher, keys.prefix.clone(), authorizer)
            .with_propagation(replication.propagation_timeout, replication.lease.lease),
    )
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.check_authorizer_callers()?;
        if settings.metrics_listen.is_some() {
            // Installed first, so that nothing recorded during start-up is lost.
            metrics::recorder();
        }
        let pool = open_database(&settings.database, settings.migrate).await?;
        let freshness = Freshness::new();
        let replication = &settings.replication;
        let manager = key_manager(
            pool.clone(),
            &settings.keys,
            settings.cache,
            settings.policy.clone(),
            settings.usage_flush_interval,
            freshness,
            replication,
        )?;
        let replica = replication::start(
            pool.clone(),
            manager.authorizer().clone(),
            manager.progress_feed().clone(),
            replication.replica_name.clone(),
            replication.lease,
        )
        .await
        .context("failed to register this replica")?;
        let manager = manager.with_origin(replica.id);
        if let Some(retention) = replication.event_retention {
            tokio::spawn(store::events::prune_events_forever(pool.clone(), retention));
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("failed to listen on {}", settings.listen))?;
        let local_addr = listener
            .local_addr()
            .context("failed to read the bound address")?;
        let metrics_listener = match settings.metrics_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("failed to listen for metrics on {address}"))?,
            ),
            None => None,
        };
        Ok(Application {
            listener,
            local_addr,
            manager,
            pool,
            policy_path: settings.policy_path,
            replica,
            reflection: settings.reflection,
            drain: settings.drain,
            database_unhealthy_after: settings.database_unhealthy_after,
            tls: settings.tls,
            metrics_listener,
            authorizer_callers: settings.authorizer_callers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn manager(&self) -> &KeyManager {
        &self.manager
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The server's own connection pool (tests close it to prove the hot path
    /// does no I/O).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown` completes, then lets in-flight calls finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health::report_started(&health_reporter).await;
        let authorizer = self.manager.authorizer().clone();
        let reloader = self
            .policy_path
            .clone()
            .map(|path| tokio::spawn(reload_policy_on_sighup(authorizer.clone(), path)));
        let stream_health = tokio::spawn(health::watch_event_stream(
            health_reporter.clone(),
            authorizer.freshness().clone(),
        ));
        let database_health = tokio::spawn(health::watch_database(
            health_reporter.clone(),
            self.pool.clone(),
            self.database_unhealthy_after,
        ));
        let database_health_stop = database_health.abort_handle();
        let metrics_server = match (self.metrics_listener, metrics::recorder()) {
            (Some(listener), Some(handle)) => {
                let sources = metrics::ScrapeSources {
                    cache: authorizer.cache().clone(),
                    freshness: authorizer.freshness().clone(),
                    pool: self.pool.clone(),
                };
                Some(tokio::spawn(metrics::serve_metrics(
                    listener, handle, sources,
                )))
            }
            _ => None,
        };
        let key_service = grpc::key_service(self.manager);
        let authorizer_service = grpc::authorizer_service(authorizer);
        // With no caller check, Authorize is served as it is: no layer at all.
        let caller_auth = CallerAuthLayer::new(&self.authorizer_callers);
        let (open_authorizer, guarded_authorizer) = match &caller_auth {
            None => (Some(authorizer_service), None),
            Some(layer) => (None, Some(tower::Layer::layer(layer, authorizer_service))),
        };
        authorizer_callers::log_at_start(&self.authorizer_callers, self.tls.is_some());
        let token_watcher = self
            .authorizer_callers
            .tokens
            .clone()
            .map(|tokens| tokio::spawn(authorizer_callers::watch_token_file(tokens)));
        tracing::info!(address = %self.local_addr, replica = %self.replica.name, "keygate serving");
        let drain_reporter = health_reporter.clone();
        let stopping_replica = self.replica.clone();
        let draining = Arc::new(tokio::sync::Notify::new());
        let draining_started = draining.clone();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down");
            draining_started.notify_one();
            stopping_replica.stop();
            database_health_stop.abort();
            health::report_draining(&drain_reporter).await;
        };
        let reflection_service = if self.reflection {
            let service = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(grpc::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .context("failed to build the reflection service")?;
            Some(service)
        } else {
            None
        };
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let mut builder = Server::builder().trace_fn(crate::server::telemetry::rpc_span);
        if let Some(tls) = &self.tls {
            let mut config =
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
            if let Some(client_ca) = &tls.client_ca_pem {
                config = config.client_ca_root(Certificate::from_pem(client_ca));
            }
            builder = builder.tls_config(config).context("invalid TLS settings")?;
            tracing::info!(mutual = tls.client_ca_pem.is_some(), "serving TLS");
        }
        let server = builder
            .add_service(grpc::with_status_on_span(health_service))
            .add_optional_service(reflection_service.map(grpc::with_status_on_span))
            .add_optional_service(open_authorizer)
            .add_optional_service(guarded_authorizer)
            .add_service(key_service)
            .serve_with_incoming_shutdown(incoming, shutdown);
        // In-flight calls may finish, but for at most `drain` after the signal.
        let drain = self.drain;
        let drain_deadline = async move {
            draining.notified().await;
            tokio::time::sleep(drain).await;
        };
        tokio::select! {
            served = server => served.context("gRPC server failed")?,
            _ = drain_deadline => {
                tracing::warn!(drain_seconds = drain.as_secs(), "drain time exceeded; stopping with calls in flight");
            }
        }
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        if let Some(token_watcher) = token_watcher {
            token_watcher.abort();
        }
        stream_health.abort();
        database_health.abort();
        if let Some(metrics_server) = metrics_server {
            metrics_server.abort();
        }
        replication::deregister(&self.pool, &self.replica).await;
        self.pool.close().await;
        tracing::info!("keygate stopped");
        Ok(())
    }
}

/// Reloads the policy file on every SIGHUP. An invalid file is refused and
/// logged; the policy in force stays.
async fn reload_policy_on_sighup(authorizer: Authorizer, path: PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; policy reload disabled");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            reload_policy(&authorizer, &path).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (authorizer, path);
    }
}

/// Loads `path` and puts it in force if valid; returns whether it did.
pub async fn reload_policy(authorizer: &Authorizer, path: &std::path::Path) -> bool {
    match Policy::load(Some(path)) {
        Ok(policy) => {
            let routes = policy.routes.len();
            authorizer.replace_policy(Arc::new(policy)).await;
            tracing::info!(path = %path.display(), routes, "policy reloaded");
            true
        }
        Err(error) => {
            tracing::error!(path = %path.display(), error = format!("{error:#}"), "policy reload refused; the previous policy stays in force");
            false
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
