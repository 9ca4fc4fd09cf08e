-- The questions analysts ask, as SQL objects over the contract's tables (README, "Analytics").
-- Idempotent: run on every connection that writes, after views.sql. CREATE OR REPLACE drops an
-- object's comments, so each COMMENT follows its object. Days and weeks are UTC calendar days
-- and ISO weeks (Monday first), whatever the session's TimeZone.

-- The numbers each workspace had at the instant ts: the versions whose half-open
-- [valid_from, valid_to) holds it. country comes from the snapshot that opened the version.
CREATE OR REPLACE MACRO synthflow.numbers_as_of(ts) AS TABLE
SELECT h.workspace_id, h.number, h.sid, h.is_available, n.country, h.valid_from, h.valid_to
FROM synthflow.number_history AS h
LEFT JOIN synthflow.number_snapshots AS n
  ON n.workspace_id = h.workspace_id AND n.taken_at = h.valid_from AND n.number = h.number
WHERE h.valid_from <= ts::TIMESTAMPTZ
  AND (h.valid_to IS NULL OR h.valid_to > ts::TIMESTAMPTZ);
COMMENT ON MACRO TABLE synthflow.numbers_as_of IS 'The numbers each workspace had at the instant ts (anything that casts to TIMESTAMPTZ): workspace_id, number, sid, is_available, country and the version''s valid_from and valid_to.';

-- Each workspace's newest snapshot of each day it has one, counted, then carried forward to
-- every day until the next (ASOF JOIN: the newest snapshot day on or before each day).
CREATE OR REPLACE VIEW synthflow.daily_inventory AS
WITH day_end AS (
    SELECT workspace_id, snapshot_id, taken_at, timezone('UTC', taken_at)::DATE AS day
    FROM synthflow.snapshots
    QUALIFY row_number() OVER (
        PARTITION BY workspace_id, day ORDER BY taken_at DESC, snapshot_id DESC) = 1
),
counted AS (
    SELECT d.workspace_id, d.day,
           count(n.number) AS numbers,
           count(n.number) FILTER (WHERE n.is_available) AS available,
           count(n.number) FILTER (WHERE NOT n.is_available) AS assigned
    FROM day_end AS d
    LEFT JOIN synthflow.number_snapshots AS n
      ON n.snapshot_id = d.snapshot_id AND n.workspace_id = d.workspace_id
     AND n.taken_at = d.taken_at
    GROUP BY d.workspace_id, d.day
),
calendar AS (
    SELECT workspace_id,
           unnest(generate_series(
               min(day), greatest(max(day), timezone('UTC', now())::DATE), INTERVAL 1 DAY
           ))::DATE AS day
    FROM counted
    GROUP BY workspace_id
)
SELECT k.day, k.workspace_id, c.numbers, c.available, c.assigned
FROM calendar AS k
ASOF JOIN counted AS c ON c.workspace_id = k.workspace_id AND c.day <= k.day;
COMMENT ON VIEW synthflow.daily_inventory IS 'One row per workspace per UTC day, from its first snapshot''s day to today: the numbers its newest snapshot on or before that day listed, carried forward over days without one.';
COMMENT ON COLUMN synthflow.daily_inventory.day IS 'The UTC calendar day.';
COMMENT ON COLUMN synthflow.daily_inventory.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.daily_inventory.numbers IS 'Numbers the workspace had at the end of the day (as of its newest snapshot by then).';
COMMENT ON COLUMN synthflow.daily_inventory.available IS 'Of those, not assigned to an inbound agent.';
COMMENT ON COLUMN synthflow.daily_inventory.assigned IS 'Of those, assigned to an inbound agent.';

-- Gaps and islands over number_history: consecutive assigned versions of a number (a SID
-- change splits a version, not a span) form one span. A span starts at a version that is
-- assigned when the one before it was available or ended earlier (the number was gone).
-- It ends by `released` when an available version follows at once, by `removed` otherwise.
CREATE OR REPLACE VIEW synthflow.assignment_spans AS
WITH versions AS (
    SELECT workspace_id, number, is_available, valid_from, valid_to,
           lag(valid_to) OVER w IS DISTINCT FROM valid_from
               OR lag(is_available) OVER w AS starts_span,
           lead(valid_from) OVER w AS next_from
    FROM synthflow.number_history
    WINDOW w AS (PARTITION BY workspace_id, number ORDER BY valid_from)
),
numbered AS (
    SELECT *, count(*) FILTER (WHERE starts_span) OVER (
        PARTITION BY workspace_id, number ORDER BY valid_from) AS span
    FROM versions
    WHERE NOT is_available
)
SELECT workspace_id, number,
       min(valid_from) AS started_at,
       arg_max_null(valid_to, valid_from) AS ended_at,
       ended_at IS NULL AS is_open,
       CASE WHEN ended_at IS NULL THEN NULL
            WHEN arg_max_null(next_from, valid_from) = ended_at THEN 'released'
            ELSE 'removed' END AS ended_by,
       coalesce(ended_at, now()) - started_at AS duration
