//! Configuration: one typed struct per command, from flags or `KEYGATE_*`
//! environment variables, validated at start with errors that name the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::Args;
use sqlx::postgres::PgConnectOptions;

use crate::cache::CacheSettings;
use crate::domain::hashing::HashingParams;
use crate::domain::policy::Policy;
use crate::domain::token::TokenPrefix;
use crate::freshness::StalePolicy;
use crate::grpc::caller_auth::{AllowedClients, CallerAuthSettings, CallerTokens};
use crate::replication::LeaseSettings;

/// The default database: the local server, database `keygate` (created when missing).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/keygate";

#[derive(Args, Clone)]
pub struct DatabaseArgs {
    /// Postgres connection URL.
    #[arg(long, env = "KEYGATE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Largest number of pooled database connections.
    #[arg(long, env = "KEYGATE_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
}

#[derive(Args, Clone)]
pub struct KeyArgs {
    /// Prefix of issued tokens (2-16 lowercase letters or digits, starting with a letter).
    #[arg(long, env = "KEYGATE_TOKEN_PREFIX", default_value = "kg")]
    pub token_prefix: String,
    /// argon2id memory cost in KiB for new hashes.
    #[arg(long, env = "KEYGATE_ARGON2_MEMORY_KIB", default_value_t = HashingParams::DEFAULT.memory_kib)]
    pub argon2_memory_kib: u32,
    /// argon2id iterations (time cost) for new hashes.
    #[arg(long, env = "KEYGATE_ARGON2_ITERATIONS", default_value_t = HashingParams::DEFAULT.iterations)]
    pub argon2_iterations: u32,
    /// argon2id lanes (parallelism) for new hashes.
    #[arg(long, env = "KEYGATE_ARGON2_PARALLELISM", default_value_t = HashingParams::DEFAULT.parallelism)]
    pub argon2_parallelism: u32,
    /// Most argon2 computations at once (0 = one per CPU).
    #[arg(long, env = "KEYGATE_HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,
}

/// On/off settings (`--no-migrate`, …) read from the environment take `1`/`0`,
/// `true`/`false`, `yes`/`no` and `on`/`off` ([`BoolishValueParser`]).
#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "KEYGATE_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Policy file (permission catalog); the embedded PayNext example when unset.
    #[arg(long, env = "KEYGATE_POLICY")]
    pub policy: Option<PathBuf>,
    /// Do not apply migrations at start.
    #[arg(long, env = "KEYGATE_NO_MIGRATE", value_parser = BoolishValueParser::new())]
    pub no_migrate: bool,
    /// Server certificate chain (PEM); with --tls-key, serves TLS.
    #[arg(long, env = "KEYGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "KEYGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) for client certificates; when set, clients must present
    /// a certificate signed by it (mutual TLS).
    #[arg(long, env = "KEYGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Client certificate identities allowed to call Authorize, comma-separated:
    /// SAN DNS names or URIs (SPIFFE ids); needs --tls-client-ca.
    #[arg(
        long,
        env = "KEYGATE_AUTHORIZER_ALLOWED_CLIENTS",
        value_delimiter = ','
    )]
    pub authorizer_allowed_clients: Vec<String>,
    /// File of caller tokens, one a line, one of which Authorize callers must
    /// send as `x-keygate-caller-token`; re-read when it changes and on SIGHUP.
    #[arg(long, env = "KEYGATE_AUTHORIZER_TOKEN_FILE")]
    pub authorizer_token_file: Option<PathBuf>,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "KEYGATE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Do not serve `/metrics`.
    #[arg(long, env = "KEYGATE_NO_METRICS", value_parser = BoolishValueParser::new())]
    pub no_metrics: bool,
    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish.
    #[arg(long, env = "KEYGATE_DRAIN_SECONDS", default_value_t = 30)]
    pub drain_seconds: u64,
    /// Do not serve gRPC server reflection (on by default, for `buf curl` and grpcurl).
    #[arg(long, env = "KEYGATE_NO_REFLECTION", value_parser = BoolishValueParser::new())]
    pub no_reflection: bool,
    /// Trace health checks and server reflection too (left out by default:
    /// probes every few seconds would outnumber the calls worth tracing).
    // Not in `Settings`: the telemetry that reads it starts before them.
    #[arg(
        long,
        env = "KEYGATE_TRACE_HEALTH_CHECKS",
        value_parser = BoolishValueParser::new()
    )]
    pub trace_health_checks: bool,
    /// Health reports NOT_SERVING once the database has been unreachable this long.
    #[arg(
        long,
        env = "KEYGATE_DATABASE_UNHEALTHY_AFTER_SECONDS",
        default_value_t = 10
    )]
    pub database_unhealthy_after_seconds: u64,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub replication: ReplicationArgs,
}

