//! Organizations: only system keys create, read and list them, and their
//! inputs are checked.

use keygate::grpc::pb::{self, Environment};
use tonic::Code;

use crate::support::{assert_status, authed, key_request, TestApp};

#[tokio::test]
async fn system_keys_create_get_and_list_organizations() {
    let app = TestApp::spawn().await;
    let mut client = app.client.clone();
    let first = app.create_organization("First Org").await;
    let second = app.create_organization("Second Org").await;
    let request = pb::GetOrganizationRequest {
        organization_id: first.clone(),
    };
    let fetched = client
        .get_organization(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.display_name, "First Org");

    let request = pb::ListOrganizationsRequest {
        page_size: 1,
        page_token: String::new(),
    };
    let page = client
        .list_organizations(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.organizations[0].id, second);
    let request = pb::ListOrganizationsRequest {
        page_size: 1,
        page_token: page.next_page_token,
    };
    let page = client
        .list_organizations(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.organizations[0].id, first);
    assert!(page.next_page_token.is_empty());
}

#[tokio::test]
async fn organization_keys_cannot_touch_organizations() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    // Even a `*` organization key is not a system key.
    let (_, token) = app.org_key(&org, Environment::Live, &["*"]).await;
    let mut client = app.client.clone();
    let before = app.count("organizations").await;
    let request = pb::CreateOrganizationRequest {
        display_name: "Sneaky".into(),
    };
    assert_status(
        client.create_organization(authed(&token, request)).await,
        Code::PermissionDenied,
        "system key",
    );
    let request = pb::GetOrganizationRequest {
        organization_id: org.clone(),
    };
    assert_status(
        client.get_organization(authed(&token, request)).await,
        Code::PermissionDenied,
        "system key",
    );
    let request = pb::ListOrganizationsRequest::default();
    assert_status(
        client.list_organizations(authed(&token, request)).await,
        Code::PermissionDenied,
        "system key",
    );
    assert_eq!(app.count("organizations").await, before);
}

#[tokio::test]
async fn organization_inputs_are_checked() {
    let app = TestApp::spawn().await;
    let mut client = app.client.clone();
    for bad in ["", "x".repeat(65).as_str(), "semi;colon"] {
        let request = pb::CreateOrganizationRequest {
            display_name: bad.to_owned(),
        };
        assert_status(
            client
                .create_organization(authed(&app.admin_token, request))
                .await,
            Code::InvalidArgument,
            "display_name",
        );
    }
    assert_eq!(app.count("organizations").await, 0);
    let request = pb::GetOrganizationRequest {
        organization_id: uuid::Uuid::new_v4().to_string(),
    };
    assert_status(
        client
            .get_organization(authed(&app.admin_token, request))
            .await,
        Code::NotFound,
        "organization not found",
    );
    let request = pb::GetOrganizationRequest {
        organization_id: "not-a-uuid".into(),
    };
    assert_status(
        client
            .get_organization(authed(&app.admin_token, request))
            .await,
        Code::InvalidArgument,
        "organization_id",
    );

    // A key for an organization that does not exist.
    let before = app.row_counts().await;
    let request = key_request(
        &uuid::Uuid::new_v4().to_string(),
        Environment::Live,
        &["customers:read"],
    );
    assert_status(
        app.create_key_as(&app.admin_token, request).await,
        Code::NotFound,
        "organization not found",
    );
    assert_eq!(app.row_counts().await, before);
}
