//! Work shared by concurrent callers: the first caller for a key starts the work as a
//! task; later callers for the same key wait for the same result. The task runs to the
//! end even if every caller goes away (a kubelet that cancels a pull and retries finds
//! it done or still running, never half done), and forgets its key when it ends.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

type Work<T, E> = Shared<BoxFuture<'static, Result<T, Arc<E>>>>;

/// In-flight work by key.
pub struct SingleFlight<K, T, E> {
    running: Arc<Mutex<HashMap<K, Work<T, E>>>>,
}

impl<K, T, E> Default for SingleFlight<K, T, E> {
    fn default() -> Self {
        SingleFlight {
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, T, E> SingleFlight<K, T, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Joins the work running for `key`, or starts `make()` for it. `on_panic` makes the
    /// error reported if the task dies.
    pub async fn run<F>(
        &self,
        key: K,
        make: impl FnOnce() -> F,
        on_panic: fn(String) -> E,
    ) -> Result<T, Arc<E>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let work = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            match running.get(&key) {
                Some(work) => work.clone(),
                None => {
                    let future = make();
                    let registry = self.running.clone();
                    let task_key = key.clone();
                    let handle = tokio::spawn(async move {
                        let result = future.await;
                        registry
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&task_key);
                        result
                    });
                    let work = async move {
                        match handle.await {
                            Ok(result) => result.map_err(Arc::new),
                            Err(err) => Err(Arc::new(on_panic(err.to_string()))),
                        }
                    }
                    .boxed()
                    .shared();
                    running.insert(key, work.clone());
                    work
                }
            }
        };
        work.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let inflight: Arc<SingleFlight<&str, u32, String>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, wait) = tokio::sync::watch::channel(false);
        let mut callers = Vec::new();
        for _ in 0..5 {
            let inflight = inflight.clone();
            let runs = runs.clone();
            let mut wait = wait.clone();
            callers.push(tokio::spawn(async move {
                inflight
                    .run(
                        "layer",
                        move || async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            let _ = wait.wait_for(|go| *go).await;
                            Ok(7)
                        },
                        |e| e,
                    )
                    .await
            }));
        }
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        for caller in callers {
            assert_eq!(caller.await.unwrap().unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Finished work is forgotten: the next call runs again.
        let again = inflight
            .run("layer", || async { Ok(8) }, |e| e)
            .await
            .unwrap();
        assert_eq!(again, 8);
    }

    #[tokio::test]
    async fn work_outlives_its_callers() {
        let inflight: Arc<SingleFlight<u8, (), String>> = Arc::default();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let caller = {
            let inflight = inflight.clone();
            tokio::spawn(async move {
                inflight
                    .run(
                        1,
                        move || async move {
                            let _ = started_tx.send(());
                            let _ = gate_rx.await;
                            let _ = done_tx.send(());
                            Ok(())
                        },
                        |e| e,
                    )
                    .await
            })
        };
        started_rx.await.unwrap();
        caller.abort();
        let _ = caller.await;
        gate_tx.send(()).unwrap();
        done_rx
            .await
            .expect("the work finished although its caller went away");
    }
}