#[derive(Args, Clone)]
pub struct CacheArgs {
    /// Most keys each replica caches.
    #[arg(long, env = "KEYGATE_CACHE_CAPACITY", default_value_t = CacheSettings::default().capacity)]
    pub cache_capacity: u64,
    /// Seconds a cached key lives (a backstop; changes reach the cache at once).
    #[arg(long, env = "KEYGATE_CACHE_TTL_SECONDS", default_value_t = CacheSettings::default().ttl.as_secs())]
    pub cache_ttl_seconds: u64,
    /// Seconds an unknown key id is remembered as unknown.
    #[arg(long, env = "KEYGATE_NEGATIVE_CACHE_TTL_SECONDS", default_value_t = CacheSettings::default().negative_ttl.as_secs())]
    pub negative_cache_ttl_seconds: u64,
    /// Most argon2 verifications per key id per second (bounds the cost of bad secrets).
    #[arg(long, env = "KEYGATE_VERIFICATIONS_PER_KEY_PER_SECOND", default_value_t = CacheSettings::default().verifications_per_second)]
    pub verifications_per_key_per_second: u32,
}

impl CacheArgs {
    pub fn settings(&self) -> anyhow::Result<CacheSettings> {
        if self.cache_capacity == 0 {
            anyhow::bail!("KEYGATE_CACHE_CAPACITY must be at least 1");
        }
        if self.cache_ttl_seconds == 0 {
            anyhow::bail!("KEYGATE_CACHE_TTL_SECONDS must be at least 1");
        }
        if self.verifications_per_key_per_second == 0 {
            anyhow::bail!("KEYGATE_VERIFICATIONS_PER_KEY_PER_SECOND must be at least 1");
        }
        Ok(CacheSettings {
            capacity: self.cache_capacity,
            ttl: Duration::from_secs(self.cache_ttl_seconds),
            negative_ttl: Duration::from_secs(self.negative_cache_ttl_seconds),
            verifications_per_second: self.verifications_per_key_per_second,
        })
    }
}

