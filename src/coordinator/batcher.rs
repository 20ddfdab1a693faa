//! Group commit: items from many streams are written in one statement. A flush takes everything
//! queued since the last one (up to a maximum), so batches grow with load and cost nothing when
//! idle: a lone item is written at once, unless it is of a kind allowed to linger (see
//! `Linger`), which waits a moment for an item that must go at once and shares its write.
//!
//! One bad item fails alone: a batch the store refuses (for a reason other than being
//! unavailable) is written again item by item, so only the items the store refuses fail. Items
//! may name what they belong to (`Isolation`); once one fails, the later items of the same
//! owner fail without being written, so nothing that followed a failed item commits without it
//! (a task's result after its refused records).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::StoreError;

/// Why an item was not written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The store refused the batch for a reason retrying will not fix.
    #[error("the store failed: {0}")]
    Store(String),
    /// The coordinator is stopping and the store was unavailable until then.
    #[error("the coordinator stopped before the store became available")]
    Stopped,
}

struct Job<I, O> {
    item: I,
    reply: oneshot::Sender<Result<O, BatchError>>,
}

/// A queue of items written in batches by one background loop.
#[derive(Debug)]
pub struct Batcher<I, O> {
    sender: mpsc::Sender<Job<I, O>>,
}

impl<I, O> std::fmt::Debug for Job<I, O> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Job")
    }
}

/// Items that nobody waits for and that usually have company on the way: a batch made only of
/// them is held back for at most `at_most`, and flushed as soon as any other item arrives.
/// (A task's start is followed by its result within a millisecond for short tasks; written
/// together they cost one commit instead of two.)
#[derive(Debug)]
pub struct Linger<I> {
    /// The longest a batch of lingering items is held back.
    pub at_most: Duration,
    /// Whether an item may linger.
    pub may_linger: fn(&I) -> bool,
}

// Not derived: the derive would ask `I: Copy`, and only a function pointer of `I` is held.
impl<I> Clone for Linger<I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I> Copy for Linger<I> {}

/// Which owner an item belongs to, for failing an owner's later items after one failed.
#[derive(Debug)]
pub struct Isolation<I, K> {
    /// The item's owner, if its fate is tied to its owner's earlier items.
    pub owner: fn(&I) -> Option<K>,
}

impl<I, K> Clone for Isolation<I, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I, K> Copy for Isolation<I, K> {}

/// How many owners with a failed item are remembered (their later items fail too).
const REMEMBERED_FAILURES: usize = 4096;

/// Owners whose items failed, with why, oldest forgotten first.
struct Failed<K> {
    why: HashMap<K, BatchError>,
    order: VecDeque<K>,
}

