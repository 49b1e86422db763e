//! The flags of `keys create` and `keys update`, and the requests built from
//! them. An update's field mask names exactly the fields whose flags were given.

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, ValueEnum};
use prost_types::FieldMask;

use super::values::{parse_expiry_time, parse_metadata_pair, ExpiryTime};
use super::{CliError, WaitArgs};
use crate::grpc::pb;
use crate::grpc::timestamp;

/// `--environment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EnvironmentArg {
    Live,
    Test,
}

/// `--kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Organization,
    System,
}

#[derive(Args)]
#[command(group(ArgGroup::new("grant").required(true).args(["scopes", "preset"])))]
pub struct CreateArgs {
    /// Human name: 1 to 64 letters, digits, `_`, `-` or spaces.
    #[arg(long)]
    pub name: String,
    /// Live or test; spelled inside the token, and never changes.
    #[arg(long, value_enum)]
    pub environment: EnvironmentArg,
    /// Owning organization's id; an organization key's own when left out.
    #[arg(long, visible_alias = "org")]
    pub organization: Option<String>,
    /// `organization` (the default) or `system` (only system keys create one).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Free text, at most 500 characters.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Scope to grant (repeat, or separate with commas): `customers:read`,
    /// `payments:*`, `*`.
    #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// A preset of the policy's catalog (e.g. `read_only`), instead of --scope.
    #[arg(long)]
    pub preset: Option<String>,
    /// Client network the key may be used from (repeat, or separate with
    /// commas): a CIDR or an address. Without it, any network.
    #[arg(long = "cidr", value_name = "CIDR", value_delimiter = ',')]
    pub cidrs: Vec<String>,
    /// When the key stops working: an RFC 3339 time or a duration from now
    /// (`30d`). Without it, never.
    #[arg(long, value_name = "WHEN", value_parser = parse_expiry_time)]
    pub expire_time: Option<ExpiryTime>,
    /// Label handed back by Authorize (repeat): `KEY=VALUE`.
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_metadata_pair)]
    pub metadata: Vec<(String, String)>,
    /// Fix the scopes for good: they can never be changed afterwards.
    #[arg(long)]
    pub lock_scopes: bool,
}

#[derive(Args)]
#[command(group(
    ArgGroup::new("changes")
        .required(true)
        .multiple(true)
        .args([
            "name", "description", "scopes", "cidrs", "clear_cidrs", "expire_time",
            "clear_expire_time", "metadata", "clear_metadata",
        ])
))]
pub struct UpdateArgs {
    /// The key's id.
    pub key_id: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New description (`''` clears it).
    #[arg(long)]
    pub description: Option<String>,
    /// The new scopes, replacing all current ones (repeat, or separate with commas).
    #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// The new networks, replacing all current ones (repeat, or separate with commas).
    #[arg(
        long = "cidr",
        value_name = "CIDR",
        value_delimiter = ',',
        conflicts_with = "clear_cidrs"
    )]
    pub cidrs: Vec<String>,
    /// Remove the network allowlist: any network.
    #[arg(long)]
    pub clear_cidrs: bool,
    /// New expiry: an RFC 3339 time or a duration from now (`30d`).
    #[arg(long, value_name = "WHEN", value_parser = parse_expiry_time, conflicts_with = "clear_expire_time")]
    pub expire_time: Option<ExpiryTime>,
    /// Remove the expiry: the key never expires.
    #[arg(long)]
    pub clear_expire_time: bool,
    /// The new metadata, replacing all current labels (repeat): `KEY=VALUE`.
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_metadata_pair, conflicts_with = "clear_metadata")]
    pub metadata: Vec<(String, String)>,
    /// Remove every metadata label.
    #[arg(long)]
    pub clear_metadata: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

fn resolve_expiry(
    expiry: Option<ExpiryTime>,
    now: DateTime<Utc>,
) -> Result<Option<prost_types::Timestamp>, CliError> {
    let Some(expiry) = expiry else {
        return Ok(None);
    };
    let time = expiry.resolve(now).map_err(CliError::Setup)?;
    Ok(Some(timestamp(time)))
}

pub fn create_request(
    args: CreateArgs,
    now: DateTime<Utc>,
) -> Result<pb::CreateKeyRequest, CliError> {
    let environment = match args.environment {
        EnvironmentArg::Live => pb::Environment::Live,
        EnvironmentArg::Test => pb::Environment::Test,
    };
    let kind = match args.kind {
        None => pb::KeyKind::Unspecified,
        Some(KindArg::Organization) => pb::KeyKind::Organization,
        Some(KindArg::System) => pb::KeyKind::System,
    };
    Ok(pb::CreateKeyRequest {
        organization_id: args.organization.unwrap_or_default(),
        kind: kind.into(),
        environment: environment.into(),
        name: args.name,
        description: args.description,
        scopes: args.scopes,
        preset: args.preset.unwrap_or_default(),
        allowed_cidrs: args.cidrs,
        expire_time: resolve_expiry(args.expire_time, now)?,
        metadata: args.metadata.into_iter().collect(),
        lock_scopes: args.lock_scopes,
    })
}

