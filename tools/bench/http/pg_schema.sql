CREATE TABLE assertions (
  lsn bigserial PRIMARY KEY,
  id text NOT NULL,
  ts timestamptz NOT NULL,
  concept_path text NOT NULL,
  predicate text NOT NULL,
  value text NOT NULL,
  confidence double precision NOT NULL,
  authority_tier text NOT NULL,
  source text);
CREATE INDEX assertions_concept ON assertions (concept_path, predicate);
