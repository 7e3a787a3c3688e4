//! Publishing: idempotency keys, the hand-over to this node's dispatcher, and a job's one
//! terminal event.

use super::*;

async fn a_repeated_idempotency_key_answers_the_first_publish(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.subscribe(&["*"]).await;
    let since = Timestamp::now().minus(Duration::from_secs(60));
    let first = f
        .store
        .publish_event(f.keyed("k1", "fp", since))
        .await
        .unwrap();
    assert_eq!((first.deliveries, first.replayed), (1, false));
    let again = f
        .store
        .publish_event(f.keyed("k1", "fp", since))
        .await
        .unwrap();
    assert_eq!((again.deliveries, again.replayed), (1, true));
    assert_eq!(again.event.id, first.event.id);
    assert_eq!(again.event.data.get(), first.event.data.get());
    let other = f.store.publish_event(f.keyed("k1", "other", since)).await;
    assert!(
        matches!(other, Err(StoreError::IdempotencyConflict)),
        "{other:?}"
    );
    assert_eq!(f.events_of_type("order.created").await, 1);
    assert_eq!(f.deliveries(DeliveryQuery::default()).await.len(), 1);

    // In one batch: the first stores, a repeat replays it, a different request is refused,
    // and the rest of the batch is published.
    let batch = vec![
        f.keyed("k2", "fp", since),
        f.keyed("k2", "fp", since),
        f.keyed("k2", "other", since),
        f.event("order.created"),
    ];
    let results = f.store.publish_events(batch).await.unwrap();
    assert_eq!(results.len(), 4);
    let stored = results[0].as_ref().expect("the first use of k2");
    assert!(!stored.replayed);
    let replayed = results[1].as_ref().expect("the repeat of k2");
    assert!(replayed.replayed);
    assert_eq!(replayed.event.id, stored.event.id);
    assert!(
        matches!(results[2], Err(StoreError::IdempotencyConflict)),
        "{:?}",
        results[2]
    );
    assert!(!results[3].as_ref().expect("the unkeyed event").replayed);
    assert_eq!(f.events_of_type("order.created").await, 3);
    assert_eq!(f.deliveries(DeliveryQuery::default()).await.len(), 3);

    // An expired use of the key does not count: the key is free again.
    let later = Timestamp::now().plus(Duration::from_secs(1));
    let fresh = f
        .store
        .publish_event(f.keyed("k1", "new", later))
        .await
        .unwrap();
    assert_eq!((fresh.replayed, fresh.deliveries), (false, 1));
    assert_ne!(fresh.event.id, first.event.id);
}

async fn racing_job_updates_publish_exactly_one_terminal_event(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.subscribe(&["*"]).await;
    let now = Timestamp::now();
    let job = Job {
        id: format!("job_{}", uuid::Uuid::new_v4().simple()),
        account: f.account.clone(),
        kind: "tts".to_owned(),
        status: JobStatus::Queued,
        progress: 0.0,
        input: None,
        result: None,
        error: None,
        webhook_url: Some("http://127.0.0.1:9/job".to_owned()),
        created_at: now,
        updated_at: now,
        completed_at: None,
    };
    let own = webhook(
        &f.account,
        &["tts.completed", "tts.failed"],
        WebhookKind::Job,
        Some(&job.id),
    );
    let created = f.store.create_job(&job, Some(&own)).await.unwrap();
    assert!(
        matches!(created, JobCreated::Created { deliveries: 1 }),
        "{created:?}"
    );
    let again = f.store.create_job(&job, None).await.unwrap();
    assert!(matches!(again, JobCreated::Exists), "{again:?}");

    let updates = (0..12).map(|i| {
        let store = f.store.clone();
        let (account, id) = (f.account.clone(), job.id.clone());
        let status = [
            JobStatus::Processing,
            JobStatus::Completed,
            JobStatus::Failed,
        ][i % 3];
        tokio::spawn(async move {
            let patch = JobPatch {
                status: Some(status),
                ..JobPatch::default()
            };
            store
                .update_job(Some(&account), &id, &patch, Timestamp::now())
                .await
        })
    });
    let mut terminal_events = 0;
    for update in futures_util::future::join_all(updates).await {
        match update.unwrap().unwrap() {
            JobUpdate::Updated {
                job,
                event: Some(_),
                deliveries,
            } if job.status.is_terminal() => {
                terminal_events += 1;
                assert_eq!(deliveries, 2, "the subscription and the job's own webhook");
            }
            JobUpdate::Updated { job, .. } => assert!(!job.status.is_terminal()),
            JobUpdate::Refused(_) => {}
            JobUpdate::NotFound => panic!("the job exists"),
        }
    }
    assert_eq!(terminal_events, 1);
    let stored = f.store.get_job(None, &job.id).await.unwrap().unwrap();
    assert!(stored.status.is_terminal());
    let terminal = f.events_of_type("tts.completed").await + f.events_of_type("tts.failed").await;
    assert_eq!(terminal, 1);
    let own_deliveries = f
        .deliveries(DeliveryQuery {
            webhook: Some(own.id.clone()),
            ..DeliveryQuery::default()
        })
        .await;
    assert_eq!(
        own_deliveries.len(),
        1,
        "the job's webhook gets its terminal event only"
    );
    let other = AccountId::generate();
    assert!(
        f.store
            .get_job(Some(&other), &job.id)
            .await
            .unwrap()
            .is_none()
    );
}

