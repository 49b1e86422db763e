-- When each key was last used, in a narrow table of its own. Every replica
-- reports each key it serves about once a minute; on the wide api_keys row each
-- report wrote a new copy of the row and of its index entries. These small rows
-- on half-full pages are updated in place (HOT), at a fraction of the cost.
CREATE TABLE key_usage (
    key_id       uuid PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    last_used_at timestamptz NOT NULL
) WITH (fillfactor = 50);

INSERT INTO key_usage (key_id, last_used_at)
SELECT id, last_used_at FROM api_keys WHERE last_used_at IS NOT NULL;

-- api_keys.last_used_at stays for now: replicas of the previous release read
-- and write it until a rolling update has replaced them all. Nothing of this
-- release uses it; the later release that drops it first merges what those
-- replicas wrote meanwhile (the later of the two times for each key).
