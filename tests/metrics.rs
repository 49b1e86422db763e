//! `/metrics` after real traffic: the counters match what was done, the
//! exposition is valid Prometheus text with a HELP for every family, latencies
//! are histograms that add up across replicas, and callers cannot add series.
//! One server in this process, since metrics come from one process-wide recorder.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure there is a failed test"
)]

#[allow(
    dead_code,
    unused_imports,
    reason = "the metrics test uses a few of the integration tests' support files"
)]
#[path = "api/support/mod.rs"]
mod support;

use std::collections::{BTreeSet, HashMap, HashSet};

use keygate::grpc::pb::{self, Environment};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{authed, set_disabled_through, TestApp, TestDatabase};

async fn scrape(address: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_headers, body) = response.split_once("\r\n\r\n").unwrap();
    body.to_owned()
}

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_decisions_cache_argon2_rpcs_and_the_listener() {
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    settings.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = TestApp::spawn_with(&db, settings).await;
    let metrics = app.metrics_addr.unwrap();
    let org = app.create_organization("Acme").await;
    let (key, token) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;

    for _ in 0..7 {
        assert!(app.authorize(&token, "GET", "/customers", "").await.allowed);
    }
    for _ in 0..3 {
        assert!(
            !app.authorize(&token, "POST", "/customers", "")
                .await
                .allowed
        );
    }
    for _ in 0..2 {
        assert!(
            !app.authorize("garbage", "GET", "/customers", "")
                .await
                .allowed
        );
    }
    set_disabled_through(&app, &app.admin_token, &key, true, true).await;
    // The disable is taken in place by the cached key; a deletion evicts it.
    let evictions_before = sample(&scrape(metrics).await, "keygate_cache_evictions_total");
    let request = pb::DeleteKeyRequest {
        key_id: key.id.clone(),
        wait_for_propagation: Some(true),
    };
    app.client
        .clone()
        .delete_key(authed(&app.admin_token, request))
        .await
        .unwrap();
    let missing = pb::GetKeyRequest {
        key_id: keygate::domain::token::KeyId::generate().to_string(),
    };
    assert!(app
        .client
        .clone()
        .get_key(authed(&app.admin_token, missing))
        .await
        .is_err());

    let text = scrape(metrics).await;
    assert_eq!(
        sample(&text, "keygate_authorize_decisions_total{reason=\"ok\"}"),
        7.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "keygate_authorize_decisions_total{reason=\"permission_denied\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "keygate_authorize_decisions_total{reason=\"malformed_key\"}"
        ),
        2.0
    );
    // Authorize ran 12 times; the key was verified with argon2 once, and so was the admin key.
    assert_eq!(
        sample(&text, "keygate_rpc_duration_seconds_count{method=\"/keygate.v1.Authorizer/Authorize\",code=\"OK\"}"),
        12.0
    );
    assert_eq!(
        sample(&text, "keygate_rpc_duration_seconds_count{method=\"/keygate.v1.KeyService/GetKey\",code=\"NOT_FOUND\"}"),
        1.0
    );
    assert!(sample(&text, "keygate_argon2_verifications_total") >= 2.0);
    assert!(sample(&text, "keygate_argon2_verify_seconds_count") >= 2.0);
    assert!(sample(&text, "keygate_cache_hits_total") >= 9.0);
    assert!(sample(&text, "keygate_cache_misses_total") >= 1.0);
    assert!(sample(&text, "keygate_cache_changes_followed_total") >= 1.0);
    assert!(sample(&text, "keygate_cache_evictions_total") >= evictions_before + 1.0);
    assert!(sample(&text, "keygate_cache_entries") >= 1.0);
    assert_eq!(sample(&text, "keygate_event_listener_connected"), 1.0);
    assert_eq!(sample(&text, "keygate_cache_trusted"), 1.0);
    assert!(sample(&text, "keygate_event_apply_lag_seconds_count") >= 1.0);
    assert!(sample(&text, "keygate_db_pool_connections") >= 1.0);

    // Made-up methods, without credentials, share one series.
    for index in 0..5 {
        let path = format!("/keygate.v1.KeyService/MadeUp{index}");
        assert_eq!(
            call_unknown_method(app.channel.clone(), path).await,
            tonic::Code::Unimplemented
        );
    }
    let text = scrape(metrics).await;
    assert!(!text.contains("MadeUp"), "{text}");
    assert_eq!(
        sample(
            &text,
            "keygate_rpc_duration_seconds_count{method=\"_OTHER\",code=\"UNIMPLEMENTED\"}"
        ),
        5.0,
        "{text}"
    );
    let known = known_methods();
    for method in label_values(&text, "method") {
        assert!(
            method == "_OTHER" || known.contains(&method),
            "method={method:?} is not a method of the API"
        );
    }
    for code in label_values(&text, "code") {
        assert!(CODE_NAMES.contains(&code.as_str()), "code={code:?}");
    }

    let problems = exposition_problems(&text);
    assert!(problems.is_empty(), "{problems:#?}\n{text}");
    assert!(!text.contains(" summary\n"), "no summaries: {text}");
    for histogram in [
        "keygate_rpc_duration_seconds",
        "keygate_argon2_verify_seconds",
        "keygate_event_apply_lag_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {histogram} histogram\n")),
            "{histogram} is not a histogram: {text}"
        );
        assert!(
            text.contains(&format!("{histogram}_bucket{{")),
            "{histogram} has no buckets"
        );
    }
    assert_eq!(
        sample(&text, "keygate_rpc_duration_seconds_bucket{method=\"/keygate.v1.Authorizer/Authorize\",code=\"OK\",le=\"+Inf\"}"),
        12.0
    );
    let build_info = format!(
        "keygate_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &build_info), 1.0, "{text}");
    // CPU time counts whole seconds (counters are integers), so it may be 0 here.
    assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    for process_metric in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            sample(&text, process_metric) > 0.0,
            "{process_metric}: {text}"
        );
    }
}

