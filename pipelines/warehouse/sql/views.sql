-- The analytics views of the contract (shared/design.md, "Views"). Idempotent: run on every
-- connection that writes, after schema.sql.

-- The numbers each workspace has now: its open versions. country comes from the workspace's
-- newest snapshot (which lists every open version's number); since is the open version's
-- valid_from, i.e. when the number took its current sid and availability.
CREATE OR REPLACE VIEW synthflow.current_numbers AS
WITH latest AS (
    SELECT workspace_id, snapshot_id, taken_at
    FROM synthflow.snapshots
    QUALIFY row_number() OVER (
        PARTITION BY workspace_id ORDER BY taken_at DESC, snapshot_id DESC) = 1
)
SELECT h.workspace_id, h.number, h.sid, h.is_available, n.country, h.valid_from AS since
FROM synthflow.number_history AS h
LEFT JOIN latest AS l ON l.workspace_id = h.workspace_id
LEFT JOIN synthflow.number_snapshots AS n
  ON n.snapshot_id = l.snapshot_id AND n.taken_at = l.taken_at AND n.number = h.number
WHERE h.valid_to IS NULL;
COMMENT ON VIEW synthflow.current_numbers IS 'The numbers each workspace has now: the open versions of number_history.';
COMMENT ON COLUMN synthflow.current_numbers.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.current_numbers.number IS 'The number in E.164.';
COMMENT ON COLUMN synthflow.current_numbers.sid IS 'Its SID now; NULL for a custom (SIP) number.';
COMMENT ON COLUMN synthflow.current_numbers.is_available IS 'True: not assigned to an inbound agent now.';
COMMENT ON COLUMN synthflow.current_numbers.country IS 'ISO 3166-1 region from the workspace''s newest snapshot; NULL when unknown.';
COMMENT ON COLUMN synthflow.current_numbers.since IS 'When the number took its current sid and availability (the open version''s valid_from).';

-- One row per stored snapshot: how many numbers it listed, how many were free (available)
-- and how many assigned to an inbound agent. assigned_share = assigned / total, in [0, 1];
-- 0 for an empty listing.
CREATE OR REPLACE VIEW synthflow.workspace_utilization AS
SELECT
    s.workspace_id,
    s.snapshot_id,
    s.taken_at,
    count(n.number) AS total,
    count(n.number) FILTER (WHERE n.is_available) AS available,
    count(n.number) FILTER (WHERE NOT n.is_available) AS assigned,
    CASE WHEN count(n.number) = 0 THEN 0.0
         ELSE (count(n.number) FILTER (WHERE NOT n.is_available)) / count(n.number)
    END::DOUBLE AS assigned_share
FROM synthflow.snapshots AS s
LEFT JOIN synthflow.number_snapshots AS n
  ON n.snapshot_id = s.snapshot_id AND n.workspace_id = s.workspace_id
 AND n.taken_at = s.taken_at
GROUP BY s.workspace_id, s.snapshot_id, s.taken_at;
COMMENT ON VIEW synthflow.workspace_utilization IS 'One row per stored snapshot: the numbers it listed, free and assigned.';
COMMENT ON COLUMN synthflow.workspace_utilization.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.workspace_utilization.snapshot_id IS 'The snapshot.';
COMMENT ON COLUMN synthflow.workspace_utilization.taken_at IS 'When it was taken, UTC.';
COMMENT ON COLUMN synthflow.workspace_utilization.total IS 'Numbers it listed.';
COMMENT ON COLUMN synthflow.workspace_utilization.available IS 'Of those, not assigned to an inbound agent.';
COMMENT ON COLUMN synthflow.workspace_utilization.assigned IS 'Of those, assigned to an inbound agent.';
COMMENT ON COLUMN synthflow.workspace_utilization.assigned_share IS 'assigned / total in [0, 1]; 0 for an empty listing.';

-- A number removed from one workspace and added to another while both changes could have been
-- the same moment. Each change is known only to lie in its observation window
-- (previous_taken_at, changed_at]: after the workspace's previous snapshot, at or before the
-- one that showed it. A pair is a move when the two windows overlap, i.e. share an instant:
-- greatest(starts) < least(ends). The result's window (window_start, window_end] is that
-- overlap, the span in which the move happened: exclusive start, inclusive end.
-- An `added` from a workspace's first snapshot has no previous_taken_at: the number may have
-- arrived any time before, so its window starts at -infinity. A `removed` always has one, so
-- window_start is never NULL or infinite.
CREATE OR REPLACE VIEW synthflow.number_moves AS
SELECT
    r.number,
    r.workspace_id AS from_workspace_id,
    a.workspace_id AS to_workspace_id,
    r.changed_at AS removed_at,
    a.changed_at AS added_at,
    r.snapshot_id AS removed_snapshot_id,
    a.snapshot_id AS added_snapshot_id,
    greatest(r.previous_taken_at,
             coalesce(a.previous_taken_at, '-infinity'::TIMESTAMPTZ)) AS window_start,
    least(r.changed_at, a.changed_at) AS window_end
FROM synthflow.number_changes AS r
JOIN synthflow.number_changes AS a
  ON a.number = r.number AND a.workspace_id <> r.workspace_id AND a.change_type = 'added'
WHERE r.change_type = 'removed'
  AND greatest(r.previous_taken_at, coalesce(a.previous_taken_at, '-infinity'::TIMESTAMPTZ))
      < least(r.changed_at, a.changed_at);
COMMENT ON VIEW synthflow.number_moves IS 'A number removed from one workspace and added to another within overlapping observation windows: a move between (window_start, window_end].';
COMMENT ON COLUMN synthflow.number_moves.number IS 'The number in E.164.';
COMMENT ON COLUMN synthflow.number_moves.from_workspace_id IS 'The workspace it was removed from.';
COMMENT ON COLUMN synthflow.number_moves.to_workspace_id IS 'The workspace it was added to.';
COMMENT ON COLUMN synthflow.number_moves.removed_at IS 'taken_at of the snapshot that showed it gone from the first.';
COMMENT ON COLUMN synthflow.number_moves.added_at IS 'taken_at of the snapshot that showed it in the second.';
COMMENT ON COLUMN synthflow.number_moves.removed_snapshot_id IS 'That first snapshot.';
COMMENT ON COLUMN synthflow.number_moves.added_snapshot_id IS 'That second snapshot.';
COMMENT ON COLUMN synthflow.number_moves.window_start IS 'The move happened after this instant (exclusive).';
COMMENT ON COLUMN synthflow.number_moves.window_end IS 'The move happened at or before this instant (inclusive).';
