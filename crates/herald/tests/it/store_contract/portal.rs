//! The customer portal's links and sessions, and the reads its pages add: a link opens one
//! session however many openings race (peeking says what opening would do and changes nothing),
//! and never after it expired; sessions expire and end; the janitor's prune takes expired rows
//! only, a batch at a time; jobs list newest first by a cursor of time and id; a job's events
//! and the delivery filters by type and time.

use super::*;
use herald::store::{JobCursor, LinkRedeemed, NewPortalLink, NewPortalSession, PortalTokens};

fn link(f: &Fixture, hash: &str, now: Timestamp, lifetime: Duration) -> NewPortalLink {
    NewPortalLink {
        hash: hash.to_owned(),
        account: f.account.clone(),
        created_at: now,
        expires_at: now.plus(lifetime),
    }
}

fn session(hash: &str, now: Timestamp) -> NewPortalSession {
    NewPortalSession {
        hash: hash.to_owned(),
        created_at: now,
        expires_at: now.plus(Duration::from_secs(3600)),
    }
}

async fn a_link_opens_one_session_however_many_openings_race(backend: Backend) {
    let f = Arc::new(Fixture::new(backend).await);
    let now = Timestamp::now();
    f.store
        .create_portal_link(&link(&f, "link-1", now, Duration::from_secs(60)))
        .await
        .unwrap();
    // Peeking says what opening would do, and uses nothing up.
    for _ in 0..2 {
        assert_eq!(
            f.store.peek_portal_link("link-1", now).await.unwrap(),
            LinkRedeemed::Opened(f.account.clone())
        );
    }
    let openings = (0..8).map(|i| {
        let f = f.clone();
        tokio::spawn(async move {
            let s = session(&format!("session-{i}"), now.plus(Duration::from_millis(i)));
            (i, f.store.redeem_portal_link("link-1", &s).await.unwrap())
        })
    });
    let mut opened = Vec::new();
    for o in openings {
        let (i, outcome) = o.await.unwrap();
        match outcome {
            LinkRedeemed::Opened(account) => {
                assert_eq!(account, f.account);
                opened.push(i);
            }
            LinkRedeemed::Used(_) => {}
            other => panic!("opening {i}: {other:?}"),
        }
    }
    assert_eq!(opened.len(), 1, "one opening wins: {opened:?}");
    assert!(matches!(
        f.store.peek_portal_link("link-1", now).await.unwrap(),
        LinkRedeemed::Used(_)
    ));
    for i in 0..8u64 {
        let found = f
            .store
            .find_portal_session(&format!("session-{i}"), now)
            .await
            .unwrap();
        assert_eq!(found.is_some(), opened.contains(&i), "session {i}");
    }
    let found = f
        .store
        .find_portal_session(&format!("session-{}", opened[0]), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.account, f.account);
}

