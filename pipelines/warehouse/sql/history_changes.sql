-- What changed between each snapshot in temp.history_pairs and its workspace's snapshot before
-- it (a full join of the two listings): the one definition of a change, for the incremental
-- step and the rebuild alike. From it: one number_changes row per attribute transition, the
-- versions it ends and begins, and each snapshot's bookkeeping row. Reads no parameters.
CREATE OR REPLACE TEMP TABLE history_transitions AS
WITH now AS (
    SELECT p.snapshot_id, n.number, n.is_available, n.sid
    FROM temp.history_pairs AS p JOIN synthflow.number_snapshots AS n
      ON n.snapshot_id = p.snapshot_id AND n.workspace_id = p.workspace_id
     AND n.taken_at = p.taken_at
),
before AS (
    SELECT p.snapshot_id, n.number, n.is_available, n.sid
    FROM temp.history_pairs AS p JOIN synthflow.number_snapshots AS n
      ON n.snapshot_id = p.previous_id AND n.workspace_id = p.workspace_id
     AND n.taken_at = p.previous_taken_at
)
SELECT p.workspace_id, number, p.snapshot_id, p.taken_at AS changed_at, p.previous_taken_at,
       p.several,
       b.number IS NOT NULL AS was_listed, n.number IS NOT NULL AS is_listed,
       b.is_available AS was_available, n.is_available, b.sid AS was_sid, n.sid
FROM before AS b FULL JOIN now AS n USING (snapshot_id, number)
JOIN temp.history_pairs AS p USING (snapshot_id)
WHERE b.number IS NULL OR n.number IS NULL
   OR b.is_available <> n.is_available OR b.sid IS DISTINCT FROM n.sid;

-- A transition may be two changes (sid and availability); for sid_changed both availability
-- columns hold the availability shown by the snapshot that showed the change.
INSERT INTO synthflow.number_changes (
    workspace_id, number, changed_at, previous_taken_at, snapshot_id, change_type,
    was_available, is_available
)
SELECT workspace_id, number, changed_at, previous_taken_at, snapshot_id, change_type,
       CASE change_type WHEN 'sid_changed' THEN is_available ELSE was_available END,
       is_available
FROM (
    SELECT *, unnest([
        CASE WHEN NOT was_listed THEN 'added'
             WHEN NOT is_listed THEN 'removed'
             WHEN was_available AND NOT is_available THEN 'assigned'
             WHEN is_available AND NOT was_available THEN 'released' END,
        CASE WHEN was_listed AND is_listed AND was_sid IS DISTINCT FROM sid
             THEN 'sid_changed' END]) AS change_type
    FROM temp.history_transitions
)
WHERE change_type IS NOT NULL;

-- Every transition ends the number's open version, if any (none after a rebuild's delete).
UPDATE synthflow.number_history AS h
SET valid_to = t.changed_at, is_current = false
FROM temp.history_transitions AS t
WHERE h.valid_to IS NULL AND h.workspace_id = t.workspace_id AND h.number = t.number;

-- A listed state begins a version that lasts until the number's next transition, if any: one
-- of these only where a workspace has several snapshots at hand (a rebuild; the window is slow).
INSERT INTO synthflow.number_history (
    workspace_id, number, is_available, sid, valid_from, valid_to, is_current
)
SELECT workspace_id, number, is_available, sid, changed_at, valid_to, valid_to IS NULL
FROM (
    SELECT *, lead(changed_at) OVER (
        PARTITION BY workspace_id, number ORDER BY changed_at, snapshot_id) AS valid_to
    FROM temp.history_transitions WHERE several
    UNION ALL
    SELECT *, NULL FROM temp.history_transitions WHERE NOT several
)
WHERE is_listed;

INSERT INTO synthflow.history_applied (snapshot_id, workspace_id, taken_at, row_count, fingerprint)
SELECT p.snapshot_id, p.workspace_id, p.taken_at, count(n.number),
       coalesce(sum(hash(n.number, n.sid, n.is_available)), 0)
FROM temp.history_pairs AS p LEFT JOIN synthflow.number_snapshots AS n
  ON n.snapshot_id = p.snapshot_id AND n.workspace_id = p.workspace_id
 AND n.taken_at = p.taken_at
GROUP BY p.snapshot_id, p.workspace_id, p.taken_at;

DROP TABLE temp.history_transitions;
DROP TABLE temp.history_pairs;
