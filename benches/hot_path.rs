//! Micro-benchmarks of the hot path: token parse, route match, permission check,
//! and a full decision on a warm cache (target: under 2 µs); a cache read alone
//! beside a plain moka cache's. Also what a listener pays to leave a tombstone
//! while many are live (after a burst of changes), and what a lookup pays then.
//! Run: `cargo bench --bench hot_path`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark: a failure is a failed run"
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use keygate::authorizer::decision::{AuthorizeRequest, Target};
use keygate::authorizer::usage::UsageRecorder;
use keygate::authorizer::Authorizer;
use keygate::cache::{CacheSettings, CachedKey, KeyCache};
use keygate::domain::hashing::{HashingParams, SecretHash, SecretHasher};
use keygate::domain::key::{Key, KeyKind};
use keygate::domain::permission::{Permission, Scope};
use keygate::domain::policy::{Policy, EMBEDDED_DEFAULT_POLICY};
use keygate::domain::token::{Environment, KeyId, Token, TokenPrefix};
use keygate::store::keys::StoredKey;
use secrecy::ExposeSecret;
use sqlx::postgres::PgPoolOptions;

fn policy() -> Policy {
    Policy::parse(EMBEDDED_DEFAULT_POLICY).unwrap()
}

/// A cache entry for key `id` with `scopes` and the secret `secret_hash`,
/// confirmed in epoch 1.
fn cached_key(id: KeyId, scopes: &[&str], secret_hash: SecretHash, policy: &Policy) -> CachedKey {
    let stored = StoredKey {
        key: key(id, scopes),
        secret_hash,
        previous_secret_hash: None,
    };
    CachedKey::new(stored, policy, 1)
}

fn key(id: KeyId, scopes: &[&str]) -> Key {
    let now = Utc::now();
    Key {
        id,
        organization_id: Some(uuid::Uuid::new_v4()),
        kind: KeyKind::Organization,
        environment: Environment::Live,
        name: "bench".into(),
        description: String::new(),
        scopes: scopes
            .iter()
            .map(|scope| Scope::parse(scope).unwrap())
            .collect(),
        allowed_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
        expires_at: None,
        metadata: BTreeMap::from([("team".to_owned(), "billing".to_owned())]),
        lock_scopes: false,
        version: 1,
        created_by: None,
        created_at: now,
        updated_at: now,
        disabled_at: None,
        revoked_at: None,
        previous_secret_expires_at: None,
        last_used_at: None,
    }
}

fn token_parse(criterion: &mut Criterion) {
    let prefix = TokenPrefix::default();
    let issued = Token::issue(&prefix, Environment::Live, &KeyId::generate());
    let raw = issued.token.expose_secret().to_owned();
    criterion.bench_function("token_parse", |bencher| {
        bencher.iter(|| {
            Token::parse(black_box(&raw), &prefix)
                .unwrap()
                .key_id()
                .as_uuid()
        })
    });
}

fn route_match(criterion: &mut Criterion) {
    let policy = policy();
    criterion.bench_function("route_match", |bencher| {
        bencher.iter(|| {
            let found = policy.routes.find(
                black_box("POST"),
                black_box("/subscriptions/schedule-cancel/sub_123?x=1"),
            );
            found.unwrap().route.permission.as_str().len()
        })
    });
}

fn permission_check(criterion: &mut Criterion) {
    let policy = policy();
    let scopes: Vec<Scope> = [
        "customers:write",
        "payments:read",
        "subscriptions:*",
        "plans:read",
    ]
    .iter()
    .map(|scope| Scope::parse(scope).unwrap())
    .collect();
    let effective = policy.catalog.effective(&scopes);
    let needed = Permission::parse("subscriptions:write").unwrap();
    let missing = Permission::parse("refunds:write").unwrap();
    criterion.bench_function("permission_check", |bencher| {
        bencher
            .iter(|| effective.allows(black_box(&needed)) && !effective.allows(black_box(&missing)))
    });
}

fn warm_decision(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (authorizer, raw_token) = runtime.block_on(async {
        // The pool is never used: every request below is a cache hit.
        let pool = PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let policy = Arc::new(policy());
        let hasher = SecretHasher::new(HashingParams::FASTEST, 1).unwrap();
        let cache = KeyCache::new(CacheSettings::default());
        let usage = UsageRecorder::spawn(pool.clone(), Duration::from_secs(3600));
        let prefix = TokenPrefix::default();
        let id = KeyId::generate();
        let issued = Token::issue(&prefix, Environment::Live, &id);
        let secret_hash = hasher.hash(&issued.secret).await.unwrap();
        let scopes = ["customers:read", "payments:write", "subscriptions:*"];
        cache.insert(cached_key(id, &scopes, secret_hash, &policy));
        let authorizer = Authorizer::new(pool, hasher, prefix, policy, cache, usage);
        (authorizer, issued.token.expose_secret().to_owned())
    });
    let bearer = format!("Bearer {raw_token}");
    let request = AuthorizeRequest {
        presented: &bearer,
        target: Target::Route {
            method: "GET",
            path: "/customers/cus_123",
        },
        client_ip: Some("10.1.2.3".parse().unwrap()),
    };
    println!(
        "size of the decide future: {} bytes",
        std::mem::size_of_val(&authorizer.decide(&request, Utc::now()))
    );
    // The first call verifies with argon2 and caches the digest.
    assert!(runtime
        .block_on(authorizer.decide(&request, Utc::now()))
        .unwrap()
        .allowed());
    criterion.bench_function("full_decision_warm_cache", |bencher| {
        bencher.to_async(&runtime).iter(|| async {
            let decision = authorizer
                .decide(black_box(&request), Utc::now())
                .await
                .unwrap();
            assert!(decision.allowed());
            decision
        })
    });
}

