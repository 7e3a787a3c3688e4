//! The queue's rounds: cut short once a publish waits, and one bad write failing alone.

use super::*;
use crate::domain::DeliveryId;
use crate::store::Release;
use std::cell::Cell;

/// A database of deliveries `d0`..`d4`, leased `l0`..`l4`, and `bad`, leased `bad`, whose release
/// fails (a trigger refuses it).
fn database() -> (tempfile::TempDir, Conn) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let setup = rusqlite::Connection::open(&path).unwrap();
    setup
        .execute_batch(
            "CREATE TABLE deliveries (id TEXT PRIMARY KEY, lease TEXT, locked_until INTEGER);
             INSERT INTO deliveries VALUES ('d0', 'l0', 1), ('d1', 'l1', 1), ('d2', 'l2', 1),
                                           ('d3', 'l3', 1), ('d4', 'l4', 1), ('bad', 'bad', 1);
             CREATE TRIGGER refused BEFORE UPDATE ON deliveries WHEN old.lease = 'bad'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    drop(setup);
    let conn = Conn::open(&path).unwrap();
    (dir, conn)
}

/// A release of delivery `id` under `lease`, and where its answer comes.
fn release(id: &str, lease: &str) -> (Write, oneshot::Receiver<StoreResult<()>>) {
    let (reply, answer) = oneshot::channel();
    let releases = vec![Release {
        delivery_id: DeliveryId::from_trusted(id.to_owned()),
        lease: lease.to_owned(),
    }];
    (Write::Release(ReleaseRequest { releases, reply }), answer)
}

/// The deliveries whose lease is gone, in id order.
fn released(conn: &Conn) -> Vec<String> {
    let mut statement = conn
        .conn
        .prepare("SELECT id FROM deliveries WHERE lease IS NULL ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn a_round_ends_after_the_write_in_hand_once_a_publish_waits() {
    let (_dir, mut conn) = database();
    let (mut writes, mut answers): (Vec<_>, Vec<_>) = (0..5)
        .map(|i| release(&format!("d{i}"), &format!("l{i}")))
        .unzip();
    // A publish comes while the second write is written.
    let asked = Cell::new(0);
    queue_round(&mut conn, &Sealer::new(None), &mut writes, || {
        asked.set(asked.get() + 1);
        asked.get() >= 2
    });
    assert_eq!(released(&conn), ["d0", "d1"]);
    for answer in &mut answers[..2] {
        assert!(matches!(answer.try_recv(), Ok(Ok(()))));
    }
    assert_eq!(writes.len(), 3, "the rest wait for the next round");
    for answer in &mut answers[2..] {
        assert!(answer.try_recv().is_err(), "not answered yet");
    }
    queue_round(&mut conn, &Sealer::new(None), &mut writes, || false);
    assert_eq!(released(&conn), ["d0", "d1", "d2", "d3", "d4"]);
    assert!(writes.is_empty());
}

#[test]
fn a_bad_write_fails_alone_and_the_writes_after_it_wait() {
    let (_dir, mut conn) = database();
    let (mut writes, mut answers): (Vec<_>, Vec<_>) = [
        ("d0", "l0"),
        ("d1", "l1"),
        ("bad", "bad"),
        ("d3", "l3"),
        ("d4", "l4"),
    ]
    .into_iter()
    .map(|(id, lease)| release(id, lease))
    .unzip();
    // The third write fails the transaction: the two before it are written again alone, the
    // third fails alone, and the two after it, never tried, are left for the next round.
    queue_round(&mut conn, &Sealer::new(None), &mut writes, || false);
    assert_eq!(released(&conn), ["d0", "d1"]);
    assert!(matches!(answers[0].try_recv(), Ok(Ok(()))));
    assert!(matches!(answers[1].try_recv(), Ok(Ok(()))));
    assert!(matches!(answers[2].try_recv(), Ok(Err(_))));
    assert_eq!(writes.len(), 2);
    for answer in &mut answers[3..] {
        assert!(answer.try_recv().is_err(), "not answered yet");
    }
    queue_round(&mut conn, &Sealer::new(None), &mut writes, || false);
    assert_eq!(released(&conn), ["d0", "d1", "d3", "d4"]);
}

#[test]
fn the_one_by_one_writes_after_a_failure_stop_once_a_publish_waits() {
    let (_dir, mut conn) = database();
    let (mut writes, mut answers): (Vec<_>, Vec<_>) = [("d0", "l0"), ("d1", "l1"), ("bad", "bad")]
        .into_iter()
        .map(|(id, lease)| release(id, lease))
        .unzip();
    // Asked twice in the failed transaction (after d0 and d1), then once after d0 alone: a
    // publish is waiting by then.
    let asked = Cell::new(0);
    queue_round(&mut conn, &Sealer::new(None), &mut writes, || {
        asked.set(asked.get() + 1);
        asked.get() >= 3
    });
    assert_eq!(released(&conn), ["d0"]);
    assert!(matches!(answers[0].try_recv(), Ok(Ok(()))));
    assert_eq!(
        writes.len(),
        2,
        "d1 and the bad one wait for the next round"
    );
    assert!(answers[1].try_recv().is_err());
}
