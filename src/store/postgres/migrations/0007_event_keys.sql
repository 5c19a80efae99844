-- Migration 7 of the embedded store moves the outbox's filter keys (run, workflow, type)
-- out of three indexes that every event wrote into a table filled in batches, because on
-- SQLite they cost a quarter of a step's WAL pages. PostgreSQL keeps its indexes
-- (`events_by_run`, `events_by_workflow`, `events_by_type`, migration 4): without them the
-- W10 benchmark ran no faster here (3,175 against 3,171 steps/s, BENCHMARKS.md), its time
-- goes elsewhere. This version changes nothing, so that both stores count their schema
-- versions alike.
SELECT 1;
