//! What both backends' group-commit publishers share: the request on the channel, sending one
//! and waiting for its answer, and answering a whole group from the outcome of its transaction.

use super::{NewEvent, Published, StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};

/// One publish waiting for a group commit.
pub(crate) struct PublishRequest {
    pub events: Vec<NewEvent>,
    pub reply: oneshot::Sender<Vec<StoreResult<Published>>>,
}

/// Most publishes committed together.
pub(crate) const GROUP_COMMIT: usize = 512;

/// The channel to the committers: room for a few groups.
pub(crate) fn channel() -> (mpsc::Sender<PublishRequest>, mpsc::Receiver<PublishRequest>) {
    mpsc::channel(GROUP_COMMIT * 4)
}

/// Hands `events` to the committers (`who`, named in the error if they have stopped) and waits
/// for their results, one per event, in order.
pub(crate) async fn submit(
    publisher: &mpsc::Sender<PublishRequest>,
    who: &'static str,
    events: Vec<NewEvent>,
) -> StoreResult<Vec<StoreResult<Published>>> {
    let (reply, answer) = oneshot::channel();
    publisher
        .send(PublishRequest { events, reply })
        .await
        .map_err(|_| StoreError::WriterStopped(who))?;
    answer.await.map_err(|_| StoreError::WriterStopped(who))
}

/// Answers every publish of a group, in order, from its transaction's outcome: each its own
/// results after a commit; after a failure, an error for every event (none was acknowledged).
pub(crate) fn answer(
    batch: &mut Vec<PublishRequest>,
    outcome: StoreResult<Vec<StoreResult<Published>>>,
) {
    match outcome {
        Ok(results) => {
            let mut results = results.into_iter();
            for request in batch.drain(..) {
                let mine = results.by_ref().take(request.events.len()).collect();
                let _ = request.reply.send(mine);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, publishes = batch.len(), "group commit failed; nothing of it was acknowledged");
            for request in batch.drain(..) {
                let failed = request
                    .events
                    .iter()
                    .map(|_| Err(StoreError::GroupCommitFailed))
                    .collect();
                let _ = request.reply.send(failed);
            }
        }
    }
}