#[derive(Args, Clone)]
pub struct BootstrapArgs {
    /// Name of the system key to create.
    #[arg(long, default_value = "bootstrap")]
    pub name: String,
    /// Do not create or migrate the database first (it must be migrated already).
    #[arg(long, env = "KEYGATE_NO_MIGRATE", value_parser = BoolishValueParser::new())]
    pub no_migrate: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// Validated database settings.
#[derive(Clone)]
pub struct DatabaseSettings {
    pub connect_options: PgConnectOptions,
    pub max_connections: u32,
    /// Create the database when it does not exist (only when migrating).
    pub create_if_missing_url: Option<String>,
}

impl DatabaseArgs {
    pub fn settings(&self) -> anyhow::Result<DatabaseSettings> {
        // Checked here: the driver would accept other schemes and fail only
        // on first use. The URL itself is never echoed (it may hold a password).
        let scheme = self
            .database_url
            .split_once("://")
            .map(|(scheme, _)| scheme);
        // URL schemes are case-insensitive.
        let is_postgres = scheme.is_some_and(|scheme| {
            scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
        });
        if !is_postgres {
            anyhow::bail!(
                "KEYGATE_DATABASE_URL (--database-url) must start with postgres:// or postgresql://"
            );
        }
        let connect_options = PgConnectOptions::from_str(&self.database_url)
            .context("KEYGATE_DATABASE_URL (--database-url) is not a valid Postgres URL")?;
        if self.database_max_connections == 0 {
            anyhow::bail!("KEYGATE_DATABASE_MAX_CONNECTIONS must be at least 1");
        }
        Ok(DatabaseSettings {
            connect_options,
            max_connections: self.database_max_connections,
            create_if_missing_url: Some(self.database_url.clone()),
        })
    }
}

/// Validated key-issuing settings.
#[derive(Clone)]
pub struct KeySettings {
    pub prefix: TokenPrefix,
    pub hashing: HashingParams,
    pub hash_concurrency: usize,
}

impl KeyArgs {
    pub fn settings(&self) -> anyhow::Result<KeySettings> {
        let prefix = TokenPrefix::parse(&self.token_prefix)
            .map_err(|message| anyhow::anyhow!("KEYGATE_TOKEN_PREFIX: {message}"))?;
        let hashing = HashingParams {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        };
        hashing.validate().context(
            "KEYGATE_ARGON2_MEMORY_KIB, KEYGATE_ARGON2_ITERATIONS, KEYGATE_ARGON2_PARALLELISM",
        )?;
        let hash_concurrency = match self.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            configured => configured,
        };
        Ok(KeySettings {
            prefix,
            hashing,
            hash_concurrency,
        })
    }
}

/// Everything `serve` needs, validated.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database: DatabaseSettings,
    pub keys: KeySettings,
    pub cache: CacheSettings,
    pub policy: Arc<Policy>,
    /// Where the policy came from; SIGHUP reloads it. `None`: the embedded default.
    pub policy_path: Option<PathBuf>,
    pub migrate: bool,
    /// Serve gRPC server reflection.
    pub reflection: bool,
    /// How long in-flight calls may take to finish after a stop signal.
    pub drain: Duration,
    /// How long the database may be unreachable before health reports NOT_SERVING.
    pub database_unhealthy_after: Duration,
    /// Server TLS (and mutual TLS when a client CA is set); `None`: plaintext.
    pub tls: Option<TlsSettings>,
    /// Where `/metrics` is served; `None`: not at all.
    pub metrics_listen: Option<SocketAddr>,
    /// How often `last_used_at` marks are written.
    pub usage_flush_interval: Duration,
    pub replication: ReplicationSettings,
    /// What Authorize's callers must present; the default asks nothing.
    pub authorizer_callers: CallerAuthSettings,
}

impl Settings {
    /// Refuses caller checks that cannot work: an allowlist of client
    /// certificates needs mutual TLS.
    pub fn check_authorizer_callers(&self) -> anyhow::Result<()> {
        let mutual_tls = self
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca_pem.is_some());
        check_authorizer_callers(&self.authorizer_callers, mutual_tls)
    }
}

fn check_authorizer_callers(callers: &CallerAuthSettings, mutual_tls: bool) -> anyhow::Result<()> {
    if callers.allowed_clients.is_some() && !mutual_tls {
        anyhow::bail!(
            "KEYGATE_AUTHORIZER_ALLOWED_CLIENTS (--authorizer-allowed-clients) needs mutual TLS: \
             set KEYGATE_TLS_CLIENT_CA (--tls-client-ca), with KEYGATE_TLS_CERT and KEYGATE_TLS_KEY"
        );
    }
    Ok(())
}

