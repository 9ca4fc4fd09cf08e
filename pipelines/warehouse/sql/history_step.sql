-- The plan and the incremental step of apply_snapshots (apply_snapshot: a list of one), for any
-- number of snapshots at once; those that step are each of another workspace and newer than
-- every applied snapshot of their workspace. Each statement touches only those workspaces'
-- open versions and the new listings; listings are found by snapshot_id and taken_at, between
-- the earliest and latest taken_at of the snapshots at hand, so that DuckDB's zone maps skip
-- the older snapshots (number_snapshots.taken_at equals its snapshot's taken_at by contract).
-- The snapshots travel as parallel lists, one entry per snapshot ($snapshot_ids,
-- $workspace_ids, $taken_at_us, ...), and times as epoch microseconds so that no time zone
-- conversion can bend them.

-- name: targets
SELECT snapshot_id, workspace_id, epoch_us(taken_at) FROM synthflow.snapshots
WHERE list_contains($snapshot_ids::VARCHAR[], snapshot_id);

-- name: touched_workspaces
-- The workspaces these snapshot ids are stored or applied under now: what storing one of them
-- again, and applying it, may change besides its own workspace.
SELECT snapshot_id, workspace_id FROM synthflow.snapshots
WHERE list_contains($snapshot_ids::VARCHAR[], snapshot_id)
UNION
SELECT snapshot_id, workspace_id FROM synthflow.history_applied
WHERE list_contains($snapshot_ids::VARCHAR[], snapshot_id);

-- name: plan
-- Per snapshot: is it applied already, with the same rows? Do its workspace's other applied
-- snapshots match those stored (a full join of the two lists, which are short: one row per
-- snapshot)? When was the newest of them taken?
WITH targets AS (
    SELECT unnest($snapshot_ids::VARCHAR[]) AS target_id,
           unnest($workspace_ids::VARCHAR[]) AS target_workspace_id,
           make_timestamptz(unnest($taken_at_us::BIGINT[])) AS target_taken_at
),
listing AS (  -- grouped before it meets targets: one small join, not one per row
    SELECT snapshot_id, workspace_id, taken_at, count(*) AS row_count,
           sum(hash(number, sid, is_available)) AS fingerprint
    FROM synthflow.number_snapshots
    WHERE taken_at BETWEEN make_timestamptz(list_min($taken_at_us::BIGINT[]))
                       AND make_timestamptz(list_max($taken_at_us::BIGINT[]))
      AND list_contains($snapshot_ids::VARCHAR[], snapshot_id)
    GROUP BY snapshot_id, workspace_id, taken_at
),
stored AS (
    SELECT t.target_id, s.snapshot_id, s.taken_at
    FROM targets AS t JOIN synthflow.snapshots AS s ON s.workspace_id = t.target_workspace_id
),
applied AS (  -- the workspace's applied snapshots, and this one wherever it was applied
    SELECT t.target_id, a.*
    FROM targets AS t JOIN synthflow.history_applied AS a
      ON a.workspace_id = t.target_workspace_id
    UNION ALL
    SELECT t.target_id, a.*
    FROM targets AS t JOIN synthflow.history_applied AS a
      ON a.snapshot_id = t.target_id AND a.workspace_id <> t.target_workspace_id
),
paired AS (
    SELECT coalesce(s.target_id, a.target_id) AS target_id,
           coalesce(s.snapshot_id, a.snapshot_id) = coalesce(s.target_id, a.target_id) AS is_this,
           s.taken_at AS stored_at, a.snapshot_id, a.workspace_id, a.taken_at, a.row_count,
           a.fingerprint
    FROM stored AS s FULL OUTER JOIN applied AS a
      ON a.target_id = s.target_id AND a.snapshot_id = s.snapshot_id
)
SELECT
    t.target_id,
    coalesce(any_value(l.row_count), 0),
    coalesce(any_value(l.fingerprint), 0),
    count(*) FILTER (
        WHERE NOT is_this AND (stored_at IS DISTINCT FROM p.taken_at
                               OR p.workspace_id IS DISTINCT FROM t.target_workspace_id)) = 0,
    epoch_us(max(p.taken_at) FILTER (WHERE NOT is_this)),
    count(p.snapshot_id) FILTER (WHERE is_this),
    any_value(p.workspace_id) FILTER (WHERE is_this),
    coalesce(bool_and(
        p.workspace_id = t.target_workspace_id
        AND p.taken_at = t.target_taken_at
        AND p.row_count = coalesce(l.row_count, 0)
        AND p.fingerprint = coalesce(l.fingerprint, 0)) FILTER (WHERE is_this),
        false)
FROM targets AS t
LEFT JOIN listing AS l
  ON l.snapshot_id = t.target_id AND l.workspace_id = t.target_workspace_id
 AND l.taken_at = t.target_taken_at
JOIN paired AS p ON p.target_id = t.target_id
GROUP BY t.target_id, t.target_workspace_id, t.target_taken_at;

-- name: transitions
-- The workspaces' open versions full-joined with their new listings, one workspace per step.
CREATE OR REPLACE TEMP TABLE history_transitions AS
WITH steps AS (
    SELECT unnest($snapshot_ids::VARCHAR[]) AS snapshot_id,
           unnest($workspace_ids::VARCHAR[]) AS workspace_id,
           make_timestamptz(unnest($taken_at_us::BIGINT[])) AS taken_at,
           make_timestamptz(unnest($previous_taken_at_us::BIGINT[])) AS previous_taken_at
),
open_versions AS (
    SELECT workspace_id, number, is_available, sid FROM synthflow.number_history
    WHERE valid_to IS NULL AND list_contains($workspace_ids::VARCHAR[], workspace_id)
),
listing AS (
    SELECT n.workspace_id, n.number, n.is_available, n.sid
    FROM synthflow.number_snapshots AS n
    JOIN steps AS s
      ON n.snapshot_id = s.snapshot_id AND n.workspace_id = s.workspace_id
     AND n.taken_at = s.taken_at
    WHERE n.taken_at BETWEEN make_timestamptz(list_min($taken_at_us::BIGINT[]))
                         AND make_timestamptz(list_max($taken_at_us::BIGINT[]))
)
SELECT
    s.workspace_id,
    coalesce(l.number, o.number) AS number,
    s.snapshot_id,
    s.taken_at AS changed_at,
    s.previous_taken_at,
    o.number IS NOT NULL AS was_listed,
    l.number IS NOT NULL AS is_listed,
    o.is_available AS was_available,
    l.is_available AS is_available,
    o.sid AS was_sid,
    l.sid AS sid
FROM open_versions AS o
FULL OUTER JOIN listing AS l ON l.workspace_id = o.workspace_id AND l.number = o.number
JOIN steps AS s ON s.workspace_id = coalesce(l.workspace_id, o.workspace_id)
WHERE o.number IS NULL OR l.number IS NULL
   OR o.is_available <> l.is_available OR o.sid IS DISTINCT FROM l.sid;

-- name: close_versions
UPDATE synthflow.number_history AS h
SET valid_to = t.changed_at, is_current = false
FROM history_transitions AS t
WHERE list_contains($workspace_ids::VARCHAR[], h.workspace_id) AND h.valid_to IS NULL
  AND t.was_listed AND h.workspace_id = t.workspace_id AND h.number = t.number;

-- name: open_versions
INSERT INTO synthflow.number_history (
    workspace_id, number, is_available, sid, valid_from, valid_to, is_current
)
SELECT workspace_id, number, is_available, sid, changed_at, NULL, true
FROM history_transitions WHERE is_listed;

-- name: mark_applied
INSERT INTO synthflow.history_applied (snapshot_id, workspace_id, taken_at, row_count, fingerprint)
SELECT unnest($snapshot_ids::VARCHAR[]),
       unnest($workspace_ids::VARCHAR[]),
       make_timestamptz(unnest($taken_at_us::BIGINT[])),
       unnest($row_counts::BIGINT[]),
       unnest($fingerprints::HUGEINT[]);

-- name: snapshot_counts
WITH targets AS (
    SELECT unnest($snapshot_ids::VARCHAR[]) AS snapshot_id,
           unnest($workspace_ids::VARCHAR[]) AS workspace_id,
           make_timestamptz(unnest($taken_at_us::BIGINT[])) AS changed_at
),
counted AS (  -- grouped before it meets targets: one small join, not one per row
    SELECT snapshot_id, workspace_id, changed_at, change_type, count(*) AS changes
    FROM synthflow.number_changes
    WHERE changed_at BETWEEN make_timestamptz(list_min($taken_at_us::BIGINT[]))
                         AND make_timestamptz(list_max($taken_at_us::BIGINT[]))
      AND list_contains($snapshot_ids::VARCHAR[], snapshot_id)
    GROUP BY snapshot_id, workspace_id, changed_at, change_type
)
SELECT c.snapshot_id, c.change_type, c.changes
FROM counted AS c
JOIN targets AS t
  ON c.snapshot_id = t.snapshot_id AND c.workspace_id = t.workspace_id
 AND c.changed_at = t.changed_at;
