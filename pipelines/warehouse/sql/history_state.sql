-- Bookkeeping for pipelines/warehouse/history.py: the snapshots that number_history and
-- number_changes currently reflect, and a fingerprint of each one's rows as they were applied.
-- apply_snapshot compares it with what is stored now to choose between doing nothing, one
-- incremental step, or rebuilding the workspace. Not part of the contract; safe to drop (the
-- next apply_snapshot of each workspace then rebuilds it once). Idempotent.
CREATE SCHEMA IF NOT EXISTS synthflow;

CREATE TABLE IF NOT EXISTS synthflow.history_applied (
    snapshot_id  VARCHAR NOT NULL,
    workspace_id VARCHAR NOT NULL,
    taken_at     TIMESTAMPTZ NOT NULL,
    row_count    BIGINT NOT NULL,
    fingerprint  HUGEINT NOT NULL  -- sum(hash(number, sid, is_available)) over its rows
);
