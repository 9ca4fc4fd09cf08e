-- The tables of the contract (shared/design.md, "DuckDB tables") and the workspaces view, whose
-- descriptions are read from here too. Idempotent.
CREATE SCHEMA IF NOT EXISTS synthflow;

CREATE TABLE IF NOT EXISTS synthflow.snapshots (
    snapshot_id   VARCHAR PRIMARY KEY,
    workspace_id  VARCHAR NOT NULL,
    taken_at      TIMESTAMPTZ NOT NULL,
    total_records INTEGER NOT NULL,
    row_count     INTEGER NOT NULL,
    page_count    INTEGER NOT NULL,
    run_id        VARCHAR
);

CREATE TABLE IF NOT EXISTS synthflow.number_snapshots (
    snapshot_id  VARCHAR NOT NULL,
    workspace_id VARCHAR NOT NULL,
    taken_at     TIMESTAMPTZ NOT NULL,
    number       VARCHAR NOT NULL,
    sid          VARCHAR,
    is_available BOOLEAN NOT NULL,
    country      VARCHAR,
    PRIMARY KEY (snapshot_id, number)
);

CREATE TABLE IF NOT EXISTS synthflow.number_history (
    workspace_id VARCHAR NOT NULL,
    number       VARCHAR NOT NULL,
    is_available BOOLEAN NOT NULL,
    sid          VARCHAR,
    valid_from   TIMESTAMPTZ NOT NULL,
    valid_to     TIMESTAMPTZ,
    is_current   BOOLEAN NOT NULL
);

CREATE TABLE IF NOT EXISTS synthflow.number_changes (
    workspace_id      VARCHAR NOT NULL,
    number            VARCHAR NOT NULL,
    changed_at        TIMESTAMPTZ NOT NULL,
    previous_taken_at TIMESTAMPTZ,
    snapshot_id       VARCHAR NOT NULL,
    change_type       VARCHAR NOT NULL,
    was_available     BOOLEAN,
    is_available      BOOLEAN
);

-- Each run writes what the configuration says of its workspaces; a workspace no longer
-- configured keeps what it last said.
CREATE TABLE IF NOT EXISTS synthflow.workspace_settings (
    workspace_id VARCHAR PRIMARY KEY,
    name         VARCHAR,
    base_url     VARCHAR NOT NULL
);

-- Every workspace configured or stored: its settings, and its snapshot times read from
-- synthflow.snapshots, so they are exact whatever was stored, replaced or rebuilt.
CREATE OR REPLACE VIEW synthflow.workspaces AS
WITH snapshot_times AS (
    SELECT workspace_id, min(taken_at) AS first_snapshot_at, max(taken_at) AS last_snapshot_at
    FROM synthflow.snapshots
    GROUP BY workspace_id
)
SELECT workspace_id, s.name, s.base_url, t.first_snapshot_at, t.last_snapshot_at
FROM synthflow.workspace_settings AS s
FULL JOIN snapshot_times AS t USING (workspace_id);

-- What each table and column means: the one place it is written. Dagster's column schemas
-- and the README read it from here (pipelines/warehouse/schema.py, `columns`).
COMMENT ON TABLE synthflow.snapshots IS 'One row per stored workspace snapshot: a complete, verified listing of GET /v2/numbers.';
COMMENT ON COLUMN synthflow.snapshots.snapshot_id IS 'Unique per workspace snapshot: workspace and Dagster root run id.';
COMMENT ON COLUMN synthflow.snapshots.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.snapshots.taken_at IS 'When the first page of the stored read was requested, UTC.';
COMMENT ON COLUMN synthflow.snapshots.total_records IS 'What the API reported.';
COMMENT ON COLUMN synthflow.snapshots.row_count IS 'Distinct numbers stored.';
COMMENT ON COLUMN synthflow.snapshots.page_count IS 'Pages in the stored read (retries and abandoned reads not counted).';
COMMENT ON COLUMN synthflow.snapshots.run_id IS 'The Dagster run that took it.';

