//! Where and how the admin CLI prints: tables for people, one JSON document for
//! scripts, always on stdout (errors go to stderr, see [`super::CliError`]).

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{presets, Table};
use serde_json::Value;

use super::CliError;

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Readable tables.
    Table,
    /// One JSON document per command.
    Json,
}

/// A table in the CLI's one style, with `header` as its first row.
pub fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    if !header.is_empty() {
        table.set_header(header.to_vec());
    }
    table
}

/// Writes `value` to stdout as one pretty-printed JSON document.
pub fn print_json(value: &Value) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)
        .map_err(|error| CliError::Output(error.into()))?;
    writeln!(stdout).map_err(CliError::Output)?;
    stdout.flush().map_err(CliError::Output)
}

/// Writes `text` and a newline to stdout.
pub fn print_text(text: impl std::fmt::Display) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").map_err(CliError::Output)?;
    stdout.flush().map_err(CliError::Output)
}

/// Writes a hint for people to stderr, leaving stdout to the result. A hint
/// that cannot be written is not worth failing the command for.
pub fn print_hint(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Tells a person how to get the next page, on stderr.
pub fn more_pages_hint(next_page_token: &str) {
    if !next_page_token.is_empty() {
        print_hint(format!(
            "more on the next page: --page-token {next_page_token} (or --all)"
        ));
    }
}

fn to_datetime(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    crate::grpc::parse_timestamp("time", timestamp).ok()
}

/// An RFC 3339 time (UTC, as precise as stored), or null when unset.
pub fn time_json(timestamp: Option<&prost_types::Timestamp>) -> Value {
    timestamp.and_then(to_datetime).map_or(Value::Null, |time| {
        Value::String(time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    })
}

/// An RFC 3339 time to the second for a table cell, or `-` when unset.
pub fn time_text(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp.and_then(to_datetime).map_or_else(
        || "-".to_owned(),
        |time| time.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// A string, or null when empty (ids the proto leaves empty when absent).
pub fn optional_json(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text.to_owned())
    }
}

/// `text`, or `-` when empty, for a table cell.
pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let timestamp = prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 250_000_000,
        };
        assert_eq!(
            time_json(Some(&timestamp)),
            Value::String("2030-03-17T17:46:40.250Z".into())
        );
        assert_eq!(time_text(Some(&timestamp)), "2030-03-17T17:46:40Z");
        assert_eq!(time_json(None), Value::Null);
        assert_eq!(time_text(None), "-");
    }

    #[test]
    fn empty_ids() {
        assert_eq!(optional_json(""), Value::Null);
        assert_eq!(optional_json("abc"), Value::String("abc".into()));
        assert_eq!(or_dash(""), "-");
    }
}
