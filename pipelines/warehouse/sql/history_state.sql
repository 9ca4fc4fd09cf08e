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

COMMENT ON TABLE synthflow.history_applied IS 'Bookkeeping, not the contract: the snapshots number_history and number_changes reflect now, with a fingerprint of the rows each was applied with; safe to drop (the next snapshot of a workspace then rebuilds its history once).';
COMMENT ON COLUMN synthflow.history_applied.snapshot_id IS 'A snapshot the history reflects.';
COMMENT ON COLUMN synthflow.history_applied.workspace_id IS 'Its workspace.';
COMMENT ON COLUMN synthflow.history_applied.taken_at IS 'Its taken_at, as applied.';
COMMENT ON COLUMN synthflow.history_applied.row_count IS 'Its numbers, as applied.';
COMMENT ON COLUMN synthflow.history_applied.fingerprint IS 'sum(hash(number, sid, is_available)) over its rows, as applied: a snapshot stored again with other rows no longer matches.';
