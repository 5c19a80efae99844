-- The embedded store's migration 8 moves a transition's step and log rows into one
-- journal row (store/sqlite/journal.rs). PostgreSQL keeps writing them as rows: its
-- transitions are pipelined, and its step and log rows are mostly HOT updates and appends
-- already. The number stays in step with the embedded store's.
SELECT 1;
