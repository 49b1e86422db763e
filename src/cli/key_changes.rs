//! The `keys` subcommands that change keys: create, update, rotate, disable,
//! enable, revoke and delete. Only create and rotate print a token.

use chrono::Utc;
use serde_json::json;

use super::connection::Connection;
use super::key_requests::{create_request, update_request, CreateArgs, UpdateArgs};
use super::keys::{ChangeArgs, RotateArgs};
use super::output::{print_json, print_text, OutputFormat};
use super::views::{key_json, key_table, propagation_json, propagation_line};
use super::CliError;
use crate::grpc::pb;

/// A key and its new token: the only place a token is printed.
fn print_key_with_token(
    format: OutputFormat,
    key: &pb::Key,
    token: &str,
    propagation: Option<&pb::Propagation>,
) -> Result<(), CliError> {
    match format {
        OutputFormat::Json => {
            let mut document = json!({ "key": key_json(key), "token": token });
            if let Some(propagation) = propagation {
                document["propagation"] = propagation_json(Some(propagation));
            }
            print_json(&document)
        }
        OutputFormat::Table => {
            print_text(key_table(key))?;
            if let Some(propagation) = propagation {
                print_text(propagation_line(Some(propagation)))?;
            }
            print_text(format!("token (shown once, store it now): {token}"))
        }
    }
}

/// A key after a change, and how far the change had spread.
fn print_changed_key(
    format: OutputFormat,
    key: Option<pb::Key>,
    propagation: Option<pb::Propagation>,
) -> Result<(), CliError> {
    let key = key.ok_or(CliError::IncompleteAnswer("key"))?;
    match format {
        OutputFormat::Json => print_json(&json!({
            "key": key_json(&key),
            "propagation": propagation_json(propagation.as_ref()),
        })),
        OutputFormat::Table => {
            print_text(key_table(&key))?;
            print_text(propagation_line(propagation.as_ref()))
        }
    }
}

pub async fn create_key(
    connection: &Connection,
    format: OutputFormat,
    args: CreateArgs,
) -> Result<(), CliError> {
    let request = create_request(args, Utc::now())?;
    let created = connection
        .call(request, |mut client, request| async move {
            client.create_key(request).await
        })
        .await?;
    let key = created.key.ok_or(CliError::IncompleteAnswer("key"))?;
    print_key_with_token(format, &key, &created.token, None)
}

pub async fn update_key(
    connection: &Connection,
    format: OutputFormat,
    args: UpdateArgs,
) -> Result<(), CliError> {
    let request = update_request(args, Utc::now())?;
    let updated = connection
        .call(request, |mut client, request| async move {
            client.update_key(request).await
        })
        .await?;
    print_changed_key(format, updated.key, updated.propagation)
}

pub async fn rotate_key(
    connection: &Connection,
    format: OutputFormat,
    args: RotateArgs,
) -> Result<(), CliError> {
    let grace_period = prost_types::Duration::try_from(args.grace_period)
        .map_err(|_| CliError::Setup("--grace-period is too long".to_owned()))?;
    let request = pb::RotateKeyRequest {
        key_id: args.key_id,
        grace_period: Some(grace_period),
        wait_for_propagation: args.wait.choice(),
    };
    let rotated = connection
        .call(request, |mut client, request| async move {
            client.rotate_key(request).await
        })
        .await?;
    let key = rotated.key.ok_or(CliError::IncompleteAnswer("key"))?;
    print_key_with_token(format, &key, &rotated.token, rotated.propagation.as_ref())
}

/// The calls that change a key's state and answer with the key.
pub enum StateChange {
    Disable,
    Enable,
    Revoke,
}

pub async fn change_key_state(
    connection: &Connection,
    format: OutputFormat,
    change: StateChange,
    args: ChangeArgs,
) -> Result<(), CliError> {
    let key_id = args.key_id;
    let wait_for_propagation = args.wait.choice();
    let (key, propagation) = match change {
        StateChange::Disable => {
            let request = pb::DisableKeyRequest {
                key_id,
                wait_for_propagation,
            };
            let disabled = connection
                .call(request, |mut client, request| async move {
                    client.disable_key(request).await
                })
                .await?;
            (disabled.key, disabled.propagation)
        }
        StateChange::Enable => {
            let request = pb::EnableKeyRequest {
                key_id,
                wait_for_propagation,
            };
            let enabled = connection
                .call(request, |mut client, request| async move {
                    client.enable_key(request).await
                })
                .await?;
            (enabled.key, enabled.propagation)
        }
        StateChange::Revoke => {
            let request = pb::RevokeKeyRequest {
                key_id,
                wait_for_propagation,
            };
            let revoked = connection
                .call(request, |mut client, request| async move {
                    client.revoke_key(request).await
                })
                .await?;
            (revoked.key, revoked.propagation)
        }
    };
    print_changed_key(format, key, propagation)
}

pub async fn delete_key(
    connection: &Connection,
    format: OutputFormat,
    args: ChangeArgs,
) -> Result<(), CliError> {
    let key_id = args.key_id.clone();
    let request = pb::DeleteKeyRequest {
        key_id: args.key_id,
        wait_for_propagation: args.wait.choice(),
    };
    let deleted = connection
        .call(request, |mut client, request| async move {
            client.delete_key(request).await
        })
        .await?;
    let propagation = deleted.propagation.as_ref();
    match format {
        OutputFormat::Json => print_json(&json!({
            "key_id": key_id,
            "propagation": propagation_json(propagation),
        })),
        OutputFormat::Table => {
            print_text(format!("key {key_id} deleted"))?;
            print_text(propagation_line(propagation))
        }
    }
}