FROM numbered
GROUP BY workspace_id, number, span;
COMMENT ON VIEW synthflow.assignment_spans IS 'One row per span during which a number was assigned to an inbound agent in a workspace, as the snapshots saw it.';
COMMENT ON COLUMN synthflow.assignment_spans.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.assignment_spans.number IS 'The number, as in number_snapshots.';
COMMENT ON COLUMN synthflow.assignment_spans.started_at IS 'taken_at of the snapshot that first showed the number assigned.';
COMMENT ON COLUMN synthflow.assignment_spans.ended_at IS 'taken_at of the snapshot that first showed it released or gone; NULL while it is assigned.';
COMMENT ON COLUMN synthflow.assignment_spans.is_open IS 'True while the number is still assigned (ended_at IS NULL).';
COMMENT ON COLUMN synthflow.assignment_spans.ended_by IS 'released or removed; NULL while open.';
COMMENT ON COLUMN synthflow.assignment_spans.duration IS 'ended_at - started_at; for an open span, now - started_at.';

-- Changes counted per workspace and UTC day, over daily_inventory's days, so a day without a
-- change (or without a snapshot) is a row of zeros.
CREATE OR REPLACE VIEW synthflow.daily_churn AS
SELECT i.day, i.workspace_id,
       count(c.number) FILTER (WHERE c.change_type = 'added') AS added,
       count(c.number) FILTER (WHERE c.change_type = 'removed') AS removed,
       count(c.number) FILTER (WHERE c.change_type = 'assigned') AS assigned,
       count(c.number) FILTER (WHERE c.change_type = 'released') AS released
FROM synthflow.daily_inventory AS i
LEFT JOIN synthflow.number_changes AS c
  ON c.workspace_id = i.workspace_id AND timezone('UTC', c.changed_at)::DATE = i.day
GROUP BY i.day, i.workspace_id;
COMMENT ON VIEW synthflow.daily_churn IS 'Changes per workspace per UTC day, from its first snapshot''s day to today (zeros included); a workspace''s first snapshot counts every number as added.';
COMMENT ON COLUMN synthflow.daily_churn.day IS 'The UTC calendar day the changes were observed on (changed_at).';
COMMENT ON COLUMN synthflow.daily_churn.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.daily_churn.added IS 'Numbers added (first seen, or back after being gone).';
COMMENT ON COLUMN synthflow.daily_churn.removed IS 'Numbers removed (missing from a snapshot).';
COMMENT ON COLUMN synthflow.daily_churn.assigned IS 'Numbers assigned (available to not).';
COMMENT ON COLUMN synthflow.daily_churn.released IS 'Numbers released (not available to available).';

CREATE OR REPLACE VIEW synthflow.weekly_churn AS
SELECT date_trunc('week', day)::DATE AS week, workspace_id,
       sum(added)::BIGINT AS added,
       sum(removed)::BIGINT AS removed,
       sum(assigned)::BIGINT AS assigned,
       sum(released)::BIGINT AS released
FROM synthflow.daily_churn
GROUP BY week, workspace_id;
COMMENT ON VIEW synthflow.weekly_churn IS 'daily_churn summed per workspace per ISO week (Monday to Sunday, UTC).';
COMMENT ON COLUMN synthflow.weekly_churn.week IS 'The Monday the week starts on.';
COMMENT ON COLUMN synthflow.weekly_churn.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.weekly_churn.added IS 'Numbers added in the week.';
COMMENT ON COLUMN synthflow.weekly_churn.removed IS 'Numbers removed in the week.';
COMMENT ON COLUMN synthflow.weekly_churn.assigned IS 'Numbers assigned in the week.';
COMMENT ON COLUMN synthflow.weekly_churn.released IS 'Numbers released in the week.';

-- number_changes' sid_changed rows with both SIDs: a sid_changed at changed_at closes one
-- version of the number there and opens the next, and versions never overlap.
CREATE OR REPLACE VIEW synthflow.sid_changes AS
SELECT c.workspace_id, c.number, c.changed_at, c.previous_taken_at, c.snapshot_id,
       old.sid AS previous_sid, new.sid, c.is_available
FROM synthflow.number_changes AS c
LEFT JOIN synthflow.number_history AS old
  ON old.workspace_id = c.workspace_id AND old.number = c.number AND old.valid_to = c.changed_at
LEFT JOIN synthflow.number_history AS new
  ON new.workspace_id = c.workspace_id AND new.number = c.number
 AND new.valid_from = c.changed_at
WHERE c.change_type = 'sid_changed';
COMMENT ON VIEW synthflow.sid_changes IS 'One row per sid_changed in number_changes, with the SID before and after.';
COMMENT ON COLUMN synthflow.sid_changes.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.sid_changes.number IS 'The number, as in number_snapshots.';
COMMENT ON COLUMN synthflow.sid_changes.changed_at IS 'taken_at of the snapshot that first showed the new SID.';
COMMENT ON COLUMN synthflow.sid_changes.previous_taken_at IS 'The workspace''s snapshot before it: the SID changed between the two.';
COMMENT ON COLUMN synthflow.sid_changes.snapshot_id IS 'The snapshot that showed the change.';
COMMENT ON COLUMN synthflow.sid_changes.previous_sid IS 'The SID before the change; NULL when there was none.';
COMMENT ON COLUMN synthflow.sid_changes.sid IS 'The SID after the change; NULL when there is none.';
COMMENT ON COLUMN synthflow.sid_changes.is_available IS 'Availability shown by the snapshot that showed the change.';
