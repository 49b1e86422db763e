//! What Authorize's caller checks cost per call when they are on: a caller
//! token (one SHA-256 and a constant-time comparison per token in force), and
//! a client certificate's identities, remembered per certificate, beside
//! what reading them from a certificate seen for the first time costs.
//! Run: `cargo bench --bench caller_checks`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark: a failure is a failed run"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use keygate::grpc::caller_auth::{AllowedClients, CallerTokens};
use rcgen::{CertificateParams, KeyPair, SanType};

const ENVOY: &str = "spiffe://cluster.local/ns/gateway/sa/envoy";

fn caller_token(criterion: &mut Criterion) {
    let directory = std::env::temp_dir().join(format!("keygate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("caller-tokens");
    let old = "f3a1c9d27b604e8a9c15d2e7b3f08a46c1d9e2b7a5f304c6d8e1b2a3c4d5e6f7";
    let new = "0b9e8d7c6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d";
    for (tokens, name) in [
        (vec![old], "caller_token_one"),
        (vec![old, new], "caller_token_two"),
    ] {
        std::fs::write(&path, tokens.join("\n")).unwrap();
        let loaded = CallerTokens::load(&path).unwrap();
        criterion.bench_function(name, |bencher| {
            bencher.iter(|| assert!(loaded.admits(black_box(old.as_bytes()))))
        });
    }
    std::fs::remove_dir_all(&directory).unwrap();
}

fn client_certificate(criterion: &mut Criterion) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(ENVOY.try_into().unwrap())];
    let leaf = params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .der()
        .to_vec();
    let allowed = AllowedClients::parse(&[ENVOY, "gateway.internal"]).unwrap();
    assert!(allowed.admits(&leaf));
    criterion.bench_function("client_certificate_remembered", |bencher| {
        bencher.iter(|| assert!(allowed.admits(black_box(&leaf))))
    });
    criterion.bench_function("client_certificate_first_seen", |bencher| {
        bencher.iter_batched(
            || AllowedClients::parse(&[ENVOY, "gateway.internal"]).unwrap(),
            |fresh| assert!(fresh.admits(black_box(&leaf))),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, caller_token, client_certificate);
criterion_main!(benches);