/// The canonical names of the gRPC status codes.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Every `/package.Service/Method` the proto files declare.
fn known_methods() -> BTreeSet<String> {
    let files = prost_types::FileDescriptorSet::decode(keygate::grpc::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = BTreeSet::new();
    for file in files.file {
        for service in &file.service {
            for method in &service.method {
                methods.insert(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    methods
}

/// Calls `path`, a method the server does not have, and returns the status code.
async fn call_unknown_method(channel: tonic::transport::Channel, path: String) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::GetKeyRequest, pb::Key>::default();
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let request = tonic::Request::new(pb::GetKeyRequest::default());
    grpc.unary(request, path, codec).await.unwrap_err().code()
}

/// Every value the label `name` takes in `text`.
fn label_values(text: &str, name: &str) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        if let Some(series) = parse_sample(line) {
            for (label, value) in series.labels {
                if label == name {
                    values.insert(value);
                }
            }
        }
    }
    values
}

/// Where `text` breaks the Prometheus text format (0.0.4): lines that are not
/// `# HELP name text`, `# TYPE name kind` or `name{label="value",...} number`,
/// a sample before its family's TYPE, a family without HELP, a histogram
/// bucket without `le`.
fn exposition_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut kinds: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let mut problem = |what: &str| problems.push(format!("line {}: {what}: {line}", index + 1));
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_once(' ').map_or(rest, |(name, _)| name);
            if !is_metric_name(name) || !helped.insert(name.to_owned()) {
                problem("bad or repeated HELP");
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let kinds_known = ["counter", "gauge", "histogram", "summary", "untyped"];
            match rest.split_once(' ') {
                Some((name, kind)) if is_metric_name(name) && kinds_known.contains(&kind) => {
                    if !helped.contains(name) {
                        problem("TYPE without HELP");
                    }
                    if kinds.insert(name.to_owned(), kind.to_owned()).is_some() {
                        problem("repeated TYPE");
                    }
                }
                _ => problem("bad TYPE"),
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some(Series { name, labels }) = parse_sample(line) else {
            problem("not a sample");
            continue;
        };
        let kind_of = |family: &str| kinds.get(family).map(String::as_str);
        let has = |wanted: &str| labels.iter().any(|(label, _)| label == wanted);
        let suffixed = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let family = name.strip_suffix(suffix)?;
            Some((*suffix, kind_of(family)?))
        });
        match (kind_of(name), suffixed) {
            (Some("histogram"), _) => problem("a histogram's samples are _bucket, _sum, _count"),
            (Some("summary"), _) if !has("quantile") => problem("summary sample without quantile"),
            (Some(_), _) => {}
            (None, Some(("_bucket", "histogram"))) if !has("le") => problem("bucket without le"),
            (
                None,
                Some(("_bucket", "histogram") | ("_sum" | "_count", "histogram" | "summary")),
            ) => {}
            (None, _) => problem("sample before its TYPE"),
        }
    }
    problems
}

fn is_metric_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && characters.all(|rest| rest.is_ascii_alphanumeric() || rest == '_' || rest == ':')
}

fn is_label_name(name: &str) -> bool {
    !name.contains(':') && is_metric_name(name)
}

/// A sample line's series: its name and its labels, in order.
struct Series<'line> {
    name: &'line str,
    labels: Vec<(String, String)>,
}

/// `name{label="value",...} value [timestamp]`, with a number for the value.
fn parse_sample(line: &str) -> Option<Series<'_>> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after_name) = inside.split_once("=\"")?;
            if !is_label_name(label) {
                return None;
            }
            let mut value = String::new();
            let mut characters = after_name.char_indices();
            let closing = loop {
                match characters.next()? {
                    (_, '\\') => match characters.next()?.1 {
                        'n' => value.push('\n'),
                        escaped @ ('\\' | '"') => value.push(escaped),
                        _ => return None,
                    },
                    (at, '"') => break at,
                    (_, other) => value.push(other),
                }
            };
            labels.push((label.to_owned(), value));
            inside = &after_name[closing + 1..];
            if let Some(after_comma) = inside.strip_prefix(',') {
                inside = after_comma;
            } else if !inside.starts_with('}') {
                return None;
            }
        }
    }
    let mut fields = rest.strip_prefix(' ')?.split(' ');
    fields.next()?.parse::<f64>().ok()?;
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Series { name, labels })
}
