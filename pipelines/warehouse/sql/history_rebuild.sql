-- rebuild_history and apply_snapshot's fallback: recompute number_history, number_changes and
-- synthflow.history_applied for the workspaces in $workspace_ids (NULL: every workspace) from
-- the stored snapshots alone. Snapshots of a workspace are ordered by (taken_at, snapshot_id);
-- synthflow.snapshots gives the sequence, so an empty listing counts as a snapshot.

-- name: forget_history
DELETE FROM synthflow.number_history
WHERE $workspace_ids::VARCHAR[] IS NULL OR list_contains($workspace_ids::VARCHAR[], workspace_id);

-- name: forget_changes
DELETE FROM synthflow.number_changes
WHERE $workspace_ids::VARCHAR[] IS NULL OR list_contains($workspace_ids::VARCHAR[], workspace_id);

-- name: forget_applied
DELETE FROM synthflow.history_applied
WHERE $workspace_ids::VARCHAR[] IS NULL OR list_contains($workspace_ids::VARCHAR[], workspace_id);

-- name: observations
-- Every (snapshot, number) row with its place in the workspace's snapshot sequence and the
-- number's previous and next sightings (LAG/LEAD over that number's presence).
CREATE OR REPLACE TEMP TABLE history_observations AS
WITH sequence AS (
    SELECT workspace_id, snapshot_id, taken_at,
           row_number() OVER w AS seq,
           lag(taken_at) OVER w AS previous_taken_at,
           lead(snapshot_id) OVER w AS next_snapshot_id,
           lead(taken_at) OVER w AS next_taken_at
    FROM synthflow.snapshots
    WHERE $workspace_ids::VARCHAR[] IS NULL
       OR list_contains($workspace_ids::VARCHAR[], workspace_id)
    WINDOW w AS (PARTITION BY workspace_id ORDER BY taken_at, snapshot_id)
)
SELECT s.workspace_id, n.number, s.seq, s.snapshot_id, s.taken_at, s.previous_taken_at,
       s.next_snapshot_id, s.next_taken_at, n.is_available, n.sid,
       lag(s.seq) OVER p AS prev_seq,
       lag(n.is_available) OVER p AS prev_available,
       lag(n.sid) OVER p AS prev_sid,
       lead(s.seq) OVER p AS next_seq
FROM sequence AS s
JOIN synthflow.number_snapshots AS n
  ON n.snapshot_id = s.snapshot_id AND n.workspace_id = s.workspace_id
 AND n.taken_at = s.taken_at
WINDOW p AS (PARTITION BY s.workspace_id, n.number ORDER BY s.seq);

-- name: transitions
-- A number seen in a snapshot but not in the one before (or with another state), and a number
-- seen in a snapshot but missing from the next one: the same rows the incremental step makes.
CREATE OR REPLACE TEMP TABLE history_transitions AS
SELECT workspace_id, number, snapshot_id, taken_at AS changed_at, previous_taken_at,
       prev_seq IS NOT DISTINCT FROM seq - 1 AS was_listed,
       true AS is_listed,
       CASE WHEN prev_seq = seq - 1 THEN prev_available END AS was_available,
       is_available,
       CASE WHEN prev_seq = seq - 1 THEN prev_sid END AS was_sid,
       sid
FROM history_observations
WHERE prev_seq IS DISTINCT FROM seq - 1
   OR prev_available <> is_available OR prev_sid IS DISTINCT FROM sid
UNION ALL
SELECT workspace_id, number, next_snapshot_id, next_taken_at, taken_at,
       true, false, is_available, NULL, sid, NULL
FROM history_observations
WHERE next_snapshot_id IS NOT NULL AND next_seq IS DISTINCT FROM seq + 1;

-- name: versions
-- Gaps and islands: a version starts where the number appears, reappears or changes state,
-- and ends at the next snapshot after its last sighting (NULL when that is the newest).
INSERT INTO synthflow.number_history (
    workspace_id, number, is_available, sid, valid_from, valid_to, is_current
)
WITH numbered AS (
    SELECT *,
           sum(CASE WHEN prev_seq IS DISTINCT FROM seq - 1
                      OR prev_available <> is_available
                      OR prev_sid IS DISTINCT FROM sid THEN 1 ELSE 0 END)
               OVER (PARTITION BY workspace_id, number ORDER BY seq
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS version_no
    FROM history_observations
)
SELECT workspace_id, number, any_value(is_available), any_value(sid), min(taken_at),
       arg_max_null(next_taken_at, seq), arg_max_null(next_taken_at, seq) IS NULL
FROM numbered
GROUP BY workspace_id, number, version_no;

-- name: mark_applied
INSERT INTO synthflow.history_applied (snapshot_id, workspace_id, taken_at, row_count, fingerprint)
SELECT s.snapshot_id, s.workspace_id, s.taken_at, count(n.number),
       coalesce(sum(hash(n.number, n.sid, n.is_available)), 0)
FROM synthflow.snapshots AS s
LEFT JOIN synthflow.number_snapshots AS n
  ON n.snapshot_id = s.snapshot_id AND n.workspace_id = s.workspace_id
 AND n.taken_at = s.taken_at
WHERE $workspace_ids::VARCHAR[] IS NULL OR list_contains($workspace_ids::VARCHAR[], s.workspace_id)
GROUP BY s.snapshot_id, s.workspace_id, s.taken_at;

-- name: workspace_counts
SELECT change_type, count(*) FROM synthflow.number_changes
WHERE $workspace_ids::VARCHAR[] IS NULL OR list_contains($workspace_ids::VARCHAR[], workspace_id)
GROUP BY change_type;