COMMENT ON TABLE synthflow.number_snapshots IS 'One row per number per stored snapshot.';
COMMENT ON COLUMN synthflow.number_snapshots.snapshot_id IS 'The snapshot (synthflow.snapshots).';
COMMENT ON COLUMN synthflow.number_snapshots.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.number_snapshots.taken_at IS 'The snapshot''s taken_at, UTC.';
COMMENT ON COLUMN synthflow.number_snapshots.number IS 'The number in E.164 (+ and digits); as the API gave it when it is not E.164.';
COMMENT ON COLUMN synthflow.number_snapshots.sid IS 'The carrier''s ID as the API gave it; NULL for custom (SIP) numbers.';
COMMENT ON COLUMN synthflow.number_snapshots.is_available IS 'True: not assigned to an inbound agent.';
COMMENT ON COLUMN synthflow.number_snapshots.country IS 'ISO 3166-1 alpha-2 region as the phonenumbers library resolves it; NULL when unknown.';

COMMENT ON TABLE synthflow.number_history IS 'SCD type 2: one row per version of a number in a workspace, valid over [valid_from, valid_to).';
COMMENT ON COLUMN synthflow.number_history.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.number_history.number IS 'The number, as in number_snapshots.';
COMMENT ON COLUMN synthflow.number_history.is_available IS 'Availability during the version.';
COMMENT ON COLUMN synthflow.number_history.sid IS 'SID during the version.';
COMMENT ON COLUMN synthflow.number_history.valid_from IS 'taken_at of the snapshot that first showed this state.';
COMMENT ON COLUMN synthflow.number_history.valid_to IS 'taken_at of the snapshot that first showed it ended; NULL while current.';
COMMENT ON COLUMN synthflow.number_history.is_current IS 'valid_to IS NULL.';

COMMENT ON TABLE synthflow.number_changes IS 'One row per observed transition of one attribute of a number.';
COMMENT ON COLUMN synthflow.number_changes.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.number_changes.number IS 'The number, as in number_snapshots.';
COMMENT ON COLUMN synthflow.number_changes.changed_at IS 'taken_at of the snapshot that first showed the change.';
COMMENT ON COLUMN synthflow.number_changes.previous_taken_at IS 'The workspace''s snapshot before it: the change happened between the two; NULL for a first snapshot.';
COMMENT ON COLUMN synthflow.number_changes.snapshot_id IS 'The snapshot that showed the change.';
COMMENT ON COLUMN synthflow.number_changes.change_type IS 'added, removed, assigned (available to not), released (not to available) or sid_changed.';
COMMENT ON COLUMN synthflow.number_changes.was_available IS 'Availability before; NULL for added.';
COMMENT ON COLUMN synthflow.number_changes.is_available IS 'Availability after; NULL for removed.';

COMMENT ON TABLE synthflow.workspace_settings IS 'What the configuration says of each workspace, written by each run that selects it.';
COMMENT ON COLUMN synthflow.workspace_settings.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.workspace_settings.name IS 'Its name in the configuration; NULL when it has none.';
COMMENT ON COLUMN synthflow.workspace_settings.base_url IS 'The API base URL its listings are read from.';

COMMENT ON VIEW synthflow.workspaces IS 'One row per workspace configured or stored: name, base URL and first and last snapshot.';
COMMENT ON COLUMN synthflow.workspaces.workspace_id IS 'The Synthflow workspace.';
COMMENT ON COLUMN synthflow.workspaces.name IS 'Its name in the configuration of the latest run that selected it; NULL when it has none (shown by its id).';
COMMENT ON COLUMN synthflow.workspaces.base_url IS 'The API base URL of the latest run that selected it; NULL for a workspace only stored before names were kept.';
COMMENT ON COLUMN synthflow.workspaces.first_snapshot_at IS 'taken_at of its first stored snapshot, UTC; NULL before one is stored.';
COMMENT ON COLUMN synthflow.workspaces.last_snapshot_at IS 'taken_at of its latest stored snapshot, UTC; NULL before one is stored.';
