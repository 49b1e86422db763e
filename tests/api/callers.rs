//! Who may call Authorize. By default anyone who reaches the port; with a
//! caller token file, callers that send one of its tokens as
//! `x-keygate-caller-token` (the file rotates without a restart); with mutual
//! TLS and an allowlist, clients whose certificate names an allowed identity.
//! KeyService keeps its own bearer authentication either way.

use std::path::PathBuf;
use std::time::Duration;

use keygate::grpc::caller_auth::{AllowedClients, CallerTokens};
use keygate::grpc::pb::key_service_client::KeyServiceClient;
use keygate::grpc::pb::{self, authorizer_client::AuthorizerClient, Environment};
use keygate::server::config::TlsSettings;
use keygate::server::Application;
use secrecy::ExposeSecret;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::support::pki::{make_pki, TestPki};
use crate::support::{authed, key_request, TestApp, TestDatabase};

const OLD_TOKEN: &str = "caller-token-old-6f1c2a9e4b7d";
const NEW_TOKEN: &str = "caller-token-new-0d3b8e5f2a61";
const WRONG_TOKEN: &str = "caller-token-xyz-0000000000000";
const ENVOY: &str = "spiffe://cluster.local/ns/gateway/sa/envoy";

/// A caller token file in a directory of its own, removed with it.
struct TokenFile {
    directory: PathBuf,
    path: PathBuf,
}

