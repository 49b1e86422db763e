//! The `keygate` binary: parses the command line and calls into the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use secrecy::ExposeSecret;
use tracing_subscriber::EnvFilter;

use keygate::config::{BootstrapArgs, Cli, Command, ServeArgs};
use keygate::key::DisplayName;
use keygate::lifecycle::BootstrapError;
use keygate::server::{key_manager, open_database, shutdown_signal, Application};
use keygate::store;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The admin CLI's output is its answer: only warnings go to stderr beside it.
    let default_filter = if cli.command.is_client() {
        "warn"
    } else {
        "info"
    };
    init_logging(&cli.log_format, default_filter);
    let outcome = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Bootstrap(args) => bootstrap(args).await,
        Command::Keys(args) => return keygate::cli::run_keys(args).await,
        Command::Orgs(args) => return keygate::cli::run_orgs(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "keygate failed");
            ExitCode::FAILURE
        }
    }
}

/// Human-readable logs by default, JSON lines with `--log-format json`; the
/// filter comes from `RUST_LOG` (default `default_filter`).
fn init_logging(format: &str, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let application = Application::build(settings).await?;
    application.run_until(shutdown_signal()).await
}

async fn migrate(args: keygate::config::DatabaseArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let pool = open_database(&settings, true).await?;
    pool.close().await;
    tracing::info!(
        migrations = store::MIGRATOR.iter().count(),
        "database migrated"
    );
    Ok(())
}

async fn bootstrap(args: BootstrapArgs) -> anyhow::Result<()> {
    let database = args.database.settings()?;
    let keys = args.keys.settings()?;
    let name = DisplayName::parse("--name", &args.name)?;
    let pool = open_database(&database, true).await?;
    let policy = std::sync::Arc::new(keygate::policy::Policy::parse(
        keygate::policy::EMBEDDED_DEFAULT_POLICY,
    )?);
    let manager = key_manager(
        pool.clone(),
        &keys,
        keygate::cache::CacheSettings::default(),
        policy,
        std::time::Duration::from_secs(5),
        keygate::freshness::Freshness::always_trusted(),
        &keygate::config::ReplicationSettings::default(),
    )?;
    let created = match manager.bootstrap(name).await {
        Ok(created) => created,
        Err(BootstrapError::SystemKeyExists) => {
            anyhow::bail!("a system key already exists; bootstrap only runs on an empty database")
        }
        Err(other) => return Err(other).context("bootstrap failed"),
    };
    pool.close().await;
    println!("system key id: {}", created.key.id);
    println!(
        "token (shown once, store it now): {}",
        created.token.expose_secret()
    );
    Ok(())
}
