\set v random(1, 1000000000)
\set c random(0, 63)
INSERT INTO assertions(id, ts, concept_path, predicate, value, confidence, authority_tier, source) VALUES (lpad(to_hex(CAST(:v AS bigint)), 24, '0'), now(), 'bench/c' || lpad(CAST(:c AS text), 4, '0'), 'population', CAST(:v AS text), 0.75, 'verified', 'source/bench/pg');