/// Cross-replica invalidation settings.
#[derive(Debug, Clone)]
pub struct ReplicationSettings {
    /// This replica's name in the `replicas` table and in propagation reports.
    pub replica_name: String,
    pub stale_policy: StalePolicy,
    pub lease: LeaseSettings,
    /// How long a mutation waits for every live replica to apply its event.
    pub propagation_timeout: Duration,
    /// Events older than this are deleted; `None` keeps them forever.
    pub event_retention: Option<Duration>,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        ReplicationSettings {
            replica_name: default_replica_name(),
            stale_policy: StalePolicy::FailClosed,
            lease: LeaseSettings::default(),
            propagation_timeout: Duration::from_secs(5),
            event_retention: Some(Duration::from_secs(365 * 86_400)),
        }
    }
}

/// `$HOSTNAME-<random>`, else `keygate-<random>`: one name per process, so that
/// replicas sharing a host (or a hostname) tell apart in propagation reports.
pub fn default_replica_name() -> String {
    let hostname = std::env::var("HOSTNAME").ok();
    replica_name_on(hostname.as_deref())
}

/// A new replica name on `hostname`: it and 8 random hex digits.
fn replica_name_on(hostname: Option<&str>) -> String {
    let host = hostname
        .filter(|name| !name.is_empty())
        .unwrap_or("keygate");
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

#[derive(Args, Clone)]
pub struct ReplicationArgs {
    /// This replica's name in propagation reports (default: $HOSTNAME-<random>).
    #[arg(long, env = "KEYGATE_REPLICA_NAME")]
    pub replica_name: Option<String>,
    /// What to do with a cached key that cannot be confirmed while the event
    /// stream and the database are both unreachable: fail_closed or serve_stale.
    #[arg(long, env = "KEYGATE_ON_UNVERIFIABLE", default_value = "fail_closed")]
    pub on_unverifiable: String,
    /// With serve_stale: the longest time to keep serving unconfirmed keys.
    #[arg(long, env = "KEYGATE_SERVE_STALE_MAX_SECONDS", default_value_t = 30)]
    pub serve_stale_max_seconds: u64,
    /// How long a mutation waits for every live replica to apply it; longer than
    /// the lease (3 s), so that a partitioned replica's lease runs out first.
    #[arg(long, env = "KEYGATE_PROPAGATION_TIMEOUT_MS", default_value_t = 5000)]
    pub propagation_timeout_ms: u64,
    /// Days to keep key events (the audit log); 0 keeps them forever.
    #[arg(long, env = "KEYGATE_EVENT_RETENTION_DAYS", default_value_t = 365)]
    pub event_retention_days: u64,
}

impl ReplicationArgs {
    pub fn settings(&self) -> anyhow::Result<ReplicationSettings> {
        let stale_policy = match self.on_unverifiable.as_str() {
            "fail_closed" => StalePolicy::FailClosed,
            "serve_stale" => {
                StalePolicy::ServeStale(Duration::from_secs(self.serve_stale_max_seconds))
            }
            other => anyhow::bail!(
                "KEYGATE_ON_UNVERIFIABLE must be fail_closed or serve_stale, not {other:?}"
            ),
        };
        if self.event_retention_days > 36_500 {
            anyhow::bail!(
                "KEYGATE_EVENT_RETENTION_DAYS must be at most 36500 (0 keeps events forever)"
            );
        }
        if self.propagation_timeout_ms == 0 || self.propagation_timeout_ms > 60_000 {
            anyhow::bail!("KEYGATE_PROPAGATION_TIMEOUT_MS must be between 1 and 60000");
        }
        Ok(ReplicationSettings {
            replica_name: self
                .replica_name
                .clone()
                .unwrap_or_else(default_replica_name),
            stale_policy,
            lease: LeaseSettings::default(),
            propagation_timeout: Duration::from_millis(self.propagation_timeout_ms),
            event_retention: (self.event_retention_days > 0)
                .then(|| Duration::from_secs(self.event_retention_days * 86_400)),
        })
    }
}

/// PEM material for server TLS, read at start.
#[derive(Clone)]
pub struct TlsSettings {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TlsSettings")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

fn read_pem(setting: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{setting}: cannot read {}", path.display()))
}

impl ServeArgs {
    fn tls_settings(&self) -> anyhow::Result<Option<TlsSettings>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        Ok(Some(TlsSettings {
            cert_pem: read_pem("KEYGATE_TLS_CERT", cert)?,
            key_pem: read_pem("KEYGATE_TLS_KEY", key)?,
            client_ca_pem: self
                .tls_client_ca
                .as_deref()
                .map(|path| read_pem("KEYGATE_TLS_CLIENT_CA", path))
                .transpose()?,
        }))
    }

    fn authorizer_callers(&self) -> anyhow::Result<CallerAuthSettings> {
        let allowed_clients = match self.authorizer_allowed_clients.as_slice() {
            [] => None,
            entries => Some(AllowedClients::parse(entries).map_err(|problem| {
                anyhow::anyhow!(
                    "KEYGATE_AUTHORIZER_ALLOWED_CLIENTS (--authorizer-allowed-clients): {problem}"
                )
            })?),
        };
        let tokens = match &self.authorizer_token_file {
            None => None,
            Some(path) => Some(CallerTokens::load(path).with_context(|| {
                format!(
                    "KEYGATE_AUTHORIZER_TOKEN_FILE (--authorizer-token-file): {}",
                    path.display()
                )
            })?),
        };
        let callers = CallerAuthSettings {
            allowed_clients,
            tokens,
        };
        check_authorizer_callers(&callers, self.tls_client_ca.is_some())?;
        Ok(callers)
    }

    pub fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings {
            listen: self.listen,
            database: self.database.settings()?,
            keys: self.keys.settings()?,
            cache: self.cache.settings()?,
            policy: Arc::new(Policy::load(self.policy.as_deref()).context("KEYGATE_POLICY")?),
            policy_path: self.policy.clone(),
            migrate: !self.no_migrate,
            reflection: !self.no_reflection,
            drain: Duration::from_secs(self.drain_seconds),
            database_unhealthy_after: Duration::from_secs(self.database_unhealthy_after_seconds),
            tls: self.tls_settings()?,
            metrics_listen: (!self.no_metrics).then_some(self.metrics_listen),
            usage_flush_interval: Duration::from_secs(5),
            replication: self.replication.settings()?,
            authorizer_callers: self.authorizer_callers()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{replica_name_on, ServeArgs};

    /// `keygate serve`'s flags, as the binary's command line parses them.
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse_serve(flags: &[&str]) -> ServeArgs {
        let arguments = ["keygate serve"].iter().chain(flags);
        Serve::try_parse_from(arguments).unwrap().args
    }

    /// The error `keygate serve <flags>` stops with, as one line.
    fn serve_error(flags: &[&str]) -> String {
        let args = parse_serve(flags);
        match args.settings() {
            Ok(_) => panic!("{flags:?} were accepted"),
            Err(error) => format!("{error:#}"),
        }
    }

    #[test]
    fn postgres_url_schemes_are_accepted_in_any_case() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/keygate",
            "postgresql://postgres@127.0.0.1:5432/keygate",
            "POSTGRES://postgres@127.0.0.1:5432/keygate",
        ] {
            let args = parse_serve(&["--database-url", url]);
            let settings = args.database.settings();
            assert!(settings.is_ok(), "{url}: {:#}", settings.err().unwrap());
        }
    }

    #[test]
    fn bad_settings_stop_the_start_naming_the_setting() {
        let cases: &[(&[&str], &str)] = &[
            (&["--cache-capacity", "0"], "KEYGATE_CACHE_CAPACITY"),
            (&["--cache-ttl-seconds", "0"], "KEYGATE_CACHE_TTL_SECONDS"),
            (
                &["--verifications-per-key-per-second", "0"],
                "KEYGATE_VERIFICATIONS_PER_KEY_PER_SECOND",
            ),
            (
                &["--database-url", "postgres://host:port/db"],
                "KEYGATE_DATABASE_URL",
            ),
            (
                &["--database-url", "mysql://root@127.0.0.1/keygate"],
                "must start with postgres://",
            ),
            (
                &["--database-url", "127.0.0.1:5432/keygate"],
                "must start with postgres://",
            ),
            (
                &["--database-max-connections", "0"],
                "KEYGATE_DATABASE_MAX_CONNECTIONS",
            ),
            (&["--token-prefix", "Bad-Prefix"], "KEYGATE_TOKEN_PREFIX"),
            (&["--argon2-iterations", "0"], "KEYGATE_ARGON2_ITERATIONS"),
            (&["--argon2-memory-kib", "1"], "KEYGATE_ARGON2_MEMORY_KIB"),
            (&["--on-unverifiable", "shrug"], "KEYGATE_ON_UNVERIFIABLE"),
            (
                &["--event-retention-days", "36501"],
                "KEYGATE_EVENT_RETENTION_DAYS",
            ),
            (
                &["--propagation-timeout-ms", "0"],
                "KEYGATE_PROPAGATION_TIMEOUT_MS",
            ),
            (
                &["--propagation-timeout-ms", "60001"],
                "KEYGATE_PROPAGATION_TIMEOUT_MS",
            ),
            (
                &[
                    "--tls-cert",
                    "/nonexistent/cert.pem",
                    "--tls-key",
                    "/nonexistent/key.pem",
                ],
                "KEYGATE_TLS_CERT",
            ),
            (&["--policy", "/nonexistent/policy.yaml"], "KEYGATE_POLICY"),
        ];
        for (flags, setting) in cases {
            let error = serve_error(flags);
            assert!(error.contains(setting), "{flags:?}: {error}");
        }
    }

    #[test]
    fn authorizer_caller_settings_that_cannot_work_stop_the_start() {
        let directory = std::env::temp_dir().join(format!("keygate-config-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let short_tokens = directory.join("short-tokens");
        std::fs::write(&short_tokens, "too-short\n").unwrap();
        let short_tokens = short_tokens.to_str().unwrap();
        let cases: &[(&[&str], &str)] = &[
            (
                &["--authorizer-allowed-clients", "gateway.internal"],
                "KEYGATE_AUTHORIZER_ALLOWED_CLIENTS (--authorizer-allowed-clients) needs mutual TLS: set KEYGATE_TLS_CLIENT_CA",
            ),
            (
                &["--authorizer-allowed-clients", "gateway.internal,,envoy.internal"],
                "KEYGATE_AUTHORIZER_ALLOWED_CLIENTS (--authorizer-allowed-clients): an entry is empty",
            ),
            (
                &["--authorizer-token-file", "/nonexistent/caller-tokens"],
                "KEYGATE_AUTHORIZER_TOKEN_FILE (--authorizer-token-file): /nonexistent/caller-tokens: cannot read",
            ),
            (
                &["--authorizer-token-file", short_tokens],
                "line 1: a token must be at least 16 characters",
            ),
        ];
        for (flags, expected) in cases {
            let error = serve_error(flags);
            assert!(error.contains(expected), "{flags:?}: {error}");
        }
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn authorizer_callers_are_not_checked_by_default() {
        let args = parse_serve(&[]);
        assert!(!args.settings().unwrap().authorizer_callers.is_on());
    }

    #[test]
    fn defaults_are_valid() {
        let args = parse_serve(&[]);
        assert!(args.settings().is_ok());
    }

    #[test]
    fn default_replica_names_differ_per_process_on_one_host() {
        let first = replica_name_on(Some("node-1"));
        let second = replica_name_on(Some("node-1"));
        assert_ne!(first, second);
        assert!(first.starts_with("node-1-") && first.len() == "node-1-".len() + 8);
        for hostname in [None, Some("")] {
            assert!(replica_name_on(hostname).starts_with("keygate-"));
        }
    }

    #[test]
    fn a_given_replica_name_is_kept_as_given() {
        let args = parse_serve(&["--replica-name", "billing-east"]);
        let settings = args.replication.settings().unwrap();
        assert_eq!(settings.replica_name, "billing-east");
    }
}