/// An intake with room for `room` deliveries; keeps what it is handed.
#[derive(Default)]
struct FakeIntake {
    room: Mutex<usize>,
    handed: Mutex<Vec<ClaimedDelivery>>,
}

impl Intake for FakeIntake {
    fn reserve(&self, _webhook: &WebhookId) -> bool {
        let mut room = self.room.lock().unwrap();
        if *room == 0 {
            return false;
        }
        *room -= 1;
        true
    }

    fn hand_over(&self, claims: Vec<ClaimedDelivery>, _at: Timestamp, _until: Timestamp) {
        self.handed.lock().unwrap().extend(claims);
    }

    fn cancel(&self, _webhooks: &[WebhookId]) {}
}

async fn deliveries_handed_to_the_dispatcher_are_leased_to_it(backend: Backend) {
    let f = Fixture::new(backend).await;
    let hook = f.subscribe(&["*"]).await;
    let intake = Arc::new(FakeIntake {
        room: Mutex::new(2),
        ..FakeIntake::default()
    });
    f.store.set_intake(intake.clone(), LEASE);
    let results = f
        .store
        .publish_events((0..3).map(|_| f.event("order.created")).collect())
        .await
        .unwrap();
    let made: u32 = results.iter().map(|r| r.as_ref().unwrap().deliveries).sum();
    let handed: u32 = results
        .iter()
        .map(|r| r.as_ref().unwrap().handed_over)
        .sum();
    assert_eq!((made, handed), (3, 2));
    let claims = std::mem::take(&mut *intake.handed.lock().unwrap());
    assert_eq!(claims.len(), 2);
    assert!(
        claims
            .iter()
            .all(|c| c.webhook.id == hook.id && c.attempt_number == 1)
    );
    let now = Timestamp::now();
    let claimed = f.claim(now, 10, 10).await;
    assert_eq!(claimed.len(), 1, "only the one not handed over");
    let later = f
        .claim(now.plus(LEASE).plus(Duration::from_secs(1)), 10, 10)
        .await;
    let mut expired: Vec<_> = later.iter().map(|c| c.delivery_id.clone()).collect();
    let mut all: Vec<_> = claims
        .iter()
        .chain(&claimed)
        .map(|c| c.delivery_id.clone())
        .collect();
    expired.sort();
    all.sort();
    assert_eq!(
        expired, all,
        "the hand-overs' leases run out like a claim's"
    );
}

/// A delivery to a webhook its receiver paused is neither handed over nor counted as waiting for
/// a claim (the dispatcher is not woken for it: the claims come when the pause ends), whether
/// this node has an intake or not.
async fn deliveries_to_a_held_webhook_wait_for_its_gate_not_a_wake_up(backend: Backend) {
    let f = Fixture::new(backend).await;
    let paused = f.subscribe(&["order.*"]).await;
    let open = f.subscribe(&["order.*"]).await;
    f.publish(vec![f.event("order.created")]).await;
    let now = Timestamp::now();
    let claims = f.claim(now, 10, 10).await;
    let mut pause = result(
        claims.iter().find(|c| c.webhook.id == paused.id).unwrap(),
        429,
        NextStep::RetryAt(now.plus(Duration::from_secs(60))),
        now,
    );
    pause.pause_until = Some(now.plus(Duration::from_secs(60)));
    let fine = result(
        claims.iter().find(|c| c.webhook.id == open.id).unwrap(),
        200,
        NextStep::Succeeded,
        now,
    );
    f.record(&[pause, fine], now).await;
    let counts = |p: &herald::store::Published| {
        (p.deliveries, p.handed_over, p.held, p.waiting_for_a_claim())
    };
    let one = f.store.publish_event(f.event("order.paid")).await.unwrap();
    assert_eq!(counts(&one), (2, 0, 1, 1), "no intake");
    let intake = Arc::new(FakeIntake {
        room: Mutex::new(10),
        ..FakeIntake::default()
    });
    f.store.set_intake(intake.clone(), LEASE);
    let two = f.store.publish_event(f.event("order.paid")).await.unwrap();
    assert_eq!(counts(&two), (2, 1, 1, 0), "the open one handed over");
    let handed = std::mem::take(&mut *intake.handed.lock().unwrap());
    assert!(handed.iter().all(|c| c.webhook.id == open.id));
}

contract!(
    deliveries_to_a_held_webhook_wait_for_its_gate_not_a_wake_up,
    a_repeated_idempotency_key_answers_the_first_publish,
    racing_job_updates_publish_exactly_one_terminal_event,
    deliveries_handed_to_the_dispatcher_are_leased_to_it,
);

/// SQLite: a thread beside the writer copies the log back into the database file after
/// commits (`store/sqlite/checkpointer.rs`); the writer's own commits would only for a log of
/// thousands of pages, far more than a few publishes write.
#[tokio::test]
async fn sqlite_publishes_reach_the_database_file_by_the_checkpointer() {
    let f = Fixture::new(Backend::Sqlite).await;
    f.subscribe(&["*"]).await;
    for _ in 0..5 {
        f.store.publish_event(f.event("order.paid")).await.unwrap();
    }
    // The database file alone: `immutable` reads it without the log.
    let file = format!(
        "file:{}?immutable=1",
        f._env.dir.path().join("herald.db").display()
    );
    let in_file = || -> i64 {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        rusqlite::Connection::open_with_flags(&file, flags)
            .and_then(|c| c.query_row("SELECT count(*) FROM events", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while in_file() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file holds {} of the 5 events after 10 s",
            in_file()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
