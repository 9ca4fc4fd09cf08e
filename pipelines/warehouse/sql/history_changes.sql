-- One number_changes row per attribute transition in the temp table history_transitions
-- (one row per workspace, snapshot and number whose presence or state differs from the
-- workspace's previous snapshot). Shared by the incremental step and the rebuild, so both
-- name changes the same way. For sid_changed both availability columns hold the
-- availability shown by the snapshot that showed the change.
INSERT INTO synthflow.number_changes (
    workspace_id, number, changed_at, previous_taken_at, snapshot_id, change_type,
    was_available, is_available
)
SELECT workspace_id, number, changed_at, previous_taken_at, snapshot_id, 'added',
       NULL, is_available
FROM history_transitions WHERE is_listed AND NOT was_listed
UNION ALL
SELECT workspace_id, number, changed_at, previous_taken_at, snapshot_id, 'removed',
       was_available, NULL
FROM history_transitions WHERE was_listed AND NOT is_listed
UNION ALL
SELECT workspace_id, number, changed_at, previous_taken_at, snapshot_id, 'assigned',
       true, false
FROM history_transitions WHERE was_listed AND is_listed AND was_available AND NOT is_available
UNION ALL
SELECT workspace_id, number, changed_at, previous_taken_at, snapshot_id, 'released',
       false, true
FROM history_transitions WHERE was_listed AND is_listed AND NOT was_available AND is_available
UNION ALL
SELECT workspace_id, number, changed_at, previous_taken_at, snapshot_id, 'sid_changed',
       is_available, is_available
FROM history_transitions WHERE was_listed AND is_listed AND was_sid IS DISTINCT FROM sid;
