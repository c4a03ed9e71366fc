-- The catalog, Postgres, version 2: row-level security by project (DESIGN 11), as the event
-- store's migration 0006 does for executions and events, keyed on the same `slipstream_grants`
-- table (created here too when the catalog has a schema of its own).
--
-- A dataset belongs to a project and domain; an artifact to its dataset; names, partitions and
-- lineage edges to their artifact. Each policy looks one level up, and row security applies to
-- the subquery too, so a granted role sees (and writes) the rows below its datasets only.
-- Reservations hold opaque cache keys (hashes that include the project) and nothing else: they
-- are left open to every role that may use the catalog. Owners and superusers bypass all of it.

CREATE TABLE IF NOT EXISTS slipstream_grants (
    role       name        NOT NULL,
    project    text        NOT NULL,
    domain     text        NOT NULL DEFAULT '',
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, project, domain)
);
ALTER TABLE slipstream_grants ENABLE ROW LEVEL SECURITY;
DO $do$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = current_schema()
                   AND tablename = 'slipstream_grants' AND policyname = 'grants_own') THEN
        CREATE POLICY grants_own ON slipstream_grants FOR SELECT USING (role = current_user);
    END IF;
END $do$;

ALTER TABLE catalog_datasets ENABLE ROW LEVEL SECURITY;
CREATE POLICY catalog_datasets_tenant ON catalog_datasets
    USING (EXISTS (SELECT 1 FROM slipstream_grants g WHERE g.role = current_user
                   AND g.project IN ('*', catalog_datasets.project) AND g.domain IN ('', catalog_datasets.domain)))
    WITH CHECK (EXISTS (SELECT 1 FROM slipstream_grants g WHERE g.role = current_user
                        AND g.project IN ('*', catalog_datasets.project)
                        AND g.domain IN ('', catalog_datasets.domain)));

ALTER TABLE catalog_artifacts ENABLE ROW LEVEL SECURITY;
CREATE POLICY catalog_artifacts_tenant ON catalog_artifacts
    USING (EXISTS (SELECT 1 FROM catalog_datasets d WHERE d.id = catalog_artifacts.dataset_id));

ALTER TABLE catalog_tags ENABLE ROW LEVEL SECURITY;
CREATE POLICY catalog_tags_tenant ON catalog_tags
    USING (EXISTS (SELECT 1 FROM catalog_artifacts a WHERE a.id = catalog_tags.artifact_id));

ALTER TABLE catalog_partitions ENABLE ROW LEVEL SECURITY;
CREATE POLICY catalog_partitions_tenant ON catalog_partitions
    USING (EXISTS (SELECT 1 FROM catalog_artifacts a WHERE a.id = catalog_partitions.artifact_id));

ALTER TABLE catalog_lineage ENABLE ROW LEVEL SECURITY;
CREATE POLICY catalog_lineage_tenant ON catalog_lineage
    USING (EXISTS (SELECT 1 FROM catalog_artifacts a WHERE a.id = catalog_lineage.artifact_id));
