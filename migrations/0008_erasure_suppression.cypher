// Erasure must hold against replays: the identifier pseudonyms of an erased user are kept as
// `ErasedIdentifier {key, at}`, looked up by the writer for every batch.
CREATE CONSTRAINT erased_identifier_key IF NOT EXISTS FOR (n:ErasedIdentifier) REQUIRE n.key IS UNIQUE;
