-- oneroot inventory on PostgreSQL, schema 2: paths of a live root nodes may see beyond its system dirs
ALTER TABLE images ADD COLUMN expose TEXT NOT NULL DEFAULT '[]'
