//! Operational surface: server reflection (on by default, switchable off) and
//! JSON logs.

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use crate::support::process::keygate;
use crate::support::{TestApp, TestDatabase};

async fn listed_services(app: &TestApp) -> Result<Vec<String>, tonic::Status> {
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    let Some(response) = responses.message().await? else {
        return Ok(Vec::new());
    };
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect()),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn reflection_lists_every_service_unless_switched_off() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(&db, db.settings()).await;
    let services = listed_services(&app).await.unwrap();
    for expected in [
        "keygate.v1.KeyService",
        "keygate.v1.Authorizer",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|name| name == expected),
            "{expected} missing from {services:?}"
        );
    }
    drop(app);

    let mut settings = db.settings();
    settings.reflection = false;
    let quiet = TestApp::spawn_with_existing_admin(&db, settings).await;
    let status = listed_services(&quiet).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let db = TestDatabase::create().await;
    let url = db.url();
    let output = keygate(&url, &["--log-format", "json", "migrate"])
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            event["level"].is_string() && event["fields"].is_object(),
            "{line}"
        );
    }
}

#[tokio::test]
async fn health_reports_not_serving_while_draining() {
    let mut app = TestApp::spawn().await;
    assert_eq!(app.health("liveness").await, ServingStatus::Serving);
    let mut watches = Vec::new();
    for service in ["", "keygate.v1.Authorizer", "keygate.v1.KeyService"] {
        let mut client = HealthClient::new(app.channel.clone());
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let mut updates = client.watch(request).await.unwrap().into_inner();
        let first = updates.message().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::Serving, "{service:?}");
        watches.push((service, updates));
    }

    app.begin_shutdown();
    for (service, mut updates) in watches {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), updates.message())
            .await
            .expect("no health update after the stop signal")
            .unwrap()
            .unwrap();
        assert_eq!(next.status(), ServingStatus::NotServing, "{service:?}");
    }
}
