//! The cache's unit tests, and entries as a load would build them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use chrono::Utc;

use super::entry::digests_match;
use super::*;
use crate::domain::events::EventAction;
use crate::domain::hashing::SecretHash;
use crate::domain::key::{Key, KeyKind};
use crate::domain::policy::EMBEDDED_DEFAULT_POLICY;
use crate::domain::token::Environment;
use crate::store::keys::StoredKey;

/// A PHC string: `<salt>$<hash>` after the parameters.
fn hash(salt_and_hash: &str) -> SecretHash {
    SecretHash::from_stored(format!("$argon2id$v=19$m=8,t=1,p=1${salt_and_hash}"))
}

/// An entry for `id` at version 1 with these hashes (`<salt>$<hash>`).
pub(super) fn entry(id: KeyId, current: &str, previous: Option<&str>) -> CachedKey {
    let now = Utc::now();
    let key = Key {
        id,
        organization_id: None,
        kind: KeyKind::System,
        environment: Environment::Live,
        name: "cached".into(),
        description: String::new(),
        scopes: Vec::new(),
        allowed_cidrs: Vec::new(),
        expires_at: None,
        metadata: BTreeMap::new(),
        lock_scopes: false,
        version: 1,
        created_by: None,
        created_at: now,
        updated_at: now,
        disabled_at: None,
        revoked_at: None,
        previous_secret_expires_at: None,
        last_used_at: None,
    };
    let stored = StoredKey {
        key,
        secret_hash: hash(current),
        previous_secret_hash: previous.map(hash),
    };
    let policy = Policy::parse(EMBEDDED_DEFAULT_POLICY).unwrap();
    CachedKey::new(stored, &policy, 1)
}

#[test]
fn attempt_windows_refill_each_second() {
    let start = Instant::now();
    let mut window = AttemptWindow {
        started: start,
        attempts: 0,
    };
    assert!(window.try_take(2, start));
    assert!(window.try_take(2, start));
    assert!(!window.try_take(2, start + Duration::from_millis(500)));
    assert!(window.try_take(2, start + Duration::from_millis(1000)));
}

#[test]
fn digests_match_only_when_every_byte_does() {
    let accepted: SecretDigest = std::array::from_fn(|index| index as u8);
    assert!(digests_match(&accepted, &accepted.clone()));
    for index in 0..accepted.len() {
        for flipped_bit in [0x01u8, 0x80] {
            let mut presented = accepted;
            presented[index] ^= flipped_bit;
            assert!(!digests_match(&accepted, &presented), "byte {index}");
        }
    }
}

#[tokio::test]
async fn concurrent_misses_share_one_load_and_its_result_is_cached() {
    let cache = KeyCache::new(CacheSettings::default());
    let id = KeyId::generate();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let mut waiters = Vec::new();
    for _ in 0..8 {
        let cache = cache.clone();
        let runs = runs.clone();
        let release = release.clone();
        waiters.push(tokio::spawn(async move {
            let load = || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let _released = release.acquire().await;
                Ok(None)
            };
            cache.get_or_load(id, load).await
        }));
    }
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    release.add_permits(8);
    for waiter in waiters {
        assert!(matches!(waiter.await.unwrap(), Ok(None)));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(matches!(cache.get(&id), Lookup::UnknownKey));
    assert!(cache.loads.is_idle());
    cache.evict(&id);
    assert!(matches!(cache.get(&id), Lookup::NotCached));
}

#[test]
fn digests_are_keyed_per_cache() {
    let first = KeyCache::new(CacheSettings::default());
    let second = KeyCache::new(CacheSettings::default());
    assert_eq!(first.digest("secret"), first.digest("secret"));
    assert_ne!(first.digest("secret"), first.digest("secreT"));
    assert_ne!(first.digest("secret"), second.digest("secret"));
}

/// The entry moka holds for `id`, after checking that the read index holds
/// the very same one (or, like moka, none).
fn held(cache: &KeyCache, id: &KeyId) -> Option<Arc<CachedKey>> {
    let in_moka = cache.keys.get(id);
    let in_index = cache.index.get(id);
    match (&in_moka, &in_index) {
        (Some(moka), Some(index)) => assert!(Arc::ptr_eq(moka, index), "index differs"),
        (None, None) => {}
        _ => panic!(
            "moka holds {}, the index {}",
            in_moka.is_some(),
            in_index.is_some()
        ),
    }
    in_moka
}

