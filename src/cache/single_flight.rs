//! Single-flight loading: requests that miss the same key while it loads wait
//! for that one load and share its result, error included. A load whose
//! request is cancelled is taken over by the next request waiting for it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

use super::LoadResult;
use crate::domain::token::KeyId;

/// A load in progress, shared by every request waiting for it.
type InFlight = Arc<OnceCell<LoadResult>>;

/// The loads running now, by key id.
#[derive(Default)]
pub(super) struct Loads {
    running: Mutex<HashMap<KeyId, InFlight>>,
}

impl Loads {
    /// Runs `load` for `id`, unless a load of `id` is already running: then
    /// waits for that one and returns its result.
    pub(super) async fn run<L, F>(&self, id: KeyId, load: L) -> LoadResult
    where
        L: FnOnce() -> F,
        F: Future<Output = LoadResult>,
    {
        let mut joined = Joined {
            loads: self,
            id,
            in_flight: None,
        };
        let in_flight = joined.in_flight.insert(self.join(id));
        in_flight.get_or_init(load).await.clone()
    }

    /// The running load of `id`, or a new one.
    fn join(&self, id: KeyId) -> InFlight {
        let mut running = self.lock();
        match running.get(&id) {
            Some(in_flight) if !in_flight.initialized() => in_flight.clone(),
            // None, or a finished load whose result may be stale by now.
            _ => {
                let in_flight = InFlight::default();
                running.insert(id, in_flight.clone());
                in_flight
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<KeyId, InFlight>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether no load is listed as running.
    #[cfg(test)]
    pub(super) fn is_idle(&self) -> bool {
        self.lock().is_empty()
    }
}

/// One request's part in a load. Dropped when the request has its result or
/// is cancelled; the last one out takes the load off the list.
struct Joined<'a> {
    loads: &'a Loads,
    id: KeyId,
    in_flight: Option<InFlight>,
}

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        let mut running = self.loads.lock();
        // References are only taken, and (here) given back, under this lock:
        // a count of two means the list and this request are all that is left.
        let abandoned = Arc::strong_count(&in_flight) == 2;
        let listed = running
            .get(&self.id)
            .is_some_and(|listed| Arc::ptr_eq(listed, &in_flight));
        if listed && (in_flight.initialized() || abandoned) {
            running.remove(&self.id);
        }
        drop(in_flight);
        drop(running);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::store::StoreError;

    /// One key's loads, with loaders that count their runs and wait for a
    /// permit from `release` before giving their result.
    struct Harness {
        loads: Arc<Loads>,
        id: KeyId,
        runs: Arc<AtomicUsize>,
        release: Arc<Semaphore>,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                loads: Arc::new(Loads::default()),
                id: KeyId::generate(),
                runs: Arc::new(AtomicUsize::new(0)),
                release: Arc::new(Semaphore::new(0)),
            }
        }

        /// A request for the key whose loader, if it runs, gives `result`.
        fn request(&self, result: fn() -> LoadResult) -> tokio::task::JoinHandle<LoadResult> {
            let (loads, id) = (self.loads.clone(), self.id);
            let runs = self.runs.clone();
            let release = self.release.clone();
            tokio::spawn(async move {
                let load = || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _released = release.acquire().await;
                    result()
                };
                loads.run(id, load).await
            })
        }

        fn runs(&self) -> usize {
            self.runs.load(Ordering::SeqCst)
        }

        /// Lets every spawned task run until it waits, once `at_least`
        /// loaders have started.
        async fn settle(&self, at_least: usize) {
            while self.runs() < at_least {
                tokio::task::yield_now().await;
            }
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        }
    }

    fn no_such_key() -> LoadResult {
        Ok(None)
    }

    fn database_down() -> LoadResult {
        Err(Arc::new(StoreError::Unavailable(sqlx::Error::PoolClosed)))
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_load() {
        let harness = Harness::new();
        let requests: Vec<_> = (0..8).map(|_| harness.request(no_such_key)).collect();
        harness.settle(1).await;
        harness.release.add_permits(8);
        for finished in requests {
            assert!(matches!(finished.await.unwrap(), Ok(None)));
        }
        assert_eq!(harness.runs(), 1);
        assert!(harness.loads.is_idle());
    }

    #[tokio::test]
    async fn a_failed_load_is_shared_and_the_next_request_loads_again() {
        let harness = Harness::new();
        let first = harness.request(database_down);
        let second = harness.request(database_down);
        harness.settle(1).await;
        harness.release.add_permits(8);
        assert!(first.await.unwrap().is_err());
        assert!(second.await.unwrap().is_err());
        assert_eq!(harness.runs(), 1);
        assert!(harness.loads.is_idle());
        let later = harness.request(no_such_key);
        assert!(matches!(later.await.unwrap(), Ok(None)));
        assert_eq!(harness.runs(), 2);
    }

    #[tokio::test]
    async fn a_waiting_request_takes_over_the_load_of_a_cancelled_one() {
        let harness = Harness::new();
        let cancelled = harness.request(no_such_key);
        harness.settle(1).await;
        let waiting = harness.request(no_such_key);
        harness.settle(1).await;
        cancelled.abort();
        assert!(cancelled.await.unwrap_err().is_cancelled());
        harness.settle(2).await;
        harness.release.add_permits(8);
        assert!(matches!(waiting.await.unwrap(), Ok(None)));
        assert_eq!(harness.runs(), 2);
        assert!(harness.loads.is_idle());
    }

    #[tokio::test]
    async fn requests_cancelled_together_leave_nothing_listed() {
        let harness = Harness::new();
        let requests: Vec<_> = (0..4).map(|_| harness.request(no_such_key)).collect();
        harness.settle(1).await;
        for cancelled in &requests {
            cancelled.abort();
        }
        for cancelled in requests {
            assert!(cancelled.await.unwrap_err().is_cancelled());
        }
        assert!(harness.loads.is_idle());
        let load = || async { no_such_key() };
        let abandoned = tokio::time::timeout(Duration::from_millis(20), async {
            harness
                .loads
                .run(harness.id, std::future::pending::<LoadResult>)
                .await
        });
        assert!(abandoned.await.is_err());
        assert!(harness.loads.is_idle());
        assert!(matches!(
            harness.loads.run(harness.id, load).await,
            Ok(None)
        ));
    }
}
