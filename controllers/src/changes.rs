//! The change-driven loop every controller and scheduler runs on.

use std::time::Duration;

use store::Store;
use tokio_util::sync::CancellationToken;

/// Run `pass` at start, after every store change `relevant` picks (waiting `settle` first, so
/// that a burst of changes makes one pass over the store as it then is), and every `every` as a
/// safety net, until cancelled. The loop every controller and scheduler runs on.
pub async fn on_changes<F, Fut>(
    store: &Store,
    every: Duration,
    settle: Duration,
    cancel: &CancellationToken,
    relevant: impl Fn(&store::Event) -> bool,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    on_changes_or_at(store, every, settle, cancel, relevant, || {
        let p = pass();
        async move {
            p.await;
            None
        }
    })
    .await
}

/// [`on_changes`], where a pass may also ask for the next one sooner than `every` (a time it
/// knows something falls due: a CronJob's next schedule time).
pub async fn on_changes_or_at<F, Fut>(
    store: &Store,
    every: Duration,
    settle: Duration,
    cancel: &CancellationToken,
    relevant: impl Fn(&store::Event) -> bool,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Duration>>,
{
    loop {
        let mut live = store.subscribe();
        let due = pass().await;
        let tick = tokio::time::sleep(due.map_or(every, |d| d.min(every)));
        tokio::pin!(tick);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut tick => break,
                ev = live.recv() => match ev {
                    Ok(e) if relevant(&e) => {
                        if !settle.is_zero() {
                            tokio::time::sleep(settle).await;
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_pass_may_ask_to_run_again_sooner_than_the_timer() {
        let store = Store::memory(100).await.expect("store");
        let cancel = CancellationToken::new();
        let passes = AtomicUsize::new(0);
        let stop = cancel.clone();
        let run = on_changes_or_at(
            &store,
            Duration::from_secs(3600),
            Duration::ZERO,
            &cancel,
            |_| false,
            || async {
                if passes.fetch_add(1, Ordering::SeqCst) == 2 {
                    stop.cancel();
                }
                Some(Duration::from_millis(20))
            },
        );
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("three passes well before the hour's timer");
        assert_eq!(passes.load(Ordering::SeqCst), 3);
    }
}
