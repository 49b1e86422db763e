//! Junk traffic cannot grow the logs without bound: a flood of wrong secrets
//! for one key, and of lifecycle calls without a key, each write about one
//! line an interval, not one a request.

use keygate::domain::token::KeyId;
use keygate::grpc::pb::authorizer_client::AuthorizerClient;
use keygate::grpc::pb::key_service_client::KeyServiceClient;
use keygate::grpc::pb::{self, Environment};
use tonic::Code;

use crate::support::process::{bootstrap_token, keygate, ServerProcess};
use crate::support::{authed, key_request, token_for, TestDatabase};

const WRONG_SECRETS: usize = 300;
const UNAUTHENTICATED_CALLS: usize = 200;

#[tokio::test]
async fn floods_of_wrong_secrets_and_missing_keys_write_a_line_an_interval() {
    let db = TestDatabase::create().await;
    let admin_token = bootstrap_token(&db.url()).await;
    let command = keygate(&db.url(), &["serve", "--listen", "127.0.0.1:0"]);
    let mut server = ServerProcess::spawn(command).await;
    let address = format!("http://{}", server.address);
    let mut keys = KeyServiceClient::connect(address.clone()).await.unwrap();
    let request = pb::CreateOrganizationRequest {
        display_name: "Acme".into(),
    };
    let organization = keys
        .create_organization(authed(&admin_token, request))
        .await
        .unwrap()
        .into_inner()
        .id;
    let request = key_request(&organization, Environment::Live, &["customers:read"]);
    let created = keys
        .create_key(authed(&admin_token, request))
        .await
        .unwrap()
        .into_inner();
    let key_id = KeyId::parse(&created.key.unwrap().id).unwrap();

    // Someone else's secret for that key: argon2 refuses the first few, the
    // per-key limit all the rest.
    let wrong = token_for(&key_id);
    let mut authorizer = AuthorizerClient::connect(address).await.unwrap();
    for _ in 0..WRONG_SECRETS {
        let request = pb::AuthorizeRequest {
            token: wrong.clone(),
            method: "GET".into(),
            path: "/customers".into(),
            ..Default::default()
        };
        let decision = authorizer.authorize(request).await.unwrap().into_inner();
        assert!(!decision.allowed);
    }
    for _ in 0..UNAUTHENTICATED_CALLS {
        let request = pb::GetKeyRequest {
            key_id: key_id.to_string(),
        };
        let refused = keys.get_key(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }

    assert!(server.stop().await.success());
    let log = server.output().await;
    let over_the_limit = log
        .matches("argon2 attempts for key over the limit")
        .count();
    let unauthenticated = log.matches("caller not authenticated").count();
    // One line for each interval the flood spans (10 s each; a slow
    // machine may take two).
    assert!(
        (1..=3).contains(&over_the_limit),
        "{over_the_limit} over-the-limit lines for {WRONG_SECRETS} requests"
    );
    assert!(
        (1..=3).contains(&unauthenticated),
        "{unauthenticated} unauthenticated lines for {UNAUTHENTICATED_CALLS} calls"
    );
}
