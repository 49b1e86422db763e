//! The `keygate` binary: parses the command line and calls into the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use secrecy::ExposeSecret;
use tracing_subscriber::filter::LevelFilter;

use keygate::commands::{Cli, Command};
use keygate::domain::key::DisplayName;
use keygate::lifecycle::BootstrapError;
use keygate::server::config::{BootstrapArgs, ServeArgs};
use keygate::server::telemetry::{self, LogStyle, TraceOptions};
use keygate::server::{key_manager, open_database, shutdown_signal, Application};
use keygate::store;

/// mimalloc: the cache holds many small, long-lived allocations beside the
/// short-lived ones of every call, and glibc's allocator slows down as that
/// heap fragments (measured with `cargo bench --bench authorize`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return command_line_error(error),
    };
    let style = if cli.log_format == "json" {
        LogStyle::Json
    } else {
        LogStyle::Text
    };
    // The admin CLI's output is its answer: only warnings go to stderr beside
    // it, and it exports no traces.
    let client = cli.command.is_client();
    let default_level = if client {
        LevelFilter::WARN
    } else {
        LevelFilter::INFO
    };
    let traces = TraceOptions {
        export: !client,
        health_checks: cli.command.traces_health_checks(),
    };
    let telemetry = match telemetry::init(style, default_level, traces) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("keygate failed: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Bootstrap(args) => bootstrap(args).await,
        Command::Keys(args) => return keygate::cli::run_keys(args).await,
        Command::Orgs(args) => return keygate::cli::run_orgs(args).await,
        Command::Health(args) => return keygate::cli::run_health(args).await,
    };
    if let Err(error) = &outcome {
        tracing::error!(error = format!("{error:#}"), "keygate failed");
    }
    // Buffered spans are exported before the process exits.
    telemetry.shutdown().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let application = Application::build(settings).await?;
    application.run_until(shutdown_signal()).await
}

async fn migrate(args: keygate::server::config::DatabaseArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let pool = open_database(&settings, true).await?;
    pool.close().await;
    tracing::info!(
        migrations = store::migrator().iter().count(),
        "database migrated"
    );
    Ok(())
}

async fn bootstrap(args: BootstrapArgs) -> anyhow::Result<()> {
    let database = args.database.settings()?;
    let keys = args.keys.settings()?;
    let name = DisplayName::parse("--name", &args.name)?;
    let pool = open_database(&database, !args.no_migrate).await?;
    let policy = std::sync::Arc::new(keygate::domain::policy::Policy::parse(
        keygate::domain::policy::EMBEDDED_DEFAULT_POLICY,
    )?);
    let manager = key_manager(
        pool.clone(),
        &keys,
        keygate::cache::CacheSettings::default(),
        policy,
        std::time::Duration::from_secs(5),
        keygate::freshness::Freshness::always_trusted(),
        &keygate::server::config::ReplicationSettings::default(),
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

/// A command line clap refuses exits 2 with its usage text, except for
/// `keygate health`: a container health check reads 2 as reserved, so it
/// exits 1 with one line, as every other failure of the probe does.
fn command_line_error(error: clap::Error) -> ExitCode {
    if !error.use_stderr() || !is_health_command(std::env::args().skip(1)) {
        error.exit()
    }
    let message = error.to_string();
    let first_line = message.lines().next().unwrap_or("error: invalid arguments");
    eprintln!("{first_line}");
    ExitCode::from(1)
}

/// Whether the subcommand (after the global `--log-format`) is `health`.
fn is_health_command(mut arguments: impl Iterator<Item = String>) -> bool {
    while let Some(argument) = arguments.next() {
        if argument == "--log-format" {
            arguments.next();
        } else if !argument.starts_with("--log-format=") {
            return argument == "health";
        }
    }
    false
}
