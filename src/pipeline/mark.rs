//! This worker's waiting mark (adaptive notify mode): set when it goes idle, so producers
//! notify; dropped as soon as a claim brings work, off the critical path.

use std::{sync::Mutex, time::Duration};

use deadpool_postgres::Pool;
use tokio::task::JoinHandle;

use crate::store::{db_error, waiting};

pub struct WaitingMark {
    pool: Pool,
    worker_id: String,
    ttl: Duration,
    /// Whether the mark is set.
    marked: Mutex<bool>,
    /// The removal of the mark, running beside the first bulk of a drain; awaited before
    /// the next mark so it cannot remove that one.
    clearing: Mutex<Option<JoinHandle<()>>>,
}

impl WaitingMark {
    pub fn new(pool: Pool, worker_id: String, ttl: Duration) -> Self {
        WaitingMark {
            pool,
            worker_id,
            ttl,
            marked: Mutex::new(false),
            clearing: Mutex::new(None),
        }
    }

    /// Set (or renew) the mark.
    pub async fn set(&self) {
        self.cleared().await;
        match waiting::mark(&self.pool, &self.worker_id, self.ttl).await {
            Ok(()) => *self.marked.lock().unwrap() = true,
            Err(e) => db_error("mark_waiting", &e),
        }
    }

    /// Drop the mark, if set, in the background: the claimed events go to the engine
    /// without waiting for this round trip.
    pub fn clear(&self) {
        if !std::mem::take(&mut *self.marked.lock().unwrap()) {
            return;
        }
        let pool = self.pool.clone();
        let worker_id = self.worker_id.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = waiting::clear(&pool, &worker_id).await {
                // The mark expires by itself; producers just notify a little longer.
                db_error("clear_waiting", &e);
            }
        });
        *self.clearing.lock().unwrap() = Some(task);
    }

    /// Wait for a removal of the mark still on its way.
    pub async fn cleared(&self) {
        let task = self.clearing.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
