-- oneroot inventory, schema 3: an image's versions (JSON list; empty: the image is its own version 1)
ALTER TABLE images ADD COLUMN versions TEXT NOT NULL DEFAULT '[]'
