-- clear_waiting: this worker ($1) is busy again; producers stop notifying for it.
DELETE FROM outbox_waiting_workers WHERE worker_id = $1
