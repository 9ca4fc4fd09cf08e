-- The statements of pipelines/warehouse/history.py that choose what to bring up to date: each
-- takes $snapshot_ids or $workspace_ids (NULL: every workspace) as lists, so that a group of
-- snapshots costs about the statements of one.

-- name: plan
-- Per snapshot: `none` when it is applied once, with the rows stored now; `step` when it is not
-- applied, is newer than every applied snapshot of its workspace, and that workspace's other
-- stored and applied snapshots agree; else `rebuild`. Also where it was applied before.
WITH targets AS (
    SELECT snapshot_id, workspace_id, taken_at FROM synthflow.snapshots
    WHERE list_contains($snapshot_ids::VARCHAR[], snapshot_id)
),
stored AS (
    SELECT t.snapshot_id AS target, s.snapshot_id, s.taken_at
    FROM targets AS t JOIN synthflow.snapshots AS s
      ON s.workspace_id = t.workspace_id AND s.snapshot_id <> t.snapshot_id
),
applied AS (
    SELECT t.snapshot_id AS target, a.snapshot_id, a.taken_at
    FROM targets AS t JOIN synthflow.history_applied AS a
      ON a.workspace_id = t.workspace_id AND a.snapshot_id <> t.snapshot_id
),
others AS (
    SELECT target, bool_and(s.taken_at IS NOT DISTINCT FROM a.taken_at) AS agree,
           max(a.taken_at) AS newest
    FROM stored AS s FULL JOIN applied AS a USING (target, snapshot_id)
    GROUP BY target
),
listing AS (  -- only for snapshots applied before: are their rows the ones applied?
    SELECT snapshot_id, count(*) AS row_count, sum(hash(number, sid, is_available)) AS fingerprint
    FROM synthflow.number_snapshots
    JOIN (SELECT * FROM targets SEMI JOIN synthflow.history_applied USING (snapshot_id))
      USING (snapshot_id, workspace_id, taken_at)
    GROUP BY snapshot_id
)
SELECT t.snapshot_id, t.workspace_id,
       CASE WHEN NOT coalesce(o.agree, true) THEN 'rebuild'
            WHEN count(a.snapshot_id) = 1 AND bool_and(
                a.workspace_id = t.workspace_id AND a.taken_at = t.taken_at
                AND a.row_count = coalesce(l.row_count, 0)
                AND a.fingerprint = coalesce(l.fingerprint, 0)) THEN 'none'
            WHEN count(a.snapshot_id) = 0 AND (o.newest IS NULL OR t.taken_at > o.newest) THEN 'step'
            ELSE 'rebuild' END,
       any_value(a.workspace_id)
FROM targets AS t
LEFT JOIN others AS o ON o.target = t.snapshot_id
LEFT JOIN listing AS l ON l.snapshot_id = t.snapshot_id
LEFT JOIN synthflow.history_applied AS a ON a.snapshot_id = t.snapshot_id
GROUP BY t.snapshot_id, t.workspace_id, t.taken_at, o.agree, o.newest;

-- name: pairs
-- The snapshots history_changes.sql derives from, each with its workspace's snapshot before it:
-- every snapshot of $workspace_ids, or only those in $snapshot_ids when it is given.
CREATE OR REPLACE TEMP TABLE history_pairs AS
SELECT *, count(*) OVER (PARTITION BY workspace_id) > 1 AS several FROM (
    SELECT snapshot_id, workspace_id, taken_at,
           lag(snapshot_id) OVER w AS previous_id, lag(taken_at) OVER w AS previous_taken_at
    FROM synthflow.snapshots
    WHERE $workspace_ids::VARCHAR[] IS NULL
       OR list_contains($workspace_ids::VARCHAR[], workspace_id)
    WINDOW w AS (PARTITION BY workspace_id ORDER BY taken_at, snapshot_id)
)
WHERE $snapshot_ids::VARCHAR[] IS NULL OR list_contains($snapshot_ids::VARCHAR[], snapshot_id);

-- name: snapshot_counts
SELECT c.snapshot_id, c.change_type, count(*)
FROM synthflow.snapshots AS s JOIN synthflow.number_changes AS c
  ON c.snapshot_id = s.snapshot_id AND c.workspace_id = s.workspace_id
 AND c.changed_at = s.taken_at
WHERE list_contains($snapshot_ids::VARCHAR[], s.snapshot_id)
GROUP BY c.snapshot_id, c.change_type;

-- name: workspace_counts
SELECT change_type, count(*) FROM synthflow.number_changes
WHERE $workspace_ids::VARCHAR[] IS NULL OR list_contains($workspace_ids::VARCHAR[], workspace_id)
GROUP BY change_type;

-- name: known_workspaces
-- Every workspace the database holds anything of: what a rebuild may be asked for.
SELECT workspace_id FROM synthflow.snapshots
UNION SELECT workspace_id FROM synthflow.number_history
UNION SELECT workspace_id FROM synthflow.workspace_settings;
