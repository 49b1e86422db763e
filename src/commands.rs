//! The `keygate` binary's command line: `serve`, `migrate` and `bootstrap` run
//! the server or act on its database; `keys` and `orgs` are the admin CLI, and
//! `health` asks a server's health service, both clients of a running server.
//! Each command's flags live with what it runs (`server::config`, `cli`).

use clap::{Parser, Subcommand};

use crate::cli::{HealthArgs, KeysArgs, OrgsArgs};
use crate::server::config::{BootstrapArgs, DatabaseArgs, ServeArgs};

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "Authorization service for scoped API keys"
)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(
        long,
        global = true,
        env = "KEYGATE_LOG_FORMAT",
        default_value = "text",
        value_parser = ["text", "json"]
    )]
    pub log_format: String,
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
    /// Manage keys on a running server (token from KEYGATE_TOKEN).
    Keys(KeysArgs),
    /// Manage organizations on a running server (system keys only).
    Orgs(OrgsArgs),
    /// Ask a running server's health service; exit 0 only when SERVING (for probes).
    Health(HealthArgs),
}

impl Command {
    /// Whether this command is a client of a running server (the admin CLI, health).
    pub fn is_client(&self) -> bool {
        matches!(
            self,
            Command::Keys(_) | Command::Orgs(_) | Command::Health(_)
        )
    }
}