/// The same decision cycling over 100,000 warm keys, as a large tenant mix does:
/// shows what CPU cache misses add.
fn warm_decision_many_keys(criterion: &mut Criterion) {
    const KEYS: usize = 100_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (authorizer, bearers) = runtime.block_on(async {
        let pool = PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let policy = Arc::new(policy());
        let hasher = SecretHasher::new(HashingParams::FASTEST, 1).unwrap();
        let cache = KeyCache::new(CacheSettings {
            capacity: 200_000,
            ..CacheSettings::default()
        });
        let usage = UsageRecorder::spawn(pool.clone(), Duration::from_secs(3600));
        let prefix = TokenPrefix::default();
        let mut bearers = Vec::with_capacity(KEYS);
        for _ in 0..KEYS {
            let id = KeyId::generate();
            let issued = Token::issue(&prefix, Environment::Live, &id);
            let secret_hash = hasher.hash(&issued.secret).await.unwrap();
            let scopes = ["customers:read", "payments:write", "subscriptions:*"];
            cache.insert(cached_key(id, &scopes, secret_hash, &policy));
            bearers.push(issued.token.expose_secret().to_owned());
        }
        let authorizer = Authorizer::new(pool, hasher, prefix, policy, cache, usage);
        for bearer in &bearers {
            let request = AuthorizeRequest {
                presented: bearer,
                target: Target::Route {
                    method: "GET",
                    path: "/customers/cus_123",
                },
                client_ip: Some("10.1.2.3".parse().unwrap()),
            };
            assert!(authorizer
                .decide(&request, Utc::now())
                .await
                .unwrap()
                .allowed());
        }
        (authorizer, bearers)
    });
    let mut next = 0usize;
    criterion.bench_function("full_decision_warm_cache_100k_keys", |bencher| {
        bencher.to_async(&runtime).iter(|| {
            next = (next + 7919) % KEYS;
            let request = AuthorizeRequest {
                presented: &bearers[next],
                target: Target::Route {
                    method: "GET",
                    path: "/customers/cus_123",
                },
                client_ip: Some("10.1.2.3".parse().unwrap()),
            };
            let authorizer = &authorizer;
            async move {
                authorizer
                    .decide(black_box(&request), Utc::now())
                    .await
                    .unwrap()
                    .allowed()
            }
        })
    });
}

/// A cache read alone, for one key and cycling over 100,000: Keygate's cache
/// (its read index) beside a plain moka cache holding the same entries, the
/// reason warm reads do not go to moka (see `cache::read_index`).
fn cache_reads(criterion: &mut Criterion) {
    const KEYS: usize = 100_000;
    let policy = policy();
    let cache = KeyCache::new(CacheSettings {
        capacity: 200_000,
        ..CacheSettings::default()
    });
    let moka: moka::sync::Cache<KeyId, Arc<CachedKey>> = moka::sync::Cache::builder()
        .max_capacity(200_000)
        .time_to_live(Duration::from_secs(300))
        .build();
    let ids: Vec<KeyId> = (0..KEYS).map(|_| KeyId::generate()).collect();
    let entry = |id: KeyId| {
        let hash = SecretHash::from_stored("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into());
        cached_key(id, &["customers:read"], hash, &policy)
    };
    for id in &ids {
        cache.insert(entry(*id));
        moka.insert(*id, Arc::new(entry(*id)));
    }
    cache.run_pending_tasks();
    moka.run_pending_tasks();
    for (count, suffix) in [(1, "1_key"), (KEYS, "100k_keys")] {
        let mut next = 0usize;
        criterion.bench_function(&format!("cache_read_{suffix}"), |bencher| {
            bencher.iter(|| {
                next = (next + 7919) % count;
                black_box(cache.get(&ids[next]))
            })
        });
        let mut next = 0usize;
        criterion.bench_function(&format!("moka_read_{suffix}"), |bencher| {
            bencher.iter(|| {
                next = (next + 7919) % count;
                black_box(moka.get(&ids[next]))
            })
        });
    }
}

/// A replica's freshness with `count` live tombstones, and their key ids.
fn with_tombstones(count: usize) -> (Arc<keygate::freshness::Freshness>, Vec<KeyId>) {
    let freshness = keygate::freshness::Freshness::new();
    let live: Vec<KeyId> = (0..count).map(|_| KeyId::generate()).collect();
    for id in &live {
        freshness.add_tombstone(*id, 2, |_, _| {});
    }
    (freshness, live)
}

fn tombstones(criterion: &mut Criterion) {
    for (count, name) in [
        (1_000, "tombstone_lookup_1k_live"),
        (50_000, "tombstone_lookup_50k_live"),
    ] {
        let (freshness, live) = with_tombstones(count);
        let mut next = 0;
        criterion.bench_function(name, |bencher| {
            bencher.iter(|| {
                next = (next + 1) % live.len();
                black_box(freshness.is_superseded(&live[next], 1))
            });
        });
    }
    let (freshness, _) = with_tombstones(50_000);
    // Each iteration leaves one more: the map grows from 50,000 as this runs.
    criterion.bench_function("tombstone_add_from_50k_live", |bencher| {
        bencher.iter(|| freshness.add_tombstone(KeyId::generate(), 2, |_, _| {}));
    });
}

criterion_group!(
    benches,
    token_parse,
    route_match,
    permission_check,
    warm_decision,
    warm_decision_many_keys,
    cache_reads,
    tombstones
);
criterion_main!(benches);
