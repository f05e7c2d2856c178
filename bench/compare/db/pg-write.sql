INSERT INTO kv(v) VALUES (repeat('x', 100));
