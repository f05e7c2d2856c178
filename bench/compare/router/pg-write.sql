\set i random(1, :rows)
INSERT INTO kv(k, v) VALUES ('k' || :i, :i) ON CONFLICT (k) DO UPDATE SET v = excluded.v;
