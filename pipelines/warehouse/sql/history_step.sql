-- The incremental step of apply_snapshot: one snapshot newer than every applied one of its
-- workspace. Each statement touches only the workspace's open versions and the new listing;
-- the listing is found by snapshot_id and taken_at so that DuckDB's zone maps skip the
-- older snapshots (number_snapshots.taken_at equals its snapshot's taken_at by contract).
-- Times travel as epoch microseconds so that no time zone conversion can bend them.

-- name: target
SELECT workspace_id, epoch_us(taken_at) FROM synthflow.snapshots WHERE snapshot_id = $snapshot_id;

-- name: plan
-- Is this snapshot applied already, with the same rows? Do the workspace's other applied
-- snapshots match those stored (a full join of the two lists, which are short: one row per
-- snapshot)? When was the newest of them taken?
WITH listing AS (
    SELECT count(*) AS row_count,
           coalesce(sum(hash(number, sid, is_available)), 0) AS fingerprint
    FROM synthflow.number_snapshots
    WHERE snapshot_id = $snapshot_id AND workspace_id = $workspace_id
      AND taken_at = make_timestamptz($taken_at_us::BIGINT)
),
stored AS (
    SELECT snapshot_id, taken_at FROM synthflow.snapshots WHERE workspace_id = $workspace_id
),
applied AS (
    SELECT * FROM synthflow.history_applied
    WHERE workspace_id = $workspace_id OR snapshot_id = $snapshot_id
),
paired AS (
    SELECT coalesce(s.snapshot_id, a.snapshot_id) = $snapshot_id AS is_this,
           s.taken_at AS stored_at, a.*
    FROM stored AS s FULL OUTER JOIN applied AS a ON a.snapshot_id = s.snapshot_id
)
SELECT
    any_value(l.row_count),
    any_value(l.fingerprint),
    count(*) FILTER (
        WHERE NOT is_this AND (stored_at IS DISTINCT FROM taken_at
                               OR workspace_id IS DISTINCT FROM $workspace_id)) = 0,
    epoch_us(max(taken_at) FILTER (WHERE NOT is_this)),
    count(snapshot_id) FILTER (WHERE is_this),
    any_value(workspace_id) FILTER (WHERE is_this),
    coalesce(bool_and(
        workspace_id = $workspace_id
        AND taken_at = make_timestamptz($taken_at_us::BIGINT)
        AND p.row_count = l.row_count AND p.fingerprint = l.fingerprint) FILTER (WHERE is_this),
        false)
FROM listing AS l CROSS JOIN paired AS p;

-- name: transitions
CREATE OR REPLACE TEMP TABLE history_transitions AS
WITH open_versions AS (
    SELECT number, is_available, sid FROM synthflow.number_history
    WHERE workspace_id = $workspace_id AND valid_to IS NULL
),
listing AS (
    SELECT number, is_available, sid FROM synthflow.number_snapshots
    WHERE snapshot_id = $snapshot_id AND workspace_id = $workspace_id
      AND taken_at = make_timestamptz($taken_at_us::BIGINT)
)
SELECT
    $workspace_id::VARCHAR AS workspace_id,
    coalesce(l.number, o.number) AS number,
    $snapshot_id::VARCHAR AS snapshot_id,
    make_timestamptz($taken_at_us::BIGINT) AS changed_at,
    make_timestamptz($previous_taken_at_us::BIGINT) AS previous_taken_at,
    o.number IS NOT NULL AS was_listed,
    l.number IS NOT NULL AS is_listed,
    o.is_available AS was_available,
    l.is_available AS is_available,
    o.sid AS was_sid,
    l.sid AS sid
FROM open_versions AS o
FULL OUTER JOIN listing AS l ON l.number = o.number
WHERE o.number IS NULL OR l.number IS NULL
   OR o.is_available <> l.is_available OR o.sid IS DISTINCT FROM l.sid;

-- name: close_versions
UPDATE synthflow.number_history AS h
SET valid_to = t.changed_at, is_current = false
FROM history_transitions AS t
WHERE h.workspace_id = $workspace_id AND h.valid_to IS NULL
  AND t.was_listed AND h.number = t.number;

-- name: open_versions
INSERT INTO synthflow.number_history (
    workspace_id, number, is_available, sid, valid_from, valid_to, is_current
)
SELECT workspace_id, number, is_available, sid, changed_at, NULL, true
FROM history_transitions WHERE is_listed;

-- name: mark_applied
INSERT INTO synthflow.history_applied (snapshot_id, workspace_id, taken_at, row_count, fingerprint)
VALUES ($snapshot_id, $workspace_id, make_timestamptz($taken_at_us::BIGINT), $row_count,
        $fingerprint::HUGEINT);

-- name: snapshot_counts
SELECT change_type, count(*) FROM synthflow.number_changes
WHERE snapshot_id = $snapshot_id AND workspace_id = $workspace_id
  AND changed_at = make_timestamptz($taken_at_us::BIGINT)
GROUP BY change_type;
