-- The tables of the contract (shared/design.md, "DuckDB tables"). Idempotent.
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
