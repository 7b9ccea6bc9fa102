//! The insert trigger: adaptive (NOTIFY only while a worker waits), always, off. Counts the
//! notifications a LISTENing connection really receives from real transactions.

use outbox_harness as harness;

use std::time::Duration;

use futures::{StreamExt, stream};
use outbox_worker::{
    config::NotifyMode,
    contract::{self, NewEvent},
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use harness::TestSchema;

/// A LISTEN connection forwarding notifications whose payload is this schema.
struct Listener {
    client: tokio_postgres::Client,
    rx: mpsc::UnboundedReceiver<String>,
}

impl Listener {
    async fn new(s: &TestSchema) -> Listener {
        let (client, mut conn) = tokio_postgres::connect(&s.url, NoTls).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let schema = s.name.clone();
        tokio::spawn(async move {
            let mut messages = stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let AsyncMessage::Notification(n) = m {
                    // Other tests share the channel; each schema is its own payload.
                    if n.payload() == schema {
                        let _ = tx.send(n.payload().to_string());
                    }
                }
            }
        });
        client.batch_execute("LISTEN outbox_events").await.unwrap();
        Listener { client, rx }
    }

    /// Notifications received so far (after letting in-flight ones arrive).
    async fn take(&mut self) -> usize {
        self.client.simple_query("SELECT 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

async fn insert_txn(c: &mut tokio_postgres::Client, rows: i32, commit: bool) {
    let tx = c.transaction().await.unwrap();
    let events: Vec<NewEvent> = (1..=rows)
        .map(|g| NewEvent::index("idx", g.to_string(), json!({"n": g})))
        .collect();
    contract::insert(&tx, &events).await.unwrap();
    if commit {
        tx.commit().await.unwrap();
    } else {
        tx.rollback().await.unwrap();
    }
}

async fn set_waiting(c: &tokio_postgres::Client, ttl_seconds: f64) {
    c.execute(
        outbox_worker::sql::MARK_WAITING,
        &[&"test-worker", &ttl_seconds],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn adaptive_notifies_once_per_transaction_only_while_a_worker_waits() {
    let s = TestSchema::new("trg_adaptive", NotifyMode::Adaptive).await;
    let mut l = Listener::new(&s).await;
    let mut c = s.client().await;

    // Nobody waiting: no notification.
    insert_txn(&mut c, 1, true).await;
    insert_txn(&mut c, 1000, true).await;
    assert_eq!(l.take().await, 0, "no worker waiting: no NOTIFY");

    // A worker waiting: exactly one per transaction, whatever its size.
    set_waiting(&c, 60.0).await;
    insert_txn(&mut c, 1, true).await;
    assert_eq!(l.take().await, 1, "1-row transaction");
    insert_txn(&mut c, 1000, true).await;
    assert_eq!(l.take().await, 1, "1000-row transaction");
    // Two statements in one transaction still fold into one notification.
    {
        let tx = c.transaction().await.unwrap();
        for _ in 0..2 {
            contract::insert(&tx, &[NewEvent::index("i", "d", json!({}))])
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    assert_eq!(l.take().await, 1, "two statements, one transaction");

    // A rolled-back insert: none.
    insert_txn(&mut c, 5, false).await;
    assert_eq!(l.take().await, 0, "rolled back: no NOTIFY");

    // The worker stops waiting: none.
    c.execute(outbox_worker::sql::CLEAR_WAITING, &[&"test-worker"])
        .await
        .unwrap();
    insert_txn(&mut c, 1, true).await;
    assert_eq!(l.take().await, 0, "mark cleared: no NOTIFY");

    // A worker that died while waiting: its mark expires, producers stop notifying.
    set_waiting(&c, 0.5).await;
    insert_txn(&mut c, 1, true).await;
    assert_eq!(l.take().await, 1, "fresh mark: NOTIFY");
    tokio::time::sleep(Duration::from_millis(700)).await;
    insert_txn(&mut c, 1, true).await;
    assert_eq!(l.take().await, 0, "expired mark: no NOTIFY");
}

#[tokio::test]
async fn always_notifies_every_inserting_transaction() {
    let s = TestSchema::new("trg_always", NotifyMode::Always).await;
    let mut l = Listener::new(&s).await;
    let mut c = s.client().await;
    insert_txn(&mut c, 1, true).await;
    insert_txn(&mut c, 1000, true).await;
    insert_txn(&mut c, 3, true).await;
    assert_eq!(l.take().await, 3, "one per committed transaction");
    insert_txn(&mut c, 3, false).await;
    assert_eq!(l.take().await, 0, "rolled back: none");
}

#[tokio::test]
async fn off_never_notifies() {
    let s = TestSchema::new("trg_off", NotifyMode::Off).await;
    let mut l = Listener::new(&s).await;
    let mut c = s.client().await;
    set_waiting(&c, 60.0).await;
    insert_txn(&mut c, 1, true).await;
    insert_txn(&mut c, 100, true).await;
    assert_eq!(l.take().await, 0);
}