impl<K: Eq + Hash + Clone> Failed<K> {
    fn new() -> Self {
        Self {
            why: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn remember(&mut self, owner: K, error: &BatchError) {
        if self.why.insert(owner.clone(), error.clone()).is_none() {
            self.order.push_back(owner);
            if self.order.len() > REMEMBERED_FAILURES
                && let Some(oldest) = self.order.pop_front()
            {
                self.why.remove(&oldest);
            }
        }
    }

    fn of(&self, owner: Option<&K>) -> Option<BatchError> {
        owner.and_then(|owner| self.why.get(owner)).map(|error| {
            BatchError::Store(format!(
                "an earlier write of the same attempt failed: {error}"
            ))
        })
    }
}

/// The longest pause between retries while the store is unavailable.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the loop on `tracker`. `flush` writes a batch and answers one output per item, in
    /// order. While the store is unavailable the same batch is retried, until `stop` fires. The
    /// loop ends when every `Batcher` handle is dropped and the queue is drained.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn<F, Fut, K>(
        name: &'static str,
        max_batch: usize,
        linger: Option<Linger<I>>,
        isolation: Isolation<I, K>,
        tracker: &TaskTracker,
        stop: CancellationToken,
        flush: F,
    ) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, StoreError>> + Send,
        I: Clone,
        K: Eq + Hash + Clone + Send + 'static,
    {
        let (sender, mut receiver) = mpsc::channel::<Job<I, O>>(max_batch * 4);
        tracker.spawn(async move {
            let mut jobs = Vec::with_capacity(max_batch);
            let mut failed = Failed::new();
            while receiver.recv_many(&mut jobs, max_batch).await > 0 {
                if let Some(linger) = linger {
                    wait_for_company(&mut receiver, &mut jobs, max_batch, linger).await;
                }
                let mut items = Vec::with_capacity(jobs.len());
                let mut waiting = Vec::with_capacity(jobs.len());
                for job in jobs.drain(..) {
                    let owner = (isolation.owner)(&job.item);
                    match failed.of(owner.as_ref()) {
                        Some(error) => {
                            let _ = job.reply.send(Err(error));
                        }
                        None => {
                            items.push(job.item);
                            waiting.push((owner, job.reply));
                        }
                    }
                }
                if items.is_empty() {
                    continue;
                }
                let single = items.len() == 1;
                match flush_until_available(name, &flush, items.clone(), &stop).await {
                    Ok(outputs) => {
                        for ((_, reply), output) in waiting.into_iter().zip(outputs) {
                            // A dropped receiver means its stream ended; nothing to tell.
                            let _ = reply.send(Ok(output));
                        }
                    }
                    Err(error @ BatchError::Store(_)) if !single => {
                        tracing::warn!(batch = name, size = items.len(), %error, "writing the refused batch item by item");
                        for (item, (owner, reply)) in items.into_iter().zip(waiting) {
                            let written = match failed.of(owner.as_ref()) {
                                Some(error) => Err(error),
                                None => flush_until_available(name, &flush, vec![item], &stop)
                                    .await
                                    .and_then(|mut outputs| {
                                        outputs.pop().ok_or_else(|| {
                                            BatchError::Store("the write answered nothing".into())
                                        })
                                    }),
                            };
                            if let (Err(error), Some(owner)) = (&written, &owner) {
                                failed.remember(owner.clone(), error);
                            }
                            let _ = reply.send(written);
                        }
                    }
                    Err(error) => {
                        for (owner, reply) in waiting {
                            if let (BatchError::Store(_), Some(owner)) = (&error, owner) {
                                failed.remember(owner, &error);
                            }
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Self { sender }
    }

    /// Queues an item; the returned receiver answers once its batch is written. Waits while the
    /// queue is full, which slows the callers down to the store's pace.
    pub async fn enqueue(&self, item: I) -> oneshot::Receiver<Result<O, BatchError>> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = self.sender.send(Job { item, reply }).await {
            let _ = job.reply.send(Err(BatchError::Stopped));
        }
        answer
    }
}

/// Holds a batch made only of lingering items until another kind of item arrives, the batch is
/// full, the queue closes, or `linger.at_most` passes.
async fn wait_for_company<I, O>(
    receiver: &mut mpsc::Receiver<Job<I, O>>,
    jobs: &mut Vec<Job<I, O>>,
    max_batch: usize,
    linger: Linger<I>,
) {
    let deadline = tokio::time::Instant::now() + linger.at_most;
    while jobs.len() < max_batch && jobs.iter().all(|job| (linger.may_linger)(&job.item)) {
        let room = max_batch - jobs.len();
        match tokio::time::timeout_at(deadline, receiver.recv_many(jobs, room)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn flush_until_available<I: Clone, O, F, Fut>(
    name: &'static str,
    flush: &F,
    items: Vec<I>,
    stop: &CancellationToken,
) -> Result<Vec<O>, BatchError>
where
    F: Fn(Vec<I>) -> Fut,
    Fut: Future<Output = Result<Vec<O>, StoreError>>,
{
    let mut pause = Duration::from_millis(50);
    loop {
        match flush(items.clone()).await {
            Ok(outputs) => return Ok(outputs),
            Err(StoreError::Unavailable(error)) => {
                tracing::warn!(batch = name, size = items.len(), %error, "store unavailable; retrying the batch");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return Err(BatchError::Stopped),
                }
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
            Err(error) => {
                tracing::error!(batch = name, size = items.len(), error = %error, "store refused a batch");
                return Err(BatchError::Store(error.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// An item: its owner, and whether the store refuses it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Item {
        owner: u32,
        bad: bool,
    }

    fn refused() -> StoreError {
        StoreError::Internal(sqlx::Error::Protocol(
            "invalid input syntax (SQLSTATE 22P02)".into(),
        ))
    }

    #[tokio::test]
    async fn a_refused_item_fails_alone_and_takes_only_its_owners_later_items_with_it() {
        let tracker = TaskTracker::new();
        let written: Arc<Mutex<Vec<Item>>> = Arc::default();
        let batcher = {
            let written = written.clone();
            Batcher::spawn(
                "test",
                1000,
                None,
                Isolation {
                    owner: |item: &Item| Some(item.owner),
                },
                &tracker,
                CancellationToken::new(),
                move |items: Vec<Item>| {
                    let written = written.clone();
                    async move {
                        // Like a transaction: one bad item and nothing is written.
                        if items.iter().any(|item| item.bad) {
                            return Err(refused());
                        }
                        written.lock().unwrap().extend(&items);
                        Ok(items.iter().map(|item| item.owner).collect::<Vec<_>>())
                    }
                },
            )
        };
        // 100 good items of owners 0..100, owner 50's records refused, then every owner's
        // second item (owner 50's result among them).
        let mut answers = Vec::new();
        for owner in 0..100 {
            let item = Item {
                owner,
                bad: owner == 50,
            };
            answers.push((item, batcher.enqueue(item).await));
        }
        for owner in 0..100 {
            let item = Item { owner, bad: false };
            answers.push((item, batcher.enqueue(item).await));
        }
        let mut failed = Vec::new();
        for (item, answer) in answers {
            match answer.await.unwrap() {
                Ok(owner) => assert_eq!(owner, item.owner),
                Err(error) => failed.push((item, error)),
            }
        }
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(failed.iter().all(|(item, _)| item.owner == 50));
        assert!(
            failed[1]
                .1
                .to_string()
                .contains("earlier write of the same attempt"),
            "{failed:?}"
        );
        let written = written.lock().unwrap();
        assert_eq!(written.len(), 198);
        assert!(written.iter().all(|item| item.owner != 50));
    }

    /// Every batch a flush was asked to write, in order.
    type Writes = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A batcher of numbers whose writes are recorded; `flush` answers each write.
    fn recording<F, Fut>(
        linger: Option<Linger<u32>>,
        stop: CancellationToken,
        flush: F,
    ) -> (Batcher<u32, u32>, Writes)
    where
        F: Fn(Vec<u32>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u32>, StoreError>> + Send + 'static,
    {
        let writes: Writes = Arc::default();
        let batcher = {
            let writes = writes.clone();
            let flush = Arc::new(flush);
            Batcher::spawn(
                "test",
                100,
                linger,
                Isolation {
                    owner: |_: &u32| None::<u32>,
                },
                &TaskTracker::new(),
                stop,
                move |items: Vec<u32>| {
                    writes.lock().unwrap().push(items.clone());
                    flush(items)
                },
            )
        };
        (batcher, writes)
    }

    fn echo(items: Vec<u32>) -> std::future::Ready<Result<Vec<u32>, StoreError>> {
        std::future::ready(Ok(items))
    }

    /// Items lingering (odd numbers here) wait up to `at_most` for company, measured on tokio's
    /// clock, which the test moves by hand.
    const LINGER: Linger<u32> = Linger {
        at_most: Duration::from_millis(5),
        may_linger: |item| item % 2 == 1,
    };

    #[tokio::test(start_paused = true)]
    async fn a_lingering_item_waits_for_company_and_goes_with_the_next_item() {
        let (batcher, writes) = recording(Some(LINGER), CancellationToken::new(), echo);
        let start = tokio::time::Instant::now();
        let lingering = batcher.enqueue(1).await;
        tokio::time::advance(Duration::from_millis(4)).await;
        assert!(writes.lock().unwrap().is_empty(), "written before 5 ms");
        let urgent = batcher.enqueue(2).await;
        assert_eq!(urgent.await.unwrap().unwrap(), 2);
        assert_eq!(lingering.await.unwrap().unwrap(), 1);
        assert_eq!(
            *writes.lock().unwrap(),
            vec![vec![1, 2]],
            "one write for both"
        );
        assert_eq!(start.elapsed(), Duration::from_millis(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_lingering_item_is_written_after_at_most_its_linger() {
        let (batcher, writes) = recording(Some(LINGER), CancellationToken::new(), echo);
        let start = tokio::time::Instant::now();
        assert_eq!(batcher.enqueue(3).await.await.unwrap().unwrap(), 3);
        assert_eq!(start.elapsed(), LINGER.at_most);
        assert_eq!(*writes.lock().unwrap(), vec![vec![3]]);
        // An item that may not linger is written at once.
        let start = tokio::time::Instant::now();
        assert_eq!(batcher.enqueue(4).await.await.unwrap().unwrap(), 4);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    fn unavailable() -> StoreError {
        StoreError::Unavailable(sqlx::Error::PoolTimedOut)
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_store_is_retried_with_growing_pauses_until_it_answers() {
        let failures = Arc::new(Mutex::new(3));
        let (batcher, writes) = recording(None, CancellationToken::new(), {
            let failures = failures.clone();
            move |items: Vec<u32>| {
                let mut left = failures.lock().unwrap();
                let answer = if *left > 0 {
                    *left -= 1;
                    Err(unavailable())
                } else {
                    Ok(items)
                };
                std::future::ready(answer)
            }
        });
        let start = tokio::time::Instant::now();
        assert_eq!(batcher.enqueue(7).await.await.unwrap().unwrap(), 7);
        // 50 + 100 + 200 ms of pauses, the same batch each time.
        assert_eq!(start.elapsed(), Duration::from_millis(350));
        assert_eq!(*writes.lock().unwrap(), vec![vec![7]; 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_while_the_store_is_unavailable_answers_stopped() {
        let stop = CancellationToken::new();
        let (batcher, writes) = recording(None, stop.clone(), |_| {
            std::future::ready(Err(unavailable()))
        });
        let answer = batcher.enqueue(9).await;
        // Ten seconds pass on the paused clock. Pauses double from 50 ms up to two seconds, so
        // tries start at 0, 0.05, 0.15, 0.35, 0.75, 1.55, 3.15, 5.15, 7.15 and 9.15 s.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(writes.lock().unwrap().len(), 10);
        stop.cancel();
        assert!(matches!(answer.await.unwrap(), Err(BatchError::Stopped)));
    }
}