#[test]
fn disables_and_revocations_are_followed_in_place_one_version_on_and_anything_else_evicts() {
    let cache = KeyCache::new(CacheSettings::default());
    let id = KeyId::generate();
    let (current, previous) = ([1u8; 32], [2u8; 32]);
    let at = Utc::now();
    let change = |action| Some(StateChange { action, at });
    let cached = |cache: &KeyCache| held(cache, &id);
    // A rotated key at `version` with both secrets accepted, the old in grace.
    let rotated = |version| {
        let mut cached_key = entry(id, "salt2$two", Some("salt1$one"));
        cached_key.key.version = version;
        cached_key.key.previous_secret_expires_at = Some(at + chrono::Duration::hours(1));
        cached_key.accept_current(current);
        cached_key.accept_previous(previous);
        cached_key
    };
    cache.insert(rotated(1));

    cache.follow_event(id, 2, change(EventAction::Disabled));
    let disabled = cached(&cache).expect("a disable is followed in place");
    assert_eq!(disabled.key.version, 2);
    assert_eq!(disabled.key.disabled_at, Some(at));
    assert!(disabled.match_current(&current) && disabled.match_previous(&previous));

    // An enable gives access back, which a notification is never trusted
    // to do: the key is read again.
    cache.follow_event(id, 3, change(EventAction::Enabled));
    assert!(cached(&cache).is_none(), "an enable evicts");

    // A revocation also ends the rotated-out secret's grace.
    cache.insert(rotated(3));
    assert!(cached(&cache).is_some_and(|enabled| enabled.previous_in_grace(at)));
    cache.follow_event(id, 4, change(EventAction::Revoked));
    let revoked = cached(&cache).expect("a revocation is followed in place");
    assert_eq!(revoked.key.version, 4);
    assert_eq!(revoked.key.revoked_at, Some(at));
    assert_eq!(revoked.key.previous_secret_expires_at, None);
    assert!(revoked.previous_secret_hash.is_none());
    assert!(!revoked.match_previous(&previous));
    assert!(revoked.match_current(&current));

    // The same event heard again (the origin followed it before its listener
    // heard it), or an older one: the entry already holds it and stays.
    for version in [4, 3] {
        cache.follow_event(id, version, change(EventAction::Revoked));
        assert!(cached(&cache).is_some_and(|again| Arc::ptr_eq(&again, &revoked)));
    }

    // A tombstone retiring at the entry's own version leaves it; one newer
    // than the entry evicts it.
    cache.follow_event(id, 4, None);
    assert!(cached(&cache).is_some());
    cache.follow_event(id, 5, None);
    assert!(cached(&cache).is_none());

    // A version skipped (the entry is older than the event's base): evicted.
    cache.insert(entry(id, "salt2$two", None));
    cache.follow_event(id, 3, change(EventAction::Disabled));
    assert!(cached(&cache).is_none());

    // Changes an event does not carry, a deletion, or no action known: evicted.
    for (version, followed) in [
        (2, change(EventAction::Enabled)),
        (2, change(EventAction::Updated)),
        (2, change(EventAction::Rotated)),
        (i64::MAX, change(EventAction::Deleted)),
        (2, None),
    ] {
        cache.insert(entry(id, "salt2$two", None));
        cache.follow_event(id, version, followed);
        assert!(cached(&cache).is_none(), "{followed:?}");
    }
}

#[test]
fn the_read_index_follows_every_write_and_what_moka_evicts() {
    let cache = KeyCache::new(CacheSettings {
        capacity: 20,
        ..CacheSettings::default()
    });
    let id = KeyId::generate();
    cache.insert(entry(id, "salt1$one", None));
    let loaded = held(&cache, &id).expect("a put reaches the index");
    assert!(cache
        .indexed(&id)
        .is_some_and(|warm| Arc::ptr_eq(&warm, &loaded)));

    // A rebuild under a reloaded policy replaces the entry in both.
    let policy = Policy::parse(EMBEDDED_DEFAULT_POLICY).unwrap();
    cache.apply_policy(&policy);
    let rebuilt = held(&cache, &id).expect("a rebuild stays cached");
    assert!(!Arc::ptr_eq(&rebuilt, &loaded));
    assert_eq!(
        rebuilt.loaded_at, loaded.loaded_at,
        "the time to live runs on"
    );

    // An unknown id cached negatively, and an eviction, leave the index.
    cache.put(id, None);
    assert!(held(&cache, &id).is_none());
    cache.insert(entry(id, "salt1$one", None));
    cache.evict(&id);
    assert!(held(&cache, &id).is_none());
    assert!(cache.indexed(&id).is_none());

    // What moka drops to stay within its capacity leaves the index too.
    let ids: Vec<KeyId> = (0..200).map(|_| KeyId::generate()).collect();
    for id in &ids {
        cache.insert(entry(*id, "salt1$one", None));
        cache.run_pending_tasks();
    }
    cache.run_pending_tasks();
    let cached = cache.entry_count();
    assert!(cached <= 20, "{cached} cached");
    assert_eq!(cache.index.len() as u64, cached);
    for id in &ids {
        held(&cache, id);
    }
}

#[test]
fn an_entry_moka_drops_while_a_write_looks_at_it_does_not_stay_in_the_index() {
    // A write that leaves the entry as it is (an event the entry already
    // holds), while moka drops that entry to stay within its capacity or on
    // expiry: done here from inside the write, where that race would land.
    let cache = KeyCache::new(CacheSettings::default());
    let id = KeyId::generate();
    cache.insert(entry(id, "salt1$one", None));
    cache.write(id, |existing| {
        assert!(existing.is_some());
        cache.keys.invalidate(&id);
        Op::Nop
    });
    assert!(held(&cache, &id).is_none());
    assert_eq!(cache.index.len(), 0);
}

#[test]
fn warm_reads_stop_at_the_time_to_live_before_moka_expires_the_entry() {
    let cache = KeyCache::new(CacheSettings {
        ttl: Duration::from_millis(100),
        ..CacheSettings::default()
    });
    let (read, unread) = (KeyId::generate(), KeyId::generate());
    cache.insert(entry(read, "salt1$one", None));
    cache.insert(entry(unread, "salt1$one", None));
    assert!(cache.indexed(&read).is_some());
    std::thread::sleep(Duration::from_millis(150));
    // moka has not run its expirations yet; the index still holds both.
    assert_eq!(cache.index.len(), 2);
    assert!(cache.indexed(&read).is_none());
    assert_eq!(cache.index.len(), 1, "a warm read drops what it refuses");
    assert!(matches!(cache.get(&read), Lookup::NotCached));
    // moka's timer wheel expires entries to the second: wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.index.len() > 0 && Instant::now() < deadline {
        cache.run_pending_tasks();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cache.index.len(), 0, "moka's expiry leaves the index");
}
