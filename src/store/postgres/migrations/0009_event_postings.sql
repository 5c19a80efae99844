-- Migration 9 of the embedded store turns its batched filter keys (migration 7) into
-- posting lists, a row per key per batch instead of per event. PostgreSQL keeps its indexes
-- on `events` (migration 4). This version changes nothing, so that both stores count their
-- schema versions alike.
SELECT 1;
