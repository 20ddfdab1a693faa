//! Group commit: items from many streams are written in one statement. A flush takes everything
//! queued since the last one (up to a maximum), so batches grow with load and cost nothing when
//! idle: a lone item is written at once, unless it is of a kind allowed to linger (see
//! `Linger`), which waits a moment for an item that must go at once and shares its write.

use std::future::Future;
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

/// The longest pause between retries while the store is unavailable.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the loop on `tracker`. `flush` writes a batch and answers one output per item, in
    /// order. While the store is unavailable the same batch is retried, until `stop` fires. The
    /// loop ends when every `Batcher` handle is dropped and the queue is drained.
    pub fn spawn<F, Fut>(
        name: &'static str,
        max_batch: usize,
        linger: Option<Linger<I>>,
        tracker: &TaskTracker,
        stop: CancellationToken,
        flush: F,
    ) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, StoreError>> + Send,
        I: Clone,
    {
        let (sender, mut receiver) = mpsc::channel::<Job<I, O>>(max_batch * 4);
        tracker.spawn(async move {
            let mut jobs = Vec::with_capacity(max_batch);
            while receiver.recv_many(&mut jobs, max_batch).await > 0 {
                if let Some(linger) = linger {
                    wait_for_company(&mut receiver, &mut jobs, max_batch, linger).await;
                }
                let (items, replies): (Vec<I>, Vec<_>) =
                    jobs.drain(..).map(|job| (job.item, job.reply)).unzip();
                let outcome = flush_until_available(name, &flush, items, &stop).await;
                match outcome {
                    Ok(outputs) => {
                        for (reply, output) in replies.into_iter().zip(outputs) {
                            // A dropped receiver means its stream ended; nothing to tell.
                            let _ = reply.send(Ok(output));
                        }
                    }
                    Err(error) => {
                        for reply in replies {
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
