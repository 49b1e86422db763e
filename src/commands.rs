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

    /// Whether `serve` was asked to trace health checks and reflection too.
    pub fn traces_health_checks(&self) -> bool {
        matches!(self, Command::Serve(args) if args.trace_health_checks)
    }
}

#[cfg(test)]
mod tests {
    use clap::{Arg, ArgAction, CommandFactory};

    use super::Cli;

    /// Every on/off flag read from a `KEYGATE_*` variable, in every command.
    fn boolean_variables(command: &clap::Command) -> Vec<(String, Arg)> {
        let mut found = Vec::new();
        for arg in command.get_arguments() {
            let is_flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
            if let (true, Some(variable)) = (is_flag, arg.get_env()) {
                found.push((variable.to_string_lossy().into_owned(), arg.clone()));
            }
        }
        for subcommand in command.get_subcommands() {
            found.extend(boolean_variables(subcommand));
        }
        found
    }

    /// What `arg`'s value parser makes of `text`, as it would of the variable's
    /// value (read without touching this process's environment).
    fn parse_as_variable(arg: &Arg, text: &str) -> Result<bool, clap::Error> {
        let as_option = arg
            .clone()
            .action(ArgAction::Set)
            .num_args(1)
            .env(None::<&str>)
            .required(false);
        let id = as_option.get_id().clone();
        let long = format!("--{}", as_option.get_long().unwrap_or_default());
        let matches = clap::Command::new("keygate")
            .arg(as_option)
            .try_get_matches_from(["keygate", long.as_str(), text])?;
        Ok(matches
            .get_one::<bool>(id.as_str())
            .copied()
            .unwrap_or_default())
    }

    #[test]
    fn boolean_variables_take_the_usual_spellings() {
        let mut command = Cli::command();
        command.build();
        let variables = boolean_variables(&command);
        let names: Vec<&str> = variables.iter().map(|(name, _)| name.as_str()).collect();
        for expected in [
            "KEYGATE_NO_MIGRATE",
            "KEYGATE_NO_METRICS",
            "KEYGATE_NO_REFLECTION",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} not found in {names:?}"
            );
        }
        let spellings = [
            ("1", true),
            ("0", false),
            ("true", true),
            ("false", false),
            ("yes", true),
            ("no", false),
            ("on", true),
            ("off", false),
        ];
        for (name, arg) in &variables {
            for (text, expected) in spellings {
                let parsed = parse_as_variable(arg, text);
                assert_eq!(parsed.ok(), Some(expected), "{name}={text}");
            }
            assert!(parse_as_variable(arg, "maybe").is_err(), "{name}=maybe");
        }
    }
}
