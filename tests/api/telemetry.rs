//! OpenTelemetry traces end to end: the `keygate` binary exports over OTLP/gRPC
//! to a trace receiver in this test, the Authorize span has the caller's
//! `traceparent` as its parent, and the store and argon2 spans hang below it.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use keygate::grpc::pb;
use keygate::grpc::pb::authorizer_client::AuthorizerClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::support::otlp::{attribute, start_receiver, string_attribute};
use crate::support::process::{bootstrap_token, keygate, ServerProcess};
use crate::support::{key_id_of, secret_of, TestDatabase};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn authorize_span_reaches_the_collector_under_the_callers_trace() {
    let db = TestDatabase::create().await;
    let (collector, mut exports) = start_receiver().await;
    let url = db.url();
    let admin_token = bootstrap_token(&url).await;
    let admin_key_id = key_id_of(&admin_token);

    let mut command = keygate(&url, &["serve", "--listen", "127.0.0.1:0"]);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env("OTEL_SERVICE_NAME", "keygate-under-test")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null());
    let mut server = ServerProcess::spawn(command).await;

    let mut authorizer = AuthorizerClient::connect(format!("http://{}", server.address))
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::AuthorizeRequest {
        token: admin_token.clone(),
        method: "GET".into(),
        path: "/customers/cus_123".into(),
        ..Default::default()
    });
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let decision = authorizer.authorize(request).await.unwrap().into_inner();
    assert!(decision.allowed);

    // Flushed on shutdown at the latest.
    let exit = server.stop().await;
    assert!(exit.success(), "server exit: {exit:?}");

    let mut spans: Vec<Span> = Vec::new();
    let mut resources = Vec::new();
    while let Ok(Some(export)) = tokio::time::timeout(Duration::from_secs(2), exports.recv()).await
    {
        for resource_spans in export.resource_spans {
            resources.push(resource_spans.resource.unwrap_or_default().attributes);
            for scope_spans in resource_spans.scope_spans {
                spans.extend(scope_spans.spans);
            }
        }
    }
    let rpc = spans
        .iter()
        .find(|span| span.name == "keygate.v1.Authorizer/Authorize")
        .unwrap_or_else(|| panic!("no Authorize span among {spans:?}"));
    assert_eq!(hex(&rpc.trace_id), TRACE_ID);
    assert_eq!(hex(&rpc.parent_span_id), CALLER_SPAN_ID);
    assert_eq!(rpc.kind, 2, "a server span");
    assert_eq!(string_attribute(&rpc.attributes, "reason"), Some("ok"));
    assert_eq!(
        string_attribute(&rpc.attributes, "key_id"),
        Some(admin_key_id.as_str())
    );
    assert_eq!(
        string_attribute(&rpc.attributes, "rpc.method"),
        Some("Authorize")
    );
    assert!(matches!(
        attribute(&rpc.attributes, "rpc.grpc.status_code"),
        Some(Value::IntValue(0))
    ));

    // The cold key was loaded and verified below the call's span.
    let children: HashMap<&str, &Span> = spans
        .iter()
        .filter(|span| span.parent_span_id == rpc.span_id)
        .map(|span| (span.name.as_str(), span))
        .collect();
    for name in ["keygate.store.find_key_by_id", "keygate.argon2.verify"] {
        let child = children
            .get(name)
            .unwrap_or_else(|| panic!("no {name} below the Authorize span: {spans:?}"));
        assert_eq!(hex(&child.trace_id), TRACE_ID);
    }

    let resource = &resources[0];
    assert_eq!(
        string_attribute(resource, "service.name"),
        Some("keygate-under-test")
    );
    assert_eq!(
        string_attribute(resource, "deployment.environment"),
        Some("test")
    );

    // The token, or its secret part, is on no span.
    let exported = format!("{spans:?}");
    assert!(!exported.contains(&admin_token));
    assert!(!exported.contains(secret_of(&admin_token)));
}