impl TokenFile {
    fn new(tokens: &[&str]) -> TokenFile {
        let directory =
            std::env::temp_dir().join(format!("keygate-callers-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&directory).unwrap();
        let file = TokenFile {
            path: directory.join("caller-tokens"),
            directory,
        };
        file.replace(tokens);
        file
    }

    /// Replaces the file at once (a new file renamed over it, as a Kubernetes
    /// Secret volume does).
    fn replace(&self, tokens: &[&str]) {
        let next = self.directory.join("caller-tokens.next");
        std::fs::write(&next, format!("# caller tokens\n{}\n", tokens.join("\n"))).unwrap();
        std::fs::rename(&next, &self.path).unwrap();
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// Authorize for `token` on `GET /customers`, sending `caller_token` if any.
async fn authorize_as(
    channel: Channel,
    caller_token: Option<&str>,
    token: &str,
) -> Result<pb::Decision, Status> {
    let mut request = tonic::Request::new(pb::AuthorizeRequest {
        token: token.to_owned(),
        method: "GET".into(),
        path: "/customers".into(),
        ..Default::default()
    });
    if let Some(caller_token) = caller_token {
        request
            .metadata_mut()
            .insert("x-keygate-caller-token", caller_token.parse().unwrap());
    }
    let response = AuthorizerClient::new(channel).authorize(request).await;
    response.map(tonic::Response::into_inner)
}

fn assert_refused(answer: Result<pb::Decision, Status>, what: &str) {
    let status = answer.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(
        status.message(),
        "caller not authenticated: missing or invalid caller credentials",
        "{what}: the same message whatever the cause"
    );
}

/// Polls (at most 5 s) until `caller_token` gets a decision (`true`) or a
/// refusal (`false`) as `expected`.
async fn wait_until_answered(app: &TestApp, caller_token: &str, token: &str, expected: bool) {
    for _ in 0..100 {
        let answer = authorize_as(app.channel.clone(), Some(caller_token), token).await;
        if answer.is_ok() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{caller_token}: still not answered as expected ({expected}) after 5 s");
}

#[tokio::test]
async fn without_caller_checks_authorize_needs_no_caller_credential() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (_key, token) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    for caller_token in [None, Some(WRONG_TOKEN)] {
        let decision = authorize_as(app.channel.clone(), caller_token, &token)
            .await
            .unwrap();
        assert!(decision.allowed, "{caller_token:?}: {decision:?}");
    }
}

#[tokio::test]
async fn caller_tokens_are_required_and_rotate_without_a_restart() {
    let file = TokenFile::new(&[OLD_TOKEN]);
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    settings.authorizer_callers.tokens = Some(CallerTokens::load(&file.path).unwrap());
    let app = TestApp::spawn_with(&db, settings).await;
    // KeyService needs no caller token: its callers present their own keys.
    let org = app.create_organization("Acme").await;
    let (_key, token) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let channel = || app.channel.clone();

    assert_refused(
        authorize_as(channel(), None, &token).await,
        "no caller token",
    );
    assert_refused(
        authorize_as(channel(), Some(WRONG_TOKEN), &token).await,
        "a wrong caller token",
    );
    let padded = format!(" {OLD_TOKEN} ");
    for (caller_token, what) in [
        ("", "an empty caller token"),
        (padded.as_str(), "the right token with spaces around it"),
        (&OLD_TOKEN[1..], "the right token cut short"),
    ] {
        assert_refused(
            authorize_as(channel(), Some(caller_token), &token).await,
            what,
        );
    }
    // The caller token in `authorization`, where Authorize's callers may put
    // the API key being checked, is not taken for it.
    let mut misplaced = tonic::Request::new(pb::AuthorizeRequest {
        token: token.clone(),
        method: "GET".into(),
        path: "/customers".into(),
        ..Default::default()
    });
    let bearer = format!("Bearer {OLD_TOKEN}");
    misplaced
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let answer = AuthorizerClient::new(channel()).authorize(misplaced).await;
    assert_refused(
        answer.map(tonic::Response::into_inner),
        "the caller token in authorization",
    );
    let decision = authorize_as(channel(), Some(OLD_TOKEN), &token)
        .await
        .unwrap();
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.reason(), pb::Reason::Ok);

    // A rotation: the new token beside the old one, then the old one removed.
    file.replace(&[OLD_TOKEN, NEW_TOKEN]);
    wait_until_answered(&app, NEW_TOKEN, &token, true).await;
    assert!(authorize_as(channel(), Some(OLD_TOKEN), &token)
        .await
        .is_ok());
    file.replace(&[NEW_TOKEN]);
    wait_until_answered(&app, OLD_TOKEN, &token, false).await;
    assert_refused(
        authorize_as(channel(), Some(OLD_TOKEN), &token).await,
        "a token removed from the file",
    );
    let decision = authorize_as(channel(), Some(NEW_TOKEN), &token)
        .await
        .unwrap();
    assert!(decision.allowed, "{decision:?}");

    // A file without a token is refused: the tokens in force stay.
    file.replace(&[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(authorize_as(channel(), Some(NEW_TOKEN), &token)
        .await
        .is_ok());
    assert_refused(
        authorize_as(channel(), Some(OLD_TOKEN), &token).await,
        "the old token, after a refused file",
    );
}

/// A server with mutual TLS whose Authorize admits `allowed` client
/// identities, its admin token, its port, and the means to stop it.
async fn mutual_tls_server(
    db: &TestDatabase,
    pki: &TestPki,
    allowed: &[&str],
) -> (String, u16, tokio::sync::oneshot::Sender<()>) {
    let mut settings = db.settings();
    settings.tls = Some(TlsSettings {
        cert_pem: pki.server.0.clone().into_bytes(),
        key_pem: pki.server.1.clone().into_bytes(),
        client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
    });
    settings.authorizer_callers.allowed_clients = Some(AllowedClients::parse(allowed).unwrap());
    let application = Application::build(settings).await.unwrap();
    let port = application.local_addr().port();
    let admin = application
        .manager()
        .bootstrap(keygate::domain::key::DisplayName::parse("name", "admin").unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    (admin.token.expose_secret().to_owned(), port, stop)
}

/// A channel to `port` presenting `identity` (certificate, key).
async fn channel_as(pki: &TestPki, port: u16, identity: &(String, String)) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost")
        .identity(Identity::from_pem(&identity.0, &identity.1));
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn allowed_client_certificates_may_call_authorize_and_others_may_not() {
    let db = TestDatabase::create().await;
    let pki = make_pki();
    let (admin_token, port, stop) =
        mutual_tls_server(&db, &pki, &[ENVOY, "gateway.internal"]).await;
    let envoy = channel_as(&pki, port, &pki.client_naming(&[ENVOY])).await;
    let gateway = channel_as(&pki, port, &pki.client).await;
    let intruder_certificate = pki.client_naming(&[
        "spiffe://cluster.local/ns/default/sa/intruder",
        "intruder.internal",
    ]);
    let intruder = channel_as(&pki, port, &intruder_certificate).await;

    // KeyService is not affected: the intruder's certificate passed the
    // handshake, and its bearer key is what KeyService checks.
    let mut keys = KeyServiceClient::new(intruder.clone());
    let organization = pb::CreateOrganizationRequest {
        display_name: "Acme".into(),
    };
    let org = keys
        .create_organization(authed(&admin_token, organization))
        .await
        .unwrap()
        .into_inner()
        .id;
    let created = keys
        .create_key(authed(
            &admin_token,
            key_request(&org, Environment::Live, &["customers:read"]),
        ))
        .await
        .unwrap()
        .into_inner();

    for (name, channel) in [("envoy", envoy), ("gateway", gateway)] {
        let decision = authorize_as(channel, None, &created.token).await.unwrap();
        assert!(decision.allowed, "{name}: {decision:?}");
    }
    for _ in 0..3 {
        assert_refused(
            authorize_as(intruder.clone(), None, &created.token).await,
            "a certificate from the same CA naming no allowed identity",
        );
    }
    let _ = stop.send(());
}

#[tokio::test]
async fn an_allowlist_of_clients_without_mutual_tls_stops_the_start() {
    let db = TestDatabase::create().await;
    let pki = make_pki();
    let server_tls = TlsSettings {
        cert_pem: pki.server.0.clone().into_bytes(),
        key_pem: pki.server.1.clone().into_bytes(),
        client_ca_pem: None,
    };
    for tls in [None, Some(server_tls)] {
        let mut settings = db.settings();
        settings.tls = tls;
        settings.authorizer_callers.allowed_clients =
            Some(AllowedClients::parse(&[ENVOY]).unwrap());
        let Err(error) = Application::build(settings).await else {
            panic!("started with an allowlist of clients and no client CA");
        };
        let message = format!("{error:#}");
        assert!(
            message.contains("KEYGATE_AUTHORIZER_ALLOWED_CLIENTS")
                && message.contains("KEYGATE_TLS_CLIENT_CA"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn the_binary_rereads_caller_tokens_on_sighup_and_never_logs_them() {
    use std::process::Stdio;

    use crate::support::process::{keygate, ServerProcess};

    let db = TestDatabase::create().await;
    let file = TokenFile::new(&[OLD_TOKEN]);
    let path = file.path.to_str().unwrap();
    let mut command = keygate(
        &db.url(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--authorizer-token-file",
            path,
        ],
    );
    command.stdout(Stdio::null());
    let mut server = ServerProcess::spawn(command).await;
    let channel = Endpoint::from_shared(format!("http://{}", server.address))
        .unwrap()
        .connect()
        .await
        .unwrap();

    for _ in 0..5 {
        assert_refused(
            authorize_as(channel.clone(), None, "").await,
            "no caller token",
        );
        assert_refused(
            authorize_as(channel.clone(), Some(WRONG_TOKEN), "").await,
            "a wrong caller token",
        );
    }
    let decision = authorize_as(channel.clone(), Some(OLD_TOKEN), "")
        .await
        .unwrap();
    assert_eq!(decision.reason(), pb::Reason::MissingKey);

    // SIGHUP reads the file again, changed or not (here not: nothing else
    // would read it).
    server.signal("HUP").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(authorize_as(channel.clone(), Some(OLD_TOKEN), "")
        .await
        .is_ok());

    let exit = server.stop().await;
    assert!(exit.success(), "server exit: {exit:?}");
    let log = server.output().await;
    assert_eq!(
        log.matches("caller tokens reloaded").count(),
        2,
        "once as the watcher started, once on SIGHUP:\n{log}"
    );
    // One line per cause, however many refusals (the next would come a minute on).
    for cause in ["missing_token", "wrong_token"] {
        let lines = log
            .lines()
            .filter(|line| line.contains("authorizer caller refused") && line.contains(cause))
            .count();
        assert_eq!(lines, 1, "{cause}:\n{log}");
    }
    for token in [OLD_TOKEN, WRONG_TOKEN] {
        assert!(!log.contains(token), "a caller token reached the log");
    }
}
