//! Logs and traces as an operator meets them, through the `keygate` binary:
//! turning trace export on leaves the logs as they were; health checks and
//! server reflection are not traced unless asked; spans follow OpenTelemetry's
//! conventions for gRPC servers and databases.

use std::process::Stdio;
use std::time::Duration;

use keygate::grpc::pb;
use keygate::grpc::pb::authorizer_client::AuthorizerClient;
use keygate::grpc::pb::key_service_client::KeyServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use crate::support::otlp::{attribute, start_receiver, string_attribute};
use crate::support::process::{bootstrap_token, keygate, ServerProcess};
use crate::support::{authed, TestDatabase};

/// The lines an operator watches for while the server starts and stops.
const STARTED: [&str; 2] = ["keygate serving", "event listener connected"];
const STOPPED: &str = "keygate stopped";

#[tokio::test]
async fn info_lines_are_logged_while_traces_are_exported() {
    let db = TestDatabase::create().await;
    // Nothing listens there: exports fail, and the logs must not care.
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = unused.local_addr().unwrap();
    drop(unused);
    let mut command = keygate(&db.url(), &["serve", "--listen", "127.0.0.1:0"]);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        // The default filter (`info`), as an operator runs it.
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let started = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if STARTED.iter().all(|wanted| log.contains(wanted)) {
                return;
            }
        }
    })
    .await;
    // Once a call is answered, the server is past installing its signal handler.
    if let Some(address) = log
        .split_once("address=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
    {
        let channel = Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        check_health(channel, "").await.unwrap();
    }
    let pid = child.id().unwrap().to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(exit.success(), "server exit: {exit:?}\n{log}");
    assert!(started.is_ok(), "start-up lines missing:\n{log}");
    for wanted in STARTED.iter().chain([&STOPPED]) {
        assert!(log.contains(wanted), "{wanted:?} missing:\n{log}");
    }
}

/// What a collector received from one server run.
struct Collected {
    spans: Vec<Span>,
    resources: Vec<Vec<KeyValue>>,
}

/// Spawns `keygate serve <extra>` exporting to a fresh receiver.
async fn traced_server(
    db: &TestDatabase,
    extra: &[&str],
) -> (
    ServerProcess,
    mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) {
    let (collector, exports) = start_receiver().await;
    let mut arguments = vec!["serve", "--listen", "127.0.0.1:0"];
    arguments.extend_from_slice(extra);
    let mut command = keygate(&db.url(), &arguments);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null());
    (ServerProcess::spawn(command).await, exports)
}

/// Stops the server (which flushes its spans) and gathers what it exported.
async fn stop_and_collect(
    server: &mut ServerProcess,
    mut exports: mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) -> Collected {
    let exit = server.stop().await;
    assert!(exit.success(), "server exit: {exit:?}");
    let mut collected = Collected {
        spans: Vec::new(),
        resources: Vec::new(),
    };
    while let Ok(Some(export)) = tokio::time::timeout(Duration::from_secs(2), exports.recv()).await
    {
        for resource_spans in export.resource_spans {
            collected
                .resources
                .push(resource_spans.resource.unwrap_or_default().attributes);
            for scope_spans in resource_spans.scope_spans {
                collected.spans.extend(scope_spans.spans);
            }
        }
    }
    collected
}

fn status_code_attribute(span: &Span) -> Option<i64> {
    match attribute(&span.attributes, "rpc.grpc.status_code") {
        Some(Value::IntValue(code)) => Some(*code),
        _ => None,
    }
}

fn span_status(span: &Span) -> StatusCode {
    span.status
        .as_ref()
        .map_or(StatusCode::Unset, |status| status.code())
}

fn the_span<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| panic!("no {name} span among {:?}", names(spans)))
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|span| span.name.as_str()).collect()
}

async fn check_health(channel: Channel, service: &str) -> Result<(), tonic::Status> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    HealthClient::new(channel).check(request).await.map(|_| ())
}

async fn list_services(channel: Channel) {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    assert!(answers.message().await.unwrap().is_some());
}