pub fn update_request(
    args: UpdateArgs,
    now: DateTime<Utc>,
) -> Result<pb::UpdateKeyRequest, CliError> {
    let mut key = pb::Key {
        id: args.key_id,
        ..Default::default()
    };
    let mut paths = Vec::new();
    if let Some(name) = args.name {
        key.name = name;
        paths.push("name");
    }
    if let Some(description) = args.description {
        key.description = description;
        paths.push("description");
    }
    if !args.scopes.is_empty() {
        key.scopes = args.scopes;
        paths.push("scopes");
    }
    if !args.cidrs.is_empty() || args.clear_cidrs {
        key.allowed_cidrs = args.cidrs;
        paths.push("allowed_cidrs");
    }
    if args.expire_time.is_some() || args.clear_expire_time {
        key.expire_time = resolve_expiry(args.expire_time, now)?;
        paths.push("expire_time");
    }
    if !args.metadata.is_empty() || args.clear_metadata {
        key.metadata = args.metadata.into_iter().collect();
        paths.push("metadata");
    }
    Ok(pb::UpdateKeyRequest {
        key: Some(key),
        update_mask: Some(FieldMask {
            paths: paths.into_iter().map(str::to_owned).collect(),
        }),
        wait_for_propagation: args.wait.choice(),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Update {
        #[command(flatten)]
        args: UpdateArgs,
    }

    #[derive(Parser)]
    struct Create {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn update(flags: &[&str]) -> Result<pb::UpdateKeyRequest, String> {
        let arguments = ["update", "KEY"].iter().chain(flags);
        let parsed = Update::try_parse_from(arguments).map_err(|error| error.to_string())?;
        update_request(parsed.args, Utc::now()).map_err(|error| error.to_string())
    }

    fn mask(request: &pb::UpdateKeyRequest) -> Vec<String> {
        request.update_mask.clone().unwrap_or_default().paths
    }

    #[test]
    fn the_update_mask_names_exactly_the_fields_given() {
        let request = update(&["--name", "renamed"]).unwrap();
        assert_eq!(mask(&request), vec!["name"]);
        let key = request.key.unwrap();
        assert_eq!((key.id.as_str(), key.name.as_str()), ("KEY", "renamed"));
        assert_eq!(request.wait_for_propagation, None);

        let request = update(&[
            "--description",
            "",
            "--scope",
            "customers:read,payments:read",
            "--cidr",
            "10.0.0.0/8",
            "--clear-expire-time",
            "--metadata",
            "team=billing",
            "--wait",
        ])
        .unwrap();
        assert_eq!(
            mask(&request),
            vec![
                "description",
                "scopes",
                "allowed_cidrs",
                "expire_time",
                "metadata"
            ]
        );
        assert_eq!(request.wait_for_propagation, Some(true));
        let key = request.key.unwrap();
        assert_eq!(key.scopes, vec!["customers:read", "payments:read"]);
        assert_eq!(key.expire_time, None);
        assert_eq!(key.metadata["team"], "billing");

        let request = update(&["--clear-cidrs", "--clear-metadata", "--no-wait"]).unwrap();
        assert_eq!(mask(&request), vec!["allowed_cidrs", "metadata"]);
        assert_eq!(request.wait_for_propagation, Some(false));
        assert!(request.key.unwrap().allowed_cidrs.is_empty());
    }

    #[test]
    fn an_update_needs_one_change_and_no_contradictions() {
        assert!(update(&[]).is_err());
        assert!(update(&["--wait"]).is_err());
        assert!(update(&["--cidr", "10.0.0.0/8", "--clear-cidrs"]).is_err());
        assert!(update(&["--metadata", "a=b", "--clear-metadata"]).is_err());
        assert!(update(&["--expire-time", "1d", "--clear-expire-time"]).is_err());
        assert!(update(&["--name", "x", "--wait", "--no-wait"]).is_err());
    }

    #[test]
    fn create_takes_scopes_or_a_preset() {
        let parse = |flags: &[&str]| {
            let arguments = ["create", "--name", "k", "--environment", "test"]
                .iter()
                .chain(flags);
            Create::try_parse_from(arguments).map(|parsed| parsed.args)
        };
        assert!(parse(&[]).is_err());
        assert!(parse(&["--scope", "a:read", "--preset", "read_only"]).is_err());
        let now = Utc::now();
        let args = parse(&[
            "--preset",
            "read_only",
            "--expire-time",
            "1h",
            "--metadata",
            "team=billing",
            "--kind",
            "system",
        ])
        .unwrap();
        let request = create_request(args, now).unwrap();
        assert_eq!(request.preset, "read_only");
        assert!(request.scopes.is_empty());
        assert_eq!(request.environment(), pb::Environment::Test);
        assert_eq!(request.kind(), pb::KeyKind::System);
        assert_eq!(
            request.expire_time.unwrap().seconds,
            now.timestamp() + 3_600
        );
        assert_eq!(request.metadata["team"], "billing");
    }
}
