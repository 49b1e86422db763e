//! `keygate orgs …`: create, show and list organizations (system keys only).

use clap::{Args, Subcommand};
use serde_json::json;

use super::connection::{ClientArgs, Connection};
use super::output::{more_pages_hint, print_json, print_text, OutputFormat};
use super::views::{organization_json, organizations_table};
use super::{collect_pages, CliError, PageArgs};
use crate::grpc::pb;

#[derive(Args)]
pub struct OrgsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: OrgsCommand,
}

#[derive(Subcommand)]
pub enum OrgsCommand {
    /// Create an organization.
    Create(CreateOrgArgs),
    /// Show one organization.
    Get(OrgIdArgs),
    /// List organizations, newest first (one page unless --all).
    List(PageArgs),
}

#[derive(Args)]
pub struct CreateOrgArgs {
    /// Human name: 1 to 64 letters, digits, `_`, `-` or spaces.
    pub display_name: String,
}

#[derive(Args)]
pub struct OrgIdArgs {
    /// The organization's id (a UUID).
    pub organization_id: String,
}

pub async fn run(args: OrgsArgs) -> Result<(), CliError> {
    let format = args.client.output;
    let connection = Connection::open(&args.client).await?;
    match args.command {
        OrgsCommand::Create(create) => {
            let request = pb::CreateOrganizationRequest {
                display_name: create.display_name,
            };
            let organization = connection
                .call(request, |mut client, request| async move {
                    client.create_organization(request).await
                })
                .await?;
            print_organization(format, &organization)
        }
        OrgsCommand::Get(get) => {
            let request = pb::GetOrganizationRequest {
                organization_id: get.organization_id,
            };
            let organization = connection
                .call(request, |mut client, request| async move {
                    client.get_organization(request).await
                })
                .await?;
            print_organization(format, &organization)
        }
        OrgsCommand::List(paging) => list_organizations(&connection, format, &paging).await,
    }
}

fn print_organization(
    format: OutputFormat,
    organization: &pb::Organization,
) -> Result<(), CliError> {
    match format {
        OutputFormat::Json => print_json(&organization_json(organization)),
        OutputFormat::Table => print_text(organizations_table(std::slice::from_ref(organization))),
    }
}

async fn list_organizations(
    connection: &Connection,
    format: OutputFormat,
    paging: &PageArgs,
) -> Result<(), CliError> {
    let (organizations, next_page_token) = collect_pages(paging, |page_size, page_token| {
        let request = pb::ListOrganizationsRequest {
            page_size,
            page_token,
        };
        async move {
            let page = connection
                .call(request, |mut client, request| async move {
                    client.list_organizations(request).await
                })
                .await?;
            Ok((page.organizations, page.next_page_token))
        }
    })
    .await?;
    match format {
        OutputFormat::Json => print_json(&json!({
            "organizations": organizations.iter().map(organization_json).collect::<Vec<_>>(),
            "next_page_token": next_page_token,
        })),
        OutputFormat::Table => {
            print_text(organizations_table(&organizations))?;
            more_pages_hint(&next_page_token);
            Ok(())
        }
    }
}
