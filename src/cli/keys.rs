//! `keygate keys …`: the subcommands (one per KeyService key call) and the
//! calls that only read: get, list and events.

use clap::{Args, Subcommand};
use serde_json::json;

use super::connection::{ClientArgs, Connection};
use super::key_changes::{
    change_key_state, create_key, delete_key, rotate_key, update_key, StateChange,
};
use super::key_requests::{CreateArgs, UpdateArgs};
use super::output::{more_pages_hint, print_json, print_text, OutputFormat};
use super::values::parse_duration;
use super::views::{event_json, events_table, key_json, key_table, keys_table};
use super::{collect_pages, CliError, PageArgs, WaitArgs};
use crate::grpc::pb;

#[derive(Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token (shown once, never again).
    Create(CreateArgs),
    /// Show one key.
    Get(KeyIdArgs),
    /// List keys, newest first (one page unless --all).
    List(ListArgs),
    /// Change a key's name, description, scopes, networks, expiry or metadata;
    /// only the fields given are changed. Waits for every replica when it
    /// narrows scopes, networks or expiry, unless --no-wait.
    Update(UpdateArgs),
    /// Issue a new token under the same key id and print it (shown once).
    /// Waits for every replica when a token stops working at once, unless
    /// --no-wait.
    Rotate(RotateArgs),
    /// Refuse a key until it is enabled again; waits for every replica unless
    /// --no-wait.
    Disable(ChangeArgs),
    /// Accept a disabled key again (a revoked key stays revoked).
    Enable(ChangeArgs),
    /// Refuse a key for good; waits for every replica unless --no-wait.
    Revoke(ChangeArgs),
    /// Remove a key; its audit events remain. Waits for every replica unless
    /// --no-wait.
    Delete(ChangeArgs),
    /// Show the audit log, newest first (one page unless --all).
    Events(EventsArgs),
}

#[derive(Args)]
pub struct KeyIdArgs {
    /// The key's id (22 characters, as in `keys list`).
    pub key_id: String,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only keys of this organization; system keys see every key without it.
    #[arg(long, visible_alias = "org")]
    pub organization: Option<String>,
    #[command(flatten)]
    pub paging: PageArgs,
}

#[derive(Args)]
pub struct RotateArgs {
    /// The key's id.
    pub key_id: String,
    /// How long the current token keeps working beside the new one: `0`
    /// (refused at once), `90s`, `15m`, `1h`, `7d`; at most 30 days.
    #[arg(long, value_parser = parse_duration)]
    pub grace_period: std::time::Duration,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args)]
pub struct ChangeArgs {
    /// The key's id.
    pub key_id: String,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args)]
pub struct EventsArgs {
    /// Only events of this key; every key the caller may see without it.
    pub key_id: Option<String>,
    #[command(flatten)]
    pub paging: PageArgs,
}

pub async fn run(args: KeysArgs) -> Result<(), CliError> {
    let format = args.client.output;
    let connection = Connection::open(&args.client).await?;
    match args.command {
        KeysCommand::Create(create) => create_key(&connection, format, create).await,
        KeysCommand::Get(get) => get_key(&connection, format, get).await,
        KeysCommand::List(list) => list_keys(&connection, format, list).await,
        KeysCommand::Update(update) => update_key(&connection, format, update).await,
        KeysCommand::Rotate(rotate) => rotate_key(&connection, format, rotate).await,
        KeysCommand::Disable(change) => {
            change_key_state(&connection, format, StateChange::Disable, change).await
        }
        KeysCommand::Enable(change) => {
            change_key_state(&connection, format, StateChange::Enable, change).await
        }
        KeysCommand::Revoke(change) => {
            change_key_state(&connection, format, StateChange::Revoke, change).await
        }
        KeysCommand::Delete(change) => delete_key(&connection, format, change).await,
        KeysCommand::Events(events) => list_events(&connection, format, events).await,
    }
}

async fn get_key(
    connection: &Connection,
    format: OutputFormat,
    args: KeyIdArgs,
) -> Result<(), CliError> {
    let request = pb::GetKeyRequest {
        key_id: args.key_id,
    };
    let key = connection
        .call(request, |mut client, request| async move {
            client.get_key(request).await
        })
        .await?;
    match format {
        OutputFormat::Json => print_json(&key_json(&key)),
        OutputFormat::Table => print_text(key_table(&key)),
    }
}

async fn list_keys(
    connection: &Connection,
    format: OutputFormat,
    args: ListArgs,
) -> Result<(), CliError> {
    let organization_id = args.organization.unwrap_or_default();
    let (keys, next_page_token) = collect_pages(&args.paging, |page_size, page_token| {
        let request = pb::ListKeysRequest {
            organization_id: organization_id.clone(),
            page_size,
            page_token,
        };
        async move {
            let page = connection
                .call(request, |mut client, request| async move {
                    client.list_keys(request).await
                })
                .await?;
            Ok((page.keys, page.next_page_token))
        }
    })
    .await?;
    match format {
        OutputFormat::Json => print_json(&json!({
            "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
            "next_page_token": next_page_token,
        })),
        OutputFormat::Table => {
            print_text(keys_table(&keys))?;
            more_pages_hint(&next_page_token);
            Ok(())
        }
    }
}

async fn list_events(
    connection: &Connection,
    format: OutputFormat,
    args: EventsArgs,
) -> Result<(), CliError> {
    let key_id = args.key_id.unwrap_or_default();
    let (events, next_page_token) = collect_pages(&args.paging, |page_size, page_token| {
        let request = pb::ListKeyEventsRequest {
            key_id: key_id.clone(),
            page_size,
            page_token,
        };
        async move {
            let page = connection
                .call(request, |mut client, request| async move {
                    client.list_key_events(request).await
                })
                .await?;
            Ok((page.events, page.next_page_token))
        }
    })
    .await?;
    match format {
        OutputFormat::Json => print_json(&json!({
            "events": events.iter().map(event_json).collect::<Vec<_>>(),
            "next_page_token": next_page_token,
        })),
        OutputFormat::Table => {
            print_text(events_table(&events))?;
            more_pages_hint(&next_page_token);
            Ok(())
        }
    }
}
