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

/// An error for a publish that was not committed: the caller may retry it (503).
pub(crate) fn closed(what: &str) -> StoreError {
    StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(what.to_owned())))
}

/// Hands `events` to the committers and waits for their results, one per event, in order.
pub(crate) async fn submit(
    publisher: &mpsc::Sender<PublishRequest>,
    events: Vec<NewEvent>,
) -> StoreResult<Vec<StoreResult<Published>>> {
    let (reply, answer) = oneshot::channel();
    publisher
        .send(PublishRequest { events, reply })
        .await
        .map_err(|_| closed("the publisher has stopped"))?;
    answer
        .await
        .map_err(|_| closed("the publisher dropped a request"))
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
                    .map(|_| Err(closed("the commit failed")))
                    .collect();
                let _ = request.reply.send(failed);
            }
        }
    }
}
