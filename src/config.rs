//! Configuration: one typed struct per command, from flags or `KEYGATE_*`
//! environment variables, validated at start with errors that name the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sqlx::postgres::PgConnectOptions;

use crate::hashing::HashingParams;
use crate::policy::Policy;
use crate::token::TokenPrefix;

/// The default database: the local server, database `keygate` (created when missing).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/keygate";

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "Authorization service for scoped API keys"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Create the first system key on an empty database and print its token once.
    Bootstrap(BootstrapArgs),
}

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

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "KEYGATE_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Policy file (permission catalog); the embedded PayNext example when unset.
    #[arg(long, env = "KEYGATE_POLICY")]
    pub policy: Option<PathBuf>,
    /// Do not apply migrations at start.
    #[arg(long, env = "KEYGATE_NO_MIGRATE")]
    pub no_migrate: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
}

#[derive(Args, Clone)]
pub struct BootstrapArgs {
    /// Name of the system key to create.
    #[arg(long, default_value = "bootstrap")]
    pub name: String,
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
    pub policy: Arc<Policy>,
    pub migrate: bool,
}

impl ServeArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings {
            listen: self.listen,
            database: self.database.settings()?,
            keys: self.keys.settings()?,
            policy: Arc::new(Policy::load(self.policy.as_deref()).context("KEYGATE_POLICY")?),
            migrate: !self.no_migrate,
        })
    }
}