async fn links_and_sessions_expire_and_expired_ones_are_pruned(backend: Backend) {
    let f = Fixture::new(backend).await;
    let t0 = Timestamp::now();
    let minute = Duration::from_secs(60);
    f.store
        .create_portal_link(&link(&f, "short", t0, minute))
        .await
        .unwrap();
    let late = t0.plus(minute).plus(Duration::from_secs(1));
    match f
        .store
        .redeem_portal_link("short", &session("s-late", late))
        .await
        .unwrap()
    {
        LinkRedeemed::Expired(at) => assert_eq!(at, t0.plus(minute)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        f.store
            .redeem_portal_link("nothing", &session("s-none", t0))
            .await
            .unwrap(),
        LinkRedeemed::Unknown
    );
    assert_eq!(
        f.store.peek_portal_link("short", late).await.unwrap(),
        LinkRedeemed::Expired(t0.plus(minute))
    );
    assert_eq!(
        f.store.peek_portal_link("nothing", t0).await.unwrap(),
        LinkRedeemed::Unknown
    );
    assert!(
        f.store
            .find_portal_session("s-late", late)
            .await
            .unwrap()
            .is_none(),
        "a refused opening stores no session"
    );

    // A session is found until it expires, and not after it ends.
    f.store
        .create_portal_link(&link(&f, "long", t0, minute))
        .await
        .unwrap();
    f.store
        .redeem_portal_link("long", &session("s1", t0))
        .await
        .unwrap();
    let expiry = t0.plus(Duration::from_secs(3600));
    assert!(
        f.store
            .find_portal_session("s1", t0)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        f.store
            .find_portal_session("s1", expiry)
            .await
            .unwrap()
            .is_none()
    );
    f.store.end_portal_session("s1").await.unwrap();
    assert!(
        f.store
            .find_portal_session("s1", t0)
            .await
            .unwrap()
            .is_none()
    );

    // The janitor's cut: rows that expired before it go, a batch at a time; live ones stay.
    f.store
        .create_portal_link(&link(&f, "mid", t0, minute))
        .await
        .unwrap();
    f.store
        .redeem_portal_link("mid", &session("s-old", t0))
        .await
        .unwrap();
    let later = expiry.plus(minute);
    f.store
        .create_portal_link(&link(&f, "next", later, minute))
        .await
        .unwrap();
    f.store
        .redeem_portal_link("next", &session("s-next", later))
        .await
        .unwrap();
    let prune = |tokens, now, limit| f.store.prune_portal(tokens, now, limit);
    assert_eq!(prune(PortalTokens::Sessions, expiry, 100).await.unwrap(), 0);
    assert_eq!(prune(PortalTokens::Links, later, 2).await.unwrap(), 2);
    assert_eq!(prune(PortalTokens::Links, later, 2).await.unwrap(), 1);
    assert_eq!(prune(PortalTokens::Links, later, 2).await.unwrap(), 0);
    let after_expiry = expiry.plus(Duration::from_millis(1));
    assert_eq!(
        prune(PortalTokens::Sessions, after_expiry, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        f.store
            .redeem_portal_link("short", &session("s2", t0))
            .await
            .unwrap(),
        LinkRedeemed::Unknown,
        "the expired link is gone"
    );
    assert!(matches!(
        f.store
            .redeem_portal_link("next", &session("s3", later))
            .await
            .unwrap(),
        LinkRedeemed::Used(_)
    ));
    assert!(
        f.store
            .find_portal_session("s-next", later)
            .await
            .unwrap()
            .is_some(),
        "a live session stays"
    );
}

async fn jobs_list_newest_first_with_their_events(backend: Backend) {
    let f = Fixture::new(backend).await;
    let t0 = Timestamp::now();
    let mut ids = Vec::new();
    // Ids the provider chose, which do not sort by time; two made in the same millisecond.
    for (i, (id, offset)) in [("zeta", 0), ("alpha", 1), ("mid.1", 2), ("beta", 2)]
        .into_iter()
        .enumerate()
    {
        let at = t0.plus(Duration::from_millis(offset));
        let job = Job {
            id: id.to_owned(),
            account: f.account.clone(),
            kind: "tts".to_owned(),
            status: JobStatus::Queued,
            progress: 0.0,
            input: None,
            result: None,
            error: None,
            webhook_url: None,
            created_at: at,
            updated_at: at,
            completed_at: None,
        };
        assert!(matches!(
            f.store.create_job(&job, None).await.unwrap(),
            JobCreated::Created { .. }
        ));
        ids.push((at, id, i));
    }
    let patch = JobPatch {
        status: Some(JobStatus::Completed),
        ..JobPatch::default()
    };
    let updated = f
        .store
        .update_job(
            Some(&f.account),
            "alpha",
            &patch,
            t0.plus(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert!(matches!(updated, JobUpdate::Updated { .. }));

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = f
            .store
            .list_jobs(&f.account, &PageRequest { after, limit: 3 })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|j| j.id.clone()));
        match page.next_cursor {
            Some(c) => {
                assert!(JobCursor::parse(&c).is_some(), "{c}");
                after = Some(c);
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["mid.1", "beta", "alpha", "zeta"],
        "newest first, then by id"
    );
    let other = add_account(&f.store, "Other").await;
    let page = PageRequest {
        after: None,
        limit: 10,
    };
    assert!(
        f.store
            .list_jobs(&other, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let events = f
        .store
        .list_events(
            &EventQuery {
                account: Some(f.account.clone()),
                job: Some("alpha".to_owned()),
                ..EventQuery::default()
            },
            &page,
        )
        .await
        .unwrap();
    let types: Vec<&str> = events.items.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["tts.completed", "tts.queued"]);
}

async fn deliveries_filter_by_type_and_time(backend: Backend) {
    let f = Fixture::new(backend).await;
    let hook = f.subscribe(&["*"]).await;
    let before = Timestamp::now();
    f.publish(vec![f.event("order.created"), f.event("order.paid")])
        .await;
    let after = Timestamp::now().plus(Duration::from_millis(1));
    let of = |event_type: Option<&str>, since: Option<Timestamp>, until: Option<Timestamp>| {
        DeliveryQuery {
            account: Some(f.account.clone()),
            webhook: Some(hook.id.clone()),
            event_type: event_type.map(str::to_owned),
            since,
            until,
            ..DeliveryQuery::default()
        }
    };
    let paid = f.deliveries(of(Some("order.paid"), None, None)).await;
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0].event_type, "order.paid");
    assert_eq!(
        f.deliveries(of(None, Some(before), Some(after)))
            .await
            .len(),
        2
    );
    assert!(f.deliveries(of(None, Some(after), None)).await.is_empty());
    assert!(f.deliveries(of(None, None, Some(before))).await.is_empty());
}

contract!(
    a_link_opens_one_session_however_many_openings_race,
    links_and_sessions_expire_and_expired_ones_are_pruned,
    jobs_list_newest_first_with_their_events,
    deliveries_filter_by_type_and_time,
);
