//! The portal's recovery of failed deliveries, through the real server on both backends with a
//! real receiver: the form counts first and changes nothing, then starts the task, whose page
//! shows its progress until every failed delivery went again under its own id; bad times and a
//! disabled webhook are refused on the form; another account's webhook and task are 404, and a
//! forged form starts nothing.

use crate::common::portal::Portal;
use crate::common::{Backend, Reply, TestApp, TestReceiver, eventually};
use crate::recover::{ago, exhausted, ids_in, small_batches};
use herald::domain::Timestamp;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A `datetime-local` value, as a browser sends it: UTC to the minute.
fn local(rfc3339: &str) -> String {
    rfc3339[..16].to_owned()
}

async fn the_recover_page_counts_then_sends_failed_deliveries_again(backend: Backend) {
    let app = TestApp::spawn_with(backend, small_batches).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(500));
    let acme = app.create_account("Acme").await;
    let since = local(&ago(120));
    let (hook, ids) = exhausted(&app, &acme, receiver.url("/down"), "tts", 3).await;
    let failures = receiver.count();
    receiver.set_default(Reply::status(200));
    let portal = Portal::open(&app, &acme).await;
    let path = format!("/portal/webhooks/{hook}/recover");

    let webhook_page = portal.get(&format!("/portal/webhooks/{hook}")).await;
    assert!(webhook_page.body.contains(&path), "the webhook links to it");
    let form = portal.get(&path).await;
    assert_eq!(form.status, 200, "{}", form.body);
    for text in [
        "<label for=\"since\">",
        "type=\"datetime-local\"",
        "value=\"count\"",
    ] {
        assert!(form.body.contains(text), "{text}: {}", form.body);
    }

    // Counting first changes nothing.
    let counted = portal
        .post(
            &path,
            &[("since", &since), ("until", ""), ("action", "count")],
        )
        .await;
    assert_eq!(counted.status, 200, "{}", counted.body);
    assert!(
        counted.body.contains("3 failed deliveries"),
        "{}",
        counted.body
    );
    assert!(counted.body.contains(&since), "keeps what was typed");
    assert_eq!(ids_in(&app, &acme.key, &hook, "failed").await, ids);
    assert_eq!(app.get("/v1/tasks", &acme.key).await["data"], json!([]));

    // Bad times are refused on the form, and start nothing.
    for (fields, says) in [
        (vec![("since", "yesterday")], "The start must be a date"),
        (
            vec![("since", since.as_str()), ("until", "2000-01-01T00:00")],
            "The end must be after the start",
        ),
    ] {
        let refused = portal.post(&path, &fields).await;
        assert_eq!(refused.status, 422, "{fields:?}: {}", refused.body);
        assert!(refused.body.contains("role=\"alert\""), "{}", refused.body);
        assert!(refused.body.contains(says), "{says}: {}", refused.body);
    }
    assert_eq!(app.get("/v1/tasks", &acme.key).await["data"], json!([]));

    // Recover: the task's page, whose progress the API's task agrees with.
    let until = Timestamp::now().plus(Duration::from_secs(60)).to_rfc3339();
    let started = portal
        .post(
            &path,
            &[("since", &since), ("until", &until), ("action", "recover")],
        )
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    let task_path = started.location().to_owned();
    let task_id = task_path
        .strip_prefix("/portal/tasks/")
        .unwrap_or_else(|| panic!("{task_path}"))
        .to_owned();
    let first = portal.get(&task_path).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body.contains("of 3"), "{}", first.body);
    let done = eventually("the task page to say succeeded", WAIT, || {
        let (portal, task_path) = (&portal, &task_path);
        async move {
            let page = portal.get(task_path).await;
            page.body.contains(">succeeded<").then_some(page)
        }
    })
    .await;
    assert!(done.body.contains("3 of 3"), "{}", done.body);
    let task: Value = app.get(&format!("/v1/tasks/{task_id}"), &acme.key).await;
    assert_eq!(
        (task["state"].as_str(), task["done"].as_u64()),
        (Some("succeeded"), Some(3))
    );
    eventually("every failed delivery to succeed", WAIT, || async {
        (ids_in(&app, &acme.key, &hook, "succeeded").await == ids).then_some(())
    })
    .await;
    let again: Vec<String> = receiver.received()[failures..]
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(again.len(), 3, "each went once more");
    assert_eq!(
        again.into_iter().collect::<std::collections::BTreeSet<_>>(),
        ids,
        "under its own id"
    );

    // The recover page lists it.
    let listed = portal.get(&path).await;
    assert!(listed.body.contains(&task_path), "{}", listed.body);
}

async fn recover_urls_of_another_account_are_not_found_and_forged_forms_start_nothing(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, small_batches).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(500));
    let (acme, bob) = (
        app.create_account("Acme").await,
        app.create_account("Bob").await,
    );
    let since = ago(120);
    let (theirs, _) = exhausted(&app, &bob, receiver.url("/bob"), "tts", 1).await;
    let (ours, our_ids) = exhausted(&app, &acme, receiver.url("/acme"), "stt", 1).await;
    let (status, task) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{theirs}/recover"),
            Some(&bob.key),
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let their_task = task["id"].as_str().unwrap().to_owned();

    let portal = Portal::open(&app, &acme).await;
    for path in [
        format!("/portal/webhooks/{theirs}/recover"),
        format!("/portal/tasks/{their_task}"),
        "/portal/tasks/tsk_0193e5c4a1b27c3d8e9f0a1b2c3d4e5f".to_owned(),
        "/portal/tasks/not-a-task".to_owned(),
    ] {
        let page = portal.get(&path).await;
        assert_eq!(page.status, 404, "GET {path}: {}", page.body);
        assert!(!page.body.contains(&theirs), "{path}");
    }
    for action in ["count", "recover"] {
        let page = portal
            .post(
                &format!("/portal/webhooks/{theirs}/recover"),
                &[("since", &since), ("action", action)],
            )
            .await;
        assert_eq!(page.status, 404, "{action}: {}", page.body);
    }
    let bobs = app.get("/v1/tasks", &bob.key).await;
    assert_eq!(bobs["data"].as_array().unwrap().len(), 1, "{bobs}");
    let own = portal
        .get(&format!("/portal/webhooks/{ours}/recover"))
        .await;
    assert!(!own.body.contains(&their_task), "{}", own.body);

    // A form without this session's token is refused and starts nothing.
    let path = format!("/portal/webhooks/{ours}/recover");
    for csrf in [None, Some("0000")] {
        let mut fields = vec![("since", since.as_str()), ("action", "recover")];
        fields.extend(csrf.map(|c| ("csrf", c)));
        let refused = portal.post_raw(&path, &fields).await;
        assert_eq!(refused.status, 403, "{csrf:?}: {}", refused.body);
    }
    // A disabled webhook is refused on the form: enabling it is what sends anything.
    portal
        .post(
            &format!("/portal/webhooks/{ours}/status"),
            &[("status", "disabled")],
        )
        .await;
    let disabled = portal
        .post(&path, &[("since", &since), ("action", "recover")])
        .await;
    assert_eq!(disabled.status, 409, "{}", disabled.body);
    assert!(
        disabled.body.contains("enable it first"),
        "{}",
        disabled.body
    );
    assert_eq!(app.get("/v1/tasks", &acme.key).await["data"], json!([]));
    assert_eq!(ids_in(&app, &acme.key, &ours, "failed").await, our_ids);
}

on_both_backends!(
    the_recover_page_counts_then_sends_failed_deliveries_again,
    recover_urls_of_another_account_are_not_found_and_forged_forms_start_nothing,
);
