// API keys: revoked by id, and looked up on every (uncached) request by the SHA-256 of the whole
// key, so both need the index a uniqueness constraint brings.
CREATE CONSTRAINT api_key_id IF NOT EXISTS FOR (n:ApiKey) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT api_key_hash IF NOT EXISTS FOR (n:ApiKey) REQUIRE n.hash IS UNIQUE;
