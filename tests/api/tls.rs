//! Server TLS and mutual TLS on loopback, with certificates made by the test.

use keygate::grpc::pb::{self, authorizer_client::AuthorizerClient};
use keygate::server::config::TlsSettings;
use keygate::server::Application;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::support::pki::make_pki;
use crate::support::TestDatabase;

async fn authorize(endpoint: Endpoint) -> Result<pb::Decision, String> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| format!("{error:?}"))?;
    let request = pb::AuthorizeRequest {
        permission: "customers:read".into(),
        ..Default::default()
    };
    let answer = AuthorizerClient::new(channel).authorize(request).await;
    answer
        .map(|response| response.into_inner())
        .map_err(|status| format!("{status:?}"))
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let db = TestDatabase::create().await;
    let pki = make_pki();
    let mut settings = db.settings();
    settings.tls = Some(TlsSettings {
        cert_pem: pki.server.0.clone().into_bytes(),
        key_pem: pki.server.1.clone().into_bytes(),
        client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
    });
    let application = Application::build(settings).await.unwrap();
    let port = application.local_addr().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    let endpoint = || Endpoint::from_shared(format!("https://127.0.0.1:{port}")).unwrap();
    let trusting = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .domain_name("localhost")
    };

    let with_certificate = endpoint()
        .tls_config(trusting().identity(Identity::from_pem(&pki.client.0, &pki.client.1)))
        .unwrap();
    let decision = authorize(with_certificate).await.unwrap();
    assert_eq!(decision.reason(), pb::Reason::MissingKey);

    let without_certificate = endpoint().tls_config(trusting()).unwrap();
    assert!(
        authorize(without_certificate).await.is_err(),
        "a client without a certificate got in"
    );

    let plaintext = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    assert!(
        authorize(plaintext).await.is_err(),
        "a plaintext client got in"
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
