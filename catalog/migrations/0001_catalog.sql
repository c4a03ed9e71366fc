-- The catalog's tables (DESIGN section 9), after Flyte's datacatalog: datasets (a task version),
-- artifacts (outputs of one node run, found by cache key), names and partitions of published
-- artifacts, reservations of keys being computed, and lineage edges between node runs and artifacts.
CREATE TABLE IF NOT EXISTS catalog_datasets (
    id text PRIMARY KEY,
    project text NOT NULL,
    domain text NOT NULL,
    name text NOT NULL,
    version text NOT NULL,
    interface text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS catalog_datasets_name ON catalog_datasets (project, domain, name);

CREATE TABLE IF NOT EXISTS catalog_artifacts (
    id text PRIMARY KEY,
    dataset_id text NOT NULL,
    cache_key text NOT NULL,
    input_hash text NOT NULL,
    outputs bytea NOT NULL,
    execution_id text NOT NULL,
    node_id text NOT NULL,
    attempt integer NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS catalog_artifacts_key ON catalog_artifacts (cache_key, created_at DESC);
CREATE INDEX IF NOT EXISTS catalog_artifacts_dataset ON catalog_artifacts (dataset_id);
CREATE INDEX IF NOT EXISTS catalog_artifacts_created ON catalog_artifacts (created_at DESC);

CREATE TABLE IF NOT EXISTS catalog_tags (
    artifact_id text NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (artifact_id, name)
);
CREATE INDEX IF NOT EXISTS catalog_tags_name ON catalog_tags (name, created_at DESC);

CREATE TABLE IF NOT EXISTS catalog_partitions (
    artifact_id text NOT NULL,
    name text NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (artifact_id, name, key)
);

CREATE TABLE IF NOT EXISTS catalog_reservations (
    cache_key text PRIMARY KEY,
    owner text NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS catalog_lineage (
    artifact_id text NOT NULL,
    direction text NOT NULL,
    execution_id text NOT NULL,
    node_id text NOT NULL,
    attempt integer NOT NULL,
    PRIMARY KEY (artifact_id, direction, execution_id, node_id, attempt)
);
CREATE INDEX IF NOT EXISTS catalog_lineage_run ON catalog_lineage (execution_id, node_id);