/// Calls `path`, a method the server does not have, and returns its status.
async fn call_unknown_method(channel: Channel, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::GetKeyRequest, pb::Key>::default();
    grpc.unary(
        tonic::Request::new(pb::GetKeyRequest::default()),
        http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn spans_leave_out_probes_and_follow_the_grpc_and_database_conventions() {
    let db = TestDatabase::create().await;
    let admin_token = bootstrap_token(&db.url()).await;
    let (mut server, exports) = traced_server(&db, &[]).await;
    let channel = Channel::from_shared(format!("http://{}", server.address))
        .unwrap()
        .connect()
        .await
        .unwrap();

    for _ in 0..3 {
        check_health(channel.clone(), "").await.unwrap();
    }
    list_services(channel.clone()).await;
    let decision = AuthorizerClient::new(channel.clone())
        .authorize(pb::AuthorizeRequest {
            token: admin_token.clone(),
            method: "GET".into(),
            path: "/customers".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(decision.allowed);
    let mut keys = KeyServiceClient::new(channel.clone());
    let missing = pb::GetKeyRequest {
        key_id: keygate::domain::token::KeyId::generate().to_string(),
    };
    let not_found = keys
        .get_key(authed(&admin_token, missing))
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), tonic::Code::NotFound);
    let unimplemented = call_unknown_method(channel, "/keygate.v1.KeyService/NoSuchMethod").await;
    assert_eq!(unimplemented.code(), tonic::Code::Unimplemented);

    let collected = stop_and_collect(&mut server, exports).await;
    let spans = &collected.spans;
    for span in spans {
        assert!(
            !span.name.starts_with("grpc.health") && !span.name.starts_with("grpc.reflection"),
            "probes and reflection are not traced by default: {:?}",
            names(spans)
        );
    }

    // A caller's mistake is not the server's error; an unknown method is.
    let get_key = the_span(spans, "keygate.v1.KeyService/GetKey");
    assert_eq!(status_code_attribute(get_key), Some(5));
    assert_eq!(span_status(get_key), StatusCode::Unset);
    let authorize = the_span(spans, "keygate.v1.Authorizer/Authorize");
    assert_eq!(span_status(authorize), StatusCode::Unset);
    let unknown = the_span(spans, "grpc");
    assert_eq!(
        string_attribute(&unknown.attributes, "rpc.method"),
        Some("_OTHER")
    );
    assert_eq!(
        string_attribute(&unknown.attributes, "rpc.method_original"),
        Some("keygate.v1.KeyService/NoSuchMethod")
    );
    assert_eq!(status_code_attribute(unknown), Some(12));
    assert_eq!(span_status(unknown), StatusCode::Error);

    let find_key = the_span(spans, "keygate.store.find_key_by_id");
    assert_eq!(
        string_attribute(&find_key.attributes, "db.system"),
        Some("postgresql")
    );
    assert_eq!(
        string_attribute(&find_key.attributes, "db.operation"),
        Some("SELECT")
    );
    for span in spans
        .iter()
        .filter(|span| span.name.starts_with("keygate.store."))
    {
        assert_eq!(
            string_attribute(&span.attributes, "db.system"),
            Some("postgresql"),
            "{}",
            span.name
        );
        assert!(
            string_attribute(&span.attributes, "db.operation").is_some(),
            "{} has no db.operation",
            span.name
        );
    }

    let resource = &collected.resources[0];
    assert_eq!(
        string_attribute(resource, "service.version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn health_checks_are_traced_with_their_status_when_asked() {
    let db = TestDatabase::create().await;
    let (mut server, exports) = traced_server(&db, &["--trace-health-checks"]).await;
    let channel = Channel::from_shared(format!("http://{}", server.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    check_health(channel.clone(), "").await.unwrap();
    let unknown = check_health(channel, "no.such.Service").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let collected = stop_and_collect(&mut server, exports).await;
    let checks: Vec<&Span> = collected
        .spans
        .iter()
        .filter(|span| span.name == "grpc.health.v1.Health/Check")
        .collect();
    let mut codes: Vec<Option<i64>> = checks
        .iter()
        .map(|span| status_code_attribute(span))
        .collect();
    codes.sort();
    assert_eq!(codes, [Some(0), Some(5)], "{:?}", names(&collected.spans));
    for check in checks {
        assert_eq!(span_status(check), StatusCode::Unset);
    }
}
